"""slicer.parameterNodeWrapper, the part a module's parameter class uses (read from Slicer's
Base/Python/slicer/parameterNodeWrapper/): a decorated class of typed, defaulted fields whose instance
wraps a vtkMRMLScriptedModuleNode; str/int/float/bool values are parameters (text in the node),
MRML node types are node references; a new node gets the defaults; `parameterNode` is the node."""

from __future__ import annotations

import types
import typing


def _is_node_type(t) -> bool:
    return isinstance(t, type) and t.__name__.startswith("vtkMRML")


def _field(name, kind, default):
    def getter(self):
        node = self.parameterNode
        if _is_node_type(kind):
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if kind is bool:
            return text == "True"
        return kind(text) if text != "" or kind is str else default

    def setter(self, value):
        node = self.parameterNode
        if _is_node_type(kind):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(name, str(kind(value)))
    return property(getter, setter)


def parameterNodeWrapper(classtype):
    hints = typing.get_type_hints(classtype)
    fields = {}
    for name, hint in hints.items():
        origin = typing.get_origin(hint)
        kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if origin is typing.Union else hint
        if typing.get_origin(kind) is typing.Annotated:
            kind = typing.get_args(kind)[0]
        fields[name] = (kind, getattr(classtype, name, None if _is_node_type(kind) else kind()))

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for name, (kind, default) in fields.items():
            if not _is_node_type(kind) and name not in parameterNode.GetParameterNames():
                setattr(self, name, default)

    namespace = {"__init__": __init__, "allParameters": dict(fields), "__doc__": classtype.__doc__}
    namespace.update({name: _field(name, kind, default) for name, (kind, default) in fields.items()})
    return type(classtype.__name__, (), namespace)


def parameterNodeWrapper_module():
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    return module
