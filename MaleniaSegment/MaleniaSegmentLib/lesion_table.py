"""The lesion table: one row per lesion, sortable, a click selects the lesion.

Plain Qt through `qt_compat` (Slicer's PythonQt or PySide6).
"""

from __future__ import annotations

from MaleniaCommon.qt_compat import Callbacks, get, qt
from .review import LesionReview

COLUMNS = ("#", "Disease", "Prob.", "ml", "LD mm", "SA mm")
COLUMN_TIPS = ("Lesion number (label value)", "Disease inferred from the attributes (✎: corrected)",
               "Probability of the disease (knowledge table)", "Volume in millilitres",
               "Longest axial diameter (RECIST 1.1), mm", "Short-axis diameter perpendicular to it, same slice, mm")
LABEL_ROLE = 32  # Qt.UserRole: the lesion label stored on the first cell


def _number_item(value: float | None, decimals: int) -> "qt.QTableWidgetItem":
    item = qt.QTableWidgetItem()
    if value is None:
        item.setText("–")
    else:
        # Numbers as display data sort numerically; the text is formatted by the delegate.
        item.setData(qt.Qt.DisplayRole, round(float(value), decimals))
    item.setTextAlignment(qt.Qt.AlignRight | qt.Qt.AlignVCenter)
    return item


class LesionTable:
    def __init__(self, parent=None):
        self.widget = qt.QTableWidget(parent)
        t = self.widget
        t.setObjectName("MaleniaLesionTable")
        t.setColumnCount(len(COLUMNS))
        t.setHorizontalHeaderLabels(list(COLUMNS))
        for col, tip in enumerate(COLUMN_TIPS):
            t.horizontalHeaderItem(col).setToolTip(tip)
        t.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        t.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        t.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        t.setAlternatingRowColors(True)
        t.verticalHeader().setVisible(False)
        t.setHorizontalScrollBarPolicy(qt.Qt.ScrollBarAlwaysOff)
        header = t.horizontalHeader()
        header.setSectionResizeMode(qt.QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, qt.QHeaderView.Stretch)
        t.setToolTip("Lesions found by Malenia. Click a row to centre the views on the lesion and review its attributes.")
        self.lesionSelected = Callbacks()  # emits the lesion label (int)
        self._lesions: dict[int, LesionReview] = {}
        self._updating = False
        t.itemSelectionChanged.connect(self._on_selection)

    def set_lesions(self, lesions: list[LesionReview]) -> None:
        self._updating = True
        try:
            t = self.widget
            t.setSortingEnabled(False)
            t.clearContents()
            t.setRowCount(len(lesions))
            self._lesions = {lesion.label: lesion for lesion in lesions}
            for row, lesion in enumerate(lesions):
                self._fill_row(row, lesion)
            t.setSortingEnabled(True)
            t.sortItems(0, qt.Qt.AscendingOrder)
            self._fit_height()
        finally:
            self._updating = False

    def _fill_row(self, row: int, lesion: LesionReview) -> None:
        t = self.widget
        label_item = qt.QTableWidgetItem()
        label_item.setData(qt.Qt.DisplayRole, int(lesion.label))
        label_item.setData(LABEL_ROLE, int(lesion.label))
        label_item.setTextAlignment(qt.Qt.AlignCenter)
        disease = lesion.current_disease
        name_item = qt.QTableWidgetItem(disease.shown + (" ✎" if lesion.is_corrected else ""))
        name_item.setData(qt.Qt.DecorationRole, qt.QColor(*lesion.color))
        tip = f"Lesion {lesion.label}: {disease.shown}"
        if lesion.is_corrected:
            tip += f" (corrected; model said {lesion.disease.shown})"
        if lesion.needs_description:
            tip += ("; outline edited since the model described it" if lesion.model_called else "; drawn by hand") + \
                ": click Describe outlines for the model's calls on it"
        name_item.setToolTip(tip)
        items = [label_item, name_item, _number_item(disease.probability, 2), _number_item(lesion.volume_ml, 2),
                 _number_item(lesion.longest_mm, 1), _number_item(lesion.short_axis_mm, 1)]
        for col, item in enumerate(items):
            t.setItem(row, col, item)

    def _fit_height(self) -> None:
        # As tall as its rows (up to 8), so the attribute panel below stays in view.
        t = self.widget
        rows = min(max(get(t, "rowCount"), 3), 8)
        height = (get(t.horizontalHeader(), "height") + rows * get(t.verticalHeader(), "defaultSectionSize")
                  + 2 * get(t, "frameWidth") + 2)
        t.setMinimumHeight(height)
        t.setMaximumHeight(height)

    def update_lesion(self, lesion: LesionReview) -> None:
        """Refreshes one row in place (after a correction or a re-measurement)."""
        self._lesions[lesion.label] = lesion
        row = self.row_of(lesion.label)
        if row is None:
            return
        self._updating = True
        try:
            sorting = get(self.widget, "isSortingEnabled")
            self.widget.setSortingEnabled(False)
            self._fill_row(row, lesion)
            self.widget.setSortingEnabled(sorting)
        finally:
            self._updating = False

    def row_of(self, label: int) -> int | None:
        t = self.widget
        for row in range(get(t, "rowCount")):
            item = t.item(row, 0)
            if item is not None and int(item.data(LABEL_ROLE)) == int(label):
                return row
        return None

    def rows(self) -> list[list[str]]:
        """The table as shown (text per cell), in display order."""
        t = self.widget
        return [[(t.item(r, c).text() if t.item(r, c) is not None else "") for c in range(len(COLUMNS))]
                for r in range(get(t, "rowCount"))]

    def select(self, label: int) -> None:
        row = self.row_of(label)
        if row is not None:
            self.widget.selectRow(row)

    def selected_label(self) -> int | None:
        t = self.widget
        rows = {i.row() for i in t.selectedItems()}
        if not rows:
            return None
        return int(t.item(min(rows), 0).data(LABEL_ROLE))

    def _on_selection(self) -> None:
        if self._updating:
            return
        label = self.selected_label()
        if label is not None:
            self.lesionSelected.emit(label)
