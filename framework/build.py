"""Building the pieces of a run from a validated config: DataModule, objective, Trainer; restoring from a run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from anyorder.checkpoint import SafeAtomicCheckpointIO, load_checkpoint
from anyorder.config import load_config, plugin_options
from anyorder.data import DataSpace, DiscreteDataModule
from anyorder.errors import RunError
from anyorder.module import CHECKPOINT_KEY, RunModule, RunOutputs, upgrade_checkpoint
from anyorder.objective import Objective
from anyorder.registry import REGISTRY
from anyorder.runs import checkpoint_path, require_run_dir


def build_datamodule(cfg: DictConfig, *, eval_batch_size: int | None = None) -> DiscreteDataModule:
    """The dataset plugin named in ``cfg.data``."""
    impl = REGISTRY.implementation("dataset", cfg.data.name)
    return impl(
        plugin_options("dataset", cfg.data), seed=int(cfg.seed), global_batch_size=int(cfg.train.global_batch_size),
        eval_batch_size=int(eval_batch_size or cfg.train.val_batch_size or cfg.train.global_batch_size),
    )


def build_module(cfg: DictConfig, space: DataSpace | None = None, outputs: RunOutputs | None = None) -> RunModule:
    """The run's LightningModule around the objective plugin named in ``cfg.objective`` (the objective is built at
    ``configure_model``, or at once with :meth:`RunModule.build_objective` when ``space`` is known)."""
    return RunModule(cfg, space, outputs)


def build_objective(cfg: DictConfig, space: DataSpace) -> Objective:
    """The objective plugin of ``cfg`` built for ``space``, outside a Trainer (tests, benchmarks, notebooks): call
    its hooks with :meth:`~anyorder.objective.StepContext.standalone` and the other contexts."""
    return build_module(cfg, space).build_objective()


class _DropTip(logging.Filter):
    """Drops Lightning's advertisements for its cloud logger and model registry, printed on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "litmodels" not in message


def build_trainer(cfg: DictConfig, *, logger: Any = False, callbacks: list[Any] | None = None,
                  **overrides: Any) -> L.Trainer:
    """A Trainer with anyorder's settings plus the ``trainer`` passthrough (devices, strategy, precision, ...)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTip) for f in tips.filters):
        tips.addFilter(_DropTip())
    passthrough = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(passthrough, dict)
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "logger": logger,
        "callbacks": callbacks or [],
        "plugins": [SafeAtomicCheckpointIO()],
        "use_distributed_sampler": False,  # anyorder's loaders shard without padding duplicates
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
        "gradient_clip_val": None,  # clipping is done (and checked for NaN) by RunModule.configure_gradient_clipping
    }
    user_plugins = passthrough.pop("plugins", None) or []
    kwargs["plugins"] = [*kwargs["plugins"], *(user_plugins if isinstance(user_plugins, list) else [user_plugins])]
    kwargs.update({str(k): v for k, v in passthrough.items()})
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def weights_mismatch(ckpt_path: Path, exc: BaseException) -> RunError:
    """The error for a checkpoint whose tensors do not fit the model the config builds."""
    detail = " ".join(str(exc).split())
    detail = detail if len(detail) <= 300 else detail[:300] + " ..."
    return RunError(f"the weights in {str(ckpt_path)!r} do not fit the model built from the config ({detail}); "
                    f"did an override change the network? Use the run's own settings")


@dataclass
class RestoredRun:
    """A run loaded from its directory for evaluation or sampling."""

    run_dir: Path
    cfg: DictConfig
    checkpoint: Path
    step: int
    datamodule: DiscreteDataModule
    module: RunModule
    outputs: RunOutputs


def restore_run(run_dir: str | Path, *, which: str = "last", overrides: list[str] | tuple[str, ...] = (),
                eval_batch_size: int | None = None) -> RestoredRun:
    """Load a run's config (plus overrides), DataModule and weights (EMA included) from a checkpoint.

    The checkpoint is read with the safe unpickler; the model is rebuilt from the config and the stored data
    space, so no code is taken from the file.
    """
    path = require_run_dir(run_dir)
    cfg = load_config(path / "config.yaml", overrides)
    ckpt_path = checkpoint_path(path, which)
    ckpt = load_checkpoint(ckpt_path)
    extra = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(extra, dict) or extra.get("space") is None or "pytorch-lightning_version" not in ckpt:
        raise RunError(f"{str(ckpt_path)!r} has no anyorder section; it was not written by `anyorder train`")
    space = DataSpace.from_dict(extra["space"])
    upgrade_checkpoint(ckpt)
    datamodule = build_datamodule(cfg, eval_batch_size=eval_batch_size)
    outputs = RunOutputs(path)
    module = build_module(cfg, space, outputs)
    module.configure_model()
    try:
        missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
        if missing or unexpected:
            raise RunError(f"missing: {missing[:5]}, unexpected: {list(unexpected)[:5]}")
        module.on_load_checkpoint(ckpt)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise weights_mismatch(ckpt_path, exc) from exc
    return RestoredRun(path, cfg, ckpt_path, int(ckpt.get("global_step", 0)), datamodule, module, outputs)
