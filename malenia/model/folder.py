"""The model folder: everything inference needs, checked by sha256 (docs/architecture.md, "Model folder").

    MODEL/manifest.json                {"format": "malenia-model/1", "name", "version", "created",
                                        "malenia_version", "config", "training_data", "files": {relpath: sha256}}
    MODEL/config.json                  MaleniaConfig.to_dict()
    MODEL/weights.safetensors          network weights (no pickle anywhere)
    MODEL/attribute_bank.safetensors   the stored attribute bank (inference needs no text encoder)
    MODEL/knowledge_table.json         the knowledge table the model was evaluated with
    MODEL/MODEL_CARD.md                generated from the evaluation (optional until evaluated)
    MODEL/report_rows.safetensors      optional: whole-report embeddings of a single-positive (ablation) model
    MODEL/inference.json               optional: post-processing chosen on a validation split (`malenia calibrate`):
                                        {"threshold", "min_volume_mm3", "calibration": {...}}, and the "unclassified"
                                        rule fitted on the model's scores (`malenia knowledge openset --fit`): "disease"
    MODEL/measured_attributes.json     optional: attribute classifiers on lesion measurements
                                        (`malenia fit-attributes`; format owned by malenia.knowledge.measured_attributes)
    MODEL/lesion_verifier.json         optional: false-positive reduction on each predicted lesion
                                        (`malenia fit-verifier`; format owned by malenia.model.lesion_verifier)
    MODEL/appearance.json              optional: per trained disease, the look of its lesions, which rules a
                                        disease out for a lesion unlike them (`malenia fit-appearance`, its cut
                                        calibrated by `malenia knowledge openset --fit`; malenia.knowledge.appearance)

Used by training (RUN/model), `malenia segment`, `malenia evaluate`, the Slicer module and the retraining
server. The folder is written whole (malenia.atomic.atomic_dir); loading refuses any missing file, any
sha256 mismatch, any file not in the manifest that it would read, and weights that do not fit the config.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np

from malenia import __version__
from malenia.atomic import atomic_dir, write_json
from malenia.errors import ModelError
from malenia.file_hash import sha256_file

MODEL_FORMAT = "malenia-model/1"
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
BANK = "attribute_bank.safetensors"
KNOWLEDGE = "knowledge_table.json"
CARD = "MODEL_CARD.md"
REPORT_ROWS = "report_rows.safetensors"  # only single-positive ablation models: whole-report embeddings
INFERENCE = "inference.json"  # only calibrated models: their post-processing defaults
REQUIRED = (CONFIG, WEIGHTS, BANK, KNOWLEDGE)
DEFAULT_THRESHOLD = 0.5  # foreground probability of a lesion voxel, for models never calibrated
DEFAULT_MIN_VOLUME_MM3 = 50.0  # smaller components are removed (a 4.6 mm sphere)


@dataclass(frozen=True)
class InferenceDefaults:
    """Post-processing a model is used with unless the user overrides it, and its "unclassified" rule."""

    threshold: float = DEFAULT_THRESHOLD
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3
    calibration: dict[str, Any] | None = None  # how they were chosen (None: the project defaults)
    disease: dict[str, Any] | None = None  # the rule fitted on the model's scores (`malenia knowledge openset --fit`)

    def to_dict(self) -> dict[str, Any]:
        data = {"threshold": self.threshold, "min_volume_mm3": self.min_volume_mm3, "calibration": self.calibration}
        return data | ({"disease": self.disease} if self.disease is not None else {})

    def inherited_by(self, parent: str) -> "InferenceDefaults | None":
        """What a model fine-tuned from this one starts with: the same values and rule, marked as inherited
        (None when these are only the project defaults). Like the lesion verifier and the appearance cut, both
        were chosen on the parent's outputs and stay in force until refitted on the child's: a retrained model
        that fell back to the project defaults and the table's rule would name lesions by another rule."""
        if self.calibration is None and self.disease is None:
            return None
        summary = {k: v for k, v in (self.calibration or {}).items() if k not in ("table", "inherited_from")}
        calibration = {"inherited_from": parent, **summary} if self.calibration is not None else None
        disease = {**self.disease, "inherited_from": parent} if self.disease is not None else None
        return InferenceDefaults(self.threshold, self.min_volume_mm3, calibration, disease)

    @staticmethod
    def from_dict(data: Any, where: str = INFERENCE) -> "InferenceDefaults":
        try:
            threshold, volume = float(data["threshold"]), float(data["min_volume_mm3"])
        except (TypeError, KeyError, ValueError) as err:
            raise ModelError(f"{where}: needs numeric 'threshold' and 'min_volume_mm3' ({err!r})") from None
        if not 0.0 < threshold < 1.0 or not volume >= 0.0:
            raise ModelError(f"{where}: threshold must be in (0, 1) and min_volume_mm3 >= 0, "
                             f"got {threshold} and {volume}")
        disease = data.get("disease")
        return InferenceDefaults(threshold, volume, data.get("calibration"), disease if isinstance(disease, dict) else None)


