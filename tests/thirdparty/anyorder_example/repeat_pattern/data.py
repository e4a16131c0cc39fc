"""The ``repeat_pattern`` dataset: a seeded random pattern repeated to a fixed length, with uniform token noise.

Token t of a sequence with phase s is ``pattern[(s + t) % period]``, except that with probability ``noise`` it is
replaced by a uniform draw from the vocabulary (which may equal the pattern's token). The splits draw from
independent numpy streams seeded by ``[data_seed, split]``, so a split does not change when another one's size does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder_example.repeat_pattern.config import RepeatPatternConfig

SPLITS = ("train", "val", "test")


class RepeatPatternDataModule(DiscreteDataModule):
    """Repeats of a seeded random pattern with uniform noise (fixed length, vocabulary ``vocab_size``)."""

    Config = RepeatPatternConfig
    config: RepeatPatternConfig

    @property
    def pattern(self) -> np.ndarray:
        """The repeated pattern, int64 [period]; a function of ``pattern_seed``, ``period`` and ``vocab_size`` only."""
        c = self.config
        return np.random.default_rng(c.pattern_seed).integers(0, c.vocab_size, size=c.period, dtype=np.int64)

    def sample_split(self, split: str) -> np.ndarray:
        """The sequences of ``split``, int64 [N, length]."""
        c = self.config
        n = {"train": c.num_train, "val": c.num_val, "test": c.num_test}[split]
        rng = np.random.default_rng([c.data_seed, SPLITS.index(split) + 1])
        phases = rng.integers(0, c.period, size=n) if c.random_phase else np.zeros(n, dtype=np.int64)
        clean = self.pattern[(phases[:, None] + np.arange(c.length)[None, :]) % c.period]
        replace = rng.random((n, c.length)) < c.noise
        noise = rng.integers(0, c.vocab_size, size=(n, c.length), dtype=np.int64)
        return np.where(replace, noise, clean)

    def build(self) -> Splits:
        c = self.config
        sets = {split: TokenSet.fixed(torch.from_numpy(self.sample_split(split))) for split in SPLITS}
        info = {"pattern": self.pattern.tolist(), **self.reference()}
        return Splits(sets["train"], sets["val"], sets["test"], DataSpace.sequence(c.length, c.vocab_size), info)

    def marginals(self) -> np.ndarray:
        """Exact law of each position's token, float64 [length, V]."""
        c = self.config
        phases = np.arange(c.period) if c.random_phase else np.zeros(1, dtype=np.int64)
        out = np.full((c.length, c.vocab_size), c.noise / c.vocab_size)
        for t in range(c.length):
            tokens = self.pattern[(phases + t) % c.period]
            np.add.at(out[t], tokens, (1.0 - c.noise) / len(phases))
        return out

    def reference(self) -> dict[str, float]:
        """Exact quantities (nats per token).

        ``best_unigram_nll_nats``: the entropy of the position-averaged marginal, the lowest expected NLL any
        position-independent model (such as ``bag_of_tokens``) reaches. ``entropy_given_phase_nats_per_token``: the
        entropy of the noise given the phase; the true per-token entropy is at most this plus log(period) / length.
        """
        c = self.config
        avg = self.marginals().mean(0)
        best_unigram = float(-(avg[avg > 0] * np.log(avg[avg > 0])).sum())
        hit = 1.0 - c.noise + c.noise / c.vocab_size
        miss = c.noise / c.vocab_size
        given_phase = -sum(p * math.log(p) for p in [hit] + [miss] * (c.vocab_size - 1) if p > 0)
        return {"best_unigram_nll_nats": best_unigram, "entropy_given_phase_nats_per_token": given_phase}
