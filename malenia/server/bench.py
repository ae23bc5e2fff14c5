"""Benchmark: upload time of a full-size case to a real server over loopback.

    python -m malenia.server.bench [--size 512 512 300] [--repeats 3]

Writes a CT-like int16 case (body ellipse with organ-level noise, air outside, one lesion) as
compressed NIfTI, starts `malenia serve` on 127.0.0.1, and times `MaleniaClient.upload_case`
(streaming, server-side validation and the atomic store included) for a new case and for an
identical re-upload (hashing and validation, no store). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from malenia.data.dataset import CASE_FILES, IMAGE_FILE, LESIONS_FILE, REPORT_FILE


def make_large_case(folder: Path, size_xyz: tuple[int, int, int], seed: int = 0) -> Path:
    import SimpleITK as sitk

    from malenia.atomic import write_json
    from malenia.server.testdata import report_json

    nx, ny, nz = size_xyz
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    body = ((xx - nx / 2) / (0.42 * nx)) ** 2 + ((yy - ny / 2) / (0.32 * ny)) ** 2 <= 1
    image = np.full((nz, ny, nx), -1000, np.int16)
    labels = np.zeros((nz, ny, nx), np.uint8)
    for z in range(nz):
        slab = rng.normal(40, 18, size=(ny, nx)).astype(np.int16)
        image[z][body] = slab[body]
    c = (nz // 2, ny // 2, nx // 3)
    zz, yy3, xx3 = np.ogrid[0:nz, 0:ny, 0:nx]
    lesion = (zz - c[0]) ** 2 / 100 + (yy3 - c[1]) ** 2 / 400 + (xx3 - c[2]) ** 2 / 400 <= 1
    labels[lesion] = 1
    image[lesion] = -5
    folder.mkdir(parents=True, exist_ok=True)
    for arr, name in ((image, IMAGE_FILE), (labels, LESIONS_FILE)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.78, 0.78, 1.5))
        sitk.WriteImage(img, str(folder / name), useCompression=True)
    write_json(folder / REPORT_FILE, report_json("bench", [1]))
    return folder


def main(argv: list[str] | None = None) -> int:
    from malenia.server.client import MaleniaClient
    from malenia.server.testdata import ServerProcess

    p = argparse.ArgumentParser(prog="python -m malenia.server.bench")
    p.add_argument("--size", type=int, nargs=3, default=(512, 512, 300), metavar=("X", "Y", "Z"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        case = make_large_case(root / "case", tuple(args.size))
        make_s = time.perf_counter() - t0
        sizes = {f: (case / f).stat().st_size for f in CASE_FILES}
        srv = ServerProcess(root / "data").start()
        try:
            new, dup = [], []
            with MaleniaClient(srv.url, srv.token, timeout=600) as c:
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    r = c.upload_case(case)
                    (dup if r["duplicate"] else new).append(time.perf_counter() - t)
                    if not r["duplicate"]:
                        c.delete_case(r["case"]["id"])  # the next upload stores it anew
                t = time.perf_counter()
                c.upload_case(case)
                t = time.perf_counter()
                assert c.upload_case(case)["duplicate"]
                dup.append(time.perf_counter() - t)
        finally:
            srv.stop()
    total = sum(sizes.values())
    print(json.dumps({
        "size_xyz": list(args.size), "bytes": sizes, "mib": round(total / 2**20, 1), "make_case_s": round(make_s, 1),
        "upload_new_s": [round(x, 2) for x in new], "upload_duplicate_s": [round(x, 2) for x in dup],
        "median_new_s": round(float(np.median(new)), 2), "mib_per_s": round(total / 2**20 / float(np.median(new)), 1),
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
