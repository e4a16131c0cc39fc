"""Callbacks the core adds to every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from anyorder.errors import ConfigError


class LastCheckpoint(L.Callback):
    """Writes ``checkpoints/last.ckpt`` every ``every`` optimizer steps and after the final step.

    It saves at the end of a training batch, inside the loop, where a checkpoint's loop counters and loader position
    describe the same moment; a save after ``fit`` returns would record counters Lightning has already advanced.
    After a SIGTERM it also saves at the end of the step that was running (in a single-process run): Lightning
    stops right after this hook, so the run can continue from exactly there. ``saved_at`` is the step of the last
    save (-1 before any).
    """

    def __init__(self, path: Path, every: int) -> None:
        if every < 1:
            raise ConfigError(f"train.ckpt_every_n_steps must be at least 1 (got {every})")
        self.path, self.every = path, every
        self.saved_at = -1
        self._seen = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._seen = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        stepped, self._seen = step != self._seen, step
        if step == self.saved_at or not stepped:
            return  # saved already, or inside an accumulation window (this batch made no optimizer step)
        # A save on SIGTERM is a collective call; with several ranks only some may have the signal yet, so there
        # the run stops at its last regular checkpoint instead.
        on_signal = trainer.received_sigterm and trainer.world_size == 1
        if step % self.every == 0 or step >= trainer.max_steps or on_signal:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            self.saved_at = step


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps out of ``train.max_steps`` (anyorder trains by steps; Lightning's
    own bar counts batches of an epoch, which mean nothing here)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("steps")

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run, not one per epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and step != bar.n and (step % self.refresh_rate == 0 or step >= trainer.max_steps):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        pass
