"""The base DataModule for discrete data, its description (:class:`DataSpace`) and a resumable, sharded loader.

A dataset plugin subclasses :class:`DiscreteDataModule` and implements :meth:`~DiscreteDataModule.build`, which
returns the three splits as :class:`TokenSet` tensors plus the :class:`DataSpace`. Everything else (batching,
sharding over ranks without duplicates, exact mid-epoch resume) lives here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from anyorder.errors import ConfigError, DataError

STRUCTURES = ("sequence", "graph", "grid")


@dataclass(frozen=True)
class DataSpace:
    """What a datapoint is: ``num_variables`` discrete variables, variable d taking values in ``range(vocab_sizes[d])``.

    ``structure`` says how the variables are arranged: ``sequence`` (positions 0..D-1; with ``variable_length``
    a datapoint uses a prefix of them and the rest is padding), ``grid`` (``shape`` = (H, W) or (C, H, W), row-major),
    or ``graph`` (``shape`` = (N,): N node variables followed by the N(N-1)/2 upper-triangle edge variables).
    ``token_names`` names the values of a shared vocabulary, for display.
    """

    structure: str
    num_variables: int
    vocab_sizes: tuple[int, ...]
    variable_length: bool = False
    shape: tuple[int, ...] = ()
    token_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if len(self.vocab_sizes) != self.num_variables:
            raise ValueError(f"vocab_sizes has {len(self.vocab_sizes)} entries for {self.num_variables} variables")
        if any(k < 1 for k in self.vocab_sizes):
            raise ValueError("every vocabulary size must be at least 1")

    @classmethod
    def sequence(
        cls, length: int, vocab_size: int, *, variable_length: bool = False, token_names: Sequence[str] | None = None
    ) -> DataSpace:
        """A sequence of ``length`` positions over one shared vocabulary."""
        return cls(
            "sequence", length, (vocab_size,) * length, variable_length, (length,),
            tuple(token_names) if token_names is not None else None,
        )

    @property
    def vocab_size(self) -> int:
        """The largest vocabulary (the shared one for sequences)."""
        return max(self.vocab_sizes)

    @property
    def shared_vocab(self) -> bool:
        """True when every variable has the same vocabulary."""
        return len(set(self.vocab_sizes)) == 1

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so it can live in a checkpoint loaded with ``weights_only=True``."""
        d = dataclasses.asdict(self)
        d["vocab_sizes"] = list(self.vocab_sizes)
        d["shape"] = list(self.shape)
        d["token_names"] = list(self.token_names) if self.token_names is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpace:
        """Inverse of :meth:`to_dict`."""
        return cls(
            structure=d["structure"], num_variables=int(d["num_variables"]),
            vocab_sizes=tuple(int(k) for k in d["vocab_sizes"]), variable_length=bool(d["variable_length"]),
            shape=tuple(int(s) for s in d["shape"]),
            token_names=tuple(d["token_names"]) if d.get("token_names") is not None else None,
        )


