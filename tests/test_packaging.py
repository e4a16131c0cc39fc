"""Packaging: every subpackage is listed in setup.cfg, every entry point resolves, light modules stay light."""

from __future__ import annotations

import configparser
import subprocess
import sys

from helpers import REPO

from anyorder.registry import REGISTRY


def _groups() -> dict[str, str]:
    """The entry-point group of every kind, core or declared, that setup.cfg registers built-in plugins under."""
    entry_points = _setup_cfg()["options.entry_points"]
    return {kind: REGISTRY.group(kind) for kind in REGISTRY.kinds() if REGISTRY.group(kind) in entry_points}

def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def test_every_subpackage_is_listed() -> None:
    listed = set(_setup_cfg()["options"]["packages"].split())
    found = set()
    for root, package in (("framework", "anyorder"), ("plugins", "anyorder_plugins")):
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"missing from setup.cfg: {found - listed}; listed but absent: {listed - found}"


def test_every_builtin_entry_point_loads() -> None:
    entry_points = _setup_cfg()["options.entry_points"]
    for kind, group in _groups().items():
        names = [line.split("=")[0].strip() for line in entry_points[group].strip().splitlines()]
        assert names, group
        for name in names:
            assert REGISTRY.status(kind, name) == "ok", (kind, name, REGISTRY.status(kind, name))
            assert REGISTRY.info(kind, name).distribution == "anyorder"


def test_core_never_names_a_plugin() -> None:
    for path in (REPO / "framework").rglob("*.py"):
        assert "anyorder_plugins" not in path.read_text(), f"{path} names the built-in plugins package"


def test_options_modules_do_not_import_torch() -> None:
    entry_points = _setup_cfg()["options.entry_points"]
    modules = sorted({line.split("=")[1].split(":")[0].strip() for group in _groups().values()
                      for line in entry_points[group].strip().splitlines()})
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_pyproject_holds_only_build_system() -> None:
    text = (REPO / "pyproject.toml").read_text().strip().splitlines()
    assert text[0] == "[build-system]" and len(text) == 3
    assert (REPO / "constraints.txt").read_text().strip() == "torch==2.13.0"
