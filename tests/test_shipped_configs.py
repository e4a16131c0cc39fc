"""Every shipped config validates, and trains for two steps end to end (shrunk to test size)."""

from __future__ import annotations

import csv
import json
import math
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
    "network.n_layers": 1, "network.d_model": 16, "network.n_heads": 2, "network.d_ff": 32, "network.d_edge": 8,
    "data.num_train": 64, "data.num_val": 8, "data.num_test": 8, "data.length": 16, "data.block_size": 16,
    "sample.num_final_samples": 6, "sample.batch_size": 4, "objective.eval_passes": 1,
    "network.d_embed": 8, "network.d_hidden": 16, "objective.encoder.d_embed": 8, "objective.encoder.d_hidden": 16,
    "objective.latent_dim": 4, "objective.eval_iw_samples": 2, "objective.eval_iw_chunk": 2,
}

# Metrics whose reference statistics cover a whole split (ChemNet activations, NSPDK graph features, SAS/QED of
# every reference molecule): tens of seconds cold, and the cache is per test session. A short run scores its samples
# with the config's other metrics; the full molecule suite has its own tests (test_mol_metrics.py).
EXPENSIVE_METRICS = {"fcd", "nspdk", "mol_properties"}


def _shrink(config: Path, tmp_path: Path) -> list[str]:
    cfg = load_config(config)
    out = [f"{k}={v}" for k, v in SHRINK.items() if OmegaConf.select(cfg, k, default=None) is not None]
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    assert isinstance(metrics, list)
    cheap = [m for m in metrics if m["name"] not in EXPENSIVE_METRICS]
    if len(cheap) < len(metrics):
        out.append("metrics=" + json.dumps(cheap))
    return out + [
        f"output_dir={tmp_path / 'runs'}", "logger.name=csv", "train.max_steps=2", "train.global_batch_size=4",
        "train.val_batch_size=4", "train.val_every_n_steps=2", "train.limit_val_batches=2", "sample.num_val_samples=2",
        "sample.max_len=8", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.limit_test_batches=2", "trainer.precision=32-true", "train.compile=false", "train.log_every_n_steps=1",
    ]


def _cheap_suite(cfg: object, datamodule: object) -> list[object]:
    """The final samples' metric sections in a short run: the run's own (already shrunk), without the dataset's
    suite, whose expensive members are listed in :data:`EXPENSIVE_METRICS`."""
    return list(cfg.metrics)  # type: ignore[attr-defined]


def _finite_training_losses(run: Path) -> list[float]:
    """The training losses the CSV logger wrote (``logs/csv/session-*/metrics.csv``, column ``train/loss``)."""
    files = sorted((run / "logs" / "csv").glob("session-*/metrics.csv"))
    assert files, f"no CSV metrics under {run / 'logs' / 'csv'}"
    losses = []
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    losses.append(float(row["train/loss"]))
    assert losses, f"no train/loss logged in {files}"
    assert all(math.isfinite(v) for v in losses), f"non-finite training loss in {files}: {losses}"
    return losses


def _check_likelihood_report(path: Path) -> dict[str, object]:
    """``eval/test-final.json`` holds the NLL, and every number at its top level is finite."""
    report = json.loads(path.read_text())
    assert "nll_nats" in report, f"{path}: no nll_nats"
    numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert "nll_nats" in numbers and numbers["nll_nats"] > 0, f"{path}: nll_nats {report['nll_nats']!r}"
    bad = {k: v for k, v in numbers.items() if not math.isfinite(v)}
    assert not bad, f"{path}: non-finite values {bad}"
    return report


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


@pytest.mark.e2e
@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_short_run(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needed = MIRROR_ONLY.get(str(load_config(config).data.name))
    if needed is not None and not (Path(os.environ.get("ANYORDER_DATA_MIRROR", "")) / needed).is_file():
        pytest.skip(f"{needed} is not in the data mirror (too large for it); the config is validated above")
    monkeypatch.setattr("anyorder.sampling.full_suite", _cheap_suite)
    run = train(str(config), _shrink(config, tmp_path))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and (run / "manifest.json").is_file()
    _finite_training_losses(run)
    _check_likelihood_report(run / "eval" / "test-final.json")
    assert (run / "samples" / "final.txt").is_file()
