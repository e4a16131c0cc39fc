"""Two-process DDP on CPU (gloo): identical weights on both ranks, exact validation counts, one run directory.

DDP runs in a subprocess: Lightning's ``ddp`` strategy starts rank 1 by re-running the command line, which must
never be pytest itself. The child gets an environment without any leftover distributed variables.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch
from conftest import MARKOV_CONFIG, REPO, tiny_overrides

from anyorder.checkpoint import load_checkpoint

pytestmark = pytest.mark.e2e  # every test here trains a run through the real entry points

TIMEOUT_S = 240
"""Wall-clock limit of one DDP subprocess (a hang, e.g. mismatched collectives, fails the test instead of blocking)."""

NUM_VAL = 33
"""Validation sequences: 8 per device and batch (global 16) over 2 ranks gives rank 0 17 examples in 3 batches
(8, 8, 1) and rank 1 16 in 2 batches. The split neither divides evenly by 2 x batch nor gives the ranks the same
number of batches, so any padding, duplicate, drop or per-batch collective would show."""

LENGTH = 16
"""Tokens per sequence (``data.length`` in :func:`conftest.tiny_overrides`); MLE predicts every one of them."""

BATCH = 16
"""``train.global_batch_size`` in :func:`conftest.tiny_overrides`."""

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]

_DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK",
              "LOCAL_WORLD_SIZE", "ANYORDER_RUN_DIR")


def _child_env() -> dict[str, str]:
    """This process's environment without distributed settings (Lightning's own PL_* included), one thread per
    rank (two ranks share the two cores)."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS and not k.startswith("PL_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_child_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_ddp_ranks_agree_and_count_every_validation_example_once(tmp_path: Path) -> None:
    out = tmp_path / "ranks"
    overrides = [*tiny_overrides(tmp_path), f"data.num_val={NUM_VAL}", "logger.name=none", *DDP]
    _run([str(REPO / "tests" / "ddp_worker.py"), str(out), str(MARKOV_CONFIG), *overrides], cwd=tmp_path)

    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [(r["rank"], r["world_size"], r["global_step"]) for r in results] == [(0, 2, 4), (1, 2, 4)]
    weights0, weights1 = results[0]["state_dict"], results[1]["state_dict"]
    assert weights0.keys() == weights1.keys() and any(k.startswith("objective.network.") for k in weights0)
    different = [k for k in weights0 if not torch.equal(weights0[k], weights1[k])]
    assert not different, f"the ranks ended with different weights: {different}"

    for result in results:
        metrics = result["metrics"]
        assert metrics["val/num_sequences"] == NUM_VAL, "validation examples were dropped or counted twice"
        assert metrics["val/num_tokens"] == NUM_VAL * LENGTH
        assert torch.isfinite(torch.tensor(metrics["val/nll"]))
    # Reduced over ranks, so every rank reports the same numbers.
    assert results[0]["metrics"]["val/nll"] == results[1]["metrics"]["val/nll"]

    # The global batch is split over the ranks, not repeated: at every step the ranks take disjoint halves of the
    # batch one device takes, and one device fed those batches trains the same weights (up to the order of sums).
    single = tmp_path / "single"
    assert ddp_worker.main([str(single), str(MARKOV_CONFIG), *overrides, "trainer.devices=1",
                            "trainer.strategy=auto"]) == 0
    one_device = torch.load(single / "rank0.pt", weights_only=True)
    batches0, batches1 = results[0]["train_batches"], results[1]["train_batches"]
    assert len(batches0) == len(batches1) == len(one_device["train_batches"]) == 4
    for half0, half1, whole in zip(batches0, batches1, one_device["train_batches"], strict=True):
        assert len(half0) == len(half1) == BATCH // 2 and len(whole) == BATCH
        assert not set(half0) & set(half1) and sorted(half0 + half1) == sorted(whole)
    weights = one_device["state_dict"]
    for key, value in weights.items():
        torch.testing.assert_close(weights0[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


def test_cli_ddp_run_uses_one_run_directory(tmp_path: Path) -> None:
    overrides = [*tiny_overrides(tmp_path), f"data.num_val={NUM_VAL}", *DDP]
    proc = _run(["-m", "anyorder.cli", "train", str(MARKOV_CONFIG), *overrides], cwd=tmp_path)

    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"rank 1 did not reuse rank 0's run directory: {runs}"
    run_dir = runs[0]
    assert proc.stdout.count("run directory:") == 1 and str(run_dir) in proc.stdout  # printed by rank 0 only
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    report = json.loads((run_dir / "eval" / "test-final.json").read_text())
    assert report["protocol"]["world_size"] == 2
    assert report["num_sequences"] == 64 and report["num_tokens"] == 64 * LENGTH  # the whole test split, once
    (metrics_csv,) = run_dir.glob("logs/**/metrics.csv")  # one CSV log, written by rank 0
    with metrics_csv.open(newline="") as f:
        counts = [float(row["val/num_sequences"]) for row in csv.DictReader(f) if row.get("val/num_sequences")]
    assert counts == [NUM_VAL, NUM_VAL]  # both validations, every example once

    # `anyorder sample` over 2 processes: each sample request is seeded by its global index, so the file equals the
    # one a single process writes; the requests are split between the ranks, not repeated.
    sharded, single = tmp_path / "ddp.jsonl", tmp_path / "one.jsonl"
    _run(["-m", "anyorder.cli", "sample", str(run_dir), "--num", "9", "--out", str(sharded), "sample.batch_size=2",
          *DDP], cwd=tmp_path)
    _run(["-m", "anyorder.cli", "sample", str(run_dir), "--num", "9", "--out", str(single), "sample.batch_size=2",
          "trainer.accelerator=cpu", "trainer.devices=1"], cwd=tmp_path)
    assert sharded.read_text() == single.read_text() and len(single.read_text().splitlines()) == 9
    assert json.loads((tmp_path / "ddp.jsonl.meta.json").read_text())["world_size"] == 2


def test_sequence_match_keeps_one_replay_buffer_per_rank(tmp_path: Path) -> None:
    # Replay refreshes at steps 0 and 2 of 4: each rank generates 3 sequences each time with its own seed, and the
    # checkpoint (written by rank 0) holds both ranks' buffers, so a resume on 2 ranks gives each its own back.
    overrides = [*tiny_overrides(tmp_path), "logger.name=none", "train.test_at_end=false", *DDP,
                 "objective.name=sequence_match", "objective.bc_warmup=0.0", "objective.replay_every=2",
                 "objective.replay_batch=3", "objective.replay_rows=2", "sample.num_val_samples=0"]
    _run(["-m", "anyorder.cli", "train", str(MARKOV_CONFIG), *overrides], cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    buffers = ckpt["anyorder"]["objective_state"]
    assert len(buffers) == 2 and len(buffers[0]) == len(buffers[1]) == 6
    assert buffers[0] != buffers[1], "both ranks generated the same replay sequences"
    for buffer in buffers:
        assert all(prompt == [8] and len(actions) > 0 for prompt, actions in buffer)  # BOS of the 8-token markov data
