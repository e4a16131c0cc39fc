"""A DDP training script for tests/test_ddp.py: ``python tests/ddp_worker.py OUT_DIR CONFIG [key=value ...]``.

It builds the pieces of a run the way ``anyorder.train`` does (config, DataModule, objective, Trainer), with the
config's ``trainer`` section choosing the strategy and devices, fits without a logger or checkpoints, and then every
rank writes ``OUT_DIR/rank<r>.pt``: its final ``state_dict``, the validation metrics of the last validation
(``trainer.callback_metrics``), the dataset indices of every training batch it took, and the global step, rank and
world size. Lightning starts the other ranks by running
this script again with the same arguments, so everything here is deterministic given the arguments.

Run it in a subprocess, never inside the pytest process (Lightning's DDP launcher re-runs ``sys.argv``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from anyorder.build import build_datamodule, build_module, build_trainer
from anyorder.config import load_config


class SeenExamples(L.Callback):
    """Records the dataset indices (``batch["index"]``) of every training batch this rank takes."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.batches.append(batch["index"].tolist())


def main(argv: list[str]) -> int:
    """Fit the run described by ``argv`` (OUT_DIR CONFIG [key=value ...]) and write this rank's results."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir, config, overrides = Path(argv[0]), argv[1], argv[2:]
    cfg = load_config(config, overrides)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_module(cfg)
    seen = SeenExamples()
    trainer = build_trainer(
        cfg, logger=False, callbacks=[seen], enable_checkpointing=False, max_steps=int(cfg.train.max_steps),
        max_epochs=-1, val_check_interval=int(cfg.train.val_every_n_steps), check_val_every_n_epoch=None,
        limit_val_batches=1.0, default_root_dir=str(out_dir),
    )
    trainer.fit(model, datamodule=datamodule)
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "train_batches": seen.batches,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(result, out_dir / f"rank{trainer.global_rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
