"""MaleniaTrainer's panels: plain Qt widgets on the API common to Slicer's PythonQt and PySide6.

Uses the shared shim (MaleniaCommon.qt_compat: `qt`, `get`, `Callbacks`); widgets are
composed, not subclassed, so no virtual override or custom signal is needed in either binding.
`TrainerPanel` wires them to a TrainerLogic: network calls run in `Background` threads and a QTimer
polls them, so the GUI stays responsive while uploading, downloading or training.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from MaleniaCommon.qt_compat import Callbacks, get, qt
from MaleniaCommon.thread_turns import ThreadTurns

from .logic import (Background, JobView, TrainerLogic, active_job, describe_error, fetch_version, list_versions,
                    start_job, upload_items)


def _label(text: str = "", wrap: bool = True):
    label = qt.QLabel(text)
    label.setWordWrap(wrap)
    return label


def _row_table(columns, stretch: int):
    """A read-only table selected by rows; column `stretch` takes the spare width."""
    t = qt.QTableWidget()
    t.setColumnCount(len(columns))
    t.setHorizontalHeaderLabels(list(columns))
    t.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
    t.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    header = t.horizontalHeader()
    header.setSectionResizeMode(qt.QHeaderView.ResizeToContents)
    header.setSectionResizeMode(stretch, qt.QHeaderView.Stretch)
    t.setMinimumHeight(110)
    t.setMaximumHeight(170)
    return t


class ConnectionPanel:
    def __init__(self):
        self.widget = qt.QGroupBox("Backend")
        form = qt.QFormLayout(self.widget)
        self.mode = qt.QComboBox()
        self.mode.addItem("Retraining server")
        self.mode.addItem("This workstation (local GPU/CPU)")
        self.url = qt.QLineEdit()
        self.url.setPlaceholderText("http://gpu-server:8000")
        self.token = qt.QLineEdit()
        self.token.setEchoMode(qt.QLineEdit.Password)
        self.token.setPlaceholderText("access token (stored in the settings, never logged)")
        self.connect_button = qt.QPushButton("Connect")
        self.status = _label("Not connected")
        form.addRow("Train on:", self.mode)
        form.addRow("Server URL:", self.url)
        form.addRow("Token:", self.token)
        form.addRow(self.connect_button)
        form.addRow(self.status)
        self.mode.currentIndexChanged.connect(lambda _=None: self._mode_changed())

    @property
    def mode_key(self) -> str:
        return "local" if get(self.mode, "currentIndex") == 1 else "server"

    def set_values(self, mode: str, url: str, has_token: bool) -> None:
        self.mode.setCurrentIndex(1 if mode == "local" else 0)
        self.url.setText(url)
        if has_token:
            self.token.setPlaceholderText("a token is stored; type to replace it")
        self._mode_changed()

    def _mode_changed(self) -> None:
        remote = self.mode_key == "server"
        self.url.setEnabled(remote)
        self.token.setEnabled(remote)

    def set_status(self, text: str, ok: bool | None) -> None:
        colour = {True: "#1b7f3b", False: "#b3261e", None: "#555555"}[ok]
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {colour}")


class CorrectionsPanel:
    COLUMNS = ("Send", "Case", "Version", "Lesions", "Typed text", "State")

    def __init__(self):
        self.widget = qt.QGroupBox("Corrections")
        layout = qt.QVBoxLayout(self.widget)
        row = qt.QHBoxLayout()
        self.folder = _label("")  # wrapped (at its slashes): a long path must not widen Slicer's module panel
        self.refresh_button = qt.QPushButton("Refresh")
        row.addWidget(self.folder, 1)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        t = self.table = _row_table(self.COLUMNS, stretch=1)
        layout.addWidget(t)
        row = qt.QHBoxLayout()
        self.upload_button = qt.QPushButton("Upload selected")
        self.progress = qt.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        row.addWidget(self.upload_button)
        row.addWidget(self.progress, 1)
        layout.addLayout(row)
        self.status = _label("")
        layout.addWidget(self.status)
        self.items: list[Any] = []

    def set_items(self, items: list[Any], folder: Path) -> None:
        """Lists `items`; a correction listed before keeps the user's tick (the list is refreshed on each enter())."""
        ticked = {str(it.path): get(self.table.item(r, 0), "checkState") == qt.Qt.Checked
                  for r, it in enumerate(self.items) if self.table.item(r, 0) is not None}
        self.folder.setText(f"Folder: {folder}")
        self.folder.setToolTip(str(folder))
        self.items = list(items)
        t = self.table
        t.setRowCount(len(items))
        for r, item in enumerate(items):
            check = qt.QTableWidgetItem()
            check.setFlags(qt.Qt.ItemIsUserCheckable | qt.Qt.ItemIsEnabled)
            tick = ticked.get(str(item.path), item.latest) and not item.error
            check.setCheckState(qt.Qt.Checked if tick else qt.Qt.Unchecked)
            t.setItem(r, 0, check)
            t.setItem(r, 1, qt.QTableWidgetItem(item.case))
            t.setItem(r, 2, qt.QTableWidgetItem(f"v{item.version:03d}" if item.version is not None else "-"))
            t.setItem(r, 3, qt.QTableWidgetItem(str(item.lesions)))
            t.setItem(r, 4, qt.QTableWidgetItem(str(item.free_text)))
            t.setItem(r, 5, qt.QTableWidgetItem(item.error or ("latest" if item.latest else "earlier version")))
        self.status.setText(f"{len(items)} correction(s) found" if items else "No corrections found in this folder")

    def set_checked(self, row: int, checked: bool) -> None:
        self.table.item(row, 0).setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)

    def checked_items(self) -> list[Any]:
        return [item for r, item in enumerate(self.items)
                if get(self.table.item(r, 0), "checkState") == qt.Qt.Checked and not item.error]

    def set_row_state(self, item: Any, text: str) -> None:
        for r, it in enumerate(self.items):
            if str(it.path) == str(item.path):  # by folder: a refresh during an upload lists new objects
                self.table.item(r, 5).setText(text)


