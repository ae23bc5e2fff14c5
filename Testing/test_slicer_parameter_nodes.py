"""Parameter nodes as real Slicer makes them (Base/Python/slicer/ScriptedLoadableModule.py,
ScriptedLoadableModuleLogic.getParameterNode / createParameterNode): MaleniaTrainer's own node carries the
"ModuleName" attribute beside its singleton tag, so that Slicer's getParameterNode() and getAllParameterNodes()
find that one node; and the stand-in's logic base class makes nodes as Slicer's does, singleton or not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "MaleniaTrainer") not in sys.path:
    sys.path.insert(0, str(REPO / "MaleniaTrainer"))

from MaleniaTrainerLib.logic import MemorySettings, TrainerLogic  # noqa: E402
from slicer_standin import install, load_module, module_widget, unload_module  # noqa: E402

SCRIPTED = "vtkMRMLScriptedModuleNode"


def _scripted_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, SCRIPTED) for i in range(scene.GetNumberOfNodesByClass(SCRIPTED))]


def test_the_trainers_parameter_node_is_tagged_and_named_as_slicer_does_and_keeps_its_module_name(tmp_path):
    from slicer import vtkMRMLScene

    scene = vtkMRMLScene()
    logic = TrainerLogic(scene, MemorySettings())
    node = logic.parameter_node()
    assert (node.GetSingletonTag(), node.GetAttribute("ModuleName"), node.GetName()) == \
        ("MaleniaTrainer", "MaleniaTrainer", "MaleniaTrainer")
    logic.configure(url="http://example.invalid:1")
    assert logic.parameter_node() is node and len(_scripted_nodes(scene)) == 1

    scene.Clear(0)  # File > Close Scene: the singleton stays, reset: its attributes and parameters go
    assert node.GetAttribute("ModuleName") is None
    assert logic.parameter_node() is node and node.GetAttribute("ModuleName") == "MaleniaTrainer"
    assert len(_scripted_nodes(scene)) == 1


def test_a_node_named_like_the_module_gives_the_parameter_node_a_unique_name():
    from slicer import vtkMRMLScene

    scene = vtkMRMLScene()
    other = scene.AddNewNodeByClass(SCRIPTED, "MaleniaTrainer")  # a user's node, no tag
    node = TrainerLogic(scene, MemorySettings()).parameter_node()
    assert node is not other and node.GetName() == "MaleniaTrainer_1" and node.GetSingletonTag() == "MaleniaTrainer"


@pytest.fixture()
def slicer(tmp_path, monkeypatch):
    monkeypatch.setenv("MALENIA_SLICER_HOME", str(tmp_path / "home"))
    with install(tmp_path / "settings") as slicer:
        yield slicer


@pytest.mark.parametrize("first", ["slicer", "trainer"])
def test_slicers_get_parameter_node_and_the_trainers_find_one_node(slicer, first):
    load_module(REPO / "MaleniaTrainer" / "MaleniaTrainer.py")
    try:
        trainer, _ = module_widget("MaleniaTrainer")
        module_logic = trainer.logic
        if first == "slicer":  # Slicer's own ScriptedLoadableModuleLogic.getParameterNode made it
            node = module_logic.getParameterNode()
            assert module_logic.core.parameter_node() is node
        else:
            node = module_logic.core.parameter_node()
            assert module_logic.getParameterNode() is node
        assert module_logic.getAllParameterNodes() == [node]  # found by its ModuleName attribute
        assert (node.GetSingletonTag(), node.GetAttribute("ModuleName")) == ("MaleniaTrainer", "MaleniaTrainer")
    finally:
        unload_module("MaleniaTrainer")


def test_the_standins_logic_makes_parameter_nodes_as_slicer_does(slicer):
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

    class DemoLogic(ScriptedLoadableModuleLogic):
        pass

    single = DemoLogic()
    node = single.getParameterNode()
    assert (node.GetSingletonTag(), node.GetAttribute("ModuleName"), node.GetName()) == ("Demo", "Demo", "Demo")
    node.RemoveAttribute("ModuleName")
    assert single.getParameterNode() is node and node.GetAttribute("ModuleName") == "Demo"

    class SetsLogic(ScriptedLoadableModuleLogic):
        def __init__(self):
            super().__init__()
            self.isSingletonParameterNode = False  # several parameter sets in one scene

    sets = SetsLogic()
    first = sets.getParameterNode()
    assert first.GetSingletonTag() is None and first.GetAttribute("ModuleName") == "Sets"
    assert sets.getParameterNode() is first  # the first node whose ModuleName is the module's
    second = slicer.mrmlScene.AddNode(sets.createParameterNode())
    assert second.GetName() == "Sets_1" and sets.getAllParameterNodes() == [first, second]
    assert single.getAllParameterNodes() == [node]
