"""Options of the ``markov`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

MAX_TABLE_ENTRIES = 1 << 24
"""Largest transition table (vocab_size ** (order + 1) float64 entries, 128 MiB) the dataset agrees to build."""


@dataclass
class MarkovConfig(PluginConfig):
    """Synthetic sequences from a seeded random order-k Markov chain, with exactly known entropies.

    The chain's transition rows are drawn from a symmetric Dirichlet with numpy's generator seeded by
    ``chain_seed``; each sequence starts from the chain's exact stationary distribution over k-grams.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.markov.data:MarkovDataModule"

    order: int = opt(2, "k: each token depends on the k tokens before it (k >= 1)")
    vocab_size: int = opt(8, "V: number of distinct tokens (>= 2)")
    concentration: float = opt(0.5, "Dirichlet concentration of each transition row; small = peaked, low entropy")
    length: int = opt(64, "tokens per sequence (fixed length, at least `order`)")
    num_train: int = opt(20000, "sequences in the training split")
    num_val: int = opt(1000, "sequences in the validation split")
    num_test: int = opt(2000, "sequences in the test split")
    chain_seed: int = opt(0, "seed of the random chain (the transition probabilities)")
    data_seed: int = opt(1, "seed of the sampled sequences; each split draws from its own stream of this seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order < 1:
            raise ConfigError(f"markov: order must be at least 1 (got {self.order})")
        if self.vocab_size < 2:
            raise ConfigError(f"markov: vocab_size must be at least 2 (got {self.vocab_size})")
        if not self.concentration > 0:
            raise ConfigError(f"markov: concentration must be positive (got {self.concentration})")
        if self.length < self.order:
            raise ConfigError(f"markov: length ({self.length}) must be at least order ({self.order})")
        if self.num_train < 1:
            raise ConfigError(f"markov: num_train must be at least 1 (got {self.num_train})")
        for key in ("num_val", "num_test"):
            if getattr(self, key) < 0:
                raise ConfigError(f"markov: {key} must not be negative (got {getattr(self, key)})")
        for key in ("chain_seed", "data_seed"):
            if getattr(self, key) < 0:
                raise ConfigError(f"markov: {key} must not be negative (numpy seeds are >= 0; got {getattr(self, key)})")
        entries = self.vocab_size ** (self.order + 1)
        if entries > MAX_TABLE_ENTRIES:
            raise ConfigError(
                f"markov: vocab_size ** (order + 1) = {entries} transition probabilities is more than the "
                f"{MAX_TABLE_ENTRIES} this dataset builds; lower order or vocab_size"
            )
