"""The base LightningModule that every objective subclasses.

An objective implements three narrow hooks and nothing else:

* :meth:`Objective.build` creates its networks for a data space (called once, inside Lightning's
  ``configure_model`` so sharded strategies can wrap them);
* :meth:`Objective.loss` returns the training loss and its named terms for a batch;
* :meth:`Objective.log_likelihood` returns log p(x) (or a lower bound) per datapoint;
* :meth:`Objective.sample` draws datapoints.

The base owns the rest, once for every objective: the optimizer and schedule, gradient clipping, the non-finite
guard, EMA weights, per-step seeding (which makes resumes exact), logging of every term and of bits per token,
validation likelihoods reduced over ranks, samples and sample metrics at validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from anyorder.config import plugin_options
from anyorder.data import DataSpace
from anyorder.ema import EMA
from anyorder.errors import ConfigError, NonFiniteLossError
from anyorder.metrics import LikelihoodStats, SampleMetric
from anyorder.network import Network, NetworkIO
from anyorder.registry import REGISTRY

LN2 = math.log(2.0)
CHECKPOINT_KEY = "anyorder"
CHECKPOINT_FORMAT = 1


@dataclass
class LossOutput:
    """A training loss and what to log about it.

    ``loss`` is minimised. ``terms`` are scalars logged as ``train/<name>``. ``nats`` / ``num_tokens``, when
    given, are the summed negative log-likelihood (or bound) of the batch and the number of variables it covers;
    the base logs their ratio in bits per token.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    nats: Tensor | None = None
    num_tokens: Tensor | None = None


@dataclass
class LogLikelihood:
    """Per datapoint: ``log_prob`` [B] in nats (exact, or a lower bound) and ``num_tokens`` [B] it covers."""

    log_prob: Tensor
    num_tokens: Tensor


@dataclass
class Samples:
    """Generated datapoints: ``tokens`` [B, D] and ``lengths`` [B], plus per-sample ``extras`` (e.g. orders)
    and scalar ``stats`` (e.g. a backspace rate)."""

    tokens: Tensor
    lengths: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps), so (seed, step, rank) streams never collide."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


_SCHEDULES = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
}


