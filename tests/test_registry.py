"""The registry: good, broken, duplicate and unknown plugins; programmatic registration; lazy imports; declared
kinds; command plugins; the exit status of `anyorder plugins`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG, make_distribution

from anyorder.cli import build_parser, main
from anyorder.command import Command
from anyorder.config import PluginConfig
from anyorder.errors import PluginError
from anyorder.registry import CORE_KINDS, REGISTRY, Registry, declare_kind

GOOD_OPTIONS = '''
from dataclasses import dataclass
from anyorder.config import PluginConfig, opt

@dataclass
class GoodConfig(PluginConfig):
    """A well-behaved test dataset."""
    implementation = "goodpkg_impl:GoodData"
    size: int = opt(3, "how many")
'''
GOOD_IMPL = '''
from anyorder.data import DiscreteDataModule
from goodpkg_options import GoodConfig

class GoodData(DiscreteDataModule):
    Config = GoodConfig
'''


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site directory with four fake distributions: good, broken, and two that claim one name."""
    site = tmp_path / "site"
    make_distribution(site, "goodpkg", "1.2.3", {"anyorder.datasets": {"good_data": "goodpkg_options:GoodConfig"}},
                      {"goodpkg_options.py": GOOD_OPTIONS, "goodpkg_impl.py": GOOD_IMPL})
    make_distribution(site, "brokenpkg", "0.1", {"anyorder.datasets": {"broken_data": "brokenpkg_options:Cfg"}},
                      {"brokenpkg_options.py": "raise ImportError('libfoo.so: cannot open shared object file')\n"})
    for dist in ("dupa", "dupb"):
        make_distribution(site, dist, "1.0", {"anyorder.metrics": {"dup_metric": f"{dist}_mod:Cfg"}},
                          {f"{dist}_mod.py": GOOD_OPTIONS.replace("GoodConfig", "Cfg")})
    monkeypatch.syspath_prepend(str(site))
    REGISTRY.rescan()
    yield site
    REGISTRY.rescan()


def test_scan_imports_nothing(plugin_site: Path) -> None:
    registry = Registry()
    assert "good_data" in registry.names("dataset")
    assert "broken_data" in registry.names("dataset")
    assert "goodpkg_options" not in sys.modules and "brokenpkg_options" not in sys.modules


def test_good_plugin(plugin_site: Path) -> None:
    plugin = REGISTRY.get("dataset", "good_data")
    assert plugin.info.distribution == "goodpkg" and plugin.info.version == "1.2.3"
    assert plugin.summary == "A well-behaved test dataset."
    assert "goodpkg_impl" not in sys.modules  # options only
    impl = REGISTRY.implementation("dataset", "good_data")
    assert impl.__name__ == "GoodData"


def test_broken_plugin_is_reported_and_hides_nothing(plugin_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PluginError) as err:
        REGISTRY.get("dataset", "broken_data")
    msg = str(err.value)
    assert "broken_data" in msg and "brokenpkg 0.1" in msg and "libfoo.so" in msg and "ImportError" in msg
    # The other plugins still load, and the listing shows every plugin with its status.
    assert REGISTRY.get("dataset", "good_data").info.distribution == "goodpkg"
    assert REGISTRY.get("dataset", "markov").info.distribution == "anyorder"
    assert main(["plugins", "--json"]) == 1  # the whole table is printed, and the status says something is broken
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("dataset", "broken_data")]["status"].startswith("error:")
    assert "libfoo.so" in rows[("dataset", "broken_data")]["status"]
    assert rows[("dataset", "good_data")]["status"] == "ok"
    assert rows[("dataset", "markov")]["status"] == "ok"
    assert rows[("objective", "mle")]["version"] and rows[("objective", "mle")]["summary"].startswith("MLE")


def test_duplicate_name_is_an_error_naming_both(plugin_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PluginError) as err:
        REGISTRY.get("metric", "dup_metric")
    msg = str(err.value)
    assert "dupa 1.0" in msg and "dupb 1.0" in msg and "claimed by 2 distributions" in msg
    assert main(["plugins", "--kind", "metric"]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("metric  dup_metric")]
    assert len(rows) == 2 and all("ERROR" in r for r in rows)
    assert any("  dupa  " in r for r in rows) and any("  dupb  " in r for r in rows)


