"""The n-gram hashing shared by the text metrics, and the ``distinct_ngrams`` metric (distinct-n: the fraction of
distinct n-grams among all n-grams of the samples).

Each n-gram is kept as a 64-bit hash (BLAKE2b, so equal n-grams hash equally in every process, unlike Python's
salted ``hash``) in a list state reduced by concatenation. Under DDP every rank's n-grams are gathered before
counting, so an n-gram produced on two ranks counts as one distinct n-gram, exactly as on one device. Two
different n-grams share a hash with probability about 2**-64 per pair, which is negligible at any sample count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from anyorder.metrics import SampleMetric
from anyorder_plugins.text_metrics.config import DistinctNgramsConfig


def ngram_units(text: str, tokenize: str) -> list[str]:
    """The units n-grams are made of: whitespace-separated words, or single characters."""
    return text.split() if tokenize == "whitespace" else list(text)


def ngram_hashes(units: Sequence[str], n: int) -> list[int]:
    """Signed 64-bit BLAKE2b hashes of the n-grams of ``units`` (none when there are fewer than n units)."""
    # Each unit is length-prefixed, so ("ab", "c") and ("a", "bc") encode differently whatever the units hold.
    encoded = []
    for unit in units:
        raw = unit.encode("utf-8", "surrogatepass")
        encoded.append(len(raw).to_bytes(4, "little") + raw)
    return [
        int.from_bytes(hashlib.blake2b(b"".join(encoded[i:i + n]), digest_size=8).digest(), "little", signed=True)
        for i in range(len(encoded) - n + 1)
    ]


class NgramHashMetric(SampleMetric):
    """Base of the n-gram metrics: keeps the hashed n-grams of every sample, per order, in list states reduced by
    concatenation (so under DDP, ``hashes(k)`` holds every rank's n-grams). Subclasses set ``orders`` and
    ``tokenize`` through their config (``n`` and ``tokenize``) and implement ``compute``."""

    def __init__(self, config: Any, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.orders = [int(k) for k in config.n]
        for k in self.orders:
            self.add_state(f"hashes_{k}", default=[], dist_reduce_fx="cat")

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add the n-grams of ``samples`` (decoded datapoints, read with ``str()``)."""
        units = [ngram_units(str(sample), self.config.tokenize) for sample in samples]
        for k in self.orders:
            hashes = [h for u in units for h in ngram_hashes(u, k)]
            # An update always appends, possibly an empty tensor, so a rank that saw samples never has an empty list.
            getattr(self, f"hashes_{k}").append(torch.tensor(hashes, dtype=torch.int64, device=self.device))

    def hashes(self, k: int) -> Tensor:
        """Every n-gram hash of order ``k`` seen so far (empty when none)."""
        state = getattr(self, f"hashes_{k}")
        return dim_zero_cat(state) if not (isinstance(state, list) and len(state) == 0) else torch.empty(0)


class DistinctNgrams(NgramHashMetric):
    """distinct-n for each configured n: (number of distinct n-grams) / (number of n-grams), over all samples.

    ``compute`` returns ``{"distinct_<n>": value}``; the value is 0 when the samples hold no n-gram of that order.
    """

    Config = DistinctNgramsConfig
    config: DistinctNgramsConfig

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``distinct_<n>`` for each n: distinct n-grams over all n-grams."""
        out = {}
        for k in self.orders:
            hashes = self.hashes(k)
            total = hashes.numel()
            value = torch.unique(hashes).numel() / total if total else 0.0
            out[f"distinct_{k}"] = torch.tensor(value, dtype=torch.float32)
        return out
