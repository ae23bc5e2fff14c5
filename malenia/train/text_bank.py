"""The vocabulary's attribute bank for training, without loading the text encoder when nothing new is embedded.

A GPU machine may lack the 88 MB encoder package: the bank then comes from `--init`'s model folder or from the
bank cache (MALENIA_CACHE/banks, one file per encoder id and vocabulary hash), and the encoder is loaded only
when a text has to be embedded (a free-text description or report not in the bank); if it cannot be loaded
then, the error names those texts. Free texts known in advance (the transplanted looks' locations of the synthetic
training data) are embedded ahead, where the encoder is, into a cache bank that such a machine reads first:
`python -m malenia.train.text_bank CACHE/banks` (scripts/gpu_payload.sh --texts).
"""

from __future__ import annotations

from pathlib import Path

from malenia.errors import InputError, ModelError


def _encoder_name(name_or_path: str | Path | None) -> str:
    from malenia.knowledge.encoder import DEFAULT_ENCODER

    if name_or_path is None or str(name_or_path) in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        return DEFAULT_ENCODER
    return Path(name_or_path).expanduser().name


class LazyEncoder:
    """The text encoder, loaded on the first text it has to embed; until then it carries the bank's id."""

    def __init__(self, name_or_path: str | Path | None, encoder_id: str, dim: int):
        self.name_or_path, self.encoder_id, self.dim = name_or_path, encoder_id, dim
        self._encoder = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def load(self, texts: list[str]):
        """The real encoder (loaded once); `texts`, the ones that need it, name it in the error."""
        if self._encoder is None:
            from malenia.knowledge.encoder import load_text_encoder

            try:
                self._encoder = load_text_encoder(self.name_or_path)
            except ModelError as err:
                shown = "; ".join(repr(t) for t in list(texts)[:3]) + (" ..." if len(texts) > 3 else "")
                raise InputError(f"{len(texts)} text(s) are not in the attribute bank and need the text encoder "
                                 f"{_encoder_name(self.name_or_path)!r}, which cannot be loaded here ({err}): "
                                 f"{shown}") from None
            self.encoder_id, self.dim = self._encoder.encoder_id, self._encoder.dim
        return self._encoder

    def encode(self, texts: list[str], batch_size: int = 64):
        return self.load(texts).encode(list(texts), batch_size)


def _fits(bank, vocab, name: str, encoder_id: str | None) -> bool:
    """The bank holds this vocabulary (first, in order) embedded by this encoder (its id when known)."""
    same_encoder = bank.encoder_id == encoder_id if encoder_id else bank.encoder_id.split("@")[0] == name
    return same_encoder and bank.vocab_hash == vocab.hash and bank.ids[: len(vocab.ids())] == vocab.ids()


def _stored_banks(vocab, init: Path | None):
    """Candidate banks without an encoder: the cache's files for this vocabulary, then --init's model folder,
    then the built-in model's (shipped with the code, so a bare GPU machine trains and benches from scratch)."""
    from malenia.knowledge.bank import AttributeBank
    from malenia.model.folder import BANK
    from malenia.paths import builtin_model_dir, cache_dir

    # the newest first: an older package version of the same encoder may have left a file too
    paths = sorted((cache_dir() / "banks").glob(f"bank-*-{vocab.hash}.safetensors"), key=lambda p: -p.stat().st_mtime)
    if init is not None:
        paths.append(Path(init) / BANK)
    paths.append(builtin_model_dir() / BANK)
    for path in paths:
        try:
            yield path, AttributeBank.load(path)
        except (InputError, ModelError, OSError):
            continue  # unreadable: another candidate may do


def vocabulary_bank(vocab, encoder_name: str | Path | None, init: Path | None = None):
    """(bank, encoder): the vocabulary's bank and a LazyEncoder for texts it lacks.

    With the encoder installed: the cached bank of its exact id, built (encoder loaded) when absent. Without it:
    a stored bank of the same encoder name, from the cache, --init's model folder or the built-in model."""
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import text_encoder_id

    name = _encoder_name(encoder_name)
    try:
        encoder_id = text_encoder_id(encoder_name)
    except ModelError as err:
        encoder_id, missing = None, err
    for path, bank in _stored_banks(vocab, init if encoder_id is None else None):
        if _fits(bank, vocab, name, encoder_id):
            bank.origin = "cache" if path.name.startswith("bank-") else "file"
            return bank, LazyEncoder(encoder_name, bank.encoder_id, bank.dim)
    if encoder_id is None:
        raise InputError(f"no attribute bank of {name!r} for this vocabulary ({vocab.hash}) in the cache, --init or the built-in model, "
                         f"and the text encoder that would embed its {len(vocab.ids())} descriptions cannot be "
                         f"loaded ({missing})")
    encoder = LazyEncoder(encoder_name, encoder_id, 0)
    return AttributeBank.build_or_load(vocab, encoder.load([vocab.text(i) for i in vocab.ids()])), encoder


def training_only_texts() -> dict[str, list[str]]:
    """Free texts the synthetic training data may hold, per aspect: the transplanted looks' locations and
    densities, which the vocabulary lacks (malenia.data.synthesis.novel.FREE_LOCATIONS, FREE_DENSITIES)."""
    from malenia.data.synthesis.novel import FREE_DENSITIES, FREE_LOCATIONS

    return {"location": sorted(set(FREE_LOCATIONS.values())), "density": sorted(set(FREE_DENSITIES.values()))}


def cache_bank_with_texts(banks_dir: str | Path, texts: dict[str, list[str]] | None = None,
                          encoder_name: str | Path | None = None) -> Path:
    """Writes the vocabulary's bank extended with `texts` (default: training_only_texts()) into `banks_dir` under
    the cache's file name, so that training where the encoder is missing finds the rows there (the cache is read
    before --init's folder and the built-in model). Loads the encoder; returns the file written."""
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.encoder import load_text_encoder
    from malenia.knowledge.vocabulary import Vocabulary

    vocab, encoder = Vocabulary.load(), load_text_encoder(encoder_name)
    bank = AttributeBank.build_or_load(vocab, encoder)  # this machine's cached vocabulary bank when it has one
    for aspect, aspect_texts in (training_only_texts() if texts is None else texts).items():
        bank.extend(list(aspect_texts), aspect, encoder)
    return bank.save(AttributeBank.cache_path(encoder.encoder_id, vocab.hash, banks_dir))


if __name__ == "__main__":  # scripts/gpu_payload.sh --texts: python -m malenia.train.text_bank BANKS_DIR
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m malenia.train.text_bank BANKS_DIR")
    print(cache_bank_with_texts(sys.argv[1]))
