"""The objective contract: what a training-objective plugin implements, and the typed values it is handed.

An objective is a plain ``torch.nn.Module`` with narrow hooks. It never sees Lightning: the core's
:class:`anyorder.module.RunModule` owns the training loop, the optimizer and schedule, clipping, seeding, EMA
weights, logging, evaluation statistics and checkpoints, and calls the hooks with a context that says where the
run stands:

* ``__init__(config, build)``: create the networks for ``build.space`` (``build.network(io)``);
* :meth:`Objective.loss` ``(batch, ctx)``: the training loss of a batch and its named terms;
* :meth:`Objective.log_likelihood` ``(batch, ctx)``: log p(x) per datapoint, or a bound named by ``likelihood``,
  with optional per-datapoint evaluation terms and outputs for set-level statistics;
* :meth:`Objective.sample` ``(num, ctx)``: draw datapoints.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torchmetrics
from torch import Tensor, nn

from anyorder.data import DataSpace
from anyorder.errors import ConfigError, RunError

if TYPE_CHECKING:
    from anyorder.config import EvalConfig, SampleConfig, TrainConfig
    from anyorder.network import Network, NetworkIO


class Likelihood(enum.Enum):
    """What :meth:`Objective.log_likelihood` returns, and so what a report may call the number."""

    EXACT = "exact"
    """log p(x) itself: reports call its negative the NLL."""
    LOWER_BOUND = "lower bound"
    """A lower bound on log p(x) (an ELBO, or the probability of one of several routes to x), or an unbiased
    estimate of one: reports call its negative a bound."""
    IMPORTANCE_WEIGHTED = "importance-weighted bound"
    """log of an average of K importance weights: a lower bound on log p(x) that tightens as K grows."""

    @property
    def exact(self) -> bool:
        """Whether the value is log p(x) itself."""
        return self is Likelihood.EXACT

    @property
    def label(self) -> str:
        """How a report names the negative of the value: ``NLL`` (exact) or ``bound``."""
        return "NLL" if self.exact else "bound"


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps), so (seed, step, rank) streams never collide."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------------------------
# What an objective is handed
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """What an objective is built from: the data space, the run's typed settings, and factories for the plugins
    its options name (networks, and nested plugins such as a divergence)."""

    space: DataSpace
    objective_name: str
    seed: int
    train: TrainConfig
    sample: SampleConfig
    eval: EvalConfig
    network_section: dict[str, Any]
    """The run's ``network`` section ``{name: ..., **options}``."""
    make_plugin: Callable[..., Any]
    """``make_plugin(kind, section, *args)``: the implementation of the plugin named in ``section``, built from its
    typed options as ``cls(options, *args)`` (divergences, latent families, ...)."""
    make_network: Callable[[dict[str, Any], NetworkIO], Network]
    """``make_network(section, io)``: the network plugin named in ``section`` built for ``io``."""
    network_class: Callable[[dict[str, Any]], type]
    """``network_class(section)``: the implementation class of the network plugin named in ``section``."""

    def network(self, io: NetworkIO, *, section: dict[str, Any] | None = None, require: type | None = None) -> Network:
        """The network plugin of ``section`` (default: the run's ``network``) built for ``io``. ``require`` is a
        capability base class the objective needs (e.g. a causal network); a network that is not one is a
        ConfigError naming both."""
        section = dict(section) if section else dict(self.network_section)
        cls = self.network_class(section)
        # Checked before building: a capability the network lacks is the first thing to report.
        if require is not None and not issubclass(cls, require):
            raise ConfigError(
                f"objective {self.objective_name!r} needs a network that is a {require.__name__}; network plugin "
                f"{section['name']!r} ({cls.__qualname__}) is not one"
            )
        return self.make_network(section, io)

    def plugin(self, kind: str, section: dict[str, Any], *args: Any) -> Any:
        """The nested plugin of ``kind`` named in ``section`` (an option of this objective), built as
        ``cls(options, *args)``; the plugin kind's base class says which ``args`` its plugins take."""
        return self.make_plugin(kind, dict(section), *args)

    @classmethod
    def standalone(cls, space: DataSpace, *, objective_name: str = "objective", seed: int = 0,
                   network: dict[str, Any] | None = None) -> BuildContext:
        """A context for building an objective outside a run (tests, notebooks): default ``train``, ``sample`` and
        ``eval`` settings, and plugins built through the registry."""
        from anyorder.config import EvalConfig, SampleConfig, TrainConfig
        from anyorder.module import build_network, build_plugin, network_class

        return cls(space=space, objective_name=objective_name, seed=seed, train=TrainConfig(), sample=SampleConfig(),
                   eval=EvalConfig(), network_section=dict(network or {}), make_plugin=build_plugin,
                   make_network=build_network, network_class=network_class)


