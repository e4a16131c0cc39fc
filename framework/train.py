"""``anyorder train``: one run directory per run; exact resume from ``checkpoints/last.ckpt``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from anyorder.atomic import write_json
from anyorder.build import build_datamodule, build_module, build_trainer, weights_mismatch
from anyorder.callbacks import LastCheckpoint, StepProgressBar
from anyorder.checkpoint import load_checkpoint
from anyorder.config import check_implementations, load_config
from anyorder.downloads import sha256_file
from anyorder.errors import ConfigError, RunError, RunInterrupted
from anyorder.evaluation import flat_values, likelihood_report, write_report
from anyorder.loggers import HistoryLogger, build_logger, finish
from anyorder.module import RunOutputs
from anyorder.runs import (
    RUN_DIR_ENV,
    append_invocation,
    checkpoint_path,
    create_run_dir,
    init_source,
    is_launch_rank_zero,
    read_json,
    require_run_dir,
    wait_for_run_dir,
)
from anyorder.sampling import draw_to_file


def checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """``last`` every ``train.ckpt_every_n_steps`` and at the end; ``best`` by ``train.monitor`` (same on resume)."""
    ckpt_dir = run_dir / "checkpoints"
    last = LastCheckpoint(ckpt_dir / "last.ckpt", int(cfg.train.ckpt_every_n_steps))
    best = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor=str(cfg.train.monitor), mode="min",
                           save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=False)
    return [last, best]


def _resolve_run(config: str | None, overrides: list[str], resume: str | None, argv: list[str],
                 validated: DictConfig | None) -> tuple[DictConfig, Path, Path | None]:
    if resume is not None:
        run_dir = require_run_dir(resume)
        cfg = load_config(run_dir / "config.yaml", overrides)
        ckpt: Path | None = run_dir / "checkpoints" / "last.ckpt"
        if ckpt is not None and not ckpt.is_file():
            if any((run_dir / "checkpoints").glob("*.ckpt")):
                ckpt = checkpoint_path(run_dir, "last")  # raises: names the checkpoints the run does have
            # Stopped before its first checkpoint: nothing to continue from, so the run starts again from step 0.
            ckpt = None
            if is_launch_rank_zero():
                print(f"{run_dir} has no checkpoint yet (it stopped before the first one): starting it from step 0")
        if is_launch_rank_zero():
            append_invocation(run_dir, argv)
        return cfg, run_dir, ckpt
    if validated is None:
        validated = load_config(config, overrides)
        check_implementations(validated, str(config))  # fail before the run directory exists
    cfg = validated
    if cfg.train.init_from:
        init_source(str(cfg.train.init_from))  # a missing source fails before the run directory exists
    inherited = os.environ.get(RUN_DIR_ENV)
    if not is_launch_rank_zero():
        # Another rank: a process launched by Lightning is told the directory rank 0 created; one started on another
        # node finds it by the run's name.
        run_dir = Path(inherited) if inherited else wait_for_run_dir(cfg)
        cfg.name = run_dir.name
        return cfg, run_dir, None
    run_dir = create_run_dir(cfg, argv)
    if cfg.train.init_from:
        source = init_source(str(cfg.train.init_from))
        manifest = read_json(run_dir / "manifest.json")
        manifest["init_from"] = {"run": str(source.parent.parent.resolve()), "checkpoint": source.name,
                                 "file_sha256": sha256_file(source)}
        write_json(run_dir / "manifest.json", manifest)
    return cfg, run_dir, None


def _interrupted(what: str, saved_at: int, run_dir: Path) -> str:
    if saved_at < 0 and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return (f"training stopped by {what} before its first checkpoint; `anyorder train --resume {run_dir}` starts "
                f"it again from step 0")
    where = f"step {saved_at}" if saved_at >= 0 else "its last checkpoint"
    return (f"training stopped by {what}; checkpoints/last.ckpt holds {where}: continue with "
            f"`anyorder train --resume {run_dir}`")


def _fit(cfg: DictConfig, run_dir: Path, ckpt: Path | None, extra_callbacks: list[Any] | None) -> None:
    """Build the run's pieces, train (from ``ckpt`` when given), then test and sample as configured."""
    datamodule = build_datamodule(cfg)
    outputs = RunOutputs(run_dir)
    model = build_module(cfg, outputs=outputs)
    if ckpt is None and cfg.train.init_from:
        # A fresh start (not a resume, whose checkpoint holds the weights already) of a fine-tuning run.
        model.init_state = load_checkpoint(init_source(str(cfg.train.init_from)))
    logger = build_logger(cfg, run_dir)
    history = HistoryLogger(run_dir) if logger else None
    callbacks: list[Any] = [*checkpoint_callbacks(cfg, run_dir), *(extra_callbacks or [])]
    if history is not None:
        callbacks.append(history.session_marker())
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(StepProgressBar())
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1))
    val_every = int(cfg.train.val_every_n_steps) * accumulate
    limit_val = int(cfg.train.limit_val_batches) or None  # None: the whole split, without Lightning's notice about it
    trainer = build_trainer(
        cfg, logger=[logger, history] if logger else False, callbacks=callbacks, max_steps=int(cfg.train.max_steps),
        max_epochs=-1,
        val_check_interval=val_every, check_val_every_n_epoch=None, limit_val_batches=limit_val,
        log_every_n_steps=int(cfg.train.log_every_n_steps), default_root_dir=str(run_dir),
        detect_anomaly=bool(cfg.train.detect_anomaly),
    )
    last = callbacks[0]
    try:
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        except RuntimeError as exc:
            if ckpt is not None and "loading state_dict" in str(exc):
                raise weights_mismatch(ckpt, exc) from exc
            raise
        except SIGTERMException as exc:
            # Lightning stops at the end of a step after a SIGTERM; LastCheckpoint saved that step (see there).
            raise RunInterrupted(_interrupted("SIGTERM", last.saved_at, run_dir), exit_status=143) from exc
        if trainer.interrupted:
            # Stopped mid-step (Ctrl-C): the in-memory state may be half a step ahead of the data position, so it is
            # not saved; last.ckpt is the consistent state to resume from.
            raise RunInterrupted(_interrupted("an interrupt", last.saved_at, run_dir), exit_status=130)
        if cfg.train.test_at_end:
            trainer.test(model, datamodule=datamodule, verbose=False)
            result = outputs.last_evaluation
            if trainer.is_global_zero and result is not None:
                report = likelihood_report(
                    cfg, model, datamodule, result,
                    checkpoint="final weights (in memory, equal to checkpoints/last.ckpt)",
                    step=trainer.global_step, world_size=trainer.world_size, precision=str(trainer.precision),
                )
                write_report(run_dir / "eval" / "test-final.json", report)
                for lg in trainer.loggers:
                    lg.log_metrics(flat_values(result, "test"), step=trainer.global_step)
        if int(cfg.sample.num_final_samples) > 0:
            draw_to_file(trainer, model, datamodule, cfg, run_dir, num=int(cfg.sample.num_final_samples),
                         out=run_dir / "samples" / "final.txt", step=trainer.global_step,
                         checkpoint="final weights (in memory, equal to checkpoints/last.ckpt)",
                         logger=logger if logger else False)
    finally:
        finish(logger)


def train(config: str | None, overrides: list[str] | tuple[str, ...] = (), *, resume: str | None = None,
          argv: list[str] | None = None, extra_callbacks: list[Any] | None = None,
          validated: DictConfig | None = None) -> Path:
    """Train from ``config`` (+ overrides) into a new run directory, or continue the run ``resume``.

    ``validated`` is the config already loaded and checked from ``config`` and ``overrides`` (by the CLI), so that it
    is validated once.

    ``extra_callbacks`` are Lightning callbacks added to the run (pass the same ones again when resuming if they
    carry state). Returns the run directory.
    """
    overrides = list(overrides)
    argv = argv or []
    cfg, run_dir, ckpt = _resolve_run(config, overrides, resume, argv, validated)
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    try:
        _fit(cfg, run_dir, ckpt, extra_callbacks)
    except (ConfigError, RunError):
        # A setting or a source refused at the start (the monitor, a plugin's check, train.init_from) leaves
        # nothing worth keeping: free the name.
        if resume is None and is_launch_rank_zero() and not any((run_dir / "checkpoints").glob("*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir
