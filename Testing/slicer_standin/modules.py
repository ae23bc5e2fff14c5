"""slicer.ScriptedLoadableModule as Slicer's (Base/Python/slicer/ScriptedLoadableModule.py) behaves.

Written from reading Slicer's source: every base class's __init__ calls super().__init__() (so a
mixin after it in the bases is initialised with no arguments), the module registers its test in
slicer.selfTests, the widget with no parent builds a qMRMLWidget and calls setup() itself, with a
parent it only keeps the parent's layout (the application calls setup()), cleanup() runs when the
module manager announces moduleAboutToBeUnloaded(QString), and the logic's parameter node is a
singleton vtkMRMLScriptedModuleNode tagged with the module name.
"""

from __future__ import annotations

import importlib
import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        testCase = getattr(module, self.moduleName + "Test")()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = slicer.util.settingsValue("Developer/DeveloperMode", False, converter=slicer.util.toBool)
        if not parent:
            import qt

            self.parent = slicer.qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
            self.parent.show()
        slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self):
        pass  # the developer section (Reload, Test) is shown only in developer mode; not built here

    def cleanup(self):
        pass

    def _onModuleAboutToBeUnloaded(self, moduleName):
        if moduleName == self.moduleName:
            self.cleanup()
            slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

    def onReload(self):
        slicer.util.reloadScriptedModule(self.moduleName)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        # Slicer's Base/Python/slicer/ScriptedLoadableModule.py: a singleton found by its tag (its ModuleName
        # attribute restored: a scene close resets it), else the first node whose ModuleName attribute is the module's
        if self.isSingletonParameterNode:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            found = self.getAllParameterNodes()
            if found:
                return found[0]
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def getAllParameterNodes(self):
        scene = slicer.mrmlScene
        nodes = (scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")))
        return [node for node in nodes if node.GetAttribute("ModuleName") == self.moduleName]

    def createParameterNode(self):
        if slicer.mrmlScene is None:
            return None
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        self.moduleTestNames = []
        super().__init__(*args, **kwargs)
        super(unittest.TestCase, self).__init__()
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        slicer.util.delayDisplay(message)

    def takeScreenshot(self, name, description, type=-1):
        pass
