"""The attribute panel of one lesion: disease and the 8 aspects, with corrections.

Per aspect: the matched description (a combo box offering the top alternatives; typing a new
description is allowed), a score bar, and the runners-up with their scores. The disease can be
changed to any known disease or typed. Corrections are kept in the LesionReview; "Save
correction" hands the lesion to whoever listens (the module logic writes the training case).

Plain Qt through `qt_compat` (Slicer's PythonQt or PySide6).
"""

from __future__ import annotations

import html
from typing import Callable

from malenia.aspects import ASPECTS

from MaleniaCommon.qt_compat import Callbacks, get, qt
from .review import AspectReview, DiseaseChoice, LesionReview

EDITED_STYLE = "color: #b35900; font-weight: bold;"
MODEL_CALL = "\x00model-call"  # item data of the disease entry that keeps the model's unclassified call
SCORE_BAR_STYLE = (
    "QProgressBar {border: 1px solid #9aa4ad; border-radius: 3px; background: #eef1f4; text-align: center;"
    " color: #1b1f23; font-size: 11px; max-height: 16px;}"
    "QProgressBar::chunk {background-color: %s; border-radius: 2px;}"
)


def _bar_colour(score: float) -> str:
    # Confidence at a glance: blue when the match is clear, grey-blue when it is weak.
    return "#4a90d9" if score >= 0.5 else "#7fa7cf" if score >= 0.25 else "#b8c7d6"


# what an aspect's bar says when its description has no model score: (bar text, tooltip)
UNSCORED = {
    "typed": ("typed", "Description typed by the reviewer: no model score"),
    "chosen": ("chosen", "Description chosen by the reviewer from the vocabulary: the model has not scored it"),
    "none": ("—", "No description yet"),
}


def _set_score(bar, score: float | None, unscored: str = "typed") -> None:
    if score is None:
        bar.setValue(0)
        text, tip = UNSCORED[unscored]
        bar.setFormat(text)
        bar.setStyleSheet(SCORE_BAR_STYLE % "#b8c7d6")
        bar.setToolTip(tip)
        return
    bar.setValue(int(round(100 * max(0.0, min(1.0, score)))))
    bar.setFormat(f"{score:.2f}")
    bar.setStyleSheet(SCORE_BAR_STYLE % _bar_colour(score))
    bar.setToolTip(f"Similarity score of this description: {score:.3f} (normalised over the aspect's descriptions)")


