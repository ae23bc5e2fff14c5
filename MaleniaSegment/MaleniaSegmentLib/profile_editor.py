"""Disease profile editor: a site profile's organ and, per aspect, its typical descriptions and weights.

"Estimate from corrections" fills the draft's weights from the lesions the radiologist saved under
its key in the corrections folder (malenia.knowledge.estimate, as `malenia knowledge add --from-data`);
"Test on this lesion" ranks the selected lesion against every disease of the table in force with
the draft in it (nothing is written); "Save profile" writes the site profile atomically
(malenia.knowledge.profiles) and re-ranks the lesions of the open result from their stored
scores (malenia.infer.rerank), so their names and segments follow at once, without
re-segmenting. Lesions the radiologist re-named keep the radiologist's disease.

`ProfileEditorLogic` has no Qt; `ProfileEditor` is plain Qt through `qt_compat` (Slicer's
PythonQt or PySide6), events out as Python callbacks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from malenia.aspects import ASPECT_NAMES, ASPECTS

try:  # the Qt shim shared by both modules (MaleniaCommon), or this package's own copy where it still lives here
    from MaleniaCommon import qt_compat
except ImportError:
    from . import qt_compat
from .review import DiseaseChoice

Callbacks, get, qt = qt_compat.Callbacks, qt_compat.get, qt_compat.qt

NEW_DISEASE = "New disease…"


@dataclass
class ProfileDraft:
    key: str
    name: str
    organ: str
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # aspect -> {description id: weight}
    exists: bool = False  # an existing disease (saving writes a site profile that overrides it)


@dataclass
class Ranking:
    call: str  # the disease key named, or "unclassified"
    reason: str
    rows: list[tuple[str, str, float]]  # (key, name, probability), most probable first


class ProfileEditorLogic:
    """Drafts, tests and saves profiles against the table in force (`load_table()` reloads it)."""

    def __init__(self, load_table: Callable[[], object], folder: str | Path):
        self.load_table = load_table
        self.folder = Path(folder)
        self.table = load_table()

    @property
    def vocab(self):
        return self.table.vocab

    def diseases(self) -> dict[str, str]:
        return {k: self.table.name(k) for k in self.table.diseases}

    def is_site_profile(self, key: str) -> bool:
        return any(p["key"] == key for p in self.table.origin.get("profiles", []))

    def draft(self, key: str | None = None, organ: str = "liver") -> ProfileDraft:
        """An existing disease's profile as weights, or an empty new one."""
        if key is None or key not in self.table.diseases:
            return ProfileDraft(key or "", "", organ)
        d = self.table.disease(key)
        return ProfileDraft(key, d.name, d.organ, {a: dict(d.profile[a]) for a in ASPECTS}, exists=True)

    def options(self, aspect: str, organ: str) -> list[tuple[str, str]]:
        """(id, text) of every description of `aspect` valid for `organ`."""
        return [(i, self.vocab.text(i)) for i in self.vocab.ids_for_organ(aspect, organ)]

    def profile(self, draft: ProfileDraft):
        """The validated DiseaseProfile (ValueError with the reason otherwise)."""
        from malenia.errors import InputError
        from malenia.knowledge.profiles import build_profile

        weights = {a: {i: w for i, w in m.items() if w > 0} for a, m in draft.weights.items()}
        base = self.table.disease(draft.key) if draft.exists and draft.key in self.table.diseases else None
        try:
            if not draft.name.strip():
                raise InputError("the disease needs a name")
            return build_profile(draft.key, draft.name.strip(), draft.organ, weights, self.vocab, base)
        except InputError as err:
            raise ValueError(str(err)) from None

    def estimate(self, draft: ProfileDraft, dataset_dir: str | Path) -> tuple[ProfileDraft, object]:
        """The draft with every aspect's weights estimated from the lesions named `draft.key` in a dataset
        (a corrections folder), and the estimate (lesions counted, aspects described); ValueError when
        there are none."""
        from malenia.data.dataset import is_dataset, lesion_descriptions
        from malenia.knowledge.estimate import estimate_site_profile

        if not draft.key:
            raise ValueError("give the disease a key first: the lesions saved under it are counted")
        if not is_dataset(dataset_dir):
            raise ValueError(f"{dataset_dir} holds no saved corrections yet")
        lesions, held = lesion_descriptions(dataset_dir, None, draft.key)
        if not lesions:
            has = ", ".join(f"{d} ({n})" for d, n in held.items()) or "none"
            raise ValueError(f"no saved lesion is named {draft.key!r} in {dataset_dir} (saved: {has})")
        est = estimate_site_profile(lesions, draft.organ, self.vocab)
        return ProfileDraft(draft.key, draft.name, draft.organ, est.profile, draft.exists), est

    def rank(self, scores: dict[str, dict[str, float]], draft: ProfileDraft | None = None, ruled_out=()) -> Ranking:
        """The lesion's posterior over every disease, with the draft in the table (not saved); `ruled_out`:
        the diseases the lesion's appearance excludes, as segmenting excluded them."""
        from malenia.knowledge.inference import infer_disease

        table = self.table
        if draft is not None:
            table = copy.copy(self.table)
            table._diseases = {**self.table._diseases, draft.key: self.profile(draft)}
        post = infer_disease(scores, table, ruled_out)
        ranked = ([] if post.unclassified else [(post.name, post.probability)]) + list(post.alternatives)
        return Ranking(post.name, post.reason, [(k, table.name(k), float(p)) for k, p in ranked])

    def save(self, draft: ProfileDraft) -> Path:
        from malenia.knowledge.profiles import folder_lock, write_profile

        profile = self.profile(draft)
        with folder_lock(self.folder):
            path = write_profile(self.folder, profile)
        self.table = self.load_table()
        return path

    def remove(self, key: str) -> Path:
        from malenia.knowledge.profiles import folder_lock, remove_profile

        with folder_lock(self.folder, create=False):  # a profile to remove means the folder exists; none is made
            path = remove_profile(self.folder, key)
        self.table = self.load_table()
        return path


