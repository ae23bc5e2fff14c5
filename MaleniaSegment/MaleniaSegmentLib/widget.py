"""MaleniaSegment's panel (Slicer's `MaleniaSegmentWidget`): inputs, Segment Lesions, review, corrections, export.

Imported by the module file MaleniaSegment.py, which only declares the module (as SlicerNNUNet keeps its
widget in its Lib): Slicer finds this class by its name in the module file's namespace and builds it
with a parent, then calls setup() and enter(). Runs inside Slicer only (PythonQt's `qt`, `ctk`, `slicer`);
everything testable without the application is in the other modules of MaleniaSegmentLib.
"""

import logging
import os

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from MaleniaCommon import settings as shared_settings
from MaleniaCommon.paths import configured_model_folder
from MaleniaCommon.thread_turns import let_threads_run

from .module_logic import MaleniaSegmentLogic

DEVICE_ITEMS = (("Auto", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda"))
FILTER_ITEMS = (("Remove as calibrated", "model"), ("Remove fewer (lenient)", "lenient"),
                ("Keep every candidate lesion", "off"))  # segment_run.LESION_FILTERS


class MaleniaSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self.runKind = "segment"  # or "describe": what the finished run's outputs are for
        self.review = None
        self._segmentationObservation = None  # (vtkSegmentation, [observer tags]) of the open result

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MaleniaSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MaleniaSegmentLogic()

        for text, value in DEVICE_ITEMS:
            self.ui.deviceComboBox.addItem(text, value)
        for text, value in FILTER_ITEMS:
            self.ui.filterComboBox.addItem(text, value)
        self.ui.modelComboBox.addItem("Built-in model")
        self.ui.modelComboBox.addItem("Model folder")
        self.ui.modelComboBox.currentIndexChanged.connect(self._updateButtons)
        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.resultsFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.correctionsFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self._loadSettings()

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.timeout.connect(self.onPoll)
        self.syncTimer = qt.QTimer()  # Segment Editor edits arrive as many events: re-measure once they settle
        self.syncTimer.setSingleShot(True)
        self.syncTimer.setInterval(800)
        self.syncTimer.timeout.connect(self.onSegmentationEdited)

        self.ui.inputVolumeSelector.currentNodeChanged.connect(self._updateButtons)
        for signal in (self.ui.inputVolumeSelector.currentNodeChanged, self.ui.roiSelector.currentNodeChanged,
                       self.ui.modelComboBox.currentIndexChanged, self.ui.modelPathLineEdit.currentPathChanged,
                       self.ui.deviceComboBox.currentIndexChanged, self.ui.refineCheckBox.toggled,
                       self.ui.filterComboBox.currentIndexChanged):
            signal.connect(self._updateParameterNodeFromGUI)
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.loadResultsButton.clicked.connect(self.onLoadResults)
        self.ui.editMasksButton.clicked.connect(self.onEditMasks)
        self.ui.describeButton.clicked.connect(self.onDescribe)
        self.ui.checkDependenciesButton.clicked.connect(self.onCheckDependencies)
        for button, kind in ((self.ui.exportNiftiButton, "nifti"), (self.ui.exportSegNrrdButton, "seg"),
                             (self.ui.exportDicomSegButton, "dicom"), (self.ui.exportJsonButton, "json"),
                             (self.ui.exportHtmlButton, "html")):
            button.clicked.connect(lambda checked=False, k=kind: self.onExport(k))
        for edit in (self.ui.resultsFolderPathLineEdit, self.ui.correctionsFolderPathLineEdit):
            edit.currentPathChanged.connect(self._saveSettings)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndClose)
        self._showProgress(None)
        self.initializeParameterNode()
        self._updateButtons()

    def enter(self):
        self.initializeParameterNode()  # the scene's inputs first,
        self._applyModelSetting()  # then a model MaleniaTrainer chose meanwhile
        self._updateButtons()

    # -- parameter node ---------------------------------------------------------------------
    def initializeParameterNode(self):
        """Shows the scene's parameter node; a new one starts from what the panel shows."""
        self._parameterNode = self.logic.getParameterNode()
        if self._parameterNode.inputVolume is None:
            self._updateParameterNodeFromGUI()
        else:
            self._updateGUIFromParameterNode()

    def _updateGUIFromParameterNode(self):
        p = self._parameterNode
        self._updatingGUI = True
        try:
            self.ui.inputVolumeSelector.setCurrentNode(p.inputVolume)
            self.ui.roiSelector.setCurrentNode(p.roi)
            self.ui.modelComboBox.currentIndex = 1 if p.useModelFolder else 0
            self.ui.modelPathLineEdit.currentPath = p.modelFolder
            index = self.ui.deviceComboBox.findData(p.device)
            self.ui.deviceComboBox.currentIndex = max(index, 0)
            self.ui.refineCheckBox.checked = bool(p.refine)
            self.ui.filterComboBox.currentIndex = max(self.ui.filterComboBox.findData(p.lesionFilter), 0)
        finally:
            self._updatingGUI = False

    def _updateParameterNodeFromGUI(self, *args):
        p = getattr(self, "_parameterNode", None)
        if p is None or getattr(self, "_updatingGUI", False):
            return
        p.inputVolume = self.ui.inputVolumeSelector.currentNode()
        p.roi = self.ui.roiSelector.currentNode()
        p.useModelFolder = self.ui.modelComboBox.currentIndex == 1
        p.modelFolder = self.ui.modelPathLineEdit.currentPath
        p.device = self.ui.deviceComboBox.currentData or "auto"
        p.refine = bool(self.ui.refineCheckBox.checked)
        p.lesionFilter = self.ui.filterComboBox.currentData or "model"

    def onSceneEndClose(self, caller, event):
        if self.parent.isVisible():
            self.initializeParameterNode()

    def cleanup(self):
        # Slicer calls cleanup() on unload and reload also after a setup() that failed part-way.
        if self.run is not None:
            self.run.cancel()
        for timer in (getattr(self, "pollTimer", None), getattr(self, "syncTimer", None)):
            if timer is not None:
                timer.stop()
        self._unobserveSegmentation()
        self.removeObservers()

    # -- settings ---------------------------------------------------------------------------
    def _loadSettings(self):
        s = qt.QSettings()
        self.ui.resultsFolderPathLineEdit.currentPath = str(shared_settings.folder(s, shared_settings.RESULTS_FOLDER, "results"))
        self.ui.correctionsFolderPathLineEdit.currentPath = str(
            shared_settings.folder(s, shared_settings.CORRECTIONS_FOLDER, "corrections"))
        self._saveSettings()
        self._applyModelSetting()

    def _applyModelSetting(self):
        """Defaults the model to the folder MaleniaTrainer stored (Malenia/ModelFolder), once per new value."""
        value = qt.QSettings().value(shared_settings.MODEL_FOLDER, "")
        if value == getattr(self, "_appliedModelSetting", None):
            return
        self._appliedModelSetting = value
        folder = configured_model_folder(value)
        if folder:
            self.ui.modelComboBox.currentIndex = 1
            self.ui.modelPathLineEdit.currentPath = folder

    def _saveSettings(self, *args):
        from pathlib import Path

        s = qt.QSettings()
        s.setValue(shared_settings.RESULTS_FOLDER, self.ui.resultsFolderPathLineEdit.currentPath)
        s.setValue(shared_settings.CORRECTIONS_FOLDER, self.ui.correctionsFolderPathLineEdit.currentPath)
        self.logic.settings.results_dir = Path(self.ui.resultsFolderPathLineEdit.currentPath)
        self.logic.settings.corrections_dir = Path(self.ui.correctionsFolderPathLineEdit.currentPath)

    # -- state ------------------------------------------------------------------------------
    def _updateButtons(self, *args):
        running = self.run is not None
        hasVolume = self.ui.inputVolumeSelector.currentNode() is not None
        self.ui.segmentButton.enabled = hasVolume and not running
        self.ui.segmentButton.toolTip = "Run Malenia on the input volume" if hasVolume else "Select an input volume"
        self.ui.cancelButton.enabled = running
        self.ui.modelPathLineEdit.enabled = self.ui.modelComboBox.currentIndex == 1
        hasResults = self.logic is not None and self.logic.session is not None
        for button in (self.ui.exportNiftiButton, self.ui.exportSegNrrdButton, self.ui.exportJsonButton,
                       self.ui.exportHtmlButton, self.ui.editMasksButton, self.ui.describeButton):
            button.enabled = hasResults and not running
        self.ui.exportDicomSegButton.enabled = bool(hasResults and not running and self.logic.session.dicom_files)

    def _showProgress(self, progress):
        if progress is None:
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.setFormat("")
            return
        self.ui.progressBar.setValue(int(round(100 * progress.fraction)))
        self.ui.progressBar.setFormat(f"{progress.stage}: %p%")
        self.ui.statusLabel.text = progress.message

    def _ensureDependencies(self):
        from MaleniaCommon.deps import DependencyError

        try:
            return self.logic.ensureDependencies(
                lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle="Malenia: install Python packages"),
                self.ui.statusLabel.setText)
        except DependencyError as err:
            slicer.util.errorDisplay(str(err), windowTitle="Malenia")
            return False

    # -- running ----------------------------------------------------------------------------
    def _chosenModel(self):
        """(True, the model folder or None for the built-in one), or (False, None) after telling the user to choose."""
        model = self.ui.modelPathLineEdit.currentPath if self.ui.modelComboBox.currentIndex == 1 else None
        if self.ui.modelComboBox.currentIndex == 1 and not model:
            slicer.util.errorDisplay("Choose the model folder, or select the built-in model.", windowTitle="Malenia")
            return False, None
        return True, model

    def onSegment(self):
        if not self._ensureDependencies():
            return
        from MaleniaSegmentLib.segment_run import SegmentRequest

        volume = self.ui.inputVolumeSelector.currentNode()
        ok, model = self._chosenModel()
        if not ok:
            return
        request = SegmentRequest(volume, model_dir=model, device=self.ui.deviceComboBox.currentData,
                                 roi_node=self.ui.roiSelector.currentNode(), dicom_files=self.logic.dicomFiles(volume),
                                 knowledge_dirs=self._knowledgeDirs(), refine=bool(self.ui.refineCheckBox.checked),
                                 lesion_filter=self.ui.filterComboBox.currentData or "model")
        self._start(lambda: self.logic.startSegmentation(request), "segment", "Segmenting lesions ...")

    def onDescribe(self):
        """The model describes the outlines it has not described (lesions drawn by hand or re-outlined; segment --mask),
        in the background."""
        if self.logic.session is None or not self._ensureDependencies():
            return
        from MaleniaSegmentLib.segment_run import SegmentRequest

        ok, model = self._chosenModel()
        if not ok:
            return
        session = self.logic.session
        request = SegmentRequest(session.volume_node, model_dir=model, device=self.ui.deviceComboBox.currentData,
                                 dicom_files=list(session.dicom_files), knowledge_dirs=self._knowledgeDirs())
        self._start(lambda: self.logic.startDescribing(request), "describe", "Describing your outlines ...")

    def _start(self, start, kind, message):
        try:
            with slicer.util.WaitCursor():
                self.run = start()
        except (ValueError, RuntimeError, OSError) as err:
            what = "segmentation" if kind == "segment" else "description"
            slicer.util.errorDisplay(f"Cannot start the {what}: {err}", windowTitle="Malenia")
            return
        self.runKind = kind
        self.ui.statusLabel.text = message
        self._showProgress(None)
        self.pollTimer.start()
        self._updateButtons()

    def onPoll(self):
        from MaleniaSegmentLib.runner import RunState

        run = self.run
        if run is None:
            self.pollTimer.stop()
            return
        let_threads_run()  # the readers of the run's output are Python threads: inside Slicer they need the turn
        run.poll()
        if run.job.last_progress is not None:
            self._showProgress(run.job.last_progress)
        if run.state is RunState.RUNNING:
            return
        self.pollTimer.stop()
        self.run = None
        if run.state is RunState.SUCCEEDED:
            try:
                with slicer.util.WaitCursor():
                    if self.runKind == "describe":
                        self._showDescribed(self.logic.finishDescribing(run), run.out_dir)
                    else:
                        session = self.logic.finishSegmentation(run)
                        self._showResults(session)
                        self.ui.statusLabel.text = f"{len(session.lesions)} lesion(s) found. Results: {run.out_dir}"
            except Exception as err:  # noqa: BLE001 - shown to the user, details in the log
                logging.exception("Malenia: importing results failed")
                slicer.util.errorDisplay(f"Cannot show the results: {err}", windowTitle="Malenia")
        elif run.state is RunState.CANCELLED:
            self.ui.statusLabel.text = "Cancelled. Nothing was written."
            self._showProgress(None)
        else:
            self.ui.statusLabel.text = run.error
            what = "describing" if self.runKind == "describe" else "segmentation"
            slicer.util.errorDisplay(run.error, windowTitle=f"Malenia: {what} failed",
                                     detailedText="\n".join(run.job.process.stderr_lines[-40:]))
        self._updateButtons()

    def _showDescribed(self, described, out_dir):
        session = self.logic.session
        text = f"{len(described)} outline(s) described by the model. Outputs: {out_dir}"
        self.review.set_lesions(session.lesions, text)
        if described:
            self.review.select(described[0].label)
        self.ui.statusLabel.text = text

    def onCancel(self):
        if self.run is not None:
            self.ui.statusLabel.text = "Cancelling ..."
            slicer.app.processEvents()
            self.run.cancel()
            self.onPoll()

    def onLoadResults(self):
        volume = self.ui.inputVolumeSelector.currentNode()
        if volume is None:
            slicer.util.errorDisplay("Select the volume the results were computed from.", windowTitle="Malenia")
            return
        folder = qt.QFileDialog.getExistingDirectory(None, "Malenia results folder", str(self.logic.settings.results_dir))
        if not folder or not self._ensureDependencies():
            return
        try:
            with slicer.util.WaitCursor():
                session = self.logic.loadResults(folder, volume, dicom_files=self.logic.dicomFiles(volume))
            self._showResults(session)
        except (ValueError, OSError) as err:
            slicer.util.errorDisplay(str(err), windowTitle="Malenia")

    # -- review -----------------------------------------------------------------------------
    def _ensureReviewPanel(self):
        if self.review is not None:
            return self.review
        from MaleniaSegmentLib.review_panel import ReviewPanel
        from malenia.infer.terminology import Terminology

        terminology = Terminology.load()
        self.review = ReviewPanel({k: terminology.display_name(k) for k in terminology.diseases})
        self.ui.reviewPlaceholder.layout().addWidget(self.review.widget)
        self.review.lesionSelected.connect(self.onLesionSelected)
        self.review.lesionChanged.connect(self.onLesionChanged)
        self.review.saveRequested.connect(self.onSaveCorrection)
        self.review.attributes.suggest = self._reviewedDisease
        return self.review

    def _reviewedDisease(self, lesion):
        """The disease the table in force gives a lesion with the reviewer's descriptions (the attribute panel's
        suggestion), None when there is nothing to say."""
        from MaleniaSegmentLib.profile_editor import reviewed_disease
        from MaleniaSegmentLib.review import DiseaseChoice

        session, editor = self.logic.session, getattr(self, "profileEditor", None)
        if session is None or editor is None or all(x is not lesion for x in session.lesions):
            return None
        call = reviewed_disease(session, lesion.label, editor.logic.table)
        return DiseaseChoice.of_call(call) if call is not None else None

    # -- disease profiles (MaleniaSegmentLib.profile_editor) ---------------------------------
    def _knowledgeFolder(self):
        """Site disease profiles: the Malenia/KnowledgeFolder setting, else ~/Malenia/knowledge."""
        return shared_settings.folder(qt.QSettings(), shared_settings.KNOWLEDGE_FOLDER, "knowledge")

    def _knowledgeDirs(self):
        """The folder a run reads site profiles from (--knowledge). The default one is created on first use; one
        set in the settings that is missing gets the command's warning in the run's log."""
        folder = self._knowledgeFolder()
        if not qt.QSettings().value(shared_settings.KNOWLEDGE_FOLDER, ""):
            folder.mkdir(parents=True, exist_ok=True)
        return [str(folder)]

    def _ensureProfileEditor(self):
        if getattr(self, "profileEditor", None) is not None:
            return self.profileEditor
        from MaleniaSegmentLib.profile_editor import ProfileEditor, ProfileEditorLogic
        from malenia.infer.site_table import table_in_force_at

        folder = self._knowledgeFolder()
        model = self.ui.modelPathLineEdit.currentPath if self.ui.modelComboBox.currentIndex == 1 else None
        self.profileEditor = ProfileEditor(ProfileEditorLogic(lambda: table_in_force_at(model or None, [folder]), folder))
        self.profileEditor.corrections_dir = lambda: self.logic.settings.corrections_dir
        section = ctk.ctkCollapsibleButton()
        section.text = "Disease profiles"
        section.collapsed = True
        qt.QVBoxLayout(section).addWidget(self.profileEditor.widget)
        column = self.ui.reviewCollapsibleButton.parentWidget().layout()
        column.insertWidget(column.indexOf(self.ui.reviewCollapsibleButton) + 1, section)
        self.profileEditor.saved.connect(self.onProfilesSaved)
        return self.profileEditor

    def onProfilesSaved(self, changes):
        """A saved or removed profile re-ranked the open result's lesions: show their new names."""
        session = self.logic.session
        if session is not None and self.review is not None:
            self.review.set_lesions(session.lesions, f"{sum(c.changed for c in changes)} lesion(s) renamed by the "
                                                     "disease profiles")

    def _showResults(self, session):
        review = self._ensureReviewPanel()
        try:
            self._ensureProfileEditor().set_session(session)
        except Exception as err:  # the profiles are an extra: results show even if they cannot be edited
            logging.warning(f"Malenia disease profiles unavailable: {err}")
        model = session.result.model
        review.set_lesions(session.lesions, f"{len(session.lesions)} lesion(s) · model {model.name} {model.version} · "
                                            f"{session.out_dir.name}")
        seg = session.segmentation_node
        seg.CreateDefaultDisplayNodes()
        seg.GetDisplayNode().SetVisibility(True)
        slicer.util.setSliceViewerLayers(background=session.volume_node)
        # Segment Editor edits (paint, erase, add, delete) re-measure the lesions once they settle.
        self._observeSegmentation(seg.GetSegmentation())
        self.ui.reviewCollapsibleButton.collapsed = False
        if session.lesions:
            review.select(session.lesions[0].label)
        self._updateButtons()

    @staticmethod
    def _segmentationEvents():
        return (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                slicer.vtkSegmentation.SourceRepresentationModified)

    def _observeSegmentation(self, segmentation):
        # Own observer tags, not VTKObservationMixin's: Slicer's removeObserver leaves the observed object as a key
        # of its bookkeeping, which would keep every closed result's segmentation and its label maps alive.
        self._unobserveSegmentation()
        tags = [segmentation.AddObserver(event, self._onSegmentationModified) for event in self._segmentationEvents()]
        self._segmentationObservation = (segmentation, tags)

    def _unobserveSegmentation(self):
        if self._segmentationObservation is not None:
            segmentation, tags = self._segmentationObservation
            for tag in tags:
                segmentation.RemoveObserver(tag)
        self._segmentationObservation = None

    def _onSegmentationModified(self, caller, event):
        self.syncTimer.start()

    def onSegmentationEdited(self):
        session = self.logic.session
        if session is None or self.review is None:
            return
        with slicer.util.WaitCursor():
            lesions = session.sync_with_segmentation()
        self.review.set_lesions(lesions, session.edit_summary())

    def onLesionSelected(self, label):
        session = self.logic.session
        if session is None:
            return
        if getattr(self, "profileEditor", None) is not None:
            from MaleniaSegmentLib.profile_editor import lesion_ruled_out, lesion_scores

            self.profileEditor.set_lesion_scores(lesion_scores(session, label), lesion_ruled_out(session, label))
        r, a, s = session.center_ras(label)
        slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)
        # When the Segment Editor works on these results, the lesion becomes its current segment. Only an editor
        # already built: widgetRepresentation() would build the whole Segment Editor panel on the first click.
        segmentEditor = getattr(slicer.modules, "SegmentEditorWidget", None)
        editor = segmentEditor.editor if segmentEditor is not None else None
        if editor is not None and editor.segmentationNode() is session.segmentation_node:
            editor.setCurrentSegmentID(session.lesion(label).segment_id)

    def onLesionChanged(self, lesion):
        if self.logic.session is not None:
            self.logic.session.apply_to_segment(lesion)

    def onEditMasks(self):
        session = self.logic.session
        if session is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(session.segmentation_node)
        if hasattr(editor, "setSourceVolumeNode"):  # Slicer >= 5.2
            editor.setSourceVolumeNode(session.volume_node)
        else:
            editor.setMasterVolumeNode(session.volume_node)

    def onSaveCorrection(self):
        try:
            with slicer.util.WaitCursor():
                saved = self.logic.saveCorrection()
        except (ValueError, OSError, RuntimeError) as err:
            slicer.util.errorDisplay(f"The correction was not saved: {err}", windowTitle="Malenia")
            return
        text = f"Saved correction {saved.case_id} in {self.logic.settings.corrections_dir}"
        self.review.attributes.show_status(text)
        self.ui.statusLabel.text = text

    # -- export -----------------------------------------------------------------------------
    def onExport(self, kind):
        from MaleniaSegmentLib.export import EXPORTS, ExportError, default_file_name

        session = self.logic.session
        if session is None:
            return
        suffix = EXPORTS[kind][1]
        start = os.path.join(str(self.logic.settings.results_dir), default_file_name(session, kind))
        path = qt.QFileDialog.getSaveFileName(None, "Export", start, f"*{suffix}")
        if not path:
            return
        if not path.endswith(suffix):
            path += suffix
        try:
            with slicer.util.WaitCursor():
                written = self.logic.export(kind, path)
        except (ExportError, ValueError, OSError) as err:
            slicer.util.errorDisplay(f"Export failed: {err}", windowTitle="Malenia")
            return
        self.ui.statusLabel.text = f"Exported {written}"

    def onCheckDependencies(self):
        if self._ensureDependencies():
            self.ui.statusLabel.text = "All Python packages Malenia needs are installed."

    def onSceneStartClose(self, caller, event):
        if self.run is not None:
            self.run.cancel()
            self.run = None
            self.pollTimer.stop()
        self.logic.session = None
        self.syncTimer.stop()
        self._unobserveSegmentation()  # the observation would keep the closed scene's segmentation alive
        if getattr(self, "profileEditor", None) is not None:
            self.profileEditor.set_session(None)  # a profile saved later re-ranks no closed result
            self.profileEditor.set_lesion_scores(None)
        if self.review is not None:
            self.review.set_lesions([], "No results.")
        self._updateButtons()
