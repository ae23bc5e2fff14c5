"""A reviewed `malenia segment` result in an MRML scene: output folder -> segmentation node + lesion rows.

The segmentation node is read from the output's `lesions.seg.nrrd` (one segment per lesion, named
by disease, coloured, with terminology and `Malenia.*` tags, written by malenia.infer.seg_nrrd) and
references the input volume. Lesions are linked to segments by the `Malenia.label` tag, so
renaming or recolouring a segment in the Segment Editor does not break the link; segments the
radiologist adds become new lesions, deleted segments drop out.

Works on any scene: Slicer's `slicer.mrmlScene`, or a `vtkMRMLScene` from the slicer-core package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from malenia.aspects import ASPECTS
from malenia.errors import MaleniaError
from malenia.infer.measurements import measure_lesions
from malenia.infer.outputs import FILE_NAMES
from malenia.infer.results import (AspectMatch, AttributeMatch, DiseaseCall, LesionResult, SegmentationResult)
from malenia.infer.seg_nrrd import TAG_PREFIX, segment_tags
from malenia.infer.terminology import SegmentSpec, Terminology, lesion_segment, segment_specs
from malenia.knowledge.vocabulary import Vocabulary

from . import mrml_io
from .review import DiseaseChoice, LesionReview, drawn_aspects, lesion_from_result

LABEL_TAG = TAG_PREFIX + "label"
CORRECTED_TAG = TAG_PREFIX + "corrected"
# the output folder's file names, owned by malenia.infer.outputs (the writer)
REPORT_FILE, LABELS_FILE, SEG_FILE, DICOM_SEG_FILE, HTML_FILE = (
    FILE_NAMES[k] for k in ("json", "nifti", "seg", "dicom", "html"))


class ResultsError(ValueError):
    """An output folder that cannot be shown on this volume; the message is one line for the user."""


def read_result(out_dir: Path) -> SegmentationResult:
    import json

    report_path, labels_path = out_dir / REPORT_FILE, out_dir / LABELS_FILE
    for p in (report_path, labels_path, out_dir / SEG_FILE):
        if not p.is_file():
            raise ResultsError(f"{out_dir} is not a complete 'malenia segment' output: {p.name} is missing")
    try:
        obj = json.loads(report_path.read_text(encoding="utf-8"))
        return SegmentationResult.from_json(obj, labels=sitk.ReadImage(str(labels_path)))
    except (ValueError, KeyError, TypeError, RuntimeError, MaleniaError) as err:  # MaleniaError: a malformed field
        raise ResultsError(f"{report_path}: {str(err).splitlines()[0]}") from None


def _voxel_centres(size, ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS positions of the 8 corner voxel centres, sorted (independent of axis order and direction)."""
    corners = np.array([[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    ras = (ijk_to_ras @ corners.T).T[:, :3]
    return ras[np.lexsort(np.round(ras, 2).T[::-1])]


def _node_grid_relation(node, image: sitk.Image, tol: float = 1e-3) -> str:
    """'same' grid, 'same-space' (the same voxels in another axis order or direction, as DICOM
    readers may give), or 'other'."""
    data = node.GetImageData()
    if data is None:
        return "other"
    dims = tuple(data.GetDimensions())
    node_m, image_m = mrml_io.node_ijk_to_ras(node), mrml_io.ijk_to_ras(image)
    if dims == tuple(image.GetSize()) and np.allclose(node_m, image_m, atol=tol):
        return "same"
    spacing_node = sorted(np.linalg.norm(node_m[:3, :3], axis=0))
    spacing_image = sorted(np.linalg.norm(image_m[:3, :3], axis=0))
    if sorted(dims) == sorted(image.GetSize()) and np.allclose(spacing_node, spacing_image, atol=tol) and \
            np.allclose(_voxel_centres(dims, node_m), _voxel_centres(image.GetSize(), image_m), atol=10 * tol):
        return "same-space"
    return "other"


@dataclass
class ReviewSession:
    scene: object
    volume_node: object
    segmentation_node: object
    result: SegmentationResult
    out_dir: Path
    lesions: list[LesionReview]
    terminology: Terminology
    dicom_files: list[str] = field(default_factory=list)  # source series when the volume came from DICOM
    masks_edited: bool = False
    vocabulary: object = None  # malenia.knowledge.vocabulary.Vocabulary: the texts of every scored description
    # the highest lesion label this session has given: a label is never given twice, since the result's scores,
    # re-ranking and a describe run still under way find lesions by label
    last_label: int = 0

    # -- import -----------------------------------------------------------------------------
    @classmethod
    def import_output(cls, scene, out_dir: str | Path, volume_node, segmentation_node=None,
                      dicom_files: list[str] | None = None, terminology: Terminology | None = None) -> "ReviewSession":
        """Loads an output folder onto `volume_node` (the volume it was computed from)."""
        slicer = mrml_io.slicer_module()
        mrml_io.ensure_segmentation_converters()
        out_dir = Path(out_dir)
        result = read_result(out_dir)
        if _node_grid_relation(volume_node, result.labels) == "other":
            raise ResultsError(f"the results in {out_dir} were computed on another image grid than volume "
                               f"{volume_node.GetName()!r}")
        if segmentation_node is None:
            segmentation_node = slicer.vtkMRMLSegmentationNode()
            segmentation_node.SetName(f"{volume_node.GetName()} lesions")
            scene.AddNode(segmentation_node)
        segmentation_node.GetSegmentation().RemoveAllSegments()
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(out_dir / SEG_FILE))
        if not storage.ReadData(segmentation_node):
            raise ResultsError(f"cannot read {out_dir / SEG_FILE}")
        # The output folder is a record of the run: scene saves must not write into it, so the
        # node keeps no storage node pointing there.
        segmentation_node.SetAndObserveStorageNodeID(None)
        if segmentation_node.GetDisplayNode() is None:
            segmentation_node.CreateDefaultDisplayNodes()
        # The transform first: the reference geometry is then computed in the segmentation's own
        # coordinates (set the other way round, a transformed volume's transform is applied twice).
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation_node.SetAttribute("Malenia.OutputFolder", str(out_dir))

        terminology = terminology or Terminology.load()
        session = cls(scene, volume_node, segmentation_node, result, out_dir, [], terminology,
                      list(dicom_files or result.scan.dicom_files), vocabulary=Vocabulary.load())
        by_label = session.segment_ids_by_label()
        lesions = []
        for lesion in result.lesions:
            segment_id = by_label.get(lesion.label)
            if segment_id is None:
                raise ResultsError(f"{SEG_FILE} has no segment for lesion {lesion.label} of {REPORT_FILE}")
            review = lesion_from_result(lesion, terminology.display_name, session.vocabulary)
            review.segment_id = segment_id
            review.color = session._segment_color(segment_id)
            lesions.append(review)
        session.lesions = lesions
        return session

    # -- segments ---------------------------------------------------------------------------
    @property
    def segmentation(self):
        return self.segmentation_node.GetSegmentation()

    def segment_ids(self) -> list[str]:
        s = self.segmentation
        return [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]

    def segment_ids_by_label(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for sid in self.segment_ids():
            value = self.segment_tag(sid, LABEL_TAG)
            if value and value.isdigit():
                out[int(value)] = sid
        return out

    def segment_tag(self, segment_id: str, tag: str) -> str | None:
        segment = self.segmentation.GetSegment(segment_id)
        return get_tag(segment, tag) if segment is not None else None

    def _segment_color(self, segment_id: str) -> tuple[int, int, int]:
        c = self.segmentation.GetSegment(segment_id).GetColor()
        return (int(round(c[0] * 255)), int(round(c[1] * 255)), int(round(c[2] * 255)))

    def lesion(self, label: int) -> LesionReview:
        for lesion in self.lesions:
            if lesion.label == label:
                return lesion
        raise KeyError(label)

    def center_ras(self, label: int) -> tuple[float, float, float]:
        """Where to centre the slice views for a lesion: its centroid (measured on the current mask)."""
        lesion = self.lesion(label)
        if lesion.centroid_ras is not None:
            return lesion.centroid_ras
        center = self.segmentation_node.GetSegmentCenterRAS(lesion.segment_id)
        return tuple(float(c) for c in center)  # type: ignore[return-value]

    # -- masks ------------------------------------------------------------------------------
    def labels_image(self, lesions: list[LesionReview] | None = None, relabel: bool = False) -> sitk.Image:
        """The current segments as a label map on the volume's grid.

        Values are the lesions' labels, or 1..K in lesion order with `relabel`. Where segments
        overlap, the later lesion wins.
        """
        import vtk

        slicer = mrml_io.slicer_module()
        lesions = self.lesions if lesions is None else lesions
        present = set(self.segment_ids())
        exported_lesions = [(i, lesion) for i, lesion in enumerate(lesions) if lesion.segment_id in present]
        ids = vtk.vtkStringArray()
        for _, lesion in exported_lesions:
            ids.InsertNextValue(lesion.segment_id)
        node = slicer.vtkMRMLLabelMapVolumeNode()
        self.scene.AddNode(node)
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        try:
            if exported_lesions:
                ok = mrml_io.segmentations_logic(self.scene).ExportSegmentsToLabelmapNode(
                    self.segmentation_node, ids, node, self.volume_node)
                if not ok or node.GetImageData() is None:
                    raise ResultsError("exporting the segments to a label map failed")
                exported = mrml_io.volume_to_sitk(node)
            else:
                exported = sitk.Image(self._volume_grid_image())
        finally:
            _remove_with_helpers(self.scene, node, before)
        index = sitk.GetArrayViewFromImage(exported)
        # exported value j (1-based, in export order) -> the lesion's label (or its 1..K position)
        values = np.array([0] + [(i + 1 if relabel else lesion.label) for i, lesion in exported_lesions])
        dtype = np.uint8 if values.max(initial=0) < 256 else np.uint16
        out = sitk.GetImageFromArray(values.astype(dtype)[np.asarray(index, dtype=np.int64)])
        out.CopyInformation(exported)
        return out

    def _volume_grid_image(self) -> sitk.Image:
        ref = sitk.Image([int(d) for d in self.volume_node.GetImageData().GetDimensions()], sitk.sitkUInt8)
        m = mrml_io.node_ijk_to_ras(self.volume_node)
        lps = mrml_io.LPS_TO_RAS @ m[:3, :3]
        spacing = np.linalg.norm(lps, axis=0)
        ref.SetSpacing(spacing.tolist())
        ref.SetDirection((lps / spacing).flatten().tolist())
        ref.SetOrigin((mrml_io.LPS_TO_RAS @ m[:3, 3]).tolist())
        return ref

    def sync_with_segmentation(self) -> list[LesionReview]:
        """Follows Segment Editor changes: new segments become lesions, deleted ones drop out,
        and every lesion is re-measured on its current mask."""
        present = set(self.segment_ids())
        by_label = self.segment_ids_by_label()
        kept = []
        for lesion in self.lesions:
            sid = by_label.get(lesion.label, lesion.segment_id if lesion.segment_id in present else None)
            if sid is None:
                self.masks_edited = True
                continue
            lesion.segment_id = sid
            lesion.color = self._segment_color(sid)
            kept.append(lesion)
        known = {lesion.segment_id for lesion in kept}
        used = [lesion.label for lesion in self.lesions] + [x.label for x in self.result.lesions] + [self.last_label]
        next_label = max(used) + 1
        for sid in self.segment_ids():
            if sid in known:
                continue
            segment = self.segmentation.GetSegment(sid)
            name = segment.GetName()
            disease = self._disease_from_name(name)
            review = LesionReview(label=next_label, disease=disease, disease_alternatives=[],
                                  aspects=drawn_aspects(self.vocabulary), segment_id=sid,
                                  color=self._segment_color(sid), from_model=False)
            segment.SetTag(LABEL_TAG, str(next_label))
            kept.append(review)
            self.last_label = next_label
            next_label += 1
            self.masks_edited = True
        self.lesions = kept
        self.remeasure()
        return self.lesions

    def drawn_lesions(self) -> list[LesionReview]:
        """The lesions the reviewer added in the Segment Editor (described already or not)."""
        return [lesion for lesion in self.lesions if not lesion.from_model]

    def lesions_to_describe(self) -> list[LesionReview]:
        """The outlines the model has not described (call after sync_with_segmentation): lesions drawn by hand and
        not described yet, and lesions re-outlined in the Segment Editor since the model's calls on them. An emptied
        segment has no outline to describe (saving asks to paint or delete it)."""
        return [lesion for lesion in self.lesions if lesion.needs_description and lesion.voxel_count > 0]

    def take_descriptions(self, described: SegmentationResult) -> list[LesionReview]:
        """The model's descriptions of outlines (a `segment --mask` result whose mask values were the lesions' labels,
        Segmenter.describe_outlined) into the review, reviewer's corrections kept; the described lesions' scores
        and measurements replace their earlier ones in the result, so that profile edits re-rank them too and
        later edits are told from this outline (one edited while the run went on is told at once). Returns the
        lesions described."""
        from dataclasses import replace

        ids = (described.extra.get("outlined") or {}).get("input_labels")
        if not ids or len(ids) != len(described.lesions):
            raise ResultsError("not a description of outlined lesions (report.json has no extra.outlined)")
        present = {lesion.label: lesion for lesion in self.lesions}
        done = []
        for lesion, label in zip(described.lesions, ids):
            review = present.get(int(label))
            if review is None:  # deleted meanwhile
                continue
            review.take_description(lesion_from_result(lesion, self.terminology.display_name, self.vocabulary))
            self.result.lesions = [x for x in self.result.lesions if x.label != review.label]
            self.result.lesions.append(replace(lesion, label=review.label))
            self.apply_to_segment(review)
            done.append(review)
        self.remeasure()  # an outline edited while the run described it waits for a description again
        return done

    def edit_summary(self) -> str:
        """One line for the review panel after Segment Editor edits ('' when nothing was edited)."""
        if not self.masks_edited:
            return ""
        waiting = len(self.lesions_to_describe())
        line = f"{len(self.lesions)} lesion(s) · masks edited"
        return line + (f" · {waiting} outline(s) not described: click Describe outlines" if waiting else "")

    def _disease_from_name(self, name: str) -> DiseaseChoice:
        for key in self.terminology.diseases:
            display = self.terminology.display_name(key)
            if name.strip().lower().startswith(display.lower()):
                return DiseaseChoice(key, display)
        return DiseaseChoice(None, name.strip() or "Lesion")

    def remeasure(self) -> None:
        """Volume, diameters and centroid of every lesion from its current mask; notes mask edits."""
        if not self.lesions:
            return
        labels = self.labels_image()
        present = sorted(set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - {0})
        measured = measure_lesions(labels, label_values=present)
        model = {x.label: x.measurements for x in self.result.lesions}
        for lesion in self.lesions:
            m = measured.get(lesion.label)
            # the mask the model's calls were made on: found by it, or the outline it last described
            before = model.get(lesion.label) if lesion.model_called else None
            if m is None:  # emptied in the Segment Editor
                lesion.voxel_count, lesion.volume_ml, lesion.longest_mm, lesion.short_axis_mm = 0, 0.0, None, None
                self.masks_edited = True
                continue
            lesion.outline_changed = before is not None and (
                m.voxel_count != before.voxel_count or not np.allclose(m.centroid_ras_mm, before.centroid_ras_mm, atol=1e-3))
            if lesion.outline_changed:
                self.masks_edited = True
            lesion.voxel_count, lesion.volume_ml = m.voxel_count, m.volume_ml
            lesion.longest_mm, lesion.short_axis_mm, lesion.centroid_ras = m.long_axis_mm, m.short_axis_mm, m.centroid_ras_mm

    # -- corrections shown on the segments --------------------------------------------------
    def apply_to_segment(self, lesion: LesionReview) -> None:
        """Name, colour, terminology and tags of the lesion's segment follow its (corrected) review."""
        segment = self.segmentation.GetSegment(lesion.segment_id)
        if segment is None:
            raise KeyError(f"lesion {lesion.label} has no segment")
        result = self.reviewed_lesion(lesion)
        spec = self._spec(lesion, result)
        segment.SetName(self._unique_name(spec.name, lesion.segment_id))
        r, g, b = spec.term.color_float
        segment.SetColor(r, g, b)
        segment.SetTag(segment.GetTerminologyEntryTagName(), spec.term.slicer_string())
        tags = segment_tags(result)
        if lesion.longest_mm is not None and lesion.short_axis_mm is not None:
            tags.update({TAG_PREFIX + "volumeMl": f"{lesion.volume_ml:.4g}", TAG_PREFIX + "longAxisMm": f"{lesion.longest_mm:.4g}",
                         TAG_PREFIX + "shortAxisMm": f"{lesion.short_axis_mm:.4g}"})
        for tag, value in tags.items():
            segment.SetTag(tag, value)
        segment.SetTag(CORRECTED_TAG, "1" if lesion.is_corrected else "0")
        lesion.color = spec.term.color
        self.segmentation_node.Modified()

    def _spec(self, lesion: LesionReview, result: LesionResult) -> SegmentSpec:
        """`result`: the lesion as reviewed (reviewed_lesion): named as `malenia segment` names its segments."""
        term, name = lesion_segment(result, self.terminology)
        return SegmentSpec(lesion.label, name, term)

    def _unique_name(self, name: str, segment_id: str) -> str:
        others = {self.segmentation.GetSegment(s).GetName() for s in self.segment_ids() if s != segment_id}
        if name not in others:
            return name
        n = 2
        while f"{name} {n}" in others:
            n += 1
        return f"{name} {n}"

    # -- the reviewed result ----------------------------------------------------------------
    def reviewed_lesion(self, lesion: LesionReview, label: int | None = None) -> LesionResult:
        """The lesion as the radiologist left it, in the report's terms.

        A corrected aspect reports the chosen description (its model score when it was one of
        the offered alternatives, 0 for typed text) with the model's own match kept as the first
        alternative; a changed disease reports the model's probability for it (0 if the model
        did not consider it).
        """
        original = next((x for x in self.result.lesions if x.label == lesion.label), None)
        attributes: dict[str, AspectMatch] = {}
        for aspect in ASPECTS:
            review = lesion.aspects[aspect]
            current = review.current
            alternatives = [AttributeMatch(c.id, c.text, float(c.score or 0.0)) for c in review.options()
                            if current is None or c.text != current.text]
            attributes[aspect] = AspectMatch(current.id if current else None, current.text if current else "",
                                             float(current.score or 0.0) if current else 0.0, alternatives)
        disease = lesion.current_disease
        model_call = original.disease if original is not None else None
        probability = disease.probability
        if probability is None and model_call is not None:
            probability = dict(model_call.alternatives).get(disease.key or "", None)
        call = DiseaseCall(
            name=disease.dataset_key,
            display_name=disease.name,
            probability=float(probability or 0.0),
            alternatives=list(model_call.alternatives) if model_call else [],
            unclassified=bool(model_call.unclassified) if model_call and lesion.corrected_disease is None else False,
            organ=model_call.organ if model_call and lesion.corrected_disease is None else None,
        )
        measured = original.measurements if original is not None and not self.masks_edited else None
        return LesionResult(label=int(label if label is not None else lesion.label), disease=call,
                            attributes=attributes, measurements=measured)

    def reviewed_result(self) -> SegmentationResult:
        """The whole result after review: current masks (relabelled 1..K), diseases and attributes,
        fresh measurements, and what was corrected in `extra["review"]`."""
        image = mrml_io.volume_to_sitk(self.volume_node)
        labels = self.labels_image(relabel=True)
        present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - {0}
        empty = [lesion.label for k, lesion in enumerate(self.lesions, start=1) if k not in present]
        if empty:
            raise ResultsError(f"lesion(s) {empty} have an empty mask; paint them or delete their segments first")
        if not self.result.scan.matches(labels):
            # The volume holds the scan's voxels in another axis order (or a rounding away): the
            # outputs go on the scan's own grid. Voxel centres coincide, so nearest neighbour is exact.
            reference = self.result.labels
            labels = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
            image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
        measured = measure_lesions(labels, image) if self.lesions else {}
        lesions, review = [], []
        for k, lesion in enumerate(self.lesions, start=1):
            result = self.reviewed_lesion(lesion, label=k)
            result.measurements = measured.get(k)
            lesions.append(result)
            review.append({"label": k, **lesion.review_record()})
        extra = dict(self.result.extra)
        extra["review"] = {"masks_edited": bool(self.masks_edited), "lesions": review}
        return SegmentationResult(labels=labels, image=image, scan=self.result.scan, model=self.result.model,
                                  lesions=lesions, extra=extra)

    def segment_specs(self, result: SegmentationResult) -> list[SegmentSpec]:
        return segment_specs(result.lesions, self.terminology)

    @property
    def has_corrections(self) -> bool:
        return self.masks_edited or any(lesion.is_corrected or not lesion.from_model for lesion in self.lesions)


def get_tag(segment, tag: str) -> str | None:
    """A segment tag's value, or None (VTK returns it through an output argument)."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else None


def _remove_with_helpers(scene, node, before: set[str]) -> None:
    """Removes a temporary label map with the display and colour nodes the export made for it.

    ExportSegmentsToLabelmapNode adds a display node and a `<segmentation>_ColorTable` colour node;
    removing the label map leaves both in the scene (one of each per call, and this runs on every edit).
    """
    made = []
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is None:
            continue
        made.append(display)
        color = display.GetColorNode()
        if color is not None and color.GetID() not in before:
            made.append(color)
    storage = node.GetStorageNode()
    if storage is not None:
        made.append(storage)
    scene.RemoveNode(node)
    for helper in made:
        if scene.IsNodePresent(helper):
            scene.RemoveNode(helper)
