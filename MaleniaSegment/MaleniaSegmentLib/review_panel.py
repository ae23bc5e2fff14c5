"""The review panel: lesion table above the selected lesion's attribute panel.

Plain Qt through `qt_compat`; events go out as Python callbacks (see qt_compat.Callbacks).
"""

from __future__ import annotations

from .attribute_panel import AttributePanel
from .lesion_table import LesionTable
from MaleniaCommon.qt_compat import Callbacks, qt
from .review import LesionReview


class ReviewPanel:
    def __init__(self, known_diseases: dict[str, str] | None = None, parent=None):
        self.widget = qt.QWidget(parent)
        self.widget.setObjectName("MaleniaReviewPanel")
        layout = qt.QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        self.summary = qt.QLabel("No results yet: select a volume and click Segment Lesions.")
        self.summary.setObjectName("reviewSummary")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.table = LesionTable()
        self.table._fit_height()
        layout.addWidget(self.table.widget)
        self.attributes = AttributePanel(known_diseases)
        layout.addWidget(self.attributes.widget)

        self.lesionSelected = Callbacks()  # label
        self.lesionChanged = Callbacks()  # LesionReview (after a correction)
        self.saveRequested = Callbacks()  # no arguments: save the whole case
        self._lesions: dict[int, LesionReview] = {}
        self.table.lesionSelected.connect(self._on_selected)
        self.attributes.changed.connect(self._on_changed)
        self.attributes.saveRequested.connect(lambda lesion: self.saveRequested.emit())

    def set_lesions(self, lesions: list[LesionReview], summary: str = "") -> None:
        self._lesions = {lesion.label: lesion for lesion in lesions}
        self.table.set_lesions(lesions)
        self.summary.setText(summary or f"{len(lesions)} lesion(s)")
        current = self.attributes.lesion
        if current is not None and current.label in self._lesions:
            self.select(current.label)
        else:
            self.attributes.set_lesion(None)

    def select(self, label: int) -> None:
        self.table.select(label)
        self._on_selected(label)

    def _on_selected(self, label: int) -> None:
        lesion = self._lesions.get(label)
        if lesion is not None and lesion is not self.attributes.lesion:
            self.attributes.set_lesion(lesion)
        self.lesionSelected.emit(label)

    def _on_changed(self, lesion: LesionReview) -> None:
        self.lesionChanged.emit(lesion)  # listeners recode the segment (its colour may change) ...
        self.table.update_lesion(lesion)  # ... before the row and the header show it
        self.attributes.refresh()