@dataclass(frozen=True)
class StepContext:
    """Where training stands when :meth:`Objective.loss` is called.

    Every random draw of a step should come from ``generator`` (or the global generators, which the core seeds the
    same way): its stream is a function of (seed, step, micro-batch, rank), which makes a resumed run bitwise equal
    to an uninterrupted one and gives each rank its own stream.
    """

    step: int
    """Optimizer steps completed before this one (0 at the first step)."""
    max_steps: int
    """``train.max_steps``."""
    rank: int
    world_size: int
    seed: int
    """The run's seed."""
    micro_batch: int
    """Index of the micro-batch within the step (gradient accumulation); 0 without accumulation."""
    logs: bool
    """Whether the terms of this step reach the loggers: compute costly diagnostics only then."""
    generator: torch.Generator
    """A generator on the batch's device, seeded for this step, micro-batch and rank."""

    @property
    def progress(self) -> float:
        """``step / max_steps``, in [0, 1): the fraction of training done (for schedules such as a KL weight)."""
        return self.step / max(1, self.max_steps)

    def seed_for(self, *parts: int) -> int:
        """A seed for a stream of this step and rank, told apart from others by ``parts``."""
        return mix_seed(self.seed, self.step, self.micro_batch, self.rank, *parts)

    @classmethod
    def standalone(cls, step: int = 0, max_steps: int = 1, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                   logs: bool = False, device: torch.device | str = "cpu") -> StepContext:
        """A context for calling :meth:`Objective.loss` outside a run (tests, benchmarks, notebooks)."""
        generator = torch.Generator(device=device).manual_seed(mix_seed(seed, step, 0, rank, 0x57E9))
        return cls(step=step, max_steps=max_steps, rank=rank, world_size=world_size, seed=seed, micro_batch=0,
                   logs=logs, generator=generator)