class Objective(L.LightningModule):
    """Base of every objective plugin, built as ``cls(options, run_config, space=None)``.

    ``run_config`` is the validated run config as a plain dict; ``space`` is given when restoring from a
    checkpoint and otherwise taken from the DataModule at ``setup``.
    """

    Config: ClassVar[type]
    likelihood_kind: ClassVar[str] = "exact"
    supports_step_budget: ClassVar[bool] = False
    """Whether the objective can generate several variables per network call (``sample.steps``, ``eval.steps``)."""
    """``exact`` when :meth:`log_likelihood` is log p(x); ``bound`` when it is a lower bound (an ELBO)."""

    def __init__(self, config: Any, run_config: dict[str, Any], space: DataSpace | None = None) -> None:
        super().__init__()
        self.config = config
        self.run_config = run_config
        self.space: DataSpace | None = space
        self.ema: EMA | None = None
        self._built = False
        self.val_stats = LikelihoodStats()
        self.test_stats = LikelihoodStats()
        self.test_results: dict[str, float] | None = None
        self.last_samples: list[Any] = []
        self._sample_metrics: list[SampleMetric] | None = None
        self._last_loss: tuple[Tensor, dict[str, Tensor]] = (torch.zeros(()), {})

    # ------------------------------------------------------------------------------------------------------------
    # Hooks for subclasses
    # ------------------------------------------------------------------------------------------------------------
    def build(self, space: DataSpace) -> None:
        """Create the networks for ``space`` (use :meth:`make_network`)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Tensor]) -> LossOutput:
        """The training loss of a batch."""
        raise NotImplementedError

    def log_likelihood(self, batch: dict[str, Tensor]) -> LogLikelihood:
        """log p(x) per datapoint (or a lower bound; see ``likelihood_kind``)."""
        raise NotImplementedError

    def sample(self, num: int, *, generator: torch.Generator, settings: dict[str, Any]) -> Samples:
        """Draw ``num`` datapoints. ``settings`` is the run's ``sample`` section (temperature, top_k, ...)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------------
    # Helpers for subclasses
    # ------------------------------------------------------------------------------------------------------------
    def likelihood_protocol(self) -> dict[str, Any]:
        """How :meth:`log_likelihood` computes its value (estimator, passes, step budget...), for reports."""
        return {}

    def step_budget(self, section: str) -> int:
        """The requested number of network calls (``sample.steps`` or ``eval.steps``; 0 = one variable per call).

        Raises :class:`~anyorder.errors.ConfigError` when a budget is set for an objective that cannot honour it.
        """
        steps = int(self.run_config.get(section, {}).get("steps", 0) or 0)
        if steps < 0:
            raise ConfigError(f"{section}.steps must be 0 (one variable per network call) or positive (got {steps})")
        if steps and not self.supports_step_budget:
            raise ConfigError(f"{section}.steps={steps}: objective {self.run_config['objective']['name']!r} generates "
                              f"one variable per network call and has no step budget; leave {section}.steps at 0")
        return steps

    def make_network(self, section: dict[str, Any], io: NetworkIO, *, require: type | None = None) -> Network:
        """Build the network plugin named in ``section`` for ``io``; ``require`` checks a capability base class."""
        impl = REGISTRY.implementation("network", section["name"])
        if require is not None and not issubclass(impl, require):
            raise ConfigError(
                f"objective {type(self).__name__} needs a network that is a {require.__name__}; "
                f"network plugin {section['name']!r} ({impl.__qualname__}) is not"
            )
        return impl(plugin_options("network", section), io)

    @property
    def network_section(self) -> dict[str, Any]:
        """The run config's ``network`` section."""
        return dict(self.run_config["network"])

    # ------------------------------------------------------------------------------------------------------------
    # Model construction
    # ------------------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.space is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError("the objective needs a DataModule (or a space from a checkpoint) to build")
            self.space = datamodule.space

    def configure_model(self) -> None:
        if self._built:
            return
        if self.space is None:
            raise RuntimeError("configure_model called before the data space is known")
        self.build(self.space)
        self._built = True
        decay = float(self.run_config["train"]["ema_decay"])
        if decay > 0:
            strategy = type(self.trainer.strategy).__name__ if self._trainer is not None else ""
            if "FSDP" in strategy or "DeepSpeed" in strategy:
                # The EMA keeps full copies keyed by parameter name; sharded strategies flatten and split parameters.
                raise ConfigError(f"train.ema_decay > 0 is not supported with {strategy} yet; set train.ema_decay=0")
            self.ema = EMA(self, decay)
        if self.run_config["train"].get("compile"):
            # In-place compile keeps parameter names, so checkpoints and EMA states load into uncompiled models.
            for child in self.children():
                if isinstance(child, Network):
                    child.compile()

    # ------------------------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.run_config["seed"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every random draw of a step (dropout, objective draws) comes from a stream keyed by (seed, step, micro-batch,
        # rank). The RNG state is thus a function of the position in training, which makes a resume bit-exact and
        # gives every rank its own stream, without saving generator states.
        seed = mix_seed(self.seed, self.global_step, batch_idx, self.global_rank)
        # Only the generators this rank draws from: torch.manual_seed also queues a lazy seeding of every backend
        # that is not initialised (CUDA on a CPU run, ...), capturing a stack trace each time (~0.2 ms a step).
        torch.random.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)
        elif self.device.type != "cpu":
            torch.manual_seed(seed)

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's values to the loggers (every ``log_every_n_steps`` and at the end).
        Values logged on other steps would be overwritten unseen, and each ``self.log`` costs ~0.3 ms of CPU."""
        step = self.global_step + 1
        trainer = self.trainer
        every = int(trainer.log_every_n_steps)  # type: ignore[attr-defined]  # set by the Trainer's logger connector
        return step % max(1, every) == 0 or trainer.should_stop or step >= trainer.max_steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.loss(batch)
        loss = out.loss
        # Finiteness is checked in configure_gradient_clipping, after backward and before the optimizer step: a NaN
        # loss makes the gradient norm NaN, so one host sync per step covers both (and no weight changes).
        self._last_loss = (loss.detach(), {k: v.detach() for k, v in out.terms.items()})
        if self._logs_this_step():
            logs = {"train/loss": loss.detach()}
            logs.update({f"train/{k}": v.detach().float() for k, v in out.terms.items()})
            if out.nats is not None and out.num_tokens is not None:
                logs["train/bits_per_token"] = (out.nats.detach() / out.num_tokens.clamp(min=1) / LN2).float()
            self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=batch["tokens"].shape[0])
        if self.trainer.progress_bar_callback is not None:
            self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return loss

    def _raise_non_finite(self, what: str, terms: dict[str, Tensor]) -> None:
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"training stopped at step {self.global_step}: {what}"
            + (f" (terms: {shown})" if shown else "")
            + ". No checkpoint was written for this step, so checkpoints/last.ckpt still holds the last good state. "
            "Try a lower optim.lr, train.grad_clip > 0, or precision 32 to find the operation that overflows."
        )

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        clip = float(self.run_config["train"]["grad_clip"])
        loss, terms = self._last_loss
        strategy = type(self.trainer.strategy).__name__
        params = [p for p in self.parameters() if p.grad is not None]
        if "FSDP" in strategy or "DeepSpeed" in strategy or not params:
            # Sharded parameters: the strategy knows how to compute the global norm; check the loss alone.
            if not bool(torch.isfinite(loss)):
                self._raise_non_finite(f"the loss is {loss.item()}", terms)
            if clip > 0 and params:
                self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            return
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        # fp16 loss scaling expects occasional inf gradients (the scaler skips the step); other precisions do not.
        if str(self.trainer.precision) != "16-mixed" and not bool(torch.isfinite(norm)):
            what = f"the loss is {loss.item()}" if not bool(torch.isfinite(loss)) else f"the gradient norm is {norm}"
            self._raise_non_finite(what, terms)
        if self._logs_this_step():
            self.log("train/grad_norm", norm.detach().float(), on_step=True, on_epoch=False)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: checkpoint callbacks run before the module's batch-end hook, so an update
        # made there would be missing from a checkpoint written at the same step (and from a resume).
        if self.ema is not None:
            self.ema.update(self)

    def configure_optimizers(self) -> Any:
        optim_cfg = self.run_config["optim"]
        sched_cfg = self.run_config["scheduler"]
        decay, no_decay = self._param_groups()
        cls = getattr(torch.optim, optim_cfg["name"], None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ConfigError(f"optim.name {optim_cfg['name']!r} is not an optimizer class in torch.optim")
        kwargs: dict[str, Any] = {"lr": optim_cfg["lr"], **optim_cfg.get("extra", {})}
        if "Adam" in cls.__name__:
            kwargs.update(betas=tuple(optim_cfg["betas"]), eps=optim_cfg["eps"])
        groups = [{"params": decay, "weight_decay": optim_cfg["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        try:
            optimizer = cls([g for g in groups if g["params"]], **kwargs)
        except TypeError as exc:
            raise ConfigError(f"optim: torch.optim.{cls.__name__} rejected the options {kwargs}: {exc}") from exc
        total = int(self.run_config["train"]["max_steps"])
        warmup = int(sched_cfg["warmup_steps"])
        floor = float(sched_cfg["min_lr_ratio"])
        shape = _SCHEDULES[sched_cfg["name"]]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            value = shape(progress)
            return value if sched_cfg["name"] == "constant" else floor + (1.0 - floor) * value

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        # Weight decay on matrices only: not on biases, norms or embeddings (the common transformer recipe).
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
        return decay, no_decay

    # ------------------------------------------------------------------------------------------------------------
    # EMA swapping for evaluation and sampling
    # ------------------------------------------------------------------------------------------------------------
    def _use_ema(self, key: str) -> bool:
        return self.ema is not None and bool(self.run_config[key]["use_ema"])

    def on_validation_epoch_start(self) -> None:
        if self._use_ema("eval"):
            self.ema.swap_in(self)  # type: ignore[union-attr]

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_predict_epoch_start(self) -> None:
        if self._use_ema("sample"):
            self.ema.swap_in(self)  # type: ignore[union-attr]

    def _swap_out(self) -> None:
        if self.ema is not None:
            self.ema.swap_out(self)

    # ------------------------------------------------------------------------------------------------------------
    # Validation and test: likelihood statistics reduced over ranks
    # ------------------------------------------------------------------------------------------------------------
    def _likelihood_update(self, stats: LikelihoodStats, batch: dict[str, Tensor]) -> None:
        ll = self.log_likelihood(batch)
        stats.update(-ll.log_prob.detach(), ll.num_tokens.detach())

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._likelihood_update(self.val_stats, batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._likelihood_update(self.test_stats, batch)

    def on_validation_epoch_end(self) -> None:
        try:
            stats = self.val_stats.compute()
            self.val_stats.reset()
            logs: dict[str, Tensor | float] = {
                "val/nll": stats["nll"].float(),
                "val/nll_se": stats["nll_se"].float(),
                "val/bits_per_token": (stats["nll"] / LN2).float(),
                "val/num_sequences": stats["num_sequences"].float(),
                "val/num_tokens": stats["num_tokens"].float(),
            }
            if int(self.run_config["sample"]["num_val_samples"]) > 0 and not self.trainer.sanity_checking:
                logs.update(self._validation_samples())
            # The values are already reduced over ranks: logged unsynced (no second reduction), for the callbacks
            # (the `best` monitor) here, and for the loggers below at the step they describe. Lightning would log
            # epoch-end values at its batch counter, one step before the checkpoint and samples of this validation.
            self.log_dict(logs, on_step=False, on_epoch=True, sync_dist=False, logger=False)
            self.log("val_nll", logs["val/nll"], prog_bar=True, logger=False)
            if not self.trainer.sanity_checking:
                values = {k: float(v) for k, v in logs.items()}
                for logger in self.trainer.loggers:
                    logger.log_metrics(values, step=self.global_step)
        finally:
            self._swap_out()

    def on_test_epoch_end(self) -> None:
        try:
            stats = self.test_stats.compute()
            self.test_stats.reset()
            self.test_results = {k: float(v) for k, v in stats.items()}
            self.test_results["bits_per_token"] = self.test_results["nll"] / LN2
            self.test_results["bits_per_token_se"] = self.test_results["nll_se"] / LN2
        finally:
            self._swap_out()

    def predict_step(self, batch: dict[str, int], batch_idx: int) -> dict[str, Any]:
        """One request of ``anyorder sample``: ``batch["size"]`` samples seeded by the request's global index, so the
        output does not depend on how many devices share the work."""
        samples = self.draw(int(batch["size"]), seed=mix_seed(self.seed, 0x5A, int(batch["index"])))
        return {"index": int(batch["index"]), "tokens": samples.tokens.cpu(), "lengths": samples.lengths.cpu(),
                "extras": {k: v.cpu() for k, v in samples.extras.items()}, "stats": samples.stats}

    def on_predict_epoch_end(self) -> None:
        self._swap_out()

    # ------------------------------------------------------------------------------------------------------------
    # Samples at validation
    # ------------------------------------------------------------------------------------------------------------
    def _datamodule(self) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise RuntimeError("this needs the run's DataModule (pass datamodule= to the Trainer call)")
        return datamodule

    def sample_metrics(self) -> list[SampleMetric]:
        """The run's metric plugins, built on first use."""
        if self._sample_metrics is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            metrics = []
            for section in self.run_config.get("metrics", []):
                impl = REGISTRY.implementation("metric", section["name"])
                metrics.append(impl(plugin_options("metric", section), datamodule))
            self._sample_metrics = metrics
            # Not registered as submodules: their states must not enter checkpoints.
        return self._sample_metrics

    def draw(self, num: int, *, seed: int) -> Samples:
        """``num`` samples in batches of ``sample.batch_size`` from a generator seeded with ``seed``."""
        self.step_budget("sample")  # a budget the objective cannot honour is an error, not silently ignored
        settings = dict(self.run_config["sample"])
        generator = torch.Generator(device=self.device).manual_seed(seed)
        parts = []
        batch = max(1, int(settings["batch_size"]))
        for start in range(0, num, batch):
            parts.append(self.sample(min(batch, num - start), generator=generator, settings=settings))
        if not parts:
            empty = torch.zeros((0, self.space.num_variables if self.space else 0), dtype=torch.long)
            return Samples(empty, torch.zeros(0, dtype=torch.long))
        width = max(p.tokens.shape[1] for p in parts)
        tokens = torch.cat([nn.functional.pad(p.tokens, (0, width - p.tokens.shape[1])) for p in parts])
        stats: dict[str, float] = {}
        for key in parts[0].stats:
            stats[key] = sum(p.stats[key] * p.tokens.shape[0] for p in parts) / tokens.shape[0]
        extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
        return Samples(tokens, torch.cat([p.lengths for p in parts]), extras, stats)

    def decode_samples(self, samples: Samples) -> list[Any]:
        """Samples as domain objects, through the DataModule."""
        datamodule = self._datamodule()
        tokens, lengths = samples.tokens.cpu(), samples.lengths.tolist()
        return [datamodule.decode(tokens[i], n) for i, n in enumerate(lengths)]

    def _validation_samples(self) -> dict[str, float]:
        total = int(self.run_config["sample"]["num_val_samples"])
        mine = len(range(self.global_rank, total, self.trainer.world_size))
        samples = self.draw(mine, seed=mix_seed(self.seed, self.global_step, self.global_rank, 17))
        objs = self.decode_samples(samples)
        logs: dict[str, Any] = {f"val/sample_{k}": float(v) for k, v in samples.stats.items()}
        for metric in self.sample_metrics():
            metric.to(self.device)
            metric.update(objs)
            for k, v in metric.compute().items():
                logs[f"val/{k}"] = float(v)
            metric.reset()
        texts = [self._datamodule().to_text(o) for o in objs]
        self.last_samples = gather_objects(texts)
        return logs

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None and self.ema.is_swapped:
            # A checkpoint written during validation must hold the trained weights, never the averages.
            prefix_map = dict(self.named_parameters())
            for name, value in self.ema.trained_weights().items():
                if name in prefix_map and name in checkpoint["state_dict"]:
                    checkpoint["state_dict"][name] = value.clone()
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "space": self.space.to_dict() if self.space is not None else None,
            "run_config": self.run_config,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get(CHECKPOINT_KEY, {})
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load_state_dict(extra["ema"])


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate picklable lists from every rank (in rank order); the list itself when not distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]
