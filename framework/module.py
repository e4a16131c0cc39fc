"""The run's LightningModule: the one training loop, around an objective plugin.

:class:`RunModule` owns everything that is the same for every objective: building the objective (inside Lightning's
``configure_model``, so sharded strategies can wrap its networks), the optimizer and schedule, gradient clipping and
the non-finite guard, EMA weights, per-step seeding (which makes resumes exact), logging of every term and of bits
per token, the likelihood, evaluation terms and set-level statistics reduced over ranks, samples and sample metrics
at validation, and checkpoints. It hands the objective typed contexts (:mod:`anyorder.objective`) and delivers
what it produces to a :class:`RunOutputs`.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from anyorder.config import RunConfig, plugin_options
from anyorder.data import DataSpace
from anyorder.ema import EMA
from anyorder.errors import ConfigError, NonFiniteLossError, PluginError
from anyorder.metrics import LikelihoodStats, SampleMetric, TermStats
from anyorder.network import Network, NetworkIO
from anyorder.objective import (
    BuildContext,
    EvalContext,
    EvaluationStatistic,
    Likelihood,
    Objective,
    SampleContext,
    Samples,
    StepContext,
    mix_seed,
)
from anyorder.registry import REGISTRY
from anyorder.sample_eval import merge_results

LN2 = math.log(2.0)
CHECKPOINT_KEY = "anyorder"
CHECKPOINT_FORMAT = 2
"""2: the objective's weights live under ``objective.`` and its own state under ``objective_state``."""

_SCHEDULES = {
    "constant": lambda progress: 1.0,
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
}
_SHARDED = (FSDPStrategy, DeepSpeedStrategy)


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate picklable lists from every rank (in rank order); the list itself when not distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


@dataclass
class EvaluationResult:
    """The likelihood of a split with its standard error, the evaluation terms and statistics: what an evaluation
    report is written from."""

    split: str
    likelihood: Likelihood
    nll: float
    """Mean negative log-likelihood (or negative bound) per token, in nats."""
    nll_se: float
    nll_per_sequence: float
    num_sequences: int
    num_tokens: int
    terms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per term: ``per_sequence``, ``per_sequence_se`` and ``per_token`` (nats)."""
    statistics: dict[str, float] = field(default_factory=dict)


class RunOutputs:
    """Where a :class:`RunModule` delivers what it produces: evaluation results, and validation samples (written to
    ``samples/val-step<N>.txt`` of the run directory and logged as a table)."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.evaluations: list[EvaluationResult] = []

    @property
    def last_evaluation(self) -> EvaluationResult | None:
        """The most recent test evaluation (rank 0 and every other rank hold the same reduced values)."""
        return self.evaluations[-1] if self.evaluations else None

    def evaluation(self, result: EvaluationResult) -> None:
        self.evaluations.append(result)

    def validation_samples(self, texts: list[str], step: int, loggers: list[Any]) -> None:
        from anyorder.atomic import write_text
        from anyorder.loggers import log_text_table

        if self.run_dir is not None:
            write_text(self.run_dir / "samples" / f"val-step{step:08d}.txt", "\n".join(texts) + "\n")
        for logger in loggers:
            log_text_table(logger, "val/samples", texts, step)


def build_plugin(kind: str, section: dict[str, Any], *args: Any) -> Any:
    """The plugin of ``kind`` named in the validated ``section``, built from its typed options as
    ``cls(options, *args)``."""
    return REGISTRY.implementation(kind, section["name"])(plugin_options(kind, section), *args)


def network_class(section: dict[str, Any]) -> type:
    """The implementation class of the network plugin named in ``section``."""
    return REGISTRY.implementation("network", section["name"])


def build_network(section: dict[str, Any], io: NetworkIO) -> Network:
    """The network plugin named in the validated ``section``, built for ``io``."""
    impl = REGISTRY.implementation("network", section["name"])
    return impl(plugin_options("network", section), io)


