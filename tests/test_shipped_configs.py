"""Every shipped config validates, and trains for two steps end to end (shrunk to test size)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO
from omegaconf import OmegaConf

from anyorder.config import load_config
from anyorder.train import train

CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))

# Datasets whose file is too large for the data mirror of this repository's CI (../shared/data): their configs are
# validated, and trained for two steps only where the mirror (or the cache) holds the file.
MIRROR_ONLY = {"text8": "text8.zip", "zinc250k": "250k_rndm_zinc_drugs_clean_3.csv"}


def _objective_of(config: Path) -> str:
    """The objective a config file is named after: ``ardm.yaml`` and its scale variant ``ardm.gpu.yaml`` -> ardm."""
    return config.name.split(".")[0]

# Shrinking overrides, applied when the resolved config has the key (networks and datasets differ in options).
SHRINK = {
    "network.n_layers": 1, "network.d_model": 16, "network.n_heads": 2, "network.d_ff": 32,
    "data.num_train": 64, "data.num_val": 8, "data.num_test": 8, "data.length": 16, "data.block_size": 16,
    "sample.num_final_samples": 6,
}


def _shrink(config: Path, tmp_path: Path) -> list[str]:
    cfg = load_config(config)
    out = [f"{k}={v}" for k, v in SHRINK.items() if OmegaConf.select(cfg, k, default=None) is not None]
    return out + [
        f"output_dir={tmp_path / 'runs'}", "logger.name=csv", "train.max_steps=2", "train.global_batch_size=4",
        "train.val_batch_size=4", "train.val_every_n_steps=2", "train.limit_val_batches=2", "sample.num_val_samples=2",
        "sample.max_len=8", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.limit_test_batches=2", "trainer.precision=32-true", "train.compile=false",
    ]


def test_configs_are_shipped() -> None:
    assert {p.parent.name for p in CONFIGS} >= {"markov", "tiny_shakespeare", "qm9", "mol_embedded"}
    for p in CONFIGS:
        assert load_config(p).objective.name == _objective_of(p), f"{p}: the file name must be the objective's"
        assert p.name.count(".") == 1 or p.name.endswith(".gpu.yaml"), f"{p}: the only variant suffix is .gpu"


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_validates(config: Path) -> None:
    cfg = load_config(config)
    assert cfg.objective.name == _objective_of(config)
    text = config.read_text()
    assert "/home/" not in text and "/work/" not in text  # no machine paths in shipped configs


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_short_run(config: Path, tmp_path: Path) -> None:
    needed = MIRROR_ONLY.get(str(load_config(config).data.name))
    if needed is not None and not (Path(os.environ.get("ANYORDER_DATA_MIRROR", "")) / needed).is_file():
        pytest.skip(f"{needed} is not in the data mirror (too large for it); the config is validated above")
    run = train(str(config), _shrink(config, tmp_path))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "eval" / "test-final.json").is_file()
    assert (run / "config.yaml").is_file() and (run / "manifest.json").is_file()
