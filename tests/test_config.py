"""Config loading and validation: the errors and what their messages say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG
from omegaconf import OmegaConf

from anyorder.cli import main
from anyorder.config import load_config
from anyorder.errors import ConfigError, PluginError


def test_overrides_apply_and_types_convert() -> None:
    cfg = load_config(MARKOV_CONFIG, ["network.n_layers=3", "optim.lr=1e-3", "trainer.devices=2"])
    assert cfg.network.n_layers == 3 and isinstance(cfg.network.n_layers, int)
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.trainer.devices == 2
    assert cfg.network.d_model == 64  # from the YAML
    assert cfg.network.dropout == 0.0  # plugin default filled in


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["network.n_layer=3"], ["'network.n_layer'", "network plugin 'causal_transformer'", "anyorder 0.1.0",
                                  "Did you mean 'n_layers'?", "Valid keys: n_layers, d_model"]),
        (["data.ordr=3"], ["'data.ordr'", "dataset plugin 'markov'", "Did you mean 'order'?", "Valid keys:"]),
        (["train.max_step=3"], ["'train.max_step'", "Did you mean 'max_steps'?", "Valid keys of 'train'"]),
        (["lr=3"], ["unknown top-level key 'lr'", "Valid keys: name, seed"]),
        (["train.max_steps=abc"], ["'train.max_steps'", "'abc'", "Integer"]),
        (["network.dropout=lots"], ["'network.dropout'", "network plugin 'causal_transformer'", "Float"]),
        (["trainer.max_steps=5"], ["'trainer.max_steps' is set by anyorder", "train.max_steps"]),
        (["trainer.devics=2"], ["'trainer.devics'", "Did you mean 'devices'?"]),
        (["scheduler.name=cosin"], ["scheduler.name 'cosin'", "Did you mean 'cosine'?"]),
        (["logger.name=mlflow"], ["logger.name 'mlflow'", "wandb, csv, tensorboard, none"]),
        (["sample.top_p=0"], ["sample.top_p must be in (0, 1]"]),
        (["train.ema_decay=1.5"], ["train.ema_decay must be in [0, 1)"]),
        (["nonsense"], ["'nonsense' is not of the form key=value"]),
    ],
)
def test_config_errors_name_the_problem(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(MARKOV_CONFIG, overrides)
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in {err.value}"


def test_unknown_plugin_name_in_config() -> None:
    with pytest.raises(PluginError, match="Did you mean 'markov'"):
        load_config(MARKOV_CONFIG, ["data.name=markof"])


def test_missing_section_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: {name: mle}\nnetwork: {name: causal_transformer}\n")
    with pytest.raises(ConfigError, match="no 'data' section.*markov"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(tmp_path / "list.yaml")


def test_plugin_option_validation_in_post_init() -> None:
    with pytest.raises(ConfigError, match="reduction must be 'token' or 'sequence'"):
        load_config(MARKOV_CONFIG, ["objective.reduction=mean"])


def test_config_command_prints_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", str(MARKOV_CONFIG), "network.n_layers=5", "--explain"]) == 0
    out = capsys.readouterr().out
    cfg = OmegaConf.create(out.split("\n# options")[0])
    assert cfg.network.n_layers == 5 and cfg.objective.name == "mle" and cfg.optim.name == "AdamW"
    assert "#   n_layers: int = 4  # transformer blocks" in out or "#   n_layers: int = 4" in out


def test_bad_config_fails_fast_without_heavy_imports(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from anyorder.cli import main\n"
        f"rc = main(['train', {str(MARKOV_CONFIG)!r}, 'network.n_layer=3', 'output_dir={tmp_path}'])\n"
        "print(rc, 'torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "False", "False"]
    assert "unknown key 'network.n_layer'" in proc.stderr
    assert not (tmp_path / "runs").exists()