def _model_lesion(session, label: int):
    """The open result's LesionResult with this label (None: added by hand and not described by the model)."""
    return next((x for x in session.result.lesions if x.label == label), None)


def lesion_scores(session, label: int) -> dict[str, dict[str, float]] | None:
    """The stored per-aspect scores of a lesion of the open result (None: an older report, or added by hand)."""
    original = _model_lesion(session, label)
    return original.scores if original is not None else None


def lesion_ruled_out(session, label: int) -> list[str]:
    """The diseases the appearance check ruled out for a lesion of the open result (malenia.knowledge.appearance)."""
    original = _model_lesion(session, label)
    return list(original.appearance["ruled_out"]) if original is not None and original.appearance else []


def rerank_session(session, table) -> list:
    """Names the open result's lesions again with `table`; review rows and segments follow.
    Returns malenia.infer.rerank.Reranked per lesion with stored scores."""
    from malenia.infer.rerank import rerank

    changes = rerank(session.result, table, session.terminology)
    calls = {c.label: c.after for c in changes}
    for review in session.lesions:
        call = calls.get(review.label)
        if call is None or not review.model_called:
            continue
        review.disease = DiseaseChoice.of_call(call)
        review.disease_alternatives = [DiseaseChoice(k, table.name(k) if k in table.diseases else k, p)
                                       for k, p in call.alternatives if k != call.name]
        if review.corrected_disease is None:
            session.apply_to_segment(review)
    return changes


def reviewed_disease(session, label: int, table):
    """The disease the table in force gives a lesion of the open result with its corrected aspects read as the
    reviewer described them (malenia.infer.rerank.reviewed_call); a lesion drawn by hand and not yet described is
    named from the reviewer's descriptions alone. None without an aspect described by a vocabulary description,
    or for a lesion of an older report without stored scores."""
    from malenia.infer.rerank import reviewed_call

    scores = lesion_scores(session, label)
    review = session.lesion(label)
    chosen = {a: r.current.id for a, r in review.aspects.items() if r.is_corrected and r.current.id in table.vocab}
    if (scores is None and review.model_called) or not chosen:
        return None
    return reviewed_call(scores or {}, chosen, table, session.terminology, lesion_ruled_out(session, label))


