"""Callbacks the core adds to every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from anyorder.atomic import write_text
from anyorder.loggers import log_text_table


class SampleWriter(L.Callback):
    """After each validation, writes the objective's samples to ``samples/val-step<N>.txt`` and logs them as a
    table (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        texts = list(getattr(pl_module, "last_samples", []))
        if not texts or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        write_text(self.run_dir / "samples" / f"val-step{step:08d}.txt", "\n".join(texts) + "\n")
        for logger in trainer.loggers:
            log_text_table(logger, "val/samples", texts, step)
        pl_module.last_samples = []
