"""bf16 mixed precision on CPU: a tiny run trains with finite losses, keeps float32 weights, and autocast applies."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import MARKOV_CONFIG, tiny_overrides

from anyorder.build import restore_run
from anyorder.checkpoint import load_checkpoint
from anyorder.train import train

pytestmark = pytest.mark.e2e  # every test here trains a run through the real entry points


class OutputDtypes(L.Callback):
    """Records the dtype of the logits (the output of the network's output layer, ``head``) in every training pass;
    the objective may call the network's ``forward`` or ``logits_at``, and both end in the head."""

    def __init__(self) -> None:
        self.dtypes: list[torch.dtype] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if module.training:
                self.dtypes.append(output.dtype)

        pl_module.objective.network.head.register_forward_hook(hook)


def test_bf16_mixed_run(tmp_path: Path) -> None:
    probe = OutputDtypes()
    run_dir = train(str(MARKOV_CONFIG), [*tiny_overrides(tmp_path), "trainer.precision=bf16-mixed"],
                    extra_callbacks=[probe])
    # Every training step ran the network under bf16 autocast.
    assert len(probe.dtypes) == 4 and set(probe.dtypes) == {torch.bfloat16}

    # The run trained under bf16-mixed and its losses are finite.
    report = json.loads((run_dir / "eval" / "test-final.json").read_text())
    assert report["protocol"]["precision"] == "bf16-mixed"
    assert math.isfinite(report["nll_nats"]) and 0 < report["nll_nats"] < 3
    (metrics_csv,) = run_dir.glob("logs/**/metrics.csv")
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    val = [float(row["val/nll"]) for row in rows if row.get("val/nll")]
    train_loss = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    assert len(val) == 2 and all(math.isfinite(v) and 0 < v < 3 for v in val)
    assert len(train_loss) == 4 and all(math.isfinite(v) for v in train_loss)

    # Mixed precision keeps the parameters (and the optimizer state) in float32.
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    dtypes = {v.dtype for v in ckpt["state_dict"].values() if v.is_floating_point()}
    assert dtypes == {torch.float32}
    moments = [v for state in ckpt["optimizer_states"][0]["state"].values() for k, v in state.items()
               if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(m.dtype == torch.float32 for m in moments)

    # The network runs its matmuls in bf16 under CPU autocast (what bf16-mixed wraps each step in), fp32 outside.
    model = restore_run(run_dir).module.objective.eval()
    tokens = torch.randint(0, 8, (2, 16))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.network(tokens)
        full = model.network(tokens)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert low.shape == full.shape == (2, 16, 8)
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.05)