class _AspectRow:
    """Widgets of one aspect in the grid."""

    def __init__(self, panel: "AttributePanel", aspect: str, grid, row: int):
        self.panel = panel
        self.aspect = aspect
        self.name = qt.QLabel()
        self.name.setObjectName(f"aspectName_{aspect}")
        self.name.setWordWrap(True)
        self.combo = qt.QComboBox()
        self.combo.setObjectName(f"aspectCombo_{aspect}")
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(qt.QComboBox.NoInsert)
        self.combo.setSizeAdjustPolicy(qt.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(24)
        self.combo.setSizePolicy(qt.QSizePolicy.Expanding, qt.QSizePolicy.Fixed)
        self.bar = qt.QProgressBar()
        self.bar.setObjectName(f"aspectScore_{aspect}")
        self.bar.setRange(0, 100)
        self.bar.setFixedWidth(64)
        self.alternatives = qt.QLabel()
        self.alternatives.setObjectName(f"aspectAlternatives_{aspect}")
        self.alternatives.setWordWrap(True)
        self.alternatives.setStyleSheet("color: #5f6b76; font-size: 11px;")
        # Three lines per aspect so that the descriptions get the panel's full width:
        # name / description + score bar / runners-up.
        grid.addWidget(self.name, 3 * row, 0, 1, 2)
        grid.addWidget(self.combo, 3 * row + 1, 0)
        grid.addWidget(self.bar, 3 * row + 1, 1)
        grid.addWidget(self.alternatives, 3 * row + 2, 0, 1, 2)
        self.combo.currentIndexChanged.connect(self._on_index)
        self.combo.lineEdit().editingFinished.connect(self._on_typed)

    def show(self, review: AspectReview) -> None:
        self.combo.clear()
        for choice in review.options():
            label = choice.text if choice.score is None else f"{choice.text}  ({choice.score:.2f})"
            self.combo.addItem(label, choice.text)
        current = review.current
        if current is None:
            self.combo.setCurrentIndex(-1)
            self.combo.setEditText("")
        else:
            index = self.combo.findData(current.text)
            if index < 0:  # typed description: shown as text, not an option
                self.combo.setCurrentIndex(-1)
                self.combo.setEditText(current.text)
            else:
                self.combo.setCurrentIndex(index)
                self.combo.setEditText(current.text)
        self.combo.lineEdit().setCursorPosition(0)  # show the start of long descriptions
        self.combo.setToolTip(current.text if current else "no description")
        _set_score(self.bar, current.score if current else None,
                   "none" if current is None else "typed" if current.id is None else "chosen")
        # runners-up by score; a drawn lesion's offered descriptions have none until the model describes it
        alts = [c for c in review.options() if c.score is not None and (current is None or c.text != current.text)][:3]
        self.alternatives.setText("Also: " + "  ·  ".join(f"{html.escape(c.text)} {c.score:.2f}" for c in alts) if alts else "")
        self.alternatives.setVisible(bool(alts))
        edited = review.is_corrected
        self.name.setText(review.name + (" ✎" if edited else ""))
        self.name.setStyleSheet(EDITED_STYLE if edited else "font-weight: bold; color: #1b1f23;")
        self.name.setToolTip(f"Corrected; the model matched: {review.matched.text}" if edited and review.matched else review.name)

    def _on_index(self, index) -> None:
        # Qt 5 also has currentIndexChanged(QString); PythonQt may deliver that overload.
        index = index if isinstance(index, int) else get(self.combo, "currentIndex")
        if self.panel._updating or index < 0:
            return
        self.panel._choose(self.aspect, str(self.combo.itemData(index)))

    def _on_typed(self) -> None:
        if self.panel._updating:
            return
        text = str(get(self.combo, "currentText")).strip()
        lesion = self.panel.lesion
        current = lesion.aspects[self.aspect].current if lesion else None
        if text and (current is None or text != current.text):
            self.panel._choose(self.aspect, text)


class AttributePanel:
    """Shows and edits one LesionReview."""

    def __init__(self, known_diseases: dict[str, str] | None = None, parent=None):
        self.known_diseases = dict(known_diseases or {})  # disease key -> display name
        self.lesion: LesionReview | None = None
        self.changed = Callbacks()  # emits the LesionReview after each correction
        self.saveRequested = Callbacks()  # emits the LesionReview
        # lesion -> the DiseaseChoice the knowledge table gives it with the reviewer's descriptions (None: nothing to
        # say); set by whoever holds the table (the module widget: MaleniaSegmentLib.profile_editor.reviewed_disease)
        self.suggest: Callable[[LesionReview], DiseaseChoice | None] | None = None
        self._suggested: DiseaseChoice | None = None
        self._updating = False

        self.widget = qt.QWidget(parent)
        self.widget.setObjectName("MaleniaAttributePanel")
        layout = qt.QVBoxLayout(self.widget)
        layout.setContentsMargins(4, 4, 4, 4)

        self.header = qt.QLabel()
        self.header.setObjectName("lesionHeader")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)

        layout.addWidget(self._disease_box())

        aspects_box = qt.QGroupBox("Attributes")
        aspects_layout = qt.QVBoxLayout(aspects_box)
        legend = qt.QLabel("Best-matching description per aspect; bar: similarity score 0–1. "
                           "Pick another description or type one; ✎ marks corrections.")
        legend.setWordWrap(True)
        legend.setStyleSheet("color: #5f6b76; font-size: 11px;")
        aspects_layout.addWidget(legend)
        grid = qt.QGridLayout()
        grid.setColumnStretch(0, 1)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        aspects_layout.addLayout(grid)
        self.rows = {aspect: _AspectRow(self, aspect, grid, i) for i, aspect in enumerate(ASPECTS)}
        layout.addWidget(aspects_box)

        buttons = qt.QHBoxLayout()
        self.status = qt.QLabel()
        self.status.setObjectName("correctionStatus")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #5f6b76;")
        self.revert_button = qt.QPushButton("Revert")
        self.revert_button.setObjectName("revertButton")
        self.revert_button.setToolTip("Discard the corrections of this lesion")
        self.save_button = qt.QPushButton("Save correction")
        self.save_button.setObjectName("saveCorrectionButton")
        self.save_button.setToolTip("Save image, lesion masks and corrected descriptions as a new training case version")
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self.revert_button.clicked.connect(self._on_revert)
        self.save_button.clicked.connect(self._on_save)
        self.set_lesion(None)

    def _disease_box(self):
        """The disease box: the call (list or typed) and its probability, the runners-up, and what the reviewer's
        descriptions point to with its "Use" button."""
        disease_box = qt.QGroupBox("Disease")
        disease_grid = qt.QGridLayout(disease_box)
        self.disease_combo = qt.QComboBox()
        self.disease_combo.setObjectName("diseaseCombo")
        self.disease_combo.setEditable(True)
        self.disease_combo.setInsertPolicy(qt.QComboBox.NoInsert)
        self.disease_combo.setSizePolicy(qt.QSizePolicy.Expanding, qt.QSizePolicy.Fixed)
        self.disease_combo.setToolTip("The disease inferred from the attributes; pick another or type one")
        self.disease_bar = qt.QProgressBar()
        self.disease_bar.setObjectName("diseaseProbability")
        self.disease_bar.setRange(0, 100)
        self.disease_bar.setFixedWidth(64)
        self.disease_alternatives = qt.QLabel()
        self.disease_alternatives.setWordWrap(True)
        self.disease_alternatives.setStyleSheet("color: #5f6b76; font-size: 11px;")
        self.reviewed_label = qt.QLabel()
        self.reviewed_label.setObjectName("reviewedDisease")
        self.reviewed_label.setWordWrap(True)
        self.reviewed_label.setToolTip("The disease the knowledge table gives this lesion when the aspects you corrected "
                                       "are read as you described them, the others as the model read them (a lesion "
                                       "you drew and the model has not described: your descriptions alone)")
        self.use_reviewed_button = qt.QPushButton("Use")
        self.use_reviewed_button.setObjectName("useReviewedDisease")
        self.use_reviewed_button.setToolTip("Name the lesion by the disease your descriptions point to")
        disease_grid.addWidget(self.disease_combo, 0, 0)
        disease_grid.addWidget(self.disease_bar, 0, 1)
        disease_grid.addWidget(self.disease_alternatives, 1, 0, 1, 2)
        disease_grid.addWidget(self.reviewed_label, 2, 0)
        disease_grid.addWidget(self.use_reviewed_button, 2, 1)
        self.use_reviewed_button.clicked.connect(self._on_use_reviewed)
        self.disease_combo.currentIndexChanged.connect(self._on_disease_index)
        self.disease_combo.lineEdit().editingFinished.connect(self._on_disease_typed)
        return disease_box

    # -- showing --------------------------------------------------------------------------
    def set_lesion(self, lesion: LesionReview | None) -> None:
        self.lesion = lesion
        self.widget.setEnabled(lesion is not None)
        self._refresh()

    def refresh(self) -> None:
        """Shows the lesion again (after its segment or measurements changed)."""
        self._refresh()

    def _refresh(self) -> None:
        self._updating = True
        try:
            lesion = self.lesion
            if lesion is None:
                self.header.setText("<i>Select a lesion in the table.</i>")
                self.disease_combo.clear()
                self.disease_alternatives.setText("")
                self._show_reviewed(None)
                _set_score(self.disease_bar, None, "none")
                for row in self.rows.values():
                    row.combo.clear()
                    row.alternatives.setText("")
                    _set_score(row.bar, None, "none")
                    row.name.setText(row.aspect.replace("_", " ").capitalize())
                return
            self._show_header(lesion)
            self._show_disease(lesion)
            for aspect, row in self.rows.items():
                row.show(lesion.aspects[aspect])
        finally:
            self._updating = False

    def _show_header(self, lesion: LesionReview) -> None:
        r, g, b = lesion.color
        size = ""
        if lesion.longest_mm is not None and lesion.short_axis_mm is not None:
            size = f" · {lesion.longest_mm:.1f} × {lesion.short_axis_mm:.1f} mm"
        edited = " · <span style='%s'>corrected</span>" % EDITED_STYLE if lesion.is_corrected else ""
        self.header.setText(
            f"<span style='color: rgb({r},{g},{b}); font-size: 16px;'>■</span> "
            f"<b>Lesion {lesion.label}</b> · {html.escape(lesion.current_disease.shown)} · "
            f"{lesion.volume_ml:.2f} ml{size}{edited}")

    def _show_disease(self, lesion: LesionReview) -> None:
        combo = self.disease_combo
        combo.clear()
        offered: list[tuple[str, str]] = []  # (display text, disease name; MODEL_CALL: the model's unclassified call)
        if lesion.disease.unclassified:
            offered.append((lesion.disease.shown, MODEL_CALL))
        for choice in [lesion.disease] + lesion.disease_alternatives:
            text = choice.name if choice.probability is None else f"{choice.name}  ({choice.probability:.2f})"
            offered.append((text, choice.name))
        names = {name for _, name in offered}
        for key, name in sorted(self.known_diseases.items(), key=lambda kv: kv[1]):
            if name not in names:
                offered.append((name, name))
        for text, name in offered:
            combo.addItem(text, name)
        current = lesion.current_disease
        kept = current is lesion.disease and lesion.disease.unclassified
        combo.setCurrentIndex(combo.findData(MODEL_CALL if kept else current.name))
        combo.setEditText(current.shown)
        _set_score(self.disease_bar, current.probability)
        if current.probability is not None:
            self.disease_bar.setToolTip(f"Probability from the knowledge table: {current.probability:.3f}")
        elif lesion.corrected_disease is not None:
            self.disease_bar.setFormat("—")
            self.disease_bar.setToolTip("Chosen by the reviewer; the model did not rank this disease")
        parts = []
        if lesion.corrected_disease is not None and lesion.disease.probability is not None:
            parts.append(f"Model: {html.escape(lesion.disease.shown)} {lesion.disease.probability:.2f}")
        alts = [a for a in lesion.disease_alternatives if a.name != current.name and a.probability is not None][:3]
        if alts:
            parts.append("Also: " + "  ·  ".join(f"{html.escape(a.name)} {a.probability:.2f}" for a in alts))
        if lesion.ruled_out:  # why a trained disease is not offered first: its lesions look different
            parts.append("Ruled out by its CT values: " + ", ".join(html.escape(n) for n in lesion.ruled_out))
        self.disease_alternatives.setText("  —  ".join(parts))
        self.disease_alternatives.setVisible(bool(parts))
        self.disease_combo.lineEdit().setCursorPosition(0)
        self._show_reviewed(lesion)

    def _show_reviewed(self, lesion: LesionReview | None) -> None:
        """What the reviewer's descriptions name, with a one-click "Use" when it is another known disease."""
        choice = self.suggest(lesion) if self.suggest is not None and lesion is not None else None
        named = choice is not None and not choice.unclassified
        agrees = named and choice.name == lesion.current_disease.name
        self._suggested = choice if named and not agrees else None
        if choice is None:
            text = ""
        elif agrees:
            text = f"Your descriptions agree: {html.escape(choice.name)} {choice.probability or 0:.2f}"
        else:
            text = f"With your descriptions: <b>{html.escape(choice.shown)}</b>" + (
                f" {choice.probability or 0:.2f}" if named else "")
        self.reviewed_label.setText(text)
        self.reviewed_label.setVisible(bool(text))
        self.use_reviewed_button.setVisible(self._suggested is not None)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    # -- editing --------------------------------------------------------------------------
    def _choose(self, aspect: str, text: str) -> None:
        if self.lesion is None:
            return
        try:
            self.lesion.aspects[aspect].choose(text)
        except ValueError as err:
            self.show_status(str(err))
            return
        self._refresh()
        self.changed.emit(self.lesion)

    def choose(self, aspect: str, text: str) -> None:
        """Programmatic equivalent of picking/typing a description (scripts, tests)."""
        self._choose(aspect, text)

    def set_disease(self, name: str) -> None:
        if self.lesion is None:
            return
        try:
            self.lesion.set_disease(name, self.known_diseases)
        except ValueError as err:
            self.show_status(str(err))
            return
        self._refresh()
        self.changed.emit(self.lesion)

    def _on_disease_index(self, index) -> None:
        index = index if isinstance(index, int) else get(self.disease_combo, "currentIndex")
        if self._updating or index < 0:
            return
        name = str(self.disease_combo.itemData(index))
        if name == MODEL_CALL:
            self.keep_model_disease()
        else:
            self.set_disease(name)

    def keep_model_disease(self) -> None:
        """The model's own call again (for a lesion it left unclassified: unclassified)."""
        if self.lesion is None:
            return
        self.lesion.keep_model_disease()
        self._refresh()
        self.changed.emit(self.lesion)

    def _on_disease_typed(self) -> None:
        if self._updating:
            return
        text = str(get(self.disease_combo, "currentText")).strip()
        current = self.lesion.current_disease if self.lesion is not None else None
        if text and current is not None and text not in (current.name, current.shown):
            self.set_disease(text)

    def _on_use_reviewed(self) -> None:
        if self._suggested is not None:
            if self._suggested.key is not None:  # a site profile's disease is known once suggested
                self.known_diseases.setdefault(self._suggested.key, self._suggested.name)
            self.set_disease(self._suggested.name)

    def _on_revert(self) -> None:
        if self.lesion is not None:
            self.lesion.reset()
            self._refresh()
            self.changed.emit(self.lesion)

    def _on_save(self) -> None:
        if self.lesion is not None:
            self.saveRequested.emit(self.lesion)