class ProfileEditor:
    """The editor widget. `set_lesion_scores` tells it the selected lesion; `saved` fires with the
    re-ranking after a save or removal (empty when no result is open)."""

    def __init__(self, logic: ProfileEditorLogic, parent=None):
        self.logic = logic
        self.session = None  # the open ReviewSession, re-ranked on save
        self.scores: dict[str, dict[str, float]] | None = None
        self.ruled_out: tuple[str, ...] = ()
        self.saved = Callbacks()  # list of Reranked
        self.corrections_dir: Callable[[], str | Path | None] = lambda: None  # where "Estimate" reads saved lesions
        self._weights: dict[str, dict[str, object]] = {}  # aspect -> {id: spin box}
        self.widget = qt.QWidget(parent)
        self.widget.setObjectName("MaleniaProfileEditor")
        layout = qt.QVBoxLayout(self.widget)
        form = qt.QFormLayout()
        self.disease_combo = qt.QComboBox()
        self.disease_combo.setObjectName("profileDisease")
        self.key_edit = qt.QLineEdit()
        self.key_edit.setObjectName("profileKey")
        self.key_edit.setPlaceholderText("lower_snake_case, e.g. hepatic_haemangioma")
        self.name_edit = qt.QLineEdit()
        self.name_edit.setObjectName("profileName")
        self.organ_combo = qt.QComboBox()
        self.organ_combo.setObjectName("profileOrgan")
        self.organ_combo.addItems(self.logic.vocab.organs())
        form.addRow("Disease", self.disease_combo)
        form.addRow("Key", self.key_edit)
        form.addRow("Name", self.name_edit)
        form.addRow("Organ", self.organ_combo)
        layout.addLayout(form)
        self.grid_host = qt.QWidget()
        self.grid_host.setObjectName("profileAspects")
        self.grid = qt.QGridLayout(self.grid_host)
        self.grid.setColumnStretch(0, 1)  # the descriptions take the width; the weights need only their digits
        layout.addWidget(self.grid_host)
        buttons = qt.QGridLayout()  # two by two: in one row the four buttons alone set the module panel's width
        self.estimate_button = qt.QPushButton("Estimate from corrections")
        self.estimate_button.setObjectName("profileEstimate")
        self.estimate_button.setToolTip("Fill the weights from the lesions saved under this disease's key in the "
                                        "corrections folder (smoothed counts of their descriptions); nothing is saved")
        self.test_button = qt.QPushButton("Test on this lesion")
        self.test_button.setObjectName("profileTest")
        self.test_button.setToolTip("Rank the selected lesion against every disease with this draft; nothing is saved")
        self.save_button = qt.QPushButton("Save profile")
        self.save_button.setObjectName("profileSave")
        self.remove_button = qt.QPushButton("Remove profile")
        self.remove_button.setObjectName("profileRemove")
        for i, b in enumerate((self.estimate_button, self.test_button, self.save_button, self.remove_button)):
            buttons.addWidget(b, i // 2, i % 2)
        layout.addLayout(buttons)
        self.status = qt.QLabel()
        self.status.setObjectName("profileStatus")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.ranking = qt.QTableWidget(0, 3)
        self.ranking.setObjectName("profileRanking")
        self.ranking.setHorizontalHeaderLabels(["Disease", "Key", "Probability"])
        self.ranking.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        layout.addWidget(self.ranking)

        self._fill_diseases()
        self.disease_combo.currentIndexChanged.connect(lambda _i: self._load_selected())
        self.organ_combo.currentIndexChanged.connect(lambda _i: self._show_aspects(self.current_draft()))
        self.estimate_button.clicked.connect(lambda *_: self.estimate())
        self.test_button.clicked.connect(lambda *_: self.test())
        self.save_button.clicked.connect(lambda *_: self.save())
        self.remove_button.clicked.connect(lambda *_: self.remove())
        self._load_selected()

    # -- inputs -----------------------------------------------------------------------------------
    def set_session(self, session) -> None:
        self.session = session

    def set_lesion_scores(self, scores: dict[str, dict[str, float]] | None, ruled_out=()) -> None:
        self.scores, self.ruled_out = scores, tuple(ruled_out)
        self.test_button.setEnabled(scores is not None)
        if scores is None:
            self.test_button.setToolTip("The selected lesion has no stored scores (an older report, or drawn by hand)")

    def select_disease(self, key: str | None) -> None:
        """Shows an existing disease's profile, or (None) an empty new one."""
        index = self.disease_combo.findData(key) if key else 0
        self.disease_combo.setCurrentIndex(max(index, 0))
        self._load_selected()

    def set_weight(self, desc_id: str, weight: float) -> None:
        aspect = self.logic.vocab.aspect_of(desc_id)
        self._weights[aspect][desc_id].setValue(float(weight))

    # -- draft <-> widgets -------------------------------------------------------------------------
    def _fill_diseases(self) -> None:
        self.disease_combo.blockSignals(True)
        self.disease_combo.clear()
        self.disease_combo.addItem(NEW_DISEASE, None)
        for key, name in self.logic.diseases().items():
            mark = " (site profile)" if self.logic.is_site_profile(key) else ""
            self.disease_combo.addItem(f"{name}{mark}", key)
        self.disease_combo.blockSignals(False)

    def _load_selected(self) -> None:
        key = self.disease_combo.itemData(get(self.disease_combo, "currentIndex"))
        draft = self.logic.draft(key, get(self.organ_combo, "currentText") or "liver")
        self.key_edit.setText(draft.key)
        self.key_edit.setReadOnly(draft.exists)
        self.name_edit.setText(draft.name)
        self.organ_combo.blockSignals(True)
        self.organ_combo.setCurrentIndex(max(self.organ_combo.findText(draft.organ), 0))
        self.organ_combo.blockSignals(False)
        self.remove_button.setEnabled(bool(key) and self.logic.is_site_profile(key))
        self._show_aspects(draft)

    def _show_aspects(self, draft: ProfileDraft) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self._weights = {}
        row = 0
        for aspect in ASPECTS:
            title = qt.QLabel(f"<b>{ASPECT_NAMES[aspect]}</b>")
            self.grid.addWidget(title, row, 0, 1, 2)
            row += 1
            self._weights[aspect] = {}
            for desc_id, text in self.logic.options(aspect, draft.organ):
                label = qt.QLabel(text)
                label.setToolTip(desc_id)
                label.setWordWrap(True)
                spin = qt.QDoubleSpinBox()
                spin.setObjectName(f"weight_{desc_id}")
                spin.setRange(0.0, 100.0)
                spin.setDecimals(3)
                spin.setSingleStep(0.1)
                spin.setMaximumWidth(110)
                spin.setToolTip("Weight of this description (0: never); an aspect's weights are normalised")
                spin.setValue(float(draft.weights.get(aspect, {}).get(desc_id, 0.0)))
                self.grid.addWidget(label, row, 0)
                self.grid.addWidget(spin, row, 1)
                self._weights[aspect][desc_id] = spin
                row += 1

    def current_draft(self) -> ProfileDraft:
        key = self.disease_combo.itemData(get(self.disease_combo, "currentIndex"))
        weights = {a: {i: float(get(s, "value")) for i, s in spins.items()} for a, spins in self._weights.items()}
        return ProfileDraft(get(self.key_edit, "text").strip(), get(self.name_edit, "text"),
                            get(self.organ_combo, "currentText"), weights, exists=bool(key))

    # -- actions ------------------------------------------------------------------------------------
    def estimate(self) -> ProfileDraft | None:
        folder = self.corrections_dir()
        try:
            if not folder:
                raise ValueError("no corrections folder is set")
            draft, est = self.logic.estimate(self.current_draft(), folder)
        except (ValueError, OSError) as err:
            self.status.setText(f"Not estimated: {err}")
            return None
        self._show_aspects(draft)
        told = ", ".join(f"{ASPECT_NAMES[a].lower()} {n}" for a, n in est.described.items() if n)
        self.status.setText(f"Estimated from {est.lesions} saved lesion(s) named {draft.key} (lesions describing "
                            f"each aspect: {told}; the rest equally). Not saved yet.")
        return draft

    def test(self) -> Ranking | None:
        if self.scores is None:
            self.status.setText("Select a lesion with model scores to test the profile on.")
            return None
        try:
            ranking = self.logic.rank(self.scores, self.current_draft(), self.ruled_out)
        except ValueError as err:
            self.status.setText(f"Not valid: {err}")
            return None
        self.ranking.setRowCount(len(ranking.rows))
        for r, (key, name, p) in enumerate(ranking.rows):
            for c, value in enumerate((name, key, f"{p:.3f}")):
                self.ranking.setItem(r, c, qt.QTableWidgetItem(value))
        verdict = f"named {ranking.rows[0][1]}"
        if ranking.call == "unclassified":
            top = ranking.rows[0][1] if ranking.rows else "?"
            verdict = f"unclassified (closest: {top}; {ranking.reason})"
        self.status.setText(f"With this draft the lesion would be {verdict}. Not saved yet.")
        return ranking

    def save(self) -> list | None:
        from malenia.errors import MaleniaError

        draft = self.current_draft()
        try:
            path = self.logic.save(draft)
        except (ValueError, OSError, MaleniaError) as err:  # MaleniaError: a folder that cannot be written, a bad file
            self.status.setText(f"Not saved: {err}")
            return None
        return self._after_change(draft.key, f"Saved {path}")

    def remove(self) -> list | None:
        from malenia.errors import MaleniaError

        key = self.disease_combo.itemData(get(self.disease_combo, "currentIndex"))
        try:
            path = self.logic.remove(key)
        except (MaleniaError, OSError) as err:
            self.status.setText(f"Not removed: {err}")
            return None
        return self._after_change(None if key not in self.logic.table.diseases else key, f"Removed {path}")

    def _after_change(self, key: str | None, message: str) -> list:
        changes = rerank_session(self.session, self.logic.table) if self.session is not None else []
        moved = sum(1 for c in changes if c.changed)
        self._fill_diseases()
        self.select_disease(key)
        self.status.setText(f"{message}; {moved} lesion(s) of the open result renamed." if self.session is not None
                            else message)
        self.saved.emit(changes)
        return changes
