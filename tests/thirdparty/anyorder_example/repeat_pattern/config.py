"""Options of the ``repeat_pattern`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class RepeatPatternConfig(PluginConfig):
    """Fixed-length sequences that repeat one seeded random pattern, each token replaced by noise with a probability.

    The pattern (``period`` tokens drawn uniformly from the vocabulary) depends only on ``pattern_seed``. A sequence
    starts at a uniformly random phase of the pattern (or at phase 0 with ``random_phase: false``) and each of its
    tokens is replaced, with probability ``noise``, by a token drawn uniformly from the whole vocabulary.
    """

    implementation: ClassVar[Any] = "anyorder_example.repeat_pattern.data:RepeatPatternDataModule"

    vocab_size: int = opt(8, "V: number of distinct tokens (>= 2)")
    length: int = opt(32, "tokens per sequence (fixed length)")
    period: int = opt(5, "tokens in the repeated pattern (>= 1)")
    noise: float = opt(0.1, "probability that a token is replaced by a uniformly random one, in [0, 1]")
    random_phase: bool = opt(True, "start each sequence at a random position of the pattern")
    num_train: int = opt(2000, "sequences in the training split")
    num_val: int = opt(200, "sequences in the validation split")
    num_test: int = opt(200, "sequences in the test split")
    pattern_seed: int = opt(0, "seed of the pattern")
    data_seed: int = opt(1, "seed of the phases and the noise; each split draws from its own stream of this seed")

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ConfigError(f"repeat_pattern: vocab_size must be at least 2 (got {self.vocab_size})")
        if self.length < 1 or self.period < 1:
            raise ConfigError(f"repeat_pattern: length and period must be positive (got {self.length}, {self.period})")
        if not 0.0 <= self.noise <= 1.0:
            raise ConfigError(f"repeat_pattern: noise must be in [0, 1] (got {self.noise})")
        if self.num_train < 1 or self.num_val < 0 or self.num_test < 0:
            raise ConfigError("repeat_pattern: num_train must be positive, num_val and num_test not negative")
        if self.pattern_seed < 0 or self.data_seed < 0:
            raise ConfigError("repeat_pattern: seeds must not be negative")
