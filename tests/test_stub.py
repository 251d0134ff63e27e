"""The hand-written stub of the compiled core (pyloader/_core.pyi, shipped with py.typed)
names exactly what the module has: a binding added or removed without the stub fails here."""

from __future__ import annotations

import ast
import os

from pyloader import _core

STUB = os.path.join(os.path.dirname(_core.__file__), "_core.pyi")
if not os.path.exists(STUB):  # an editable install keeps the stub in the source tree
    STUB = os.path.join(os.path.dirname(__file__), "..", "pyloader", "_core.pyi")


def _stub_names() -> dict[str, set[str] | None]:
    with open(STUB) as stub:
        tree = ast.parse(stub.read())
    names: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = None
    return names


def test_stub_names_every_public_name_of_the_module():
    stub = _stub_names()
    public = {name for name in dir(_core) if not name.startswith("_")}
    assert public == {name for name in stub if not name.startswith("_")}


def test_stub_names_every_method_and_property():
    for name, members in _stub_names().items():
        if members is None or name.startswith("_"):
            continue
        cls = getattr(_core, name)
        if issubclass(cls, BaseException):
            continue
        real = {member for member in dir(cls) if not member.startswith("_")}
        assert real == {member for member in members if not member.startswith("_")}, name