def test_unknown_name_lists_available_with_did_you_mean() -> None:
    with pytest.raises(PluginError) as err:
        REGISTRY.get("network", "causal_transfomer")
    msg = str(err.value)
    assert "Did you mean 'causal_transformer'?" in msg
    assert "Available networks: bidirectional_transformer, causal_transformer, graph_transformer" in msg
    assert "anyorder.networks" in msg


def test_unknown_kind() -> None:
    with pytest.raises(PluginError, match="unknown plugin kind 'optimizer'"):
        REGISTRY.names("optimizer")


def test_programmatic_register() -> None:
    from anyorder.data import DiscreteDataModule

    @dataclass
    class NotebookConfig(PluginConfig):
        """A dataset defined in a notebook."""

        n: int = 2

    class NotebookData(DiscreteDataModule):
        Config = NotebookConfig

    try:
        REGISTRY.register("dataset", "notebook_data", NotebookData)
        assert REGISTRY.implementation("dataset", "notebook_data") is NotebookData
        assert REGISTRY.get("dataset", "notebook_data").info.distribution == "<register()>"
        with pytest.raises(PluginError, match="already registered"):
            REGISTRY.register("dataset", "notebook_data", NotebookData)
        with pytest.raises(PluginError, match="already registered by anyorder"):
            REGISTRY.register("dataset", "markov", NotebookData)
        REGISTRY.register("dataset", "notebook_data", NotebookConfig, replace=True)
    finally:
        REGISTRY.unregister("dataset", "notebook_data")
    assert "notebook_data" not in REGISTRY.names("dataset")


def test_register_rejects_non_plugins() -> None:
    with pytest.raises(PluginError, match="neither an options dataclass"):
        REGISTRY.register("objective", "bad", int)


def test_implementation_must_subclass_the_kind_base() -> None:
    @dataclass
    class WrongConfig(PluginConfig):
        """Points at a class that is no network."""

        implementation = "collections:OrderedDict"

    try:
        REGISTRY.register("network", "wrong_net", WrongConfig)
        with pytest.raises(PluginError, match="must be a subclass of anyorder.network.Network"):
            REGISTRY.implementation("network", "wrong_net")
    finally:
        REGISTRY.unregister("network", "wrong_net")


def test_only_named_plugins_are_imported_and_no_torch_for_config() -> None:
    code = (
        "import sys\n"
        "from anyorder.config import load_config\n"
        f"load_config({str(MARKOV_CONFIG)!r}, [])\n"
        "mods = set(sys.modules)\n"
        "print('anyorder_plugins.markov.config' in mods, 'anyorder_plugins.char_text.config' in mods,"
        " 'torch' in mods, 'lightning' in mods)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False", "False"]


# -- declared kinds ----------------------------------------------------------------------------------------------------


class Widget:
    """The base class of the test kind ``widget``."""


@dataclass
class SpinnerConfig(PluginConfig):
    """A widget that spins."""

    speed: int = 1


class Spinner(Widget):
    Config = SpinnerConfig


@pytest.fixture
def widget_kind() -> Iterator[None]:
    """The kind ``widget``, declared in this process; its plugins are removed afterwards."""
    declare_kind("widget", Widget)
    yield
    for name in REGISTRY.names("widget"):
        REGISTRY.unregister("widget", name)
    REGISTRY.undeclare_kind("widget")


def test_programmatically_declared_kind(widget_kind: None) -> None:
    kinds = REGISTRY.kinds()
    assert tuple(kinds[: len(CORE_KINDS)]) == CORE_KINDS and "widget" in kinds[len(CORE_KINDS):]
    assert kinds[len(CORE_KINDS):] == sorted(kinds[len(CORE_KINDS):])
    assert REGISTRY.group("widget") == "anyorder.widgets"
    REGISTRY.register("widget", "spinner", Spinner)
    assert REGISTRY.names("widget") == ["spinner"]
    assert REGISTRY.get("widget", "spinner").config_class is SpinnerConfig
    assert REGISTRY.implementation("widget", "spinner") is Spinner
    assert REGISTRY.base_class("widget") is Widget
    # The same base again is harmless; another base, or a core kind, is refused.
    declare_kind("widget", Widget)
    with pytest.raises(PluginError, match="already declared"):
        declare_kind("widget", "collections:OrderedDict")
    with pytest.raises(PluginError, match="core kind"):
        declare_kind("network", Widget)


