"""Draws the module and extension icons (run once; the PNGs are committed).

    .venv/bin/python MaleniaSegment/Resources/Icons/make_icons.py

An axial CT slice (body outline, spine, two kidneys) with one lesion outlined and a text tag
pointing at it: segmentation that comes with a description.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def draw(size: int) -> Image.Image:
    s = size / 128.0
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([2 * s, 2 * s, 126 * s, 126 * s], radius=18 * s, fill=(24, 33, 46, 255))
    # body, fat rim, organs
    d.ellipse([12 * s, 26 * s, 116 * s, 104 * s], fill=(92, 92, 92, 255))
    d.ellipse([17 * s, 31 * s, 111 * s, 99 * s], fill=(128, 128, 128, 255))
    d.ellipse([56 * s, 78 * s, 72 * s, 94 * s], fill=(235, 235, 235, 255))  # vertebra
    d.ellipse([28 * s, 60 * s, 48 * s, 86 * s], fill=(165, 165, 165, 255))  # right kidney (image left)
    d.ellipse([80 * s, 60 * s, 100 * s, 86 * s], fill=(165, 165, 165, 255))  # left kidney
    d.ellipse([58 * s, 60 * s, 68 * s, 70 * s], fill=(190, 190, 190, 255))  # aorta
    # lesion on the left kidney: filled, outlined
    d.ellipse([86 * s, 54 * s, 104 * s, 72 * s], fill=(255, 150, 0, 235), outline=(255, 230, 150, 255), width=max(1, int(2 * s)))
    img = img.filter(ImageFilter.SMOOTH) if size >= 64 else img
    d = ImageDraw.Draw(img)
    # tag with text lines, linked to the lesion
    d.line([95 * s, 54 * s, 88 * s, 30 * s], fill=(255, 230, 150, 255), width=max(1, int(2 * s)))
    d.rounded_rectangle([40 * s, 10 * s, 114 * s, 34 * s], radius=5 * s, fill=(250, 250, 245, 255))
    for i, w in enumerate((60, 44)):
        y = (16 + 9 * i) * s
        d.rectangle([46 * s, y, (46 + w) * s, y + 4 * s], fill=(40, 90, 160, 255))
    return img


if __name__ == "__main__":
    draw(128).save(HERE / "MaleniaSegment.png")
    print("wrote", HERE / "MaleniaSegment.png")
