"""Callbacks the core adds to every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from anyorder.errors import ConfigError


class LastCheckpoint(L.Callback):
    """Writes ``checkpoints/last.ckpt`` every ``every`` optimizer steps and after the final step.

    It saves at the end of a training batch, inside the loop, where a checkpoint's loop counters and loader position
    describe the same moment; a save after ``fit`` returns would record counters Lightning has already advanced.
    """

    def __init__(self, path: Path, every: int) -> None:
        if every < 1:
            raise ConfigError(f"train.ckpt_every_n_steps must be at least 1 (got {every})")
        self.path, self.every = path, every
        self._saved_at = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._saved_at or trainer.fit_loop._should_accumulate():
            return
        if step % self.every == 0 or step >= trainer.max_steps:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            self._saved_at = step