def test_undeclared_kind_is_unknown() -> None:
    with pytest.raises(PluginError, match="unknown plugin kind 'widget'"):
        REGISTRY.register("widget", "spinner", Spinner)


def test_declared_kind_refuses_an_implementation_of_another_base(widget_kind: None) -> None:
    @dataclass
    class NotAWidgetConfig(PluginConfig):
        """Points at a class that is no widget."""

        implementation = "collections:OrderedDict"

    REGISTRY.register("widget", "impostor", NotAWidgetConfig)
    with pytest.raises(PluginError, match=r"must be a subclass of test_registry\.Widget"):
        REGISTRY.implementation("widget", "impostor")
    assert REGISTRY.status("widget", "impostor").startswith("error:")


def test_plugins_lists_the_declared_divergence_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert "divergence" in REGISTRY.kinds()
    declaration = REGISTRY.kind_info("divergence").declarations
    assert [(d.distribution, d.target) for d in declaration] == [
        ("anyorder", "anyorder_plugins.sequence_match.divergence:Divergence")]
    assert main(["plugins", "--kind", "divergence"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[4]) for r in rows] == [("divergence", "chi2", "ok"), ("divergence", "kl", "ok")]


def test_plugins_exits_1_when_a_plugin_is_broken(widget_kind: None, capsys: pytest.CaptureFixture[str]) -> None:
    @dataclass
    class BrokenConfig(PluginConfig):
        """A widget whose implementation is nowhere."""

        implementation = "nonexistent.module:X"

    REGISTRY.register("widget", "spinner", Spinner)
    REGISTRY.register("widget", "broken", BrokenConfig)
    assert main(["plugins", "--kind", "widget"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3  # header, then every plugin: the broken one does not cut the table short
    assert "ERROR" in out[1] and "nonexistent" in out[1] and "ok" in out[2].split()
    assert main(["plugins", "--kind", "widget", "--json"]) == 1
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert rows["spinner"] == "ok" and "ModuleNotFoundError" in rows["broken"]
    REGISTRY.unregister("widget", "broken")
    assert main(["plugins", "--kind", "widget"]) == 0


def test_plugins_unknown_kind_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--kind", "nosuchkind"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "unknown plugin kind 'nosuchkind'" in captured.err
    assert "divergence" in captured.err  # the declared kinds are among those offered


def _declaring_distributions(site: Path) -> None:
    light = "from dataclasses import dataclass\nfrom anyorder.config import PluginConfig\n\n"
    make_distribution(site, "gizmopkg", "1.0",
                      {"anyorder.kinds": {"gizmo": "gizmopkg_base:Gizmo"},
                       "anyorder.gizmos": {"whirl": "gizmopkg_options:WhirlConfig"}},
                      {"gizmopkg_base.py": "class Gizmo:\n    pass\n",
                       "gizmopkg_options.py": light + "@dataclass\nclass WhirlConfig(PluginConfig):\n"
                                              "    implementation = 'gizmopkg_impl:Whirl'\n",
                       "gizmopkg_impl.py": "from gizmopkg_base import Gizmo\nfrom gizmopkg_options import "
                                           "WhirlConfig\n\nclass Whirl(Gizmo):\n    Config = WhirlConfig\n"})
    for dist, version in (("clasha", "1.0"), ("clashb", "2.0")):
        make_distribution(site, dist, version, {"anyorder.kinds": {"doohickey": f"{dist}_base:Base"}})
    make_distribution(site, "nobasepkg", "0.1",
                      {"anyorder.kinds": {"sprocket": "nobasepkg_missing:Sprocket"},
                       "anyorder.sprockets": {"cog": "nobasepkg_options:CogConfig"}},
                      {"nobasepkg_options.py": light + "@dataclass\nclass CogConfig(PluginConfig):\n"
                                               "    implementation = 'collections:OrderedDict'\n"})


def test_kinds_declared_by_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    _declaring_distributions(site)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry()
    kinds = registry.kinds()
    assert {"gizmo", "doohickey", "sprocket", "divergence"} <= set(kinds[len(CORE_KINDS):])
    # Scanning, and loading a plugin's options, import no base class.
    assert registry.names("gizmo") == ["whirl"] and registry.get("gizmo", "whirl").summary
    assert "gizmopkg_base" not in sys.modules and "gizmopkg_impl" not in sys.modules
    assert registry.implementation("gizmo", "whirl").__name__ == "Whirl"
    # Two bases for one kind: an error naming both distributions, when that kind is used.
    with pytest.raises(PluginError) as err:
        registry.get("doohickey", "anything")
    assert "clasha 1.0" in str(err.value) and "clashb 2.0" in str(err.value)
    with pytest.raises(PluginError, match=r"already declared by .*clasha 1\.0"):
        registry.declare_kind("doohickey", "elsewhere:Base")
    registry.declare_kind("doohickey", "clasha_base:Base", replace=True)  # this process settles the conflict
    assert registry.kind_info("doohickey").problem is None and registry.names("doohickey") == []
    # A base that does not import: an error naming the distribution, when an implementation is checked.
    assert registry.get("sprocket", "cog").info.distribution == "nobasepkg"
    with pytest.raises(PluginError, match="nobasepkg_missing:Sprocket.*nobasepkg 0.1.*ModuleNotFoundError"):
        registry.implementation("sprocket", "cog")
    # None of it touches the other kinds.
    assert registry.get("dataset", "markov").info.distribution == "anyorder"
    REGISTRY.rescan()
    try:
        assert main(["plugins", "--kind", "doohickey"]) == 1
        out = capsys.readouterr().out
        assert "clasha" in out and "clashb" in out and "different base classes" in out
        assert main(["plugins", "--kind", "gizmo"]) == 0
    finally:
        monkeypatch.undo()
        REGISTRY.rescan()


def test_a_distribution_may_not_declare_a_core_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    make_distribution(site, "rogue", "0.3", {"anyorder.kinds": {"network": "rogue:Net"}})
    monkeypatch.syspath_prepend(str(site))
    registry = Registry()
    assert registry.kinds().count("network") == 1
    with pytest.raises(PluginError, match="core kind.*rogue 0.3"):
        registry.get("network", "causal_transformer")
    assert registry.get("dataset", "markov").info.distribution == "anyorder"


# -- command plugins ---------------------------------------------------------------------------------------------------


class HelloCommand(Command):
    """Greets someone."""

    help = "say hello"
    description = "Print a greeting to WHO."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("who")
        parser.add_argument("--shout", action="store_true")

    def run(self, ns: argparse.Namespace) -> int:
        greeting = f"hello, {ns.who}"
        print(greeting.upper() if ns.shout else greeting)
        return 0


class BrokenCommand(Command):
    help = "cannot set up its arguments"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise RuntimeError("boom")


@pytest.fixture
def commands() -> Iterator[None]:
    yield
    for name in ("hello", "broken", "train"):
        REGISTRY.unregister("command", name)


def test_command_plugin_is_a_subcommand(commands: None, capsys: pytest.CaptureFixture[str]) -> None:
    REGISTRY.register("command", "hello", HelloCommand)
    assert REGISTRY.implementation("command", "hello") is HelloCommand
    assert REGISTRY.get("command", "hello").summary == "say hello"
    assert "hello" in build_parser().format_help()
    assert main(["hello", "world", "--shout"]) == 0
    assert capsys.readouterr().out == "HELLO, WORLD\n"
    assert main(["plugins", "--kind", "command"]) == 0
    assert "say hello" in capsys.readouterr().out


def test_command_plugin_must_subclass_command() -> None:
    with pytest.raises(PluginError, match="must be a subclass of anyorder.command.Command"):
        REGISTRY.register("command", "nope", argparse.Namespace)


def test_broken_or_clashing_command_plugin_is_shown_not_fatal(commands: None,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    REGISTRY.register("command", "hello", HelloCommand)
    REGISTRY.register("command", "broken", BrokenCommand)
    REGISTRY.register("command", "train", HelloCommand)
    parser = build_parser()  # neither plugin takes the CLI down, nor replaces the built-in `train`
    assert "broken" not in parser.format_help()
    assert main(["hello", "you"]) == 0
    capsys.readouterr()
    assert main(["plugins", "--kind", "command", "--json"]) == 1
    rows = {r["name"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert rows["hello"] == "ok"
    assert "RuntimeError: boom" in rows["broken"]
    assert "built-in command `anyorder train`" in rows["train"]