@dataclass
class TokenSet:
    """A split: ``tokens`` [N, D] (int64, padding = 0 past ``lengths``) and ``lengths`` [N].

    ``prompt_lengths`` [N], for conditional data (a question and its answer): the first ``prompt_lengths[i]`` tokens
    of datapoint i are given, the rest is what a model generates. None for unconditional data.
    """

    tokens: Tensor
    lengths: Tensor
    prompt_lengths: Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.lengths.shape != (self.tokens.shape[0],):
            raise ValueError(f"tokens must be [N, D] and lengths [N]; got {tuple(self.tokens.shape)}, "
                             f"{tuple(self.lengths.shape)}")
        if self.prompt_lengths is not None and (self.prompt_lengths.shape != self.lengths.shape
                                                or bool((self.prompt_lengths > self.lengths).any())):
            raise ValueError("prompt_lengths must be [N] and at most lengths")

    @classmethod
    def fixed(cls, tokens: Tensor) -> TokenSet:
        """A split whose datapoints all use every variable."""
        return cls(tokens.long(), torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """The examples at ``index`` as a batch dict: ``tokens``, ``lengths`` and ``index`` (dataset positions), and
        ``prompt_lengths`` for conditional data."""
        out = {"tokens": self.tokens[index], "lengths": self.lengths[index], "index": index}
        if self.prompt_lengths is not None:
            out["prompt_lengths"] = self.prompt_lengths[index]
        return out


@dataclass
class Splits:
    """What :meth:`DiscreteDataModule.build` returns."""

    train: TokenSet
    val: TokenSet
    test: TokenSet
    space: DataSpace
    info: dict[str, Any] = field(default_factory=dict)


class ShardedLoader:
    """Batches of a :class:`TokenSet` for one rank, resumable mid-epoch, with no duplicated or dropped examples.

    Training (``shuffle=True``): each epoch uses one permutation seeded by ``(seed, epoch)``; global batch b is
    ``perm[b*G:(b+1)*G]`` with G = ``batch_size * world_size``, and rank r takes its r-th slice. Every rank therefore
    yields the same number of batches, and the examples of a step do not depend on how many devices share them.
    The incomplete last global batch is dropped.

    Evaluation (``shuffle=False``): rank r takes examples r, r+W, r+2W, ... in order; the last batch may be short
    and ranks may differ by one example, so nothing is padded or counted twice.

    ``state_dict``/``load_state_dict`` make Lightning treat the loader as resumable: a resume continues at the
    next unseen batch of the same permutation.
    """

    def __init__(
        self, data: TokenSet, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"per-device batch size must be at least 1 (got {batch_size})")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.yielded = 0, 0
        self._started = False
        self._pending: dict[str, int] | None = None
        if shuffle and len(data) < batch_size * world_size:
            raise ConfigError(
                f"the training split has {len(data)} examples, fewer than one global batch "
                f"({batch_size} x {world_size} devices); lower train.global_batch_size"
            )

    def __len__(self) -> int:
        if self.shuffle:
            return len(self.data) // (self.batch_size * self.world_size)
        mine = len(range(self.rank, len(self.data), self.world_size))
        return math.ceil(mine / self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """Position: the epoch and how many of its batches were yielded."""
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` at the next iteration."""
        self._pending = dict(state)

    def _order(self) -> Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            return torch.randperm(n, generator=g)
        return torch.arange(n)[self.rank::self.world_size]  # empty when rank >= n

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self._pending is not None:
            self.epoch, start = int(self._pending["epoch"]), int(self._pending["yielded"])
            self._pending = None
        else:
            if self._started:
                self.epoch += 1
            start = 0
        self._started = True
        order = self._order()
        self.yielded = start
        for b in range(start, len(self)):
            if self.shuffle:
                g = self.batch_size * self.world_size
                idx = order[b * g + self.rank * self.batch_size: b * g + (self.rank + 1) * self.batch_size]
            else:
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            self.yielded = b + 1
            yield self.data.batch(idx)


class DiscreteDataModule(L.LightningDataModule):
    """Base DataModule of discrete data. Subclasses implement :meth:`build`, and :meth:`decode` for display.

    The options instance is ``self.config``. ``prepare_data`` downloads (rank 0 only); :meth:`build` reads the
    files and returns the splits. Batches are dicts with ``tokens`` [B, D], ``lengths`` [B] and ``index`` [B].
    """

    Config: ClassVar[type]

    def __init__(self, config: Any, *, seed: int = 0, global_batch_size: int = 64, eval_batch_size: int = 0) -> None:
        super().__init__()
        self.config = config
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.eval_batch_size = eval_batch_size or global_batch_size
        self.test_split = "test"
        """The split ``test_dataloader`` serves (``anyorder evaluate --split`` changes it)."""
        self._splits: Splits | None = None

    # -- to implement ---------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        """Read (or generate) the data and return the splits and the space. Called once per process."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def download(self) -> None:
        """Fetch files into the cache (called on rank 0 only, before :meth:`build`). Default: nothing."""

    def decode(self, tokens: Tensor, length: int) -> Any:
        """One datapoint as a domain object; the default joins token names (or ids) into a string."""
        names = self.space.token_names
        ids = tokens[:length].tolist()
        if names is None:
            return " ".join(str(i) for i in ids)
        return "".join(names[i] for i in ids) if all(len(n) == 1 for n in names) else " ".join(names[i] for i in ids)

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Domain objects as a :class:`TokenSet`; datasets that can parse their objects override this."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode domain objects")

    def to_text(self, obj: Any) -> str:
        """How a decoded datapoint is shown in a table or a text file."""
        return str(obj)

    def parse_text(self, text: str) -> Any:
        """A datapoint from its text form (what :meth:`to_text` wrote), for scoring sample files; default: the text."""
        return text

    def default_metrics(self) -> list[dict[str, Any]]:
        """The metric sections (``{name: ..., **options}``) this dataset is judged by when none are configured."""
        return []

    def render(self, objs: Sequence[Any], path: Path) -> bool:
        """Draw datapoints into an image file at ``path`` (e.g. a molecule grid); False when there is no picture."""
        return False

    def render_orders(self, tokens: Tensor, orders: Tensor, path: Path) -> list[Path]:
        """Draw samples and the order in which they were generated into picture files; the files written.

        ``tokens`` [B, D] are the samples and ``orders`` [B, D] their generation orders: ``orders[b, d]`` is the step
        (0..D-1) at which variable d of sample b was generated (an any-order objective's ``extras["order"]``).
        ``path`` is a file-name stem: each picture goes to ``<path>-<what>.png`` beside it (e.g. ``final-orders.png``),
        written atomically. Default: no picture (``[]``), for datasets whose variables have no natural layout.
        """
        return []

    def protocol(self) -> dict[str, Any]:
        """What a reported number depends on in this dataset (split convention, sizes, skipped items, ...)."""
        return {}

    def reference(self) -> dict[str, float]:
        """Exactly known quantities of the data distribution (e.g. an entropy rate), recorded beside evaluations."""
        return {}

    # -- provided ---------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.download()

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            splits = self.build()
            for split in ("train", "val", "test"):
                ts: TokenSet = getattr(splits, split)
                if ts.tokens.shape[1] != splits.space.num_variables:
                    raise DataError(f"{type(self).__name__}: {split} split has {ts.tokens.shape[1]} variables, "
                                    f"the space declares {splits.space.num_variables}")
            self._splits = splits

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self.setup()
        assert self._splits is not None
        return self._splits

    @property
    def space(self) -> DataSpace:
        """The space of the data (builds the splits on first use)."""
        return self.splits.space

    def world(self) -> tuple[int, int, int]:
        """(rank, world size, gradient-accumulation steps) of the run this DataModule serves; (0, 1, 1) outside one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1, 1
        return trainer.global_rank, trainer.world_size, int(trainer.accumulate_grad_batches)

    def per_device_batch_size(self, global_batch_size: int, *, train: bool) -> int:
        """Split a global batch over ranks (and accumulation steps, in training); it must divide exactly."""
        _, world, accum = self.world()
        parts = world * (accum if train else 1)
        if global_batch_size % parts:
            what = f"{world} devices x {accum} accumulation steps" if train else f"{world} devices"
            raise ConfigError(
                f"the global batch size {global_batch_size} does not split evenly over {what}; "
                f"choose a multiple of {parts}"
            )
        return global_batch_size // parts

    def loader(self, split: str, global_batch_size: int, *, train: bool) -> ShardedLoader:
        """A :class:`ShardedLoader` over ``split`` for this rank."""
        rank, world, _ = self.world()
        return ShardedLoader(
            getattr(self.splits, split), self.per_device_batch_size(global_batch_size, train=train),
            shuffle=train, seed=self.seed, rank=rank, world_size=world,
        )

    def train_dataloader(self) -> ShardedLoader:
        return self.loader("train", self.global_batch_size, train=True)

    def val_dataloader(self) -> ShardedLoader:
        return self.loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> ShardedLoader:
        return self.loader(self.test_split, self.eval_batch_size, train=False)
