"""Issue 16's battery, re-runnable: parallel writers, bad images, hostile requests, peak server memory.

    PYTHONPATH=. python scripts/robust_battery.py [--writers 8] [--trials 3] [--big 512,512,400]

Prints one line per probe group and a summary; exits 1 when anything was lost, silently accepted or a 500.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _save(root, barrier, q, k):
    import SimpleITK as sitk

    from malenia.data.corrections import CorrectionStore
    from malenia.data.dataset import LesionReport

    img = sitk.GetImageFromArray(np.full((16, 32, 32), -1000, np.int16))
    lab = np.zeros((16, 32, 32), np.uint8)
    lab[4:8, 4:8, k:k + 4] = 1
    barrier.wait(60)
    q.put(CorrectionStore(root).save("scan", img, sitk.GetImageFromArray(lab), [LesionReport(1, None, {}, {"w": k})]).case_id)


def corrections(tmp: Path, writers: int, trials: int) -> int:
    from malenia.data.dataset import read_case

    lost = 0
    ctx = mp.get_context("fork")
    for t in range(trials):
        root = tmp / f"corr{t}"
        b, q = ctx.Barrier(writers), ctx.Queue()
        ps = [ctx.Process(target=_save, args=(str(root), b, q, k)) for k in range(writers)]
        [p.start() for p in ps]
        [p.join() for p in ps]
        acked = [q.get() for p in ps if p.exitcode == 0]
        found = {read_case(root, c, with_images=False).report.lesions[0].extra["w"] for c in acked}
        lost += writers - len(found)
    print(f"corrections: {writers} parallel savers x {trials} trials: {lost} lost")
    return lost


def model_imports(tmp: Path, writers: int) -> int:
    from malenia.model.folder import verify_model_folder
    from malenia.server.testdata import make_model_folder

    srcs = [make_model_folder(tmp / f"m{k}", name=f"model-{k}", seed=k) for k in range(writers)]
    data = tmp / "imports"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ps = [subprocess.Popen([sys.executable, "-m", "malenia.cli", "serve", "model", "import", str(s), "--data", str(data)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for s in srcs]
    outs = [p.communicate() for p in ps]
    tracebacks = sum("Traceback" in e for _, e in outs)
    names = [verify_model_folder(v)["name"] for v in (data / "models").iterdir() if not v.name.startswith(".")]
    bad = writers - len(set(names)) + (len(names) - len(set(names))) + tracebacks + sum(p.returncode != 0 for p in ps)
    print(f"model imports: {writers} parallel CLI imports: {len(set(names))} distinct versions, {tracebacks} tracebacks, "
          f"exit codes {[p.returncode for p in ps]}")
    return bad


def _spoil(folder: Path, how: str) -> Path:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(folder / "image.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    if how == "truncated":
        raw = gzip.decompress((folder / "image.nii.gz").read_bytes())
        (folder / "image.nii.gz").write_bytes(gzip.compress(raw[:-2048]))
        return folder
    if how == "zero_z":
        raw = bytearray(gzip.decompress((folder / "image.nii.gz").read_bytes()))
        raw[88:92] = np.float32(0).tobytes()
        (folder / "image.nii.gz").write_bytes(gzip.compress(bytes(raw)))
        return folder
    if how == "disease":
        rep = json.loads((folder / "report.json").read_text())
        rep["lesions"][0]["disease"] = "no_such_disease"
        (folder / "report.json").write_text(json.dumps(rep))
        return folder
    if how == "nan":
        arr = arr.astype(np.float32)
        arr[2, 3, 3] = np.nan
    elif how == "mr":
        arr = np.clip(arr, -330, 1000)
    new = sitk.GetImageFromArray(arr)
    new.CopyInformation(img)
    sitk.WriteImage(new, str(folder / "image.nii.gz"), useCompression=True)
    return folder


def _bomb(folder: Path, shape=(1024, 1024, 512)) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkInt16), str(folder / "h.nii"))
    header = bytearray((folder / "h.nii").read_bytes()[:352])
    header[40:56] = np.array([3, *shape, 1, 1, 1, 1], "<i2").tobytes()
    block = gzip.compress(bytes(64 << 20), 9)
    with open(folder / "image.nii.gz", "wb") as f:
        f.write(gzip.compress(bytes(header)))
        for _ in range(int(np.prod(shape)) * 2 // (64 << 20)):
            f.write(block)
    return folder


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def server_probes(tmp: Path, big: tuple[int, int, int]) -> int:
    import httpx
    import SimpleITK as sitk

    from malenia.server.testdata import ServerProcess, make_case, make_model_folder

    make_model_folder(tmp / "base")
    srv = ServerProcess(tmp / "srv", settings={"base_model": str(tmp / "base")}).start()
    auth = {"Authorization": f"Bearer {srv.token}"}

    def upload(folder: Path) -> int:
        files = {n: (n, (folder / f).read_bytes()) for n, f in
                 (("image", "image.nii.gz"), ("lesions", "lesions.nii.gz"), ("report", "report.json"))}
        return httpx.post(f"{srv.url}/cases", files=files, headers=auth, timeout=600).status_code

    failures = 0
    try:
        accepted = [h for h in ("truncated", "nan", "zero_z", "mr", "disease")
                    if upload(_spoil(make_case(tmp / h, seed=1), h)) < 400]
        print(f"bad images: 5 kinds uploaded, silently accepted: {accepted or 'none'}")
        failures += len(accepted)
        fives = 0
        for body in ('{"steps": 1e400}', '{"steps": 3, "replay_fraction": NaN}', '{"steps": 1e400, "replay_fraction": -Infinity}'):
            fives += httpx.post(f"{srv.url}/jobs", content=body, headers={**auth, "Content-Type": "application/json"}).status_code >= 500
        rng = np.random.default_rng(0)
        for k in range(20):
            junk = rng.integers(0, 256, 1000 * (k + 1), dtype=np.uint8).tobytes()
            fives += httpx.post(f"{srv.url}/cases", content=(b"--b\r\n" if k % 2 else b"") + junk,
                                headers={**auth, "Content-Type": "multipart/form-data; boundary=b"}).status_code >= 500
        tracebacks = sum("Traceback" in line for line in srv.lines)
        print(f"hostile requests: 23 sent, {fives} answered 5xx, {tracebacks} traceback lines in the server log")
        failures += fives + tracebacks
        base = _peak_kib(srv.proc.pid)
        t = time.monotonic()
        code = upload(_bomb(make_case(tmp / "bomb", seed=2)))
        print(f"bomb (1024x1024x512 promised, {(tmp / 'bomb' / 'image.nii.gz').stat().st_size // 1024} KiB): HTTP {code} "
              f"in {time.monotonic() - t:.2f} s; server peak RSS {base // 1024} -> {_peak_kib(srv.proc.pid) // 1024} MiB")
        failures += code < 400
        folder = tmp / "big"
        folder.mkdir()
        rng = np.random.default_rng(0)
        arr = rng.normal(40, 30, big[::-1]).astype(np.int16)
        arr[:, :10] = -1000
        lab = np.zeros(arr.shape, np.uint8)
        lab[10:20, 100:140, 100:140] = 1
        for a, n in ((arr, "image.nii.gz"), (lab, "lesions.nii.gz")):
            sitk.WriteImage(sitk.GetImageFromArray(a), str(folder / n), useCompression=True)
        from malenia.server.testdata import report_json

        (folder / "report.json").write_text(json.dumps(report_json("big", [1])))
        t = time.monotonic()
        code = upload(folder)
        peak = _peak_kib(srv.proc.pid) // 1024
        print(f"valid {big} int16 upload ({(folder / 'image.nii.gz').stat().st_size // 2**20} MiB gz, "
              f"{arr.nbytes // 2**20} MiB of voxels): HTTP {code} in {time.monotonic() - t:.1f} s; server peak RSS {peak} MiB")
        failures += code != 201 or peak >= 1024
    finally:
        srv.stop()
    return failures


def stale_partials(tmp: Path) -> int:
    """kill -9 during a model import leaves a .partial folder; the next start removes it."""
    from malenia.server.testdata import make_model_folder

    src = make_model_folder(tmp / "msrc", extra_files={"big.bin": os.urandom(30 << 20)})
    data = tmp / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-m", "malenia.cli", "serve", "model", "import", str(src), "--data", str(data)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if list((data / "models").glob(".*partial*/big.bin")):  # killed in the middle of copying
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
    left = list((data / "models").glob(".*partial*"))
    for p in left:
        os.utime(p, (time.time() - 120, time.time() - 120))
    subprocess.run([sys.executable, "-m", "malenia.cli", "serve", "model", "list", "--data", str(data)], env=env,
                   capture_output=True)
    from malenia.server.layout import Layout
    from malenia.server.store import Store
    from malenia.server.versions import Registry

    Registry(Store(Layout(data).db), Layout(data)).reconcile()  # what a server start runs
    after = list((data / "models").glob(".*partial*"))
    print(f"kill -9 during import x3: {len(left)} partial folder(s) left, {len(after)} after the next start")
    return len(after)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--big", default="512,512,400")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bad = corrections(tmp, args.writers, args.trials) if args.trials else 0
        bad += model_imports(tmp, args.writers)
        bad += stale_partials(tmp)
        bad += server_probes(tmp, tuple(int(v) for v in args.big.split(",")))
    print("battery:", "PASS" if not bad else f"FAIL ({bad})")
    return int(bool(bad))


if __name__ == "__main__":
    sys.exit(main())