@dataclass(frozen=True)
class EvalContext:
    """Where an evaluation stands when :meth:`Objective.log_likelihood` is called (validation, test, evaluate)."""

    split: str = "test"
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    steps: int = 0
    """``eval.steps``: network calls of the generation whose likelihood is reported (0: one variable per call);
    non-zero only for objectives that declare ``supports_step_budget``."""

    def generator(self, *parts: int, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by (seed, *parts): seed it by the datapoints' global index so that the value does not
        depend on the batch size or the number of ranks."""
        return torch.Generator(device=device).manual_seed(mix_seed(self.seed, *parts))


@dataclass(frozen=True)
class SampleContext:
    """How to draw samples: the generator, the run's typed ``sample`` settings and the step budget."""

    generator: torch.Generator
    settings: SampleConfig
    steps: int
    """``sample.steps``: network calls per batch (0: one variable per call); non-zero only for objectives that
    declare ``supports_step_budget``."""
    device: torch.device

    @property
    def max_len(self) -> int:
        """``sample.max_len`` (0: the data's maximum length)."""
        return int(self.settings.max_len)

    @classmethod
    def standalone(cls, seed: int = 0, *, device: torch.device | str = "cpu", steps: int = 0,
                   **settings: Any) -> SampleContext:
        """A context for calling :meth:`Objective.sample` outside a run; ``settings`` override the ``sample``
        section's defaults (temperature, top_k, ...)."""
        from anyorder.config import SampleConfig

        generator = torch.Generator(device=device).manual_seed(seed)
        return cls(generator=generator, settings=SampleConfig(**settings), steps=steps, device=torch.device(device))


# ---------------------------------------------------------------------------------------------------------------
# What an objective returns
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LossOutput:
    """A training loss and what to log about it.

    ``loss`` is minimised. ``terms`` are scalars logged as ``train/<name>``. ``nats`` / ``num_tokens``, when
    given, are the summed negative log-likelihood (or bound) of the batch and the number of variables it covers;
    the core logs their ratio in bits per token.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    nats: Tensor | None = None
    num_tokens: Tensor | None = None


@dataclass
class LogLikelihood:
    """Per datapoint: ``log_prob`` [B] in nats (see :attr:`Objective.likelihood`) and ``num_tokens`` [B] it covers.

    ``terms`` are further per-datapoint values [B] (a KL, a reconstruction term) that the core sums over the split,
    reduced exactly over ranks, and reports per datapoint and per token beside the likelihood; their names are
    those of :meth:`Objective.evaluation_terms`. ``outputs`` are per-datapoint tensors [B, ...] handed to the
    objective's :meth:`Objective.evaluation_statistics` (e.g. posterior means for a variance over the split).
    """

    log_prob: Tensor
    num_tokens: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Samples:
    """Generated datapoints: ``tokens`` [B, D] and ``lengths`` [B], plus per-sample ``extras`` (e.g. orders)
    and scalar ``stats`` (e.g. a backspace rate)."""

    tokens: Tensor
    lengths: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class EvaluationStatistic(torchmetrics.Metric):
    """A set-level evaluation statistic: one that needs more than a sum over datapoints (the variance over the split
    of a posterior mean, an aggregate posterior over every evaluation datapoint).

    Declare states with ``add_state`` so that torchmetrics reduces them over ranks before :meth:`compute` (sums:
    ``dist_reduce_fx="sum"``; every datapoint's values: list states with ``dist_reduce_fx="cat"``).
    :meth:`update` receives the batch's :attr:`LogLikelihood.outputs`; :meth:`compute` returns named scalars,
    reported as ``<split>/<name>`` and in the evaluation report.
    """

    full_state_update = False

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------------------------


class Objective(nn.Module):
    """Base of every objective plugin: built as ``cls(options, build)`` with a :class:`BuildContext`."""

    Config: ClassVar[type]
    likelihood: Likelihood = Likelihood.EXACT
    """What :meth:`log_likelihood` returns; an instance may set its own from its options."""
    supports_step_budget: ClassVar[bool] = False
    """Whether the objective can generate several variables per network call (``sample.steps``, ``eval.steps``)."""

    def __init__(self, config: Any, build: BuildContext) -> None:
        super().__init__()
        self.config = config
        self.space = build.space

    # -- hooks --------------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        """The training loss of a batch."""
        raise NotImplementedError

    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        """log p(x) per datapoint (or a bound; see :attr:`likelihood`), with the evaluation terms and outputs."""
        raise NotImplementedError

    def sample(self, num: int, ctx: SampleContext) -> Samples:
        """Draw ``num`` datapoints."""
        raise NotImplementedError

    def likelihood_protocol(self) -> dict[str, Any]:
        """How :meth:`log_likelihood`, its terms and statistics are computed (estimator, passes, ...), for reports."""
        return {}

    def evaluation_terms(self) -> tuple[str, ...]:
        """Names of the per-datapoint terms :meth:`log_likelihood` returns in ``terms`` (every batch, all of them)."""
        return ()

    def evaluation_statistics(self) -> dict[str, EvaluationStatistic]:
        """Fresh set-level statistics, fed the ``outputs`` of every evaluation batch; keyed by a name."""
        return {}

    def init_from_state(self, state: dict[str, Tensor]) -> None:
        """Take the weights of another run (``train.init_from``): ``state`` is that run's objective state dict,
        without the ``objective.`` prefix. By default every tensor must fit by name and shape; an objective whose
        parameters differ from the source's on purpose (an output layer with more actions) overrides this."""
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            detail = " ".join(str(exc).split())[:300]
            raise RunError(f"the source run's weights do not fit this objective ({detail}); train.init_from needs "
                           f"the same networks") from exc
        if missing or unexpected:
            raise RunError(f"the source run's weights do not fit this objective (missing: {list(missing)[:5]}, "
                           f"unexpected: {list(unexpected)[:5]}); train.init_from needs the same networks")

    def checkpoint_state(self) -> Any:
        """This rank's state that is not a tensor of the module (e.g. a replay buffer), as plain Python values
        (lists, dicts, numbers, strings): the core gathers every rank's and writes them with the weights."""
        return None

    def load_checkpoint_state(self, states: list[Any], rank: int, world_size: int) -> None:
        """Restore from the states every rank returned from :meth:`checkpoint_state` when the checkpoint was written
        (``len(states)`` may differ from ``world_size`` when a run resumes on another number of devices)."""

    # -- helpers ------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the objective's parameters (or buffers); CPU when it has neither."""
        for parameter in self.parameters():
            return parameter.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")
