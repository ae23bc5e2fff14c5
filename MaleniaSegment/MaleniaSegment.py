"""MaleniaSegment: segment lesions in a CT (also lesion types never trained on), review each lesion's
disease and 8 attribute descriptions, correct them, save corrections as training cases, export.

Thin Slicer glue only: module, widget, logic and self-test. Everything else, testable without the
Slicer application, is in MaleniaSegmentLib/ (see its __init__.py).
"""

import logging
import os
import sys
import time

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin

# MaleniaCommon (shared with MaleniaTrainer) sits in the parent folder in a checkout; the built
# extension installs it beside the modules, already on sys.path.
_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_PARENT, "MaleniaCommon")) and _PARENT not in sys.path:
    sys.path.append(_PARENT)

from MaleniaCommon import settings as shared_settings  # noqa: E402
from MaleniaCommon.paths import configured_model_folder, ensure_malenia_importable, malenia_root  # noqa: E402
from MaleniaSegmentLib.logic import MaleniaLogic  # noqa: E402

ensure_malenia_importable()

DEVICE_ITEMS = (("Auto", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda"))


#
# Module
#

class MaleniaSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Malenia Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "Terminologies", "Markups"]
        self.parent.contributors = ["Malenia for 3D Slicer developers"]
        self.parent.helpText = (
            "Segments lesions in a CT, including lesion types the model was never trained on, and describes each "
            "lesion by 8 visual attributes (location, shape, density, density variations, surface, enhancement, "
            "relationship with surrounding organs, specific features) matched to text, with the disease inferred "
            "from them. Review and correct the descriptions and masks, save corrections as training cases, "
            "and export the segmentation and the report.")
        self.parent.acknowledgementText = (
            "Implements Malenia (Jiang et al., 'Zero-shot lesion segmentation by aligning lesion masks with "
            "elemental attributes', ICLR 2025). Research use only: not a medical device.")
        slicer.app.connect("startupCompleted()", self._registerTerminology)

    def _registerTerminology(self):
        # The lesion terminology (Resources/terminology) lets the Segment Editor show and pick these codes.
        root = malenia_root()
        folder = os.path.join(str(root), "Resources", "terminology") if root else None
        if not folder or not os.path.isdir(folder):
            return
        logic = slicer.modules.terminologies.logic()
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith("SegmentationCategoryTypeModifier"):
                logic.LoadTerminologyFromFile(path)
            elif name.startswith("AnatomicRegionAndModifier"):
                # LoadContextFromFile exists since 5.6; LoadAnatomicContextFromFile is deprecated on main.
                load = getattr(logic, "LoadContextFromFile", None) or logic.LoadAnatomicContextFromFile
                load(path)


#
# Parameter node
#

@parameterNodeWrapper
class MaleniaSegmentParameterNode:
    """The inputs of a Segment Lesions run, kept in the scene (a saved scene restores them)."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    useModelFolder: bool = False
    modelFolder: str = ""
    device: str = "auto"
    roi: slicer.vtkMRMLMarkupsROINode


#
# Widget
#

class MaleniaSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self.review = None
        self._observedSegmentation = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MaleniaSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MaleniaSegmentLogic()

        for text, value in DEVICE_ITEMS:
            self.ui.deviceComboBox.addItem(text, value)
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
                       self.ui.deviceComboBox.currentIndexChanged):
            signal.connect(self._updateParameterNodeFromGUI)
        self.ui.segmentButton.clicked.connect(self.onSegment)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.loadResultsButton.clicked.connect(self.onLoadResults)
        self.ui.editMasksButton.clicked.connect(self.onEditMasks)
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

    def onSceneEndClose(self, caller, event):
        if self.parent.isVisible():
            self.initializeParameterNode()

    def cleanup(self):
        if self.run is not None:
            self.run.cancel()
        self.pollTimer.stop()
        self.syncTimer.stop()
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
                       self.ui.exportHtmlButton, self.ui.editMasksButton):
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
    def onSegment(self):
        if not self._ensureDependencies():
            return
        from MaleniaSegmentLib.segment_run import SegmentRequest

        volume = self.ui.inputVolumeSelector.currentNode()
        model = self.ui.modelPathLineEdit.currentPath if self.ui.modelComboBox.currentIndex == 1 else None
        if self.ui.modelComboBox.currentIndex == 1 and not model:
            slicer.util.errorDisplay("Choose the model folder, or select the built-in model.", windowTitle="Malenia")
            return
        request = SegmentRequest(volume, model_dir=model, device=self.ui.deviceComboBox.currentData,
                                 roi_node=self.ui.roiSelector.currentNode(), dicom_files=self.logic.dicomFiles(volume),
                                 knowledge_dirs=[str(self._knowledgeFolder())])
        try:
            self.run = self.logic.startSegmentation(request)
        except (ValueError, RuntimeError, OSError) as err:
            slicer.util.errorDisplay(f"Cannot start the segmentation: {err}", windowTitle="Malenia")
            return
        self.ui.statusLabel.text = "Segmenting lesions ..."
        self._showProgress(None)
        self.pollTimer.start()
        self._updateButtons()

    def onPoll(self):
        from MaleniaSegmentLib.runner import RunState

        run = self.run
        if run is None:
            self.pollTimer.stop()
            return
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
            slicer.util.errorDisplay(run.error, windowTitle="Malenia: segmentation failed",
                                     detailedText="\n".join(run.job.process.stderr_lines[-40:]))
        self._updateButtons()

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
        return self.review

    # -- disease profiles (MaleniaSegmentLib.profile_editor) ---------------------------------
    def _knowledgeFolder(self):
        """Site disease profiles: the Malenia/KnowledgeFolder setting, else ~/Malenia/knowledge."""
        return shared_settings.folder(qt.QSettings(), shared_settings.KNOWLEDGE_FOLDER, "knowledge")

    def _ensureProfileEditor(self):
        if getattr(self, "profileEditor", None) is not None:
            return self.profileEditor
        from MaleniaSegmentLib.profile_editor import ProfileEditor, ProfileEditorLogic
        from malenia.knowledge.site import table_in_force_at

        folder = self._knowledgeFolder()
        model = self.ui.modelPathLineEdit.currentPath if self.ui.modelComboBox.currentIndex == 1 else None
        self.profileEditor = ProfileEditor(ProfileEditorLogic(lambda: table_in_force_at(model or None, [folder]), folder))
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
        self._unobserveSegmentation()
        self._observedSegmentation = seg.GetSegmentation()
        for event in self._segmentationEvents():
            self.addObserver(self._observedSegmentation, event, self._onSegmentationModified)
        self.ui.reviewCollapsibleButton.collapsed = False
        if session.lesions:
            review.select(session.lesions[0].label)
        self._updateButtons()

    @staticmethod
    def _segmentationEvents():
        return (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                slicer.vtkSegmentation.SourceRepresentationModified)

    def _unobserveSegmentation(self):
        if self._observedSegmentation is not None:
            for event in self._segmentationEvents():
                self.removeObserver(self._observedSegmentation, event, self._onSegmentationModified)
        self._observedSegmentation = None

    def _onSegmentationModified(self, caller, event):
        self.syncTimer.start()

    def onSegmentationEdited(self):
        session = self.logic.session
        if session is None or self.review is None:
            return
        with slicer.util.WaitCursor():
            lesions = session.sync_with_segmentation()
        self.review.set_lesions(lesions, f"{len(lesions)} lesion(s) · masks edited" if session.masks_edited else "")

    def onLesionSelected(self, label):
        session = self.logic.session
        if session is None:
            return
        if getattr(self, "profileEditor", None) is not None:
            from MaleniaSegmentLib.profile_editor import lesion_scores

            self.profileEditor.set_lesion_scores(lesion_scores(session, label))
        r, a, s = session.center_ras(label)
        slicer.modules.markups.logic().JumpSlicesToLocation(r, a, s, True)
        # When the Segment Editor works on these results, the lesion becomes its current segment.
        editorModule = slicer.modules.segmenteditor.widgetRepresentation()
        editor = editorModule.self().editor if editorModule else None
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
        if self.review is not None:
            self.review.set_lesions([], "No results.")
        self._updateButtons()


#
# Logic
#

class MaleniaSegmentLogic(ScriptedLoadableModuleLogic, MaleniaLogic):
    """MaleniaSegmentLib.logic.MaleniaLogic on slicer.mrmlScene, plus Slicer services (pip, DICOM database)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)  # its super().__init__() runs MaleniaLogic.__init__() first
        MaleniaLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return MaleniaSegmentParameterNode(super().getParameterNode())

    def ensureDependencies(self, confirm, log=logging.info):
        """Asks (confirm(text) -> bool) and installs missing packages; raises deps.DependencyError."""
        from MaleniaCommon import deps

        plan = deps.plan_installation()
        if plan.empty:
            return True
        if not confirm(plan.describe()):
            raise deps.DependencyError("Malenia's Python packages are not installed (installation was declined)")
        with slicer.util.WaitCursor():
            # slicer.util.pip_install takes one string in older Slicer versions; requirements have no spaces
            return deps.ensure_dependencies(lambda text: True, lambda args: slicer.util.pip_install(" ".join(args)),
                                            log, plan=plan)

    @staticmethod
    def dicomFiles(volume):
        """The DICOM files a volume was loaded from (empty when not from the DICOM database)."""
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split() if volume else []
        if not uids or not getattr(slicer, "dicomDatabase", None):
            return []
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        return files if all(f and os.path.isfile(f) for f in files) else []


