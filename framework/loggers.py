"""Lightning loggers from the ``logger`` section: W&B (default), CSV, TensorBoard or none.

W&B runs online only when an API key is configured; otherwise it runs offline, needs no network and never waits
for one. The W&B run id is stored in the run directory, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from anyorder.atomic import write_json
from anyorder.runs import is_launch_rank_zero, read_json

LOGGER_STATE = "logger.json"


def wandb_has_key() -> bool:
    """True when an API key is available (WANDB_API_KEY, or a netrc entry written by ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC"))
    except (OSError, netrc.NetrcParseError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
    return rc.authenticators(host) is not None


def wandb_mode(requested: str) -> str:
    """The W&B mode to use: WANDB_MODE wins, then ``requested``; ``auto`` is online only with a key."""
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if requested == "auto":
        return "online" if wandb_has_key() else "offline"
    return requested


def _wandb_logger(cfg: DictConfig, run_dir: Path, state: dict[str, Any], tags: list[str]) -> WandbLogger:
    import wandb

    if "wandb_id" not in state:
        state["wandb_id"] = secrets.token_hex(4)  # W&B ids are short lowercase alphanumerics
    mode = wandb_mode(cfg.logger.mode)
    state["wandb_mode"] = mode
    names = {"project": cfg.logger.project, "name": cfg.name, "id": state["wandb_id"]}
    if not is_launch_rank_zero():
        return WandbLogger(**names, save_dir=str(run_dir))  # never starts a W&B run: only rank 0 logs
    # The run is started here rather than by Lightning, whose wandb.init call passes a deprecated `anonymous`
    # setting that makes W&B print a warning on every run.
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    run = wandb.init(
        **names, entity=cfg.logger.entity, resume="allow", dir=str(run_dir), tags=tags,
        mode=mode,  # type: ignore[arg-type]  # one of wandb_mode()'s values
        config={str(k): v for k, v in config.items()}, settings=wandb.Settings(init_timeout=60, silent=True),
    )
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return WandbLogger(**names, save_dir=str(run_dir), experiment=run)


class HistoryLogger(Logger):
    """Every logged value, one JSON line per call, in ``logs/history.jsonl`` of the run, written through at once.

    It is the record that survives a ``kill -9``: W&B's offline file is written by a helper process that buffers
    and ends with the run. Each session (the first run and each resume) starts with a ``{"session": ...}`` line
    giving the step it started from; a resumed session logs again the steps after its checkpoint, and its lines
    replace the earlier session's from there.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.path = run_dir / "logs" / "history.jsonl"
        self._file: Any = None

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return ""

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # into the OS: survives the process being killed

    @rank_zero_only
    def start_session(self, step: int) -> None:
        """Mark the start of a session at ``step`` (0 for a new run, the checkpoint's step on resume)."""
        self._write({"session": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step})

    def session_marker(self) -> L.Callback:
        """A callback that calls :meth:`start_session` when training starts (the step is known only then)."""
        history = self

        class _Marker(L.Callback):
            def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
                history.start_session(trainer.global_step)

        return _Marker()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._write({"step": step, **{k: float(v) for k, v in metrics.items()}})

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the config is in config.yaml and the manifest

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | bool:
    """The configured logger (``False`` for none); the W&B id is kept in ``run_dir/logger.json``."""
    state_path = run_dir / LOGGER_STATE
    state: dict[str, Any] = read_json(state_path) if state_path.is_file() else {}
    state["sessions"] = int(state.get("sessions", 0)) + 1
    tags = [cfg.objective.name, cfg.network.name, cfg.data.name, *cfg.logger.tags]
    logger = _BUILDERS[cfg.logger.name](cfg, run_dir, state, tags)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        write_json(state_path, state)
    return logger


_BUILDERS: dict[str, Any] = {
    "wandb": _wandb_logger,
    # Lightning's CSV writer deletes an existing metrics file, so each session (first run, each resume) of a run
    # writes its own logs/csv/session-<n>/metrics.csv instead of overwriting the history.
    "csv": lambda cfg, run_dir, state, tags: CSVLogger(save_dir=str(run_dir / "logs"), name="csv",
                                                        version=f"session-{state['sessions']}"),
    "tensorboard": lambda cfg, run_dir, state, tags: TensorBoardLogger(
        save_dir=str(run_dir), name="logs", version="", default_hp_metric=False),
    "none": lambda cfg, run_dir, state, tags: False,
}


def log_text_table(logger: Any, key: str, texts: list[str], step: int) -> None:
    """Log samples as a table (W&B), as text (TensorBoard); CSV has no text channel (samples/ holds them)."""
    if isinstance(logger, WandbLogger):
        logger.log_text(key=key, columns=["i", "sample"], data=[[str(i), t] for i, t in enumerate(texts)], step=step)
    elif isinstance(logger, TensorBoardLogger):
        body = "\n\n".join(f"{i}: `{t}`" for i, t in enumerate(texts))
        logger.experiment.add_text(key, body, global_step=step)


def log_image(logger: Any, key: str, path: Path, step: int) -> None:
    """Log an image file (W&B image, TensorBoard image); CSV has no image channel (the file stays on disk)."""
    if isinstance(logger, WandbLogger):
        logger.log_image(key=key, images=[str(path)], step=step)
    elif isinstance(logger, TensorBoardLogger):
        import numpy as np
        from PIL import Image

        logger.experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), global_step=step,
                                    dataformats="HWC")


def finish(logger: Any) -> None:
    """Close a W&B run cleanly, so its run file is complete when the process continues or exits."""
    if isinstance(logger, WandbLogger):
        import wandb

        if wandb.run is not None:
            wandb.finish()
        wandb.teardown()
