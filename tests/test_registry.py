"""The registry: good, broken, duplicate and unknown plugins; programmatic registration; lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG, make_distribution

from anyorder.cli import main
from anyorder.config import PluginConfig
from anyorder.errors import PluginError
from anyorder.registry import REGISTRY, Registry

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
    assert main(["plugins", "--json"]) == 0
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
    assert main(["plugins", "--kind", "metric"]) == 0
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