#
# Self-test
#

class MaleniaSegmentTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: real `malenia segment` on a sample CT (inside a region of interest to keep it short),
    import, a correction saved and read back, every export, and a cancelled run that leaves nothing.
    MALENIA_SELFTEST_VOLUME and MALENIA_SELFTEST_MODEL choose another CT file and model folder."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentReviewCorrectExport()
        self.setUp()
        self.test_CancelLeavesNothing()

    def _sampleVolume(self):
        path = os.environ.get("MALENIA_SELFTEST_VOLUME")
        if path:
            return slicer.util.loadVolume(path)
        import SampleData

        return SampleData.SampleDataLogic().downloadSample("CTChest")

    def _roiAround(self, volume, size_mm=90.0):
        bounds = [0.0] * 6
        volume.GetRASBounds(bounds)
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Malenia self-test region")
        roi.SetCenter([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
        roi.SetSize([size_mm, size_mm, min(size_mm, bounds[5] - bounds[4])])
        return roi

    def _tempLogic(self):
        import tempfile
        from pathlib import Path

        logic = MaleniaSegmentLogic()
        root = Path(tempfile.mkdtemp(prefix="malenia-selftest-"))
        logic.settings.results_dir, logic.settings.corrections_dir = root / "results", root / "corrections"
        return logic, root

    def _wait(self, run, timeout_s=3600):
        from MaleniaSegmentLib.runner import RunState

        start = time.time()
        while run.state is RunState.RUNNING:
            run.poll()
            slicer.app.processEvents()  # the GUI stays live while it runs
            self.assertLess(time.time() - start, timeout_s, "segmentation took too long")
            time.sleep(0.1)

    def test_SegmentReviewCorrectExport(self):
        from malenia.data.dataset import read_case
        from MaleniaSegmentLib.runner import RunState
        from MaleniaSegmentLib.segment_run import SegmentRequest

        self.delayDisplay("Loading sample CT")
        volume = self._sampleVolume()
        logic, root = self._tempLogic()
        self.assertTrue(logic.ensureDependencies(lambda text: True))
        self.delayDisplay("Segmenting lesions in a region of interest")
        run = logic.startSegmentation(SegmentRequest(volume, model_dir=os.environ.get("MALENIA_SELFTEST_MODEL"),
                                                      device="auto", roi_node=self._roiAround(volume)))
        self._wait(run)
        self.assertEqual(run.state, RunState.SUCCEEDED, run.error)
        session = logic.finishSegmentation(run)
        seg = session.segmentation_node
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), len(session.lesions))
        self.assertIs(seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()), volume)
        for lesion in session.lesions:
            segment = seg.GetSegmentation().GetSegment(lesion.segment_id)
            self.assertTrue(segment.GetName())
            self.assertEqual(len(lesion.aspects), 8)

        self.delayDisplay("Correcting and saving")
        if session.lesions:
            lesion = session.lesions[0]
            lesion.aspects["specific_features"].choose("self-test: typed description")
            lesion.set_disease("liver_cyst", {"liver_cyst": "Liver cyst"})
            session.apply_to_segment(lesion)
        saved = logic.saveCorrection()
        case = read_case(logic.settings.corrections_dir, saved.case_id)
        self.assertEqual(len(case.report.lesions), len(session.lesions))
        if session.lesions:
            self.assertEqual(case.report.lesions[0].disease, "liver_cyst")
            self.assertEqual(case.report.lesions[0].attributes["specific_features"][0].text, "self-test: typed description")

        self.delayDisplay("Exporting")
        for kind, name in (("nifti", "l.nii.gz"), ("seg", "l.seg.nrrd"), ("json", "r.json"), ("html", "r.html")):
            path = logic.export(kind, root / "export" / name)
            self.assertTrue(path.is_file() and path.stat().st_size > 0)
        self.delayDisplay("Test passed")

    def test_CancelLeavesNothing(self):
        from MaleniaSegmentLib.runner import RunState
        from MaleniaSegmentLib.segment_run import SegmentRequest

        volume = self._sampleVolume()
        logic, root = self._tempLogic()
        run = logic.startSegmentation(SegmentRequest(volume, model_dir=os.environ.get("MALENIA_SELFTEST_MODEL"), device="cpu"))
        start = time.time()
        while run.job.last_progress is None and run.state is RunState.RUNNING and time.time() - start < 300:
            run.poll()
            slicer.app.processEvents()
            time.sleep(0.1)
        run.cancel()
        self.assertEqual(run.state, RunState.CANCELLED)
        self.assertFalse(run.out_dir.exists())
        self.assertEqual(list(run.out_dir.parent.iterdir()), [])
        self.delayDisplay("Cancel test passed")