class _EvalState(nn.Module):
    """The reductions of one evaluation pass: likelihood sums, term sums and the objective's statistics."""

    likelihood: LikelihoodStats
    terms: TermStats
    statistics: nn.ModuleDict

    def __init__(self, terms: tuple[str, ...], statistics: dict[str, EvaluationStatistic]) -> None:
        super().__init__()
        self.likelihood = LikelihoodStats()
        self.terms = TermStats(terms)
        self.statistics = nn.ModuleDict(statistics)  # a ModuleDict so that `.to(device)` moves their states
        self.named_statistics = dict(statistics)


class RunModule(L.LightningModule):
    """The LightningModule of every run: ``RunModule(cfg, space=None, outputs=None)``.

    ``cfg`` is the validated run config; ``space`` is given when restoring from a checkpoint and otherwise taken
    from the DataModule at ``setup``. The objective plugin is :attr:`objective`, built at ``configure_model``.
    """

    objective: Objective

    def __init__(self, cfg: DictConfig, space: DataSpace | None = None, outputs: RunOutputs | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        run = OmegaConf.to_object(cfg)
        assert isinstance(run, RunConfig)
        self.run = run
        self.space: DataSpace | None = space
        self.outputs = outputs if outputs is not None else RunOutputs()
        self.ema: EMA | None = None
        self._built = False
        self._evaluation: dict[str, _EvalState] = {}  # a dict, not an attribute: its metrics are no submodules
        self._sample_metrics: list[SampleMetric] | None = None
        self._last_loss: tuple[Tensor, dict[str, Tensor]] = (torch.zeros(()), {})
        self.init_state: dict[str, Any] | None = None
        """A checkpoint whose weights the run starts from (``train.init_from``), applied when the model is built."""

    # -- construction -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.space is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError("the run needs a DataModule (or a space from a checkpoint) to build")
            self.space = datamodule.space

    def build_objective(self) -> Objective:
        """Build the objective plugin for the data space (once)."""
        if self._built:
            return self.objective
        if self.space is None:
            raise RuntimeError("the objective is built once the data space is known")
        container = OmegaConf.to_container(self.cfg.objective, resolve=True)
        assert isinstance(container, dict)
        section = {str(k): v for k, v in container.items()}
        impl = REGISTRY.implementation("objective", section["name"])
        network_container = OmegaConf.to_container(self.cfg.network, resolve=True)
        assert isinstance(network_container, dict)
        network = {str(k): v for k, v in network_container.items()}
        build = BuildContext(
            space=self.space, objective_name=str(section["name"]), seed=int(self.run.seed), train=self.run.train,
            sample=self.run.sample, eval=self.run.eval, network_section=network, make_plugin=build_plugin,
            make_network=build_network, network_class=network_class,
        )
        objective = impl(plugin_options("objective", section), build)
        if not isinstance(objective, Objective):
            raise PluginError(f"objective plugin {section['name']!r}: {impl.__qualname__} is not an Objective")
        self.objective = objective
        self._built = True
        for budget in ("sample", "eval"):
            self.step_budget(budget)  # a budget the objective cannot honour is an error before training starts
        return objective

    def configure_model(self) -> None:
        if self._built:
            return
        self.build_objective()
        decay = float(self.run.train.ema_decay)
        if decay > 0:
            if self._trainer_strategy_is_sharded():
                # The EMA keeps full copies keyed by parameter name; sharded strategies flatten and split parameters.
                raise ConfigError("train.ema_decay > 0 is not supported with a sharded strategy (FSDP, DeepSpeed) "
                                  "yet; set train.ema_decay=0")
            self.ema = EMA(self, decay)
        if self.init_state is not None:
            self._apply_init_state(self.init_state)
            self.init_state = None
        if self.run.train.compile:
            # In-place compile keeps parameter names, so checkpoints and EMA states load into uncompiled models.
            for module in self.objective.modules():
                if isinstance(module, Network):
                    module.compile()

    def _apply_init_state(self, checkpoint: dict[str, Any]) -> None:
        """Start from another run's checkpoint (``train.init_from``): its weights, and its EMA where both runs keep
        one (else the EMA starts at the loaded weights); nothing of its optimizer, schedule, step or objective
        state."""
        upgrade_checkpoint(checkpoint)
        state = {k.removeprefix("objective."): v for k, v in checkpoint["state_dict"].items()}
        self.objective.init_from_state(state)
        if self.ema is not None:
            source_ema = (checkpoint.get(CHECKPOINT_KEY) or {}).get("ema")
            self.ema = EMA(self, float(self.run.train.ema_decay))
            if isinstance(source_ema, dict) and set(source_ema.get("shadow", {})) >= set(self.ema.shadow):
                for name, value in self.ema.shadow.items():
                    value.copy_(source_ema["shadow"][name])

    def _trainer_strategy_is_sharded(self) -> bool:
        try:
            strategy = self.trainer.strategy
        except RuntimeError:  # not attached to a Trainer (restoring a run for evaluation)
            return False
        return isinstance(strategy, _SHARDED)

    def step_budget(self, section: str) -> int:
        """The requested network calls (``sample.steps`` or ``eval.steps``; 0 = one variable per call); a budget the
        objective cannot honour is a :class:`~anyorder.errors.ConfigError`."""
        steps = int(getattr(self.run, section).steps)
        if steps < 0:
            raise ConfigError(f"{section}.steps must be 0 (one variable per network call) or positive (got {steps})")
        if steps and not self.objective.supports_step_budget:
            raise ConfigError(f"{section}.steps={steps}: objective {self.cfg.objective.name!r} generates one variable "
                              f"per network call and has no step budget; leave {section}.steps at 0")
        return steps

    # -- training -----------------------------------------------------------------------------------------------
    def _logs_this_step(self) -> bool:
        """Whether this step's values reach the loggers (every ``train.log_every_n_steps`` and at the end). Values
        logged on other steps would be overwritten unseen, and each ``self.log`` costs ~0.3 ms of CPU."""
        step = self.global_step + 1
        every = max(1, int(self.run.train.log_every_n_steps))
        return step % every == 0 or step >= int(self.run.train.max_steps) or bool(self.trainer.should_stop)

    def on_fit_start(self) -> None:
        self._check_monitor()

    def _check_monitor(self) -> None:
        """Refuse a ``train.monitor`` that validation will not log (a typo would fail hours later, at the first
        validation). Sample statistics and metric results are named only when computed, so with those a name is
        refused only when it is close to a known one."""
        name = str(self.run.train.monitor).removeprefix("val/")
        terms = list(self.objective.evaluation_terms())
        known = ["nll", "nll_se", "bits_per_token", "num_sequences", "num_tokens", *terms,
                 *(f"{t}_per_token" for t in terms), *self.objective.evaluation_statistics()]
        if name in known:
            return
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        open_ended = bool(self.objective.evaluation_statistics()) or int(self.run.sample.num_val_samples) > 0
        if close or not open_ended:
            hint = f"did you mean val/{close[0]}? " if close else ""
            raise ConfigError(f"train.monitor {self.run.train.monitor!r} is not a value that validation logs; {hint}"
                              f"known: {', '.join('val/' + k for k in known)}")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Every random draw of a step (dropout, objective draws) comes from a stream keyed by (seed, step, micro-batch,
        # rank). The RNG state is thus a function of the position in training, which makes a resume bit-exact and
        # gives every rank its own stream, without saving generator states.
        seed = mix_seed(int(self.run.seed), self.global_step, batch_idx, self.global_rank)
        # Only the generators this rank draws from: torch.manual_seed also queues a lazy seeding of every backend
        # that is not initialised (CUDA on a CPU run, ...), capturing a stack trace each time (~0.2 ms a step).
        torch.random.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)
        elif self.device.type != "cpu":
            torch.manual_seed(seed)

    def step_context(self, batch_idx: int = 0) -> StepContext:
        """The context of the current training step."""
        accumulate = max(1, int(self.trainer.accumulate_grad_batches))
        micro = batch_idx % accumulate
        seed = mix_seed(int(self.run.seed), self.global_step, micro, self.global_rank, 0x57E9)
        return StepContext(
            step=int(self.global_step), max_steps=int(self.run.train.max_steps), rank=int(self.global_rank),
            world_size=int(self.trainer.world_size), seed=int(self.run.seed), micro_batch=micro,
            logs=self._logs_this_step(), generator=torch.Generator(device=self.device).manual_seed(seed),
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        ctx = self.step_context(batch_idx)
        out = self.objective.loss(batch, ctx)
        loss = out.loss
        # Finiteness is checked in configure_gradient_clipping, after backward and before the optimizer step: a NaN
        # loss makes the gradient norm NaN, so one host sync per step covers both (and no weight changes).
        self._last_loss = (loss.detach(), {k: v.detach() for k, v in out.terms.items()})
        if ctx.logs:
            logs = {"train/loss": loss.detach()}
            logs.update({f"train/{k}": torch.as_tensor(v).detach().float() for k, v in out.terms.items()})
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
        clip = float(self.run.train.grad_clip)
        loss, terms = self._last_loss
        params = [p for p in self.parameters() if p.grad is not None]
        if self._trainer_strategy_is_sharded() or not params:
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
        optim_cfg, sched_cfg = self.run.optim, self.run.scheduler
        decay, no_decay = self._param_groups()
        cls = getattr(torch.optim, optim_cfg.name, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ConfigError(f"optim.name {optim_cfg.name!r} is not an optimizer class in torch.optim")
        kwargs: dict[str, Any] = {"lr": optim_cfg.lr, **optim_cfg.extra}
        accepted = inspect.signature(cls).parameters
        # betas and eps are the Adam family's; passed to any optimizer that takes them.
        kwargs.update({k: v for k, v in (("betas", tuple(optim_cfg.betas)), ("eps", optim_cfg.eps)) if k in accepted})
        groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:
            optimizer = cls([g for g in groups if g["params"]], **kwargs)
        except TypeError as exc:
            raise ConfigError(f"optim: torch.optim.{cls.__name__} rejected the options {kwargs}: {exc}") from exc
        total, warmup = int(self.run.train.max_steps), int(sched_cfg.warmup_steps)
        floor, shape, name = float(sched_cfg.min_lr_ratio), _SCHEDULES[sched_cfg.name], sched_cfg.name

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            value = shape(min(1.0, (step - warmup) / max(1, total - warmup)))
            return value if name == "constant" else floor + (1.0 - floor) * value

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        # Weight decay on matrices only: not on biases, norms or embeddings (the common transformer recipe).
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
        return decay, no_decay

    # -- EMA swapping for evaluation and sampling ---------------------------------------------------------------
    def _swap_in(self, section: str) -> None:
        if self.ema is not None and bool(getattr(self.run, section).use_ema):
            self.ema.swap_in(self)

    def _swap_out(self) -> None:
        if self.ema is not None:
            self.ema.swap_out(self)

    # -- evaluation: likelihood, terms and statistics reduced over ranks ----------------------------------------
    def eval_context(self, split: str) -> EvalContext:
        """The context of an evaluation pass over ``split``."""
        return EvalContext(split=split, rank=int(self.global_rank), world_size=int(self.trainer.world_size),
                           seed=int(self.run.seed), steps=self.step_budget("eval"))

    def _start_evaluation(self) -> None:
        state = _EvalState(self.objective.evaluation_terms(), self.objective.evaluation_statistics())
        self._evaluation["current"] = state.to(self.device)

    def _evaluation_update(self, batch: dict[str, Tensor], split: str) -> None:
        state = self._evaluation["current"]
        ll = self.objective.log_likelihood(batch, self.eval_context(split))
        state.likelihood.update(-ll.log_prob.detach(), ll.num_tokens.detach())
        state.terms.update({k: v.detach() for k, v in ll.terms.items()})
        for statistic in state.named_statistics.values():
            statistic.update({k: v.detach() for k, v in ll.outputs.items()})

    def _finish_evaluation(self, split: str) -> EvaluationResult:
        state = self._evaluation.pop("current")
        stats = {k: float(v) for k, v in state.likelihood.compute().items()}
        terms = state.terms.compute(stats["num_tokens"])
        statistics: dict[str, float] = {}
        for name, statistic in state.named_statistics.items():
            for key, value in statistic.compute().items():
                if key in statistics:
                    raise PluginError(f"evaluation statistic {name!r} reports {key!r}, which another statistic of "
                                      f"this objective also reports; give them distinct names")
                statistics[key] = float(value)
        return EvaluationResult(
            split=split, likelihood=self.objective.likelihood, nll=stats["nll"], nll_se=stats["nll_se"],
            nll_per_sequence=stats["nll_per_sequence"], num_sequences=int(stats["num_sequences"]),
            num_tokens=int(stats["num_tokens"]), terms=terms, statistics=statistics,
        )

    def on_validation_epoch_start(self) -> None:
        self._swap_in("eval")
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluation_update(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self._evaluation_update(batch, str(getattr(datamodule, "test_split", "test")))

    def on_validation_epoch_end(self) -> None:
        try:
            result = self._finish_evaluation("val")
            logs: dict[str, float] = {
                "val/nll": result.nll, "val/nll_se": result.nll_se, "val/bits_per_token": result.nll / LN2,
                "val/num_sequences": float(result.num_sequences), "val/num_tokens": float(result.num_tokens),
            }
            for name, values in result.terms.items():
                logs[f"val/{name}"] = values["per_sequence"]
                logs[f"val/{name}_per_token"] = values["per_token"]
            logs.update({f"val/{k}": v for k, v in result.statistics.items()})
            if int(self.run.sample.num_val_samples) > 0 and not self.trainer.sanity_checking:
                for key, value in self._validation_samples().items():
                    if key in logs:
                        raise PluginError(f"the sample metric value {key!r} clashes with an evaluation value of the "
                                          f"same name; rename one of them")
                    logs[key] = value
            # The values are already reduced over ranks: logged unsynced (no second reduction), for the callbacks
            # (the `best` monitor) here, and for the loggers below at the step they describe. Lightning would log
            # epoch-end values at its batch counter, one step before the checkpoint and samples of this validation.
            tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in logs.items()}
            self.log_dict(tensors, on_step=False, on_epoch=True, sync_dist=False, logger=False)
            self.log("val_nll", tensors["val/nll"], prog_bar=True, logger=False)
            if not self.trainer.sanity_checking:
                for logger in self.trainer.loggers:
                    logger.log_metrics(logs, step=self.global_step)
        finally:
            self._swap_out()

    def on_test_epoch_end(self) -> None:
        try:
            datamodule = getattr(self.trainer, "datamodule", None)
            self.outputs.evaluation(self._finish_evaluation(str(getattr(datamodule, "test_split", "test"))))
        finally:
            self._swap_out()

    # -- sampling -----------------------------------------------------------------------------------------------
    def on_predict_epoch_start(self) -> None:
        self._swap_in("sample")

    def predict_step(self, batch: dict[str, int], batch_idx: int) -> dict[str, Any]:
        """One request of ``anyorder sample``: ``batch["size"]`` samples seeded by the request's global index, so the
        output does not depend on how many devices share the work."""
        samples = self.draw(int(batch["size"]), seed=mix_seed(int(self.run.seed), 0x5A, int(batch["index"])))
        return {"index": int(batch["index"]), "tokens": samples.tokens.cpu(), "lengths": samples.lengths.cpu(),
                "extras": {k: v.cpu() for k, v in samples.extras.items()}, "stats": samples.stats}

    def on_predict_epoch_end(self) -> None:
        self._swap_out()

    def draw(self, num: int, *, seed: int) -> Samples:
        """``num`` samples in batches of ``sample.batch_size`` from a generator seeded with ``seed``."""
        settings = self.run.sample
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ctx = SampleContext(generator=generator, settings=settings, steps=self.step_budget("sample"),
                            device=self.device)
        parts = []
        batch = int(settings.batch_size)
        for start in range(0, num, batch):
            parts.append(self.objective.sample(min(batch, num - start), ctx))
        if not parts:
            empty = torch.zeros((0, self.space.num_variables if self.space else 0), dtype=torch.long)
            return Samples(empty, torch.zeros(0, dtype=torch.long))
        width = max(p.tokens.shape[1] for p in parts)
        tokens = torch.cat([nn.functional.pad(p.tokens, (0, width - p.tokens.shape[1])) for p in parts])
        stats = {key: sum(p.stats[key] * p.tokens.shape[0] for p in parts) / tokens.shape[0] for key in parts[0].stats}
        extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
        return Samples(tokens, torch.cat([p.lengths for p in parts]), extras, stats)

    def sample_metrics(self) -> list[SampleMetric]:
        """The run's metric plugins, built on first use (not submodules: their states must not enter checkpoints)."""
        if self._sample_metrics is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            self._sample_metrics = [
                REGISTRY.implementation("metric", section["name"])(plugin_options("metric", section), datamodule)
                for section in self.cfg.metrics
            ]
        return self._sample_metrics

    def _validation_samples(self) -> dict[str, float]:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise RuntimeError("validation samples need the run's DataModule (pass datamodule= to the Trainer call)")
        total = int(self.run.sample.num_val_samples)
        mine = len(range(self.global_rank, total, self.trainer.world_size))
        samples = self.draw(mine, seed=mix_seed(int(self.run.seed), self.global_step, self.global_rank, 17))
        tokens, lengths = samples.tokens.cpu(), samples.lengths.tolist()
        objs = [datamodule.decode(tokens[i], n) for i, n in enumerate(lengths)]
        values: dict[str, float] = {}
        producer: dict[str, str] = {}
        for section, metric in zip(self.cfg.metrics, self.sample_metrics(), strict=True):
            metric.to(self.device)
            metric.update(objs)
            merge_results(values, producer, {k: float(v) for k, v in metric.compute().items()}, section["name"])
            metric.reset()
        logs = {f"val/sample_{k}": float(v) for k, v in samples.stats.items()}
        logs.update({f"val/{k}": v for k, v in values.items()})
        texts = gather_objects([datamodule.to_text(o) for o in objs])
        if texts and self.trainer.is_global_zero:
            self.outputs.validation_samples(texts, self.global_step, list(self.trainer.loggers))
        return logs

    # -- checkpoints --------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The loss and gradient checks run before the update; an update can still overflow (a huge learning rate),
        # so the state is checked here, before anything is written.
        bad = [k for k, v in checkpoint["state_dict"].items()
               if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if self.ema is not None:
            bad += [f"ema.{k}" for k, v in self.ema.shadow.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise NonFiniteLossError(
                f"training stopped at step {self.global_step}: the update made {len(bad)} weight tensors non-finite "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). No checkpoint was written for this step, "
                f"so checkpoints/last.ckpt still holds the last good state. Try a lower optim.lr or train.grad_clip > 0."
            )
        if self.ema is not None and self.ema.is_swapped:
            # A checkpoint written during validation must hold the trained weights, never the averages.
            for name, value in self.ema.trained_weights().items():
                if name in checkpoint["state_dict"]:
                    checkpoint["state_dict"][name] = value.clone()
        # Every rank's own state, gathered (only rank 0 writes the file), as plain values: loading stays weights-only.
        states = gather_objects([self.objective.checkpoint_state()])
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "space": self.space.to_dict() if self.space is not None else None,
            "run_config": OmegaConf.to_container(self.cfg, resolve=True),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "objective_state": states if any(s is not None for s in states) else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get(CHECKPOINT_KEY, {})
        upgrade_checkpoint(checkpoint)
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load_state_dict(extra["ema"])
        states = extra.get("objective_state")
        if states:
            rank, world = self._rank_and_world()
            self.objective.load_checkpoint_state(list(states), rank, world)

    def _rank_and_world(self) -> tuple[int, int]:
        try:
            return int(self.trainer.global_rank), int(self.trainer.world_size)
        except RuntimeError:  # not attached to a Trainer
            return 0, 1


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Bring a checkpoint of an older format to the current one, in place (format 1, anyorder 0.1: the objective was
    the LightningModule, so its weights had no ``objective.`` prefix)."""
    extra = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(extra, dict) or int(extra.get("format", 1)) >= CHECKPOINT_FORMAT:
        return

    def prefixed(state: dict[str, Any]) -> dict[str, Any]:
        return {(k if k.startswith("objective.") else f"objective.{k}"): v for k, v in state.items()}

    checkpoint["state_dict"] = prefixed(checkpoint["state_dict"])
    ema = extra.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
        ema["shadow"] = prefixed(ema["shadow"])
    extra["format"] = CHECKPOINT_FORMAT