class LossPlot:
    """The loss curve (and validation DSC points) drawn into a QPixmap shown by a QLabel."""

    def __init__(self, width: int = 420, height: int = 170):
        self.widget = qt.QLabel()
        self.widget.setFixedSize(width, height)
        self.size = (width, height)
        self.points: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.render()

    def set_curve(self, points: list[tuple[int, float]], val: list[tuple[int, float]] | None = None) -> None:
        self.points, self.val = list(points), list(val or [])
        self.render()

    def render(self) -> None:
        w, h = self.size
        pix = qt.QPixmap(w, h)
        pix.fill(qt.QColor(255, 255, 255))
        p = qt.QPainter(pix)
        p.setRenderHint(qt.QPainter.Antialiasing)
        left, right, top, bottom = 46, 10, 14, 22
        p.setPen(qt.QPen(qt.QColor(150, 150, 150)))
        p.drawRect(left, top, w - left - right, h - top - bottom)
        if not self.points:
            p.drawText(left + 10, h // 2, "loss curve appears when training starts")
            p.end()
            self.widget.setPixmap(pix)
            return
        steps = [s for s, _ in self.points]
        losses = [v for _, v in self.points]
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        lo, hi = min(losses), max(losses)
        hi = hi if hi > lo else lo + 1e-6

        def xy(step: float, value: float, vmin: float, vmax: float) -> tuple[int, int]:
            x = left + (step - s0) / (s1 - s0) * (w - left - right)
            y = top + (1 - (value - vmin) / (vmax - vmin)) * (h - top - bottom)
            return int(round(x)), int(round(y))

        pen = qt.QPen(qt.QColor(31, 119, 180))
        pen.setWidth(2)
        p.setPen(pen)
        prev = None
        for s, v in self.points:
            cur = xy(s, v, lo, hi)
            if prev is not None:
                p.drawLine(prev[0], prev[1], cur[0], cur[1])
            prev = cur
        p.setPen(qt.QPen(qt.QColor(214, 39, 40)))
        for s, v in self.val:  # validation DSC on its own 0..1 scale
            x, y = xy(s, v, 0.0, 1.0)
            p.drawEllipse(x - 3, y - 3, 6, 6)
        p.setPen(qt.QPen(qt.QColor(60, 60, 60)))
        p.drawText(2, top + 10, f"{hi:.3g}")
        p.drawText(2, h - bottom, f"{lo:.3g}")
        p.drawText(left, h - 6, f"step {s0}")
        p.drawText(w - right - 70, h - 6, f"step {s1}")
        p.setPen(qt.QPen(qt.QColor(31, 119, 180)))
        p.drawText(left + 8, top + 14, "loss")
        if self.val:
            p.setPen(qt.QPen(qt.QColor(214, 39, 40)))
            p.drawText(left + 48, top + 14, "val DSC")
        p.end()
        self.widget.setPixmap(pix)


class TrainingPanel:
    def __init__(self):
        self.widget = qt.QGroupBox("Training")
        layout = qt.QVBoxLayout(self.widget)
        form = qt.QFormLayout()
        self.steps = qt.QSpinBox()
        self.steps.setRange(1, 1000000)
        self.steps.setValue(200)
        self.replay = qt.QDoubleSpinBox()
        self.replay.setRange(0.0, 1.0)
        self.replay.setSingleStep(0.1)
        self.replay.setValue(0.5)
        self.replay.setToolTip("Share of training batches drawn from earlier data, so the model does not forget it")
        form.addRow("Steps:", self.steps)
        form.addRow("Replay of earlier data:", self.replay)
        layout.addLayout(form)
        row = qt.QHBoxLayout()
        self.start_button = qt.QPushButton("Start training")
        self.cancel_button = qt.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = qt.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = _label("No training job")
        self.val_label = _label("Validation DSC: -")
        layout.addWidget(self.status)
        layout.addWidget(self.val_label)
        self.plot = LossPlot()
        layout.addWidget(self.plot.widget)

    def show_job(self, view: JobView) -> None:
        self.progress.setValue(int(round(1000 * (view.fraction or 0.0))))
        self.progress.setFormat(f"{view.step}/{view.total}" if view.total else "%p%")
        self.status.setText(view.summary)
        self.val_label.setText(f"Validation DSC: {view.val_dsc:.3f}" if view.val_dsc is not None else "Validation DSC: -")
        self.plot.set_curve(view.losses, view.val_points)
        running = not view.finished
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


class VersionsPanel:
    COLUMNS = ("Version", "Current", "Val DSC", "Parent", "Created", "Notes")

    def __init__(self):
        self.widget = qt.QGroupBox("Model versions")
        layout = qt.QVBoxLayout(self.widget)
        t = self.table = _row_table(self.COLUMNS, stretch=5)
        t.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        layout.addWidget(t)
        row = qt.QHBoxLayout()
        self.refresh_button = qt.QPushButton("Refresh")
        self.use_button = qt.QPushButton("Download and use in MaleniaSegment")
        row.addWidget(self.refresh_button)
        row.addWidget(self.use_button, 1)
        layout.addLayout(row)
        self.status = _label("")
        layout.addWidget(self.status)
        self.names: list[str] = []

    def set_versions(self, versions: list[dict[str, Any]], current: str | None) -> None:
        t = self.table
        t.setRowCount(len(versions))
        self.names = [v["name"] for v in versions]
        for r, v in enumerate(versions):
            metrics = v.get("metrics") or {}
            dsc, patch = metrics.get("val_dsc"), metrics.get("trainer_val_dsc")
            shown = f"{dsc:.3f}" if dsc is not None else (f"{patch:.3f} (patch)" if patch is not None else "-")
            created = datetime.datetime.fromtimestamp(v["created"]).strftime("%Y-%m-%d %H:%M")
            cells = (v["name"], "●" if v["name"] == current else "", shown,
                     v.get("parent") or "-", created, (v.get("notes") or [""])[-1])
            for c, text in enumerate(cells):
                t.setItem(r, c, qt.QTableWidgetItem(text))
        if current in self.names:
            t.selectRow(self.names.index(current))

    def selected(self) -> str | None:
        rows = sorted({get(i, "row") for i in self.table.selectedItems()})
        return self.names[rows[0]] if rows else None


class TrainerPanel:
    """All four panels, driven by a TrainerLogic. `poll()` is called by a QTimer (or by tests)."""

    def __init__(self, logic: TrainerLogic, parent=None, poll_ms: int = 500, before_connect=None):
        self.logic = logic
        # before_connect(mode) -> bool: the Slicer glue checks (and, with consent, installs) the Python
        # packages that mode needs; False stops the connection.
        self.before_connect = before_connect
        self.widget = qt.QWidget(parent)
        layout = qt.QVBoxLayout(self.widget)
        self.connection = ConnectionPanel()
        self.corrections = CorrectionsPanel()
        self.training = TrainingPanel()
        self.versions = VersionsPanel()
        for panel in (self.connection, self.corrections, self.training, self.versions):
            layout.addWidget(panel.widget)
        self.model_changed = Callbacks()  # emits the model folder made MaleniaSegment's model
        self.tasks: dict[str, Background] = {}
        self.job_id: str | None = None
        self.connection.set_values(logic.mode, logic.server_url, logic.has_token)
        self.connection.connect_button.clicked.connect(lambda *_: self.connect())
        self.corrections.refresh_button.clicked.connect(lambda *_: self.refresh_corrections())
        self.corrections.upload_button.clicked.connect(lambda *_: self.upload())
        self.training.start_button.clicked.connect(lambda *_: self.start())
        self.training.cancel_button.clicked.connect(lambda *_: self.cancel())
        self.versions.refresh_button.clicked.connect(lambda *_: self.refresh_versions())
        self.versions.use_button.clicked.connect(lambda *_: self.download_and_use())
        self.timer = qt.QTimer()
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self.turns = ThreadTurns()  # the tasks' threads get their turns inside Slicer while they work
        self.refresh_corrections()

    @property
    def busy(self) -> bool:
        return any(not t.done for t in self.tasks.values())

    def _run(self, name: str, fn, *args, **kwargs) -> Background:
        """fn runs in a thread: it gets the backend and plain values, never the settings or the scene. The button
        that started it stays disabled until it is done (poll)."""
        task = Background(fn, *args, redact=self.logic.redactor(), **kwargs)
        self.tasks[name] = task
        button = self._buttons().get(name)
        if button is not None:
            button.setEnabled(False)
        self.turns.keep(True)
        return task

    def _buttons(self) -> dict[str, Any]:
        """The button each kind of task is started by (start and cancel are kept by the job's own state)."""
        return {"connect": self.connection.connect_button, "upload": self.corrections.upload_button,
                "versions": self.versions.refresh_button, "download": self.versions.use_button}

    def _running(self, name: str) -> bool:
        """A task of this kind still works: a second click (before the disabled button is drawn, or from a script) is
        ignored, not a second thread whose result would replace the first's (a double upload, a second download)."""
        return name in self.tasks and not self.tasks[name].done

    def _backend(self, show_error) -> Any:
        """The backend, made here on the GUI thread from the settings; None (error shown) if it cannot be."""
        try:
            return self.logic.backend()
        except Exception as err:  # one line for the user (no server URL, no PythonSlicer, bad local folder)
            show_error(self.logic.redact(describe_error(err)))
            return None

    # -- actions
    def connect(self) -> None:
        if self._running("connect"):
            return
        token, url = get(self.connection.token, "text"), get(self.connection.url, "text")
        if self.job_id is not None and (token or self.connection.mode_key != self.logic.mode
                                        or url.strip() != self.logic.server_url):  # TrainerLogic.backend()'s key
            if not self._leave_job():
                return
        self.connection.token.setText("")  # the field never keeps the secret
        if self.before_connect is not None and not self.before_connect(self.connection.mode_key):
            # nothing stored: the settings stay those of the last connection, which still works
            self.connection.set_values(self.logic.mode, self.logic.server_url, self.logic.has_token)
            self.connection.set_status("Not connected: the Python packages it needs are not installed", False)
            return
        self.logic.configure(url=url, mode=self.connection.mode_key, token=token if token else None)
        self.connection.set_values(self.logic.mode, self.logic.server_url, self.logic.has_token)
        backend = self._backend(lambda text: self.connection.set_status(text, False))
        if backend is None:
            return
        self.connection.set_status("Connecting…", None)
        self._run("connect", backend.connect)

    def _leave_job(self) -> bool:
        """Whether Connect may make another backend while a job is followed. The new backend closes this one: a local
        job would end with it (TrainingService.close), so Connect is refused; a server's job goes on there, is no
        longer polled (the new backend does not have it) and is followed again on the next Connect to that server."""
        if self.logic.mode == "local":
            self.connection.token.setText("")
            self.connection.set_values(self.logic.mode, self.logic.server_url, self.logic.has_token)
            self.connection.set_status("A training job runs on this workstation: wait for it to end, or cancel it, "
                                       "before changing the backend", False)
            return False
        self.training.status.setText(f"Job {self.job_id} goes on at {self.logic.server_url}; connect to that server "
                                     "again to follow it")
        self.job_id = None
        self.training.start_button.setEnabled(True)
        self.training.cancel_button.setEnabled(False)
        return True

    def refresh_corrections(self) -> None:
        self.corrections.set_items(self.logic.corrections(), self.logic.corrections_dir)

    def upload(self) -> None:
        if self._running("upload"):
            return
        items = self.corrections.checked_items()
        if not items:
            self.corrections.status.setText("Tick the corrections to send first")
            return
        backend = self._backend(self.corrections.status.setText)
        if backend is None:
            return
        for item in items:
            self.corrections.set_row_state(item, "waiting")
        task = None

        def progress(done: int, total: int, label: str) -> None:
            if task is not None:
                task.progress = (done, total)

        task = self._run("upload", upload_items, backend, items, progress, self.logic.redactor())
        self.corrections.status.setText(f"Uploading {len(items)} correction(s)…")

    def start(self) -> None:
        ids = getattr(self, "uploaded_ids", None)
        backend = self._backend(self.training.status.setText)
        if backend is None:
            return
        self._run("start", start_job, backend, get(self.training.steps, "value"), ids, get(self.training.replay, "value"))
        self.training.start_button.setEnabled(False)
        self.training.status.setText("Starting…")

    def cancel(self) -> None:
        backend = self._backend(self.training.status.setText) if self.job_id else None
        if backend is not None:
            job_id = self.job_id  # read here: the thread runs after the job may have ended (job_id None)
            self._run("cancel", lambda: JobView.from_json(backend.cancel(job_id)))

    def refresh_versions(self) -> None:
        if self._running("versions"):
            self._versions_again = True  # asked for after that request left (a job just ended): ask once more then
            return
        backend = self._backend(self.versions.status.setText)
        if backend is not None:
            self._run("versions", list_versions, backend)

    def download_and_use(self) -> None:
        if self._running("download"):
            return
        name = self.versions.selected()
        if not name:
            self.versions.status.setText("Select a version first")
            return
        backend = self._backend(self.versions.status.setText)
        if backend is None:
            return
        task = None

        def progress(done: int, total: int) -> None:
            if task is not None:
                task.progress = (done, total)

        task = self._run("download", fetch_version, backend, name, self.logic.download_destination(name), progress)
        self.versions.status.setText(f"Downloading {name}…")

    # -- polling (GUI thread)
    def poll(self) -> None:
        for name, task in list(self.tasks.items()):
            if name == "upload" and not task.done and task.progress[1]:
                self.corrections.progress.setValue(int(1000 * task.progress[0] / task.progress[1]))
            if not task.done:
                continue
            del self.tasks[name]
            if name in self._buttons():
                self._buttons()[name].setEnabled(True)
            getattr(self, f"_{name}_done")(task)
        if self.job_id and "job" not in self.tasks:
            # _backend, never logic.backend(): an exception in a QTimer's slot is printed by PythonQt and the timer
            # fires again, so a backend that cannot be made would print a traceback twice a second.
            backend, job_id = self._backend(self.training.status.setText), self.job_id
            if backend is not None:
                self._run("job", lambda: JobView.from_json(backend.job(job_id))).job_id = job_id
        self.turns.keep(bool(self.tasks))

    def _connect_done(self, task: Background) -> None:
        if task.error:
            self.connection.set_status(task.error, False)
            return
        self.connection.set_status(self.logic.connection_message(task.result), True)
        self.refresh_versions()
        backend = None if self.job_id else self._backend(self.training.status.setText)
        if backend is not None:  # a job started before Slicer was restarted or the module reloaded is followed again
            self._run("active", active_job, backend)

    def _active_done(self, task: Background) -> None:
        if task.error or task.result is None or self.job_id:
            return
        self.job_id = task.result.id
        self.logic.remember_job(task.result)
        self.training.show_job(task.result)

    def _upload_done(self, task: Background) -> None:
        if task.error:
            self.corrections.status.setText(task.error)
            return
        sent = dup = failed = 0
        self.uploaded_ids = []
        for outcome in task.result:
            if outcome.error:
                failed += 1
                self.corrections.set_row_state(outcome.item, f"refused: {outcome.error}")
            else:
                self.uploaded_ids.append(outcome.case_id)
                dup += outcome.duplicate
                sent += not outcome.duplicate
                self.corrections.set_row_state(outcome.item, "already on server" if outcome.duplicate else "uploaded")
        self.corrections.progress.setValue(1000)
        self.corrections.status.setText(f"{sent} uploaded, {dup} already there, {failed} refused")

    def _start_done(self, task: Background) -> None:
        if task.error:
            self.training.status.setText(task.error)
            self.training.start_button.setEnabled(True)
            return
        self.job_id = task.result.id
        self.logic.remember_job(task.result)  # the parameter node, on this (GUI) thread
        self.training.show_job(task.result)

    def _job_done(self, task: Background) -> None:
        if task.job_id != self.job_id:  # polled before Connect left that job (_leave_job)
            return
        if task.error:
            self.training.status.setText(task.error)
            return
        view: JobView = task.result
        self.training.show_job(view)
        if view.finished:
            self.job_id = None
            self.refresh_versions()

    def _cancel_done(self, task: Background) -> None:
        if task.error:
            self.training.status.setText(task.error)

    def _versions_done(self, task: Background) -> None:
        if getattr(self, "_versions_again", False):
            self._versions_again = False
            self.refresh_versions()
        if task.error:
            self.versions.status.setText(task.error)
            return
        versions, current = task.result
        self.versions.set_versions(versions, current)
        self.versions.status.setText(f"{len(versions)} version(s); current {current or 'none'}"
                                     + (f"; MaleniaSegment uses {self.logic.segment_model}" if self.logic.segment_model else ""))

    def _download_done(self, task: Background) -> None:
        if task.error:
            self.versions.status.setText(task.error)
            return
        try:
            self.logic.use_model(task.result)  # setting and parameter node, on this (GUI) thread
        except Exception as err:
            self.versions.status.setText(self.logic.redact(describe_error(err)))
            return
        self.versions.status.setText(f"MaleniaSegment now uses {task.result}")
        self.model_changed.emit(str(task.result))

    def close(self) -> None:
        """Stops both timers (Slicer's cleanup() on reload and exit). PythonQt's signal receivers hold the slots, and
        with them this panel, so a timer left running here would fire for the rest of the session."""
        self.timer.stop()
        self.turns.keep(False)
