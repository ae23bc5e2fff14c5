"""Small real inputs for exercising the server without the network: cases, model folders, a trainer double.

- `make_case(folder, ...)`: a training case in the dataset format (CT-like int16 image, instance labels,
  a report with vocabulary ids and optional free text), written with SimpleITK.
- `make_model_folder(folder, ...)`: a model folder with the files and manifest of docs/architecture.md
  (tiny weights; enough for registration, download and sha256 checks, not for inference).
- `python -m malenia.server.testdata train ...`: a trainer double that follows the training CLI contract
  (same options, `--progress json` lines, resumable RUN/checkpoints, RUN/model at the end) with a
  configurable step time, so queueing, cancel and restart behaviour can be tested while the real
  `malenia train` is slow or absent. Set the server's `train_command` to use it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from malenia.atomic import atomic_dir, write_json
from malenia.data.dataset import IMAGE_FILE, LESIONS_FILE, REPORT_FILE

def report_json(case_id: str, labels: list[int], free_text: str | None = None) -> dict[str, Any]:
    from malenia.data.dataset import CASE_FORMAT
    from malenia.server.validation import vocabulary_ids

    ids = sorted(vocabulary_ids())
    by_aspect: dict[str, str] = {}
    for aspect, desc_id in ids:
        by_aspect.setdefault(aspect, desc_id)
    lesions = []
    for k in labels:
        attrs = {a: [{"id": i, "text": f"vocabulary text of {i}"}] for a, i in by_aspect.items()}
        if free_text:
            attrs.setdefault("specific_features", []).append({"id": None, "text": free_text})
        lesions.append({"label": k, "disease": "kidney_cyst", "attributes": attrs})
    return {"format": CASE_FORMAT, "case_id": case_id, "source": "malenia.server.testdata",
            "enhancement": None, "lesions": lesions}


def make_case(folder: str | Path, shape_zyx: tuple[int, int, int] = (16, 32, 32), spacing=(1.5, 1.5, 3.0),
              n_lesions: int = 1, seed: int = 0, free_text: str | None = None, origin=(0.0, 0.0, 0.0),
              compress: bool = True) -> Path:
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 20, size=shape_zyx).astype(np.int16)
    image[:, :2] = -1000  # air at the border, so the HU range looks like CT
    labels = np.zeros(shape_zyx, np.uint8)
    z, y, x = np.indices(shape_zyx)
    for k in range(1, n_lesions + 1):
        c = [int(rng.integers(s // 4, 3 * s // 4)) for s in shape_zyx]
        r = max(2, min(shape_zyx) // 6)
        ball = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
        labels[ball & (labels == 0)] = k
        image[ball] = -10  # a hypodense lesion
    for arr, name in ((image, IMAGE_FILE), (labels, LESIONS_FILE)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        sitk.WriteImage(img, str(folder / name), useCompression=compress)
    present = sorted(int(v) for v in np.unique(labels) if v > 0)
    write_json(folder / REPORT_FILE, report_json(folder.name, present, free_text))
    return folder


def make_model_folder(folder: str | Path, name: str = "test-model", version: str = "0", seed: int = 0,
                      extra_files: dict[str, bytes] | None = None, real_bank: bool = False) -> Path:
    """A model folder in the documented layout. With real_bank, the attribute bank is the vocabulary
    embedded by the default text encoder (malenia.knowledge); otherwise a small placeholder tensor file."""
    from safetensors.numpy import save_file

    from malenia.model.folder import BANK, CARD, CONFIG, KNOWLEDGE, MANIFEST, MODEL_FORMAT, WEIGHTS, sha256_file

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    with atomic_dir(folder, overwrite=True) as staging:
        (staging / CONFIG).write_text(json.dumps({"name": "compact", "note": "test double"}) + "\n")
        save_file({"w": rng.normal(size=(8, 8)).astype(np.float32)}, str(staging / WEIGHTS))
        _bank(staging / BANK, rng, real_bank)
        (staging / KNOWLEDGE).write_text("{}\n")
        (staging / CARD).write_text(f"# {name}\n\nA test model folder.\n")
        for rel, data in (extra_files or {}).items():
            (staging / rel).write_bytes(data)
        files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        write_json(staging / MANIFEST, {
            "format": MODEL_FORMAT, "name": name, "version": version, "created": "2025-01-01T00:00:00Z",
            "malenia_version": "0.1.0", "config": "compact", "training_data": "none (test double)", "files": files})
    return folder


def _bank(path: Path, rng, real: bool) -> None:
    from safetensors.numpy import save_file

    if not real:
        save_file({"embeddings": rng.normal(size=(4, 8)).astype(np.float32)}, str(path))
        return
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.vocabulary import Vocabulary

    AttributeBank.build_or_load(Vocabulary.load(), load_text_encoder()).save(path)


# -- the trainer double ---------------------------------------------------------------------------

def _progress(obj: dict[str, Any]) -> None:
    base = {"stage": "train", "fraction": None, "message": "", "step": None, "total": None, "loss": None, "val_dsc": None}
    print(json.dumps({**base, **obj}), flush=True)


def fake_train(argv: list[str]) -> int:
    from malenia.data.dataset import read_dataset
    from malenia.model.folder import MANIFEST, WEIGHTS, sha256_file, verify_model_folder

    p = argparse.ArgumentParser(prog="malenia.server.testdata train")
    p.add_argument("--config", default=None)  # as `malenia train`: --init's own by default
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--init", type=Path)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--val-split")
    p.add_argument("--replay", type=Path)
    p.add_argument("--replay-fraction", type=float)
    p.add_argument("--progress", default="bar")
    p.add_argument("--checkpoint-every", type=int, default=5)
    args = p.parse_args(argv)
    step_s = float(os.environ.get("MALENIA_FAKE_STEP_SECONDS", "0.05"))
    index = read_dataset(args.data)
    train_ids = index.split_cases(args.split)
    val_ids = index.split_cases(args.val_split) if args.val_split else []
    if args.replay:
        read_dataset(args.replay)
    if os.environ.get("MALENIA_FAKE_FAIL"):
        print("fake trainer: failing on purpose (MALENIA_FAKE_FAIL)", file=sys.stderr, flush=True)
        return 3
    verify_model_folder(args.init)
    ckpts = args.out / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    done = sorted(int(f.stem.split("_")[1]) for f in ckpts.glob("step_*.json"))
    start = done[-1] if done else 0
    _progress({"step": start, "total": args.steps, "fraction": start / args.steps,
               "message": f"resuming at step {start}" if start else f"starting on {len(train_ids)} case(s)"})
    for step in range(start + 1, args.steps + 1):
        time.sleep(step_s)
        loss = 1.0 / step
        val = round(0.5 + 0.4 * step / args.steps, 4) if val_ids and step == args.steps else None
        _progress({"step": step, "total": args.steps, "fraction": step / args.steps, "loss": loss, "val_dsc": val})
        if step % args.checkpoint_every == 0 or step == args.steps:
            write_json(ckpts / f"step_{step}.json", {"step": step, "resumed_from": start})
    with atomic_dir(args.out / "model", overwrite=True) as staging:
        for f in args.init.iterdir():
            if f.is_file():
                shutil.copy2(f, staging / f.name)
        from safetensors.numpy import save_file

        save_file({"w": np.full((8, 8), float(args.steps), np.float32),
                   "resumed_from": np.array([start], np.int64)}, str(staging / WEIGHTS))
        manifest = json.loads((staging / MANIFEST).read_text())
        manifest["files"] = {rel: sha256_file(staging / rel) for rel in manifest["files"]}
        manifest["training"] = {"steps": args.steps, "resumed_from": start, "train_cases": len(train_ids)}
        write_json(staging / MANIFEST, manifest)
    _progress({"stage": "done", "step": args.steps, "total": args.steps, "fraction": 1.0, "message": "model folder written"})
    return 0


# -- a real server in a subprocess ----------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`malenia serve` as a child process on 127.0.0.1 (tests, benchmarks). The first-start token is parsed
    from its output; `kill()` is SIGKILL of the server process alone (its job runs in its own session)."""

    def __init__(self, data: str | Path, settings: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 port: int | None = None, log_level: str = "warning"):
        self.data = Path(data)
        self.log_level = log_level
        self.data.mkdir(parents=True, exist_ok=True)
        if settings is not None:
            write_json(self.data / "server.json", settings)
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        self.lines: list[str] = []
        self.proc = None

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        import subprocess
        import threading

        import httpx

        self.lines, self.token = [], None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "malenia.cli", "serve", "--data", str(self.data), "--port", str(self.port),
             "--log-level", self.log_level], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=self.env)

        def pump(stream=self.proc.stdout) -> None:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start:\n" + "\n".join(self.lines[-20:]))
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("server did not answer /health in time:\n" + "\n".join(self.lines[-20:]))
        for line in self.lines:
            if line.strip().startswith("mlt_"):
                self.token = line.strip()
        token_file = self.data / "initial_token.txt"  # output is a pipe here: the first token goes to this file
        if self.token is None and token_file.is_file():
            self.token = token_file.read_text().strip()
            token_file.unlink()  # as the printed advice says: copy it, then delete the file
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        sys.exit(fake_train(sys.argv[2:]))
    print("usage: python -m malenia.server.testdata train [malenia train options]", file=sys.stderr)
    sys.exit(2)