@dataclass
class LoadedModel:
    """A verified model folder. `network` is built in eval mode unless loaded with build_network=False."""

    path: Path
    manifest: dict[str, Any]
    config: Any  # MaleniaConfig
    bank: Any  # AttributeBank
    network: Any = None  # MaleniaNet

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", ""))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def sha256(self) -> str:
        """Identity of the model in reports: the sha256 of its weights file."""
        return self.manifest["files"][WEIGHTS]

    @property
    def knowledge_table_path(self) -> Path:
        return self.path / KNOWLEDGE

    def knowledge_table(self):
        """The KnowledgeTable stored with the model (the one it was evaluated with)."""
        from malenia.knowledge.table import KnowledgeTable

        return KnowledgeTable.load(self.knowledge_table_path)

    def report_rows(self):
        """Whole-report embeddings [Q, Dt] of a single-positive ablation model, else None."""
        p = self.path / REPORT_ROWS
        if not p.exists():
            return None
        from safetensors.numpy import load_file

        return load_file(str(p))["embeddings"]

    def optional_json(self, name: str) -> Any:
        """The parsed content of an optional file the manifest lists, or None when it lists none."""
        if name not in self.manifest.get("files", {}):
            return None
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelError(f"{path}: unreadable ({err})") from None

    def trained_flip_axes(self) -> tuple[int, ...] | None:
        """The axes (z, y, x of the preprocessed volume) its training mirrored patches about (the manifest's
        training.augment.flip_axes, recorded by `malenia train`); None when the manifest does not say."""
        augment = (self.manifest.get("training") or {}).get("augment")
        if not isinstance(augment, dict) or not isinstance(augment.get("flip_axes"), list):
            return None
        return tuple(int(a) for a in augment["flip_axes"])

    def inference_defaults(self) -> InferenceDefaults:
        """The calibrated post-processing (inference.json) or, for an uncalibrated model, the project defaults."""
        data = self.optional_json(INFERENCE)
        return InferenceDefaults() if data is None else InferenceDefaults.from_dict(data, str(self.path / INFERENCE))

    def measured_attributes(self):
        """The fitted MeasuredAttributes (measured_attributes.json), or None when the model has none."""
        from malenia.knowledge.measured_attributes import FILE, MeasuredAttributes

        data = self.optional_json(FILE)
        return None if data is None else MeasuredAttributes.from_json(data, str(self.path / FILE))

    def lesion_verifier(self):
        """The fitted LesionVerifier (lesion_verifier.json), or None when the model has none."""
        from malenia.model.lesion_verifier import FILE, LesionVerifier

        data = self.optional_json(FILE)
        return None if data is None else LesionVerifier.from_json(data, str(self.path / FILE))

    def appearance(self):
        """The fitted Appearance (appearance.json), or None when the model has none."""
        from malenia.knowledge.appearance import FILE, Appearance

        data = self.optional_json(FILE)
        return None if data is None else Appearance.from_json(data, str(self.path / FILE))

    def card(self) -> str | None:
        p = self.path / CARD
        return p.read_text(encoding="utf-8") if p.exists() else None


