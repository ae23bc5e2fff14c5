"""Draws the module icon (run once; the PNG is committed): a falling loss curve over a CT slice, an upload arrow.

    .venv/bin/python MaleniaTrainer/Resources/Icons/make_icon.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def draw(size: int = 128) -> Image.Image:
    s = size / 128.0
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([2 * s, 2 * s, 126 * s, 126 * s], radius=18 * s, fill=(24, 33, 46, 255))
    d.ellipse([14 * s, 34 * s, 114 * s, 106 * s], fill=(110, 110, 110, 255))
    d.ellipse([80 * s, 56 * s, 98 * s, 74 * s], fill=(255, 150, 0, 235))
    curve = [(18, 30), (34, 58), (50, 74), (66, 84), (82, 90), (110, 94)]
    d.line([(x * s, y * s) for x, y in curve], fill=(80, 170, 255, 255), width=max(2, int(5 * s)), joint="curve")
    d.polygon([(30 * s, 112 * s), (44 * s, 96 * s), (58 * s, 112 * s)], fill=(120, 220, 140, 255))
    d.rectangle([39 * s, 110 * s, 49 * s, 122 * s], fill=(120, 220, 140, 255))
    return img


if __name__ == "__main__":
    draw().save(HERE / "MaleniaTrainer.png")
