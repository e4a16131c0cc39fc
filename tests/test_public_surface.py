"""Plugins reach the core and Lightning through public names only.

Every module under ``plugins/`` and ``tests/thirdparty/`` is parsed; the test fails when one imports a private name
(or module) of ``anyorder`` or Lightning, or reads an attribute whose name is private to a class of ``anyorder`` or
Lightning (``self._trainer``, ``trainer.fit_loop._should_accumulate``, ...) and that the module does not define
itself.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning as L
import lightning.pytorch.loops as loops
import pytest
import torchmetrics
from helpers import REPO

import anyorder.data
import anyorder.metrics
import anyorder.module
import anyorder.network
import anyorder.objective

SCANNED = sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "tests" / "thirdparty").rglob("*.py")])
PRIVATE_ROOTS = ("anyorder", "lightning", "pytorch_lightning", "lightning_fabric")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _core_private_attributes() -> set[str]:
    """Private attribute names of the core's classes and of the Lightning classes a plugin meets."""
    names: set[str] = set()
    classes = [L.LightningModule, L.LightningDataModule, L.Trainer, L.Callback, torchmetrics.Metric]
    classes += [c for _, c in inspect.getmembers(loops, inspect.isclass)]
    for module in (anyorder.data, anyorder.metrics, anyorder.module, anyorder.network, anyorder.objective):
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    for cls in classes:
        names |= {n for n in dir(cls) if _private(n)}
        # Attributes set in methods (self._x = ...) are not in dir(cls): read them from the source.
        try:
            tree = ast.parse(inspect.getsource(cls).lstrip())
        except (OSError, TypeError, IndentationError):
            continue
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _private(n.attr)}
    return names


def _own_names(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: functions, classes, attributes it assigns, class variables."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {n for n in own if _private(n)}


def violations(path: Path, core_private: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PRIVATE_ROOTS:
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{path.name}:{node.lineno}: imports the private module {node.module}")
            found += [f"{path.name}:{node.lineno}: imports the private name {node.module}.{a.name}"
                      for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno}: imports the private module {a.name}" for a in node.names
                      if a.name.split(".")[0] in PRIVATE_ROOTS and any(_private(p) for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in core_private \
                and node.attr not in own:
            found.append(f"{path.name}:{node.lineno}: reads the private attribute .{node.attr}")
    return found


def test_plugins_use_public_names_only() -> None:
    assert len(SCANNED) > 50
    core_private = _core_private_attributes()
    assert {"_trainer", "_built", "_evaluation"} <= core_private  # the net catches what it is meant to catch
    found = [v for path in SCANNED for v in violations(path, core_private)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("def f(self):\n    return self._trainer.global_step\n", "private attribute ._trainer"),
    ("from anyorder.module import _SHARDED\n", "private name anyorder.module._SHARDED"),
    ("import lightning.pytorch._graveyard\n", "private module"),
    ("def f(trainer):\n    return trainer.fit_loop._should_accumulate()\n", "._should_accumulate"),
])
def test_the_check_catches_private_use(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "plugin.py"
    path.write_text(source)
    found = violations(path, _core_private_attributes())
    assert found and expected in found[0]


def test_a_plugin_may_use_its_own_private_names(tmp_path: Path) -> None:
    path = tmp_path / "plugin.py"
    path.write_text("class X:\n    def __init__(self):\n        self._trainer = 1\n    def f(self):\n"
                    "        return self._trainer\n")
    assert violations(path, _core_private_attributes()) == []