def _manifest(folder: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    files = {p.relative_to(folder).as_posix(): sha256_file(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    return {"format": MODEL_FORMAT, **meta, "files": files}


def save_model_folder(target: str | Path, *, config, network, bank,
                      knowledge_table: str | Path | Mapping[str, Any], name: str, version: str,
                      training_data: str, model_card: str | None = None,
                      extra: Mapping[str, Any] | None = None, report_rows=None,
                      inference: InferenceDefaults | None = None, files: Mapping[str, bytes] | None = None,
                      overwrite: bool = False) -> Path:
    """Writes a complete model folder at `target` atomically and returns its path.

    `knowledge_table` is the path of a knowledge-table JSON (copied as is) or its parsed content.
    `extra` adds keys to the manifest (e.g. training steps, evaluation summary). `knowledge_table` may also
    be a KnowledgeTable (its `to_json()` is stored). `report_rows` (float32 [Q, Dt]) are stored only for
    single-positive ablation models. `inference` is stored as inference.json (calibrated post-processing).
    `files` are further files stored as given (relative path -> content), e.g. what a fine-tune inherits.
    """
    from safetensors.torch import save_model

    from malenia.model.precision import standard_layout
    from malenia.tensor_files import sort_metadata

    target = Path(target)
    if target.exists() and not overwrite:
        raise ModelError(f"model folder {target} exists (use overwrite)")
    with atomic_dir(target, overwrite=overwrite, replaces=MANIFEST) as staging:
        (staging / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        # save_model drops the aliases nnU-Net's modules register for shared weights (safetensors refuses them).
        with standard_layout(network) as plain:
            save_model(plain, str(staging / WEIGHTS), metadata={"format": MODEL_FORMAT, "config": config.name})
        sort_metadata(staging / WEIGHTS)  # the same weights, the same sha256
        bank.save(staging / BANK)
        if report_rows is not None:
            from safetensors.numpy import save_file as save_np

            save_np({"embeddings": np.ascontiguousarray(report_rows, dtype=np.float32)}, str(staging / REPORT_ROWS))
        if hasattr(knowledge_table, "to_json"):
            knowledge_table = knowledge_table.to_json()
        if isinstance(knowledge_table, (str, Path)):
            shutil.copyfile(knowledge_table, staging / KNOWLEDGE)
        else:
            (staging / KNOWLEDGE).write_text(json.dumps(knowledge_table, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        if model_card is not None:
            (staging / CARD).write_text(model_card, encoding="utf-8")
        if inference is not None:
            (staging / INFERENCE).write_text(json.dumps(inference.to_dict(), indent=2) + "\n", encoding="utf-8")
        for rel, content in (files or {}).items():
            (staging / safe_relpath(rel)).write_bytes(content)
        meta = {
            "name": name,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "malenia_version": __version__,
            "config": config.name,
            "training_data": training_data,
            **dict(extra or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(_manifest(staging, meta), indent=2) + "\n", encoding="utf-8")
    return target


def update_model_folder(folder: str | Path, files: Mapping[str, str | bytes], manifest_extra: Mapping[str, Any] | None = None) -> Path:
    """Replaces or adds files (e.g. MODEL_CARD.md) and re-hashes the manifest; the folder is swapped whole."""
    folder = Path(folder)
    verify_model_folder(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    with atomic_dir(folder, overwrite=True) as staging:
        for p in folder.rglob("*"):
            rel = p.relative_to(folder)
            if p.is_dir():
                (staging / rel).mkdir(parents=True, exist_ok=True)
            elif p.name != MANIFEST:
                shutil.copy2(p, staging / rel)
        for rel, content in files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        meta = {k: v for k, v in manifest.items() if k not in ("format", "files")}
        meta.update(manifest_extra or {})
        (staging / MANIFEST).write_text(json.dumps(_manifest(staging, meta), indent=2) + "\n", encoding="utf-8")
    return folder


def safe_relpath(rel: Any) -> str:
    """A manifest path that stays inside the folder: relative, no `..`, no backslash, no hidden name."""
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or rel.startswith(".") \
            or ":" in p.parts[0]:
        raise ModelError(f"manifest lists an unsafe path {str(rel)[:120]!r} (must stay inside the model folder)")
    return str(p)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """manifest.json of a model folder, its format and every listed path checked (not the files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder not found: {folder}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder}: not a Malenia model folder (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{folder / MANIFEST}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ModelError(f"{folder}: unknown model format {found!r}; expected {MODEL_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelError(f"{folder / MANIFEST}: 'files' must map paths to sha256")
    for rel in files:
        safe_relpath(rel)
    return manifest


def verify_model_folder(folder: str | Path) -> dict[str, Any]:
    """Checks the manifest, its paths and every sha256; returns the manifest. Raises ModelError with one line."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest["files"]
    for rel in REQUIRED:
        if rel not in files:
            raise ModelError(f"{folder}: manifest does not list required file {rel}")
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file() or path.is_symlink():
            raise ModelError(f"{folder}: missing file {rel}")
        if sha256_file(path) != digest:
            raise ModelError(f"{folder}: sha256 mismatch for {rel} (file changed or corrupted)")
    return manifest


def copy_model_files(src: str | Path, staging: str | Path, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Copies a verified model folder's manifest and listed files (nothing else) into `staging`."""
    src, staging = Path(src), Path(staging)
    manifest = verify_model_folder(src) if manifest is None else manifest
    for rel in [MANIFEST, *manifest["files"]]:
        dst = staging / safe_relpath(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst)
    return dict(manifest)


def rewrite_manifest(folder: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Writes `manifest` with the sha256 of its listed files as they are now in `folder`; returns it."""
    folder = Path(folder)
    out = {**manifest, "format": MODEL_FORMAT}
    out["files"] = {rel: sha256_file(folder / safe_relpath(rel)) for rel in manifest["files"]}
    write_json(folder / MANIFEST, out)
    return out


def copy_model_folder(src: str | Path, dst: str | Path, overwrite: bool = True) -> Path:
    """A verified copy of a model folder, written whole."""
    manifest = verify_model_folder(src)
    with atomic_dir(dst, overwrite=overwrite, replaces=MANIFEST) as staging:
        copy_model_files(src, staging, manifest)
        verify_model_folder(staging)
    return Path(dst)


def load_model_folder(path: str | Path | None = None, device: str = "cpu", build_network: bool = True) -> LoadedModel:
    """Verifies and loads a model folder (default: the built-in model in Resources/model)."""
    from safetensors import SafetensorError, safe_open

    from malenia.knowledge.bank import AttributeBank
    from malenia.model.config import MaleniaConfig
    from malenia.paths import builtin_model_dir

    folder = Path(path) if path is not None else builtin_model_dir()
    manifest = verify_model_folder(folder)
    try:
        config = MaleniaConfig.from_dict(json.loads((folder / CONFIG).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as err:
        raise ModelError(f"{folder / CONFIG}: unreadable model config ({err})") from None
    except ModelError as err:  # a value the config refuses (a 0-voxel patch, a string for a number)
        raise ModelError(f"{folder / CONFIG}: {err}") from None
    if manifest.get("config") not in (None, config.name):
        raise ModelError(f"{folder}: manifest says config {manifest.get('config')!r} but config.json is {config.name!r}")
    try:
        bank = AttributeBank.load(folder / BANK)
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ModelError(f"{folder}: unreadable weights or attribute bank ({str(err).splitlines()[0]})") from None
    if int(bank.embeddings.shape[1]) != int(config.text_dim):
        raise ModelError(f"{folder}: attribute bank has {bank.embeddings.shape[1]}-d embeddings, config expects {config.text_dim}")
    loaded = LoadedModel(folder, manifest, config, bank, None)
    if build_network:
        from malenia.model.network import MaleniaNet

        net = MaleniaNet(config)
        load_weights(net, folder / WEIGHTS)
        loaded.network = net.to(device).eval()
    return loaded


# The backbone's first convolution: the only weight whose shape depends on the input channels.
FIRST_CONV = "backbone.encoder.stages.0.0.convs.0.conv.weight"


def load_weights(network, weights_path: str | Path, new_parts: tuple[str, ...] = (), widen_from=None) -> None:
    """Loads a weights.safetensors into `network` strictly (ModelError when it does not fit).

    `new_parts`: parameter-name prefixes the file may lack (a part the network adds, e.g. "dense.");
    everything else must match exactly. `widen_from`: the config of the file's network, whose input channels
    are this network's first ones (MaleniaConfig.extends_windows_of); the added channels' first-convolution
    weights start at zero, so the network computes what the file's did until training moves them (as in
    Net2Net's function-preserving widening)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from malenia.model.precision import standard_layout

    try:
        with standard_layout(network) as plain:  # safetensors' alias check needs the standard layout
            if widen_from is not None:
                missing, unexpected = plain.load_state_dict(_widened(weights_path, plain, widen_from),
                                                            strict=not new_parts)
            else:
                missing, unexpected = load_model(plain, str(weights_path), strict=not new_parts)
    except (RuntimeError, SafetensorError, OSError) as err:
        msg = " ".join(str(err).split())[:300]
        raise ModelError(f"{weights_path}: weights do not fit the model configuration ({msg})") from None
    wrong = sorted(unexpected) + [k for k in missing if not k.startswith(new_parts)]
    if wrong:
        raise ModelError(f"{weights_path}: weights do not fit the model configuration ({', '.join(wrong[:5])})")
    import torch

    bad = [name for name, t in network.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:  # a diverged training run: every prediction would be NaN, i.e. silently "no lesion"
        raise ModelError(f"{weights_path}: {len(bad)} weight tensor(s) hold NaN or infinite values "
                         f"(first: {bad[0]}); the model is unusable (training diverged?)")


def _widened(weights_path: str | Path, network, parent_config) -> dict:
    """The parent's tensors (loaded into its own network, which resolves safetensors' shared names), its first
    convolution zero-padded to the network's input channels."""
    import torch

    from malenia.model.network import MaleniaNet

    parent = MaleniaNet(parent_config)
    load_weights(parent, weights_path)
    state = parent.state_dict()
    old, channels = state[FIRST_CONV], network.state_dict()[FIRST_CONV].shape[1]
    widened = torch.cat([old, old.new_zeros((old.shape[0], channels - old.shape[1], *old.shape[2:]))], 1)
    # the library's modules reach the first convolution under several names, all one tensor
    return {k: widened if v.data_ptr() == old.data_ptr() else v for k, v in state.items()}
