"""`report.html`: the report for people, one self-contained file (images embedded as base64 PNG).

Per lesion: an axial key slice at the lesion's largest cross-section (the CT in a lung or soft-
tissue window, reoriented to the radiological view: patient's right on the left, anterior up),
cropped around the lesion with its contour and, when measured on that slice, the RECIST long
(white) and short (cyan) axes; a small full-slice overview; the measurements; the disease with
its alternatives; the 8 aspects with matched descriptions, score bars and runners-up.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from malenia import __version__
from malenia.aspects import ASPECT_NAMES, ASPECTS
from malenia.infer.measurements import axial_axis, lps_to_ras
from malenia.infer.results import LesionResult, SegmentationResult
from malenia.infer.terminology import SegmentSpec

# (level, width) in HU
WINDOWS = {"lung": (-600.0, 1500.0), "soft_tissue": (40.0, 400.0)}
CROP_MIN_MM = 40.0  # smallest field of view of the lesion crop
CROP_MARGIN = 2.5  # crop side = lesion extent x this
CROP_PX = 320
OVERVIEW_PX = 200
LONG_AXIS_RGB = (255, 255, 255)
SHORT_AXIS_RGB = (0, 220, 255)


@dataclass
class KeySlice:
    slice_index: int  # the largest cross-section, numbered as report.json numbers it (the input's own slices)
    crop_png: bytes
    overview_png: bytes
    axes_drawn: bool  # the RECIST axes lie on this slice and are drawn
    recist_slice_index: int | None = None  # when the RECIST slice is another slice: its number ...
    recist_png: bytes | None = None  # ... and its crop with the axes


def window_for(term_organ: str | None) -> tuple[float, float]:
    return WINDOWS["lung"] if term_organ == "lung" else WINDOWS["soft_tissue"]


def _gray(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    level, width = window
    return (np.clip((hu.astype(np.float32) - (level - width / 2)) / width, 0, 1) * 255).astype(np.uint8)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render_key_slices(result: SegmentationResult, specs: list[SegmentSpec]) -> dict[int, KeySlice]:
    """Key-slice images per lesion label (empty without the CT)."""
    from PIL import Image, ImageDraw

    if result.image is None or not specs:
        return {}
    image = sitk.DICOMOrient(result.image, "LPS")
    labels = sitk.DICOMOrient(result.labels, "LPS")
    hu = sitk.GetArrayViewFromImage(image)  # [z, y=posterior, x=left]: radiological view as is
    lab = sitk.GetArrayViewFromImage(labels)
    sx, sy = image.GetSpacing()[0], image.GetSpacing()[1]
    boxes = ndimage.find_objects(np.asarray(lab))
    out: dict[int, KeySlice] = {}
    for spec in specs:
        lesion = result.lesion(spec.label)
        window = window_for(spec.term.organ)
        box = boxes[spec.label - 1]
        k = _key_slice(lesion, result.labels, labels, lab, box, spec.label)
        mask = lab[k] == spec.label
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        side_mm = max(CROP_MIN_MM, CROP_MARGIN * max((r1 - r0 + 1) * sy, (c1 - c0 + 1) * sx))
        half_r, half_c = int(np.ceil(side_mm / sy / 2)), int(np.ceil(side_mm / sx / 2))
        cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
        frame = (*_fit(cr - half_r, cr + half_r + 1, mask.shape[0]), *_fit(cc - half_c, cc + half_c + 1, mask.shape[1]))

        def crop_at(z: int):
            return _crop(Image, ImageDraw, _gray(hu[z], window), lab[z] == spec.label, frame, (sx, sy),
                         spec.term.color, _axis_index_points(lesion, labels, z))

        crop, drawn = crop_at(k)
        key = KeySlice(_input_slice(result.labels, labels, k), _png(crop), b"", drawn)
        recist = _recist_slice(lesion, labels)
        if not drawn and recist is not None and 0 <= recist < lab.shape[0]:
            key.recist_slice_index = _input_slice(result.labels, labels, recist)
            key.recist_png = _png(crop_at(recist)[0])

        R0, R1, C0, C1 = frame
        ow = OVERVIEW_PX
        oh = max(1, int(round(ow * mask.shape[0] * sy / (mask.shape[1] * sx))))
        overview = Image.fromarray(_gray(hu[k], window)).resize((ow, oh), Image.BILINEAR).convert("RGB")
        fx, fy = ow / mask.shape[1], oh / mask.shape[0]
        ImageDraw.Draw(overview).rectangle([C0 * fx, R0 * fy, C1 * fx - 1, R1 * fy - 1], outline=spec.term.color, width=2)
        key.overview_png = _png(overview)
        out[spec.label] = key
    return out


def _crop(Image, ImageDraw, gray: np.ndarray, mask: np.ndarray, frame, spacing, color, axes):
    """The framed part of one slice at CROP_PX wide (physical aspect), contour in `color`, axes if given."""
    R0, R1, C0, C1 = frame
    sx, sy = spacing
    width = CROP_PX
    height = max(1, int(round(width * (R1 - R0) * sy / ((C1 - C0) * sx))))
    crop = Image.fromarray(gray[R0:R1, C0:C1]).resize((width, height), Image.BILINEAR).convert("RGB")
    big = np.asarray(Image.fromarray(mask[R0:R1, C0:C1].astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
    edge = ndimage.binary_dilation(big & ~ndimage.binary_erosion(big, border_value=0))
    px = np.asarray(crop).copy()
    px[edge] = color
    crop = Image.fromarray(px)
    fx, fy = width / (C1 - C0), height / (R1 - R0)
    draw = ImageDraw.Draw(crop)
    for (a, b), rgb in zip(axes, (LONG_AXIS_RGB, SHORT_AXIS_RGB)):
        # pixel centres sit at integer indices, so the crop's left edge is C0 - 0.5
        draw.line([((a[0] - C0 + 0.5) * fx, (a[1] - R0 + 0.5) * fy), ((b[0] - C0 + 0.5) * fx, (b[1] - R0 + 0.5) * fy)],
                  fill=rgb, width=2)
    return crop, bool(axes)


def _fit(lo: int, hi: int, n: int) -> tuple[int, int]:
    """Shifts [lo, hi) inside [0, n), shrinking only if it is longer than n."""
    if hi - lo >= n:
        return 0, n
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > n:
        lo, hi = lo - (hi - n), n
    return lo, hi


def _axis_index_points(lesion: LesionResult, labels_lps: sitk.Image, k: int):
    """Long and short axis end points as (x, y) indices of the LPS-oriented image, if they lie on slice k."""
    m = lesion.measurements
    if m is None:
        return []
    lines = []
    for a, b in (m.long_axis_ras_mm, m.short_axis_ras_mm):
        ia = labels_lps.TransformPhysicalPointToContinuousIndex(lps_to_ras(a))  # RAS <-> LPS is its own inverse
        ib = labels_lps.TransformPhysicalPointToContinuousIndex(lps_to_ras(b))
        if abs(ia[2] - k) > 0.5 or abs(ib[2] - k) > 0.5:
            return []
        lines.append(((ia[0], ia[1]), (ib[0], ib[1])))
    return lines


def _key_slice(lesion: LesionResult, labels: sitk.Image, labels_lps: sitk.Image, lab: np.ndarray, box, value: int) -> int:
    """k (LPS image) of the largest cross-section: report.json's max_area_slice where the lesion has one, so that both
    name the same slice when two tie (each broke the tie in its own slice order: a CT stored head first showed the
    slice next to report.json's); the largest in LPS order otherwise."""
    m = lesion.measurements
    if m is not None:
        index = [0, 0, 0]
        index[axial_axis(labels)] = int(m.max_area_slice)
        k = int(round(labels_lps.TransformPhysicalPointToContinuousIndex(labels.TransformIndexToPhysicalPoint(index))[2]))
        if 0 <= k < lab.shape[0] and np.any(lab[k] == value):
            return k
    return int(np.argmax((lab[box] == value).sum(axis=(1, 2)))) + box[0].start


def _input_slice(labels: sitk.Image, labels_lps: sitk.Image, k: int) -> int:
    """The input's own number (along its axial axis, as report.json counts) of slice k of the LPS image: the two
    differ for a CT stored head first or with permuted axes."""
    point = labels_lps.TransformIndexToPhysicalPoint((0, 0, int(k)))
    return int(round(labels.TransformPhysicalPointToContinuousIndex(point)[axial_axis(labels)]))


def _recist_slice(lesion: LesionResult, labels_lps: sitk.Image) -> int | None:
    m = lesion.measurements
    if m is None:
        return None
    return int(round(labels_lps.TransformPhysicalPointToContinuousIndex(lps_to_ras(m.long_axis_ras_mm[0]))[2]))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f5f5f5} .muted{color:#777;font-size:12px} .swatch{display:inline-block;width:12px;height:12px;border:1px solid #555;margin-right:6px;vertical-align:middle}
.bar{background:#e6e6e6;width:120px;height:10px;display:inline-block;vertical-align:middle} .bar>span{display:block;height:10px;background:#3b7dd8}
.lesion{display:flex;gap:20px;flex-wrap:wrap} .imgs img{display:block;margin-bottom:6px;border:1px solid #999}
.note{margin-top:32px;font-size:12px;color:#777}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _bar(score: float) -> str:
    pct = max(0.0, min(1.0, float(score))) * 100
    return f'<span class="bar"><span style="width:{pct:.0f}%"></span></span> {float(score):.2f}'


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def build_html(result: SegmentationResult, specs: list[SegmentSpec], key_slices: dict[int, KeySlice],
               display_names: dict[str, str] | None = None, warnings: list[str] | tuple[str, ...] = ()) -> str:
    display_names = display_names or {}
    scan, model = result.scan, result.model
    enh = scan.enhancement
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Malenia lesion report - {_e(scan.source)}</title><style>{_CSS}</style></head><body>",
        "<h1>Malenia lesion report</h1>",
        f"<div class='muted'>Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by malenia {_e(__version__)}</div>",
        "<table>",
        f"<tr><th>Scan</th><td>{_e(scan.source)}{' (DICOM series)' if scan.was_dicom else ''}</td></tr>",
        f"<tr><th>Grid</th><td>{' x '.join(str(s) for s in scan.size)} voxels, spacing "
        f"{' x '.join(f'{s:.3g}' for s in scan.spacing)} mm</td></tr>",
        f"<tr><th>Enhancement</th><td>{_enhancement_text(enh)}</td></tr>",
        f"<tr><th>Model</th><td>{_e(model.name)} {_e(model.version)} <span class='muted'>sha256 {_e(model.sha256[:16])}...</span></td></tr>",
        f"<tr><th>Lesions</th><td>{len(result.lesions)}</td></tr>",
        *(f"<tr><th>Warning</th><td>{_e(w)}</td></tr>" for w in [*scan.warnings, *warnings]),
        "</table>",
    ]
    if not result.lesions:
        parts.append("<p>No lesions were found.</p>")
    else:
        parts.append("<h2>Summary</h2><table><tr><th>Segment</th><th>Disease</th><th>Probability</th>"
                     "<th>Long axis (mm)</th><th>Short axis (mm)</th><th>Volume (ml)</th><th>Mean HU</th></tr>")
        for lesion, spec in zip(result.lesions, specs):
            m = lesion.measurements
            parts.append(
                f"<tr><td><span class='swatch' style='background:rgb{spec.term.color}'></span><a href='#lesion-{lesion.label}'>{_e(spec.name)}</a></td>"
                f"<td>{_e(lesion.disease.shown)}</td><td>{lesion.disease.probability:.2f}</td>"
                f"<td>{_num(m and m.long_axis_mm)}</td><td>{_num(m and m.short_axis_mm)}</td>"
                f"<td>{_num(m and m.volume_ml, '.2f')}</td><td>{_num(m and m.hu_mean, '.0f')}</td></tr>")
        parts.append("</table>")
    for lesion, spec in zip(result.lesions, specs):
        parts.append(_lesion_html(lesion, spec, key_slices.get(lesion.label), display_names))
    parts.append("<p class='note'>Research software: findings are produced automatically and must be reviewed by a "
                 "qualified reader. Attribute scores are normalised similarities between the lesion and each "
                 "description of an aspect.</p></body></html>")
    return "\n".join(parts)


def _enhancement_text(enh) -> str:
    if enh is None:
        return "unknown"
    how = enh.method + (f", {enh.score:.2f}" if enh.score is not None else "")
    return f"{_e(enh.text)} <span class='muted'>({_e(how)})</span>"


def _lesion_html(lesion: LesionResult, spec: SegmentSpec, key: KeySlice | None, names: dict[str, str]) -> str:
    m = lesion.measurements
    d = lesion.disease
    out = [f"<h2 id='lesion-{lesion.label}'><span class='swatch' style='background:rgb{spec.term.color}'></span>"
           f"{_e(spec.name)} <span class='muted'>label {lesion.label}</span></h2><div class='lesion'>"]
    if key is not None:
        axes = " with the RECIST long (white) and short (cyan) axes"
        caption = f"Largest cross-section, axial slice {key.slice_index}" + (axes if key.axes_drawn else "")
        imgs = [f"<img alt='key slice of {_e(spec.name)}' src='{_b64(key.crop_png)}'>",
                f"<div class='muted'>{_e(caption)}</div>"]
        if key.recist_png is not None:
            imgs += [f"<img alt='RECIST slice of {_e(spec.name)}' src='{_b64(key.recist_png)}'>",
                     f"<div class='muted'>{_e(f'Longest diameter, axial slice {key.recist_slice_index}{axes}')}</div>"]
        imgs.append(f"<img alt='overview' src='{_b64(key.overview_png)}'>")
        out.append(f"<div class='imgs'>{''.join(imgs)}</div>")
    out.append("<div>")
    if m is not None:
        c = ", ".join(f"{v:.1f}" for v in m.centroid_ras_mm)
        out.append(
            "<table><tr><th colspan='2'>Measurements</th></tr>"
            f"<tr><td>Longest axial diameter</td><td>{m.long_axis_mm:.1f} mm</td></tr>"
            f"<tr><td>Perpendicular short axis</td><td>{m.short_axis_mm:.1f} mm</td></tr>"
            f"<tr><td>Volume</td><td>{m.volume_ml:.2f} ml ({m.voxel_count} voxels)</td></tr>"
            f"<tr><td>Density</td><td>{_num(m.hu_mean, '.0f')} &plusmn; {_num(m.hu_std, '.0f')} HU</td></tr>"
            f"<tr><td>Centroid (RAS)</td><td>{c} mm</td></tr></table>")
    term = spec.term
    region = term.anatomic_region.meaning if term.anatomic_region else "n/a"
    if term.anatomic_region_modifier:
        region += f" ({term.anatomic_region_modifier.meaning.lower()})"
    def shown(key: str) -> str:
        return _e(names.get(key, key.replace("_", " ")))

    alts = "".join(f"<tr><td>{shown(n)}</td><td>{_bar(p)}</td></tr>" for n, p in d.alternatives)
    ruled = (lesion.appearance or {}).get("ruled_out") or []
    if ruled:  # the appearance check (malenia.knowledge.appearance): say why a known disease was not named
        alts += (f"<tr><td class='muted' colspan='2'>Ruled out by its CT values (unlike the training lesions): "
                 f"{', '.join(shown(n) for n in ruled)}</td></tr>")
    out.append(
        "<table><tr><th colspan='2'>Disease</th></tr>"
        f"<tr><td><b>{_e(d.shown)}</b></td><td>{_bar(d.probability)}</td></tr>"
        f"{alts}<tr><td class='muted' colspan='2'>{_e(term.type.meaning)} in {_e(region)} "
        f"(SNOMED CT {_e(term.type.value)} / {_e(term.anatomic_region.value) if term.anatomic_region else '-'})</td></tr></table>")
    out.append("</div></div><table><tr><th>Aspect</th><th>Matched description</th><th>Score</th><th>Alternatives</th></tr>")
    for aspect in ASPECTS:
        a = lesion.attributes[aspect]
        alt = "<br>".join(f"{_e(x.description)} <span class='muted'>{x.score:.2f}</span>" for x in a.alternatives)
        out.append(f"<tr><td>{_e(ASPECT_NAMES[aspect])}</td><td>{_e(a.description)}</td><td>{_bar(a.score)}</td>"
                   f"<td class='muted'>{alt}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report_html(path, result: SegmentationResult, specs: list[SegmentSpec],
                      display_names: dict[str, str] | None = None, warnings: list[str] | tuple[str, ...] = ()) -> None:
    text = build_html(result, specs, render_key_slices(result, specs), display_names, warnings)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
