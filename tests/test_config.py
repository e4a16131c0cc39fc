"""Config loading and validation: the errors and what their messages say."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG
from omegaconf import OmegaConf

import anyorder.config as config_module
from anyorder.cli import main
from anyorder.config import (
    PluginConfig,
    check_choices,
    check_implementations,
    check_trainer_arguments,
    explain,
    explain_plugins,
    load_config,
    opt,
    plugin_sections,
)
from anyorder.errors import ConfigError, PluginError
from anyorder.registry import REGISTRY, register
from anyorder.runs import plugins_used


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
        (["network.n_layer=3"], ["'network.n_layer'", "network plugin 'causal_transformer'", "anyorder 0.2.0",
                                  "Did you mean 'n_layers'?", "Valid keys: n_layers, d_model"]),
        (["data.ordr=3"], ["'data.ordr'", "dataset plugin 'markov'", "Did you mean 'order'?", "Valid keys:"]),
        (["train.max_step=3"], ["'train.max_step'", "Did you mean 'max_steps'?", "Valid keys of 'train'"]),
        (["lr=3"], ["unknown top-level key 'lr'", "Valid keys: name, seed"]),
        (["train.max_steps=abc"], ["'train.max_steps'", "'abc'", "Integer"]),
        (["network.dropout=lots"], ["'network.dropout'", "network plugin 'causal_transformer'", "Float"]),
        (["trainer.max_steps=5"], ["'trainer.max_steps' is set by anyorder", "train.max_steps"]),
        (["scheduler.name=cosin"], ["scheduler.name must be one of constant, cosine, linear (got 'cosin').",
                                    "Did you mean 'cosine'?"]),
        (["logger.name=mlflow"], ["logger.name must be one of wandb, csv, tensorboard, none (got 'mlflow')."]),
        (["logger.mode=onlin"], ["logger.mode must be one of auto, online, offline, disabled", "Did you mean 'online'?"]),
        (["eval.split=dev"], ["eval.split must be one of train, val, test (got 'dev')."]),
        (["network.positions=rotory"], ["network.positions must be one of learned, rotary (got 'rotory').",
                                        "Did you mean 'rotary'?"]),
        (["objective.name=lo_arm", "objective.p_policy=entropi"],
         ["objective.p_policy must be one of uniform, entropy, st (got 'entropi'). Did you mean 'entropy'?"]),
        (["objective.name=lo_arm", "objective.q_network={name: bidirectional_transformer, positions: rotary}"],
         ["unknown key 'objective.q_network.positions'", "network plugin 'bidirectional_transformer'"]),
        (["metrics=[{name: distinct_ngrams, tokenize: chars}]"],
         ["metrics[0].tokenize must be one of whitespace, char (got 'chars'). Did you mean 'char'?"]),
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
    with pytest.raises(ConfigError, match="'objective' of objective plugin 'lo_arm'.*num_samples must be >= 2"):
        load_config(MARKOV_CONFIG, ["objective.name=lo_arm", "objective.num_samples=1"])
    with pytest.raises(ConfigError, match=r"objective\.reduction must be one of token, sequence \(got 'mean'\)"):
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


REPO = Path(__file__).resolve().parents[1]
SEQUENCE_MATCH_CONFIG = REPO / "configs" / "arithmetic" / "sequence_match.yaml"
LO_ARM_CONFIG = REPO / "configs" / "keyed" / "lo_arm.yaml"


# -- choices --------------------------------------------------------------------------------------------------------


def test_opt_stores_choices_and_refuses_a_default_outside_them() -> None:
    @dataclass
    class Options:
        mode: str = opt("b", "a mode", choices=("a", "b"))

    (f,) = dataclasses.fields(Options)
    assert f.metadata["choices"] == ("a", "b") and f.metadata["help"] == "a mode"
    with pytest.raises(ValueError, match="not one of the choices"):
        opt("c", "a mode", choices=("a", "b"))
    check_choices(Options, {"mode": "a"}, "x")
    with pytest.raises(ConfigError, match=r"^x\.mode must be one of a, b \(got 'c'\)\.$"):
        check_choices(Options, {"mode": "c"}, "x")
    assert explain(Options) == ["mode: str = 'b'  # a mode [choices: a, b]"]


def test_options_built_in_code_check_their_choices() -> None:
    from anyorder_plugins.lo_arm.config import LOARMConfig
    from anyorder_plugins.molecules.qm9_config import QM9Config

    with pytest.raises(ConfigError, match=r"^p_policy must be one of uniform, entropy, st \(got 'greedy'\)"):
        LOARMConfig(p_policy="greedy")
    with pytest.raises(ConfigError, match="split_convention must be one of gdss, moflow"):
        QM9Config(split_convention="digress")


def test_no_plugin_option_class_keeps_a_separate_check_method() -> None:
    # Every check lives in __post_init__, which validation runs once; a `check()` would invite build-time repeats.
    for kind in ("objective", "network", "dataset", "metric", "divergence"):
        for name in REGISTRY.names(kind):
            cls = REGISTRY.get(kind, name).config_class
            assert not hasattr(cls, "check"), f"{kind} {name}: {cls.__qualname__}.check"


def test_explain_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", str(MARKOV_CONFIG), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "#   positions: str = 'learned'  # position encoding: learned (absolute embedding table) | rotary (RoPE) " \
           "[choices: learned, rotary]" in out
    assert "[choices: whitespace, char]" in out  # the metric's tokenize


# -- switching a plugin by override ------------------------------------------------------------------------------


def test_switching_a_nested_plugin_drops_the_old_plugins_options() -> None:
    cfg = load_config(SEQUENCE_MATCH_CONFIG, ["objective.divergence.name=kl"])
    assert cfg.objective.divergence == {"name": "kl"}
    assert cfg.objective.gamma == 0.998 and cfg.objective.replay_batch == 32  # the objective's options stay
    assert main(["config", str(SEQUENCE_MATCH_CONFIG), "objective.divergence.name=kl"]) == 0


def test_a_nested_override_that_keeps_the_plugin_merges() -> None:
    cfg = load_config(SEQUENCE_MATCH_CONFIG, ["objective.divergence.alpha=2"])
    assert cfg.objective.divergence == {"name": "chi2", "alpha": 2.0}
    cfg = load_config(SEQUENCE_MATCH_CONFIG, ["objective.divergence.name=chi2", "objective.divergence.alpha=3"])
    assert cfg.objective.divergence == {"name": "chi2", "alpha": 3.0}
    # A whole-section override replaces the file's section, whatever plugin it names.
    cfg = load_config(SEQUENCE_MATCH_CONFIG, ["objective.divergence={name: chi2}"])
    assert cfg.objective.divergence == {"name": "chi2", "alpha": 1.0}


def test_switching_a_top_level_plugin_drops_the_old_plugins_options() -> None:
    cfg = load_config(MARKOV_CONFIG, ["network.name=bidirectional_transformer", "network.n_heads=2"])
    assert cfg.network.name == "bidirectional_transformer"
    assert (cfg.network.n_layers, cfg.network.d_model, cfg.network.n_heads) == (4, 256, 2)  # defaults, not the YAML's
    cfg = load_config(MARKOV_CONFIG, ["network.name=causal_transformer", "network.n_heads=2"])
    assert (cfg.network.n_layers, cfg.network.d_model, cfg.network.n_heads) == (2, 64, 2)  # same plugin: merged
    cfg = load_config(MARKOV_CONFIG, ["network={name: causal_transformer, n_layers: 1}"])
    assert (cfg.network.n_layers, cfg.network.d_model) == (1, 256)  # the whole section replaced
    cfg = load_config(MARKOV_CONFIG, ["data.name=keyed"])
    assert cfg.data.num_variables == 12 and "order" not in cfg.data  # keyed's defaults; markov's options dropped
    cfg = load_config(MARKOV_CONFIG, ["objective=lo_arm"])
    assert cfg.objective.name == "lo_arm" and cfg.objective.q_network == {}


def test_lo_arm_q_network_is_a_nested_plugin_section() -> None:
    cfg = load_config(MARKOV_CONFIG, ["objective.name=lo_arm"])
    assert cfg.objective.q_network == {}  # empty: the run's network
    assert [ps.key_path for ps in plugin_sections(cfg)] == ["objective", "network", "data", "metrics[0]"]
    cfg = load_config(MARKOV_CONFIG, ["objective.name=lo_arm", "objective.q_network.name=bidirectional_transformer",
                                      "objective.q_network.n_layers=1"])
    assert cfg.objective.q_network.n_layers == 1 and cfg.objective.q_network.d_model == 256  # defaults filled
    with pytest.raises(ConfigError, match="q_network is only used with q_policy=sep"):
        load_config(MARKOV_CONFIG, ["objective.name=lo_arm", "objective.q_policy=st",
                                    "objective.q_network={name: bidirectional_transformer}"])
    # The YAML's q_network (n_layers 1, d_model 32): another network starts from its defaults, the same one merges.
    cfg = load_config(LO_ARM_CONFIG, ["objective.q_network.name=causal_transformer"])
    assert cfg.objective.q_network.name == "causal_transformer" and cfg.objective.q_network.d_model == 256
    cfg = load_config(LO_ARM_CONFIG, ["objective.q_network.n_layers=3"])
    assert (cfg.objective.q_network.n_layers, cfg.objective.q_network.d_model) == (3, 32)


# -- nested plugins in --explain and the manifest ------------------------------------------------------------------


def test_explain_shows_nested_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", str(SEQUENCE_MATCH_CONFIG), "objective.divergence.name=kl", "--explain"]) == 0
    out = capsys.readouterr().out.split("\n# options of the plugins in this config\n")[1]
    assert "#     objective.divergence: divergence 'kl' from anyorder" in out
    assert "The forward KL" in out and "alpha" not in out  # the selected plugin's options, not chi2's
    assert out.index("objective.divergence:") < out.index("# network: network 'causal_transformer'")
    cfg = load_config(SEQUENCE_MATCH_CONFIG)
    lines = explain_plugins(cfg)
    assert "#       alpha: float = 1.0  # the chi^2 penalty is r^2 / (4 alpha): alpha = 1 gives phi(x) = x - x^2 / 4" \
        in lines
    cfg = load_config(MARKOV_CONFIG, ["objective.name=lo_arm"])
    assert not any("objective.q_network:" in line for line in explain_plugins(cfg))
    cfg = load_config(MARKOV_CONFIG, ["objective.name=lo_arm", "objective.q_network.name=causal_transformer"])
    lines = explain_plugins(cfg)
    assert any(line.startswith("#     objective.q_network: network 'causal_transformer'") for line in lines)
    assert "#       positions: str = 'learned'  # position encoding: learned (absolute embedding table) | rotary " \
           "(RoPE) [choices: learned, rotary]" in lines


def test_manifest_plugins_include_nested_plugins() -> None:
    cfg = load_config(SEQUENCE_MATCH_CONFIG, ["objective.divergence.name=kl"])
    used = plugins_used(cfg)
    assert [(p["kind"], p["name"], p["key"]) for p in used] == [
        ("objective", "sequence_match", "objective"), ("divergence", "kl", "objective.divergence"),
        ("network", "causal_transformer", "network"), ("dataset", "arithmetic", "data"),
    ]
    assert all(p["distribution"] == "anyorder" and p["version"] for p in used)


# -- implementations and trainer arguments, checked before the run directory exists -------------------------------


@dataclass
class BrokenImplConfig(PluginConfig):
    """An objective whose implementation module does not exist."""

    implementation = "nonexistent_module:X"

    depth: int = opt(1, "an option")


def test_unimportable_implementation_fails_before_the_run_directory(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(MARKOV_CONFIG.read_text().replace("objective: {name: mle}", "objective: {name: broken_impl}"))
    register("objective", "broken_impl", BrokenImplConfig)
    try:
        load_config(config)  # the options are fine
        with pytest.raises(PluginError, match="failed to load its implementation 'nonexistent_module:X'"):
            check_implementations(load_config(config))
        assert main(["train", str(config), f"output_dir={tmp_path / 'runs'}"]) == 2
    finally:
        REGISTRY.unregister("objective", "broken_impl")
    err = capsys.readouterr().err
    assert "objective plugin 'broken_impl'" in err and "nonexistent_module" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_trainer_arguments_are_checked_against_lightning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(MARKOV_CONFIG, ["trainer.devics=2"])  # validation does not import Lightning
    with pytest.raises(ConfigError, match="unknown key 'trainer.devics'.*Did you mean 'devices'?"):
        check_trainer_arguments(dict(cfg.trainer))
    check_trainer_arguments({"devices": 2, "precision": "bf16-mixed"})
    assert main(["train", str(MARKOV_CONFIG), "trainer.devics=2", f"output_dir={tmp_path / 'runs'}"]) == 2
    assert "unknown key 'trainer.devics'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert not hasattr(config_module, "lightning_trainer_arguments")
