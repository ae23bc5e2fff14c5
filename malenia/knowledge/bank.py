"""The attribute bank: text-encoder embeddings of every vocabulary description, one row each.

Stored as safetensors (tensor "embeddings" float32 [R, D]; ids, texts, aspects, encoder id and
vocabulary hash as JSON strings in the header metadata; nothing pickled). Inference loads it
without the text encoder. `build_or_load` caches one file per (encoder id, vocabulary hash), so a
reworded vocabulary or another encoder gives a new bank and an unchanged pair reuses the file.
Embeddings are the encoder's raw unit vectors; the model projects them (DESIGN "Text").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from malenia.aspects import ASPECTS
from malenia.atomic import atomic_path
from malenia.tensor_files import sort_metadata
from malenia.errors import InputError, ModelError
from malenia.knowledge.vocabulary import Vocabulary
from malenia.paths import cache_dir as default_cache_dir

BANK_FORMAT = "malenia-attribute-bank/1"
FREE_TEXT_PREFIX = "free"


@dataclass
class AttributeBank:
    ids: list[str]
    texts: list[str]
    aspects: list[str]
    embeddings: np.ndarray  # float32 [R, D]
    encoder_id: str
    vocab_hash: str
    origin: str = field(default="memory", compare=False)  # "built", "cache" or "file": how it was obtained

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        n = len(self.ids)
        if not (len(self.texts) == len(self.aspects) == n == self.embeddings.shape[0]) or self.embeddings.ndim != 2:
            raise ModelError(f"attribute bank is inconsistent: {n} ids, {len(self.texts)} texts, "
                             f"{len(self.aspects)} aspects, embeddings {self.embeddings.shape}")
        bad = sorted(set(self.aspects) - set(ASPECTS))
        if bad:
            raise ModelError(f"attribute bank has unknown aspect(s) {bad}")
        self._index = {i: r for r, i in enumerate(self.ids)}

    # -- queries -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, desc_id: str) -> int:
        try:
            return self._index[desc_id]
        except KeyError:
            raise InputError(f"description id {desc_id!r} is not in the attribute bank") from None

    def rows_for_aspect(self, aspect: str) -> np.ndarray:
        if aspect not in ASPECTS:
            raise InputError(f"unknown aspect {aspect!r}; expected one of {list(ASPECTS)}")
        return np.array([r for r, a in enumerate(self.aspects) if a == aspect], dtype=np.int64)

    def aspect_indices(self) -> np.ndarray:
        """Per row the aspect's position in malenia.aspects.ASPECTS (the model's bank_aspects)."""
        return np.array([ASPECTS.index(a) for a in self.aspects], dtype=np.int64)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, vocab: Vocabulary, encoder) -> "AttributeBank":
        ids = vocab.ids()
        texts = [vocab.text(i) for i in ids]
        emb = encoder.encode(texts)
        return cls(ids, texts, [vocab.aspect_of(i) for i in ids], emb, encoder.encoder_id, vocab.hash, origin="built")

    @staticmethod
    def cache_path(encoder_id: str, vocab_hash: str, cache_dir: str | Path | None = None) -> Path:
        folder = Path(cache_dir) if cache_dir else default_cache_dir() / "banks"
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_id)
        return folder / f"bank-{safe}-{vocab_hash}.safetensors"

    @classmethod
    def build_or_load(cls, vocab: Vocabulary, encoder, cache_dir: str | Path | None = None) -> "AttributeBank":
        """The cached bank for (encoder id, vocabulary hash), built and saved when absent or stale."""
        path = cls.cache_path(encoder.encoder_id, vocab.hash, cache_dir)
        if path.is_file():
            try:
                bank = cls.load(path)
                if bank.encoder_id == encoder.encoder_id and bank.vocab_hash == vocab.hash and bank.ids == vocab.ids():
                    bank.origin = "cache"
                    return bank
            except (InputError, ModelError):
                pass  # unreadable or stale cache entry: rebuilt below
        bank = cls.build(vocab, encoder)
        bank.save(path)
        return bank

    def extend(self, texts: Sequence[str], aspect: str, encoder) -> list[str]:
        """Adds free-text descriptions of `aspect`; returns their ids (`free.<aspect>.<hash>`).
        A text already in the bank is not added twice; the encoder must be the bank's."""
        if aspect not in ASPECTS:
            raise InputError(f"unknown aspect {aspect!r}; expected one of {list(ASPECTS)}")
        if encoder.encoder_id != self.encoder_id:
            raise ModelError(f"cannot extend a bank of {self.encoder_id} with embeddings of {encoder.encoder_id}")
        ids, new_texts = [], []
        for text in texts:
            text = " ".join(str(text).split())
            if not text:
                raise InputError("free-text description is empty")
            desc_id = f"{FREE_TEXT_PREFIX}.{aspect}.{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"
            ids.append(desc_id)
            if desc_id not in self._index and desc_id not in ids[:-1]:
                new_texts.append((desc_id, text))
        if new_texts:
            emb = encoder.encode([t for _, t in new_texts])
            self.ids += [i for i, _ in new_texts]
            self.texts += [t for _, t in new_texts]
            self.aspects += [aspect] * len(new_texts)
            self.embeddings = np.concatenate([self.embeddings, emb.astype(np.float32)], axis=0)
            self._index = {i: r for r, i in enumerate(self.ids)}
        return ids

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        meta = {
            "format": BANK_FORMAT,
            "encoder_id": self.encoder_id,
            "vocab_hash": self.vocab_hash,
            "ids": json.dumps(self.ids, ensure_ascii=False),
            "texts": json.dumps(self.texts, ensure_ascii=False),
            "aspects": json.dumps(self.aspects),
        }
        with atomic_path(path) as tmp:
            save_file({"embeddings": self.embeddings}, str(tmp), metadata=meta)
            sort_metadata(tmp)  # the same bank, the same sha256
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttributeBank":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"attribute bank not found: {path}")
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings")
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise ModelError(f"{path}: not a readable attribute bank ({err})") from None
        if meta.get("format") != BANK_FORMAT:
            raise ModelError(f"{path}: not a Malenia attribute bank (format must be {BANK_FORMAT!r})")
        try:
            ids, texts, aspects = (json.loads(meta[k]) for k in ("ids", "texts", "aspects"))
        except (KeyError, json.JSONDecodeError) as err:
            raise ModelError(f"{path}: attribute bank metadata is damaged ({err})") from None
        return cls(ids, texts, aspects, emb, meta.get("encoder_id", ""), meta.get("vocab_hash", ""), origin="file")


def report_paragraph(descriptions: Mapping[str, Sequence[str]] | Sequence[str]) -> str:
    """One lesion's descriptions joined into a report paragraph (aspect order of ASPECTS)."""
    if isinstance(descriptions, Mapping):
        parts = [str(t) for a in ASPECTS for t in (descriptions.get(a) or [])]
    else:
        parts = [str(t) for t in descriptions]
    parts = [p.strip().rstrip(".") for p in parts if p and p.strip()]
    if not parts:
        raise InputError("a report paragraph needs at least one description")
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def encode_report_paragraph(descriptions: Mapping[str, Sequence[str]] | Sequence[str], encoder) -> np.ndarray:
    """Baseline ablation (one positive per lesion): the embedding [D] of the whole paragraph."""
    return encoder.encode([report_paragraph(descriptions)])[0]


def encode_report_paragraphs(lesions: Sequence[Mapping[str, Sequence[str]] | Sequence[str]], encoder) -> np.ndarray:
    """Batch form of encode_report_paragraph: float32 [N, D] unit rows."""
    return encoder.encode([report_paragraph(d) for d in lesions])
