"""The ``ngram_divergence`` metric: the Jensen-Shannon divergence of the n-gram statistics of samples from those of
reference text, and the share of the samples' n-grams seen in it.

The reference n-grams are counted once, when the metric is built, from the decoded datapoints of a split of the
run's datamodule. Sample n-grams are kept as 64-bit hashes (as in ``distinct_ngrams``) in list states reduced by
concatenation, so under DDP the counts over all ranks are those one device would see.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from anyorder.errors import ConfigError
from anyorder_plugins.text_metrics.config import NgramDivergenceConfig
from anyorder_plugins.text_metrics.metric import NgramHashMetric, ngram_hashes, ngram_units


def jensen_shannon(p: Counter[int], q: Counter[int]) -> float:
    """Jensen-Shannon divergence in bits between the normalised counts ``p`` and ``q`` (0 when either is empty)."""
    total_p, total_q = sum(p.values()), sum(q.values())
    if total_p == 0 or total_q == 0:
        return 0.0
    keys = list(p.keys() | q.keys())
    a = torch.tensor([p.get(k, 0) for k in keys], dtype=torch.float64) / total_p
    b = torch.tensor([q.get(k, 0) for k in keys], dtype=torch.float64) / total_q
    m = 0.5 * (a + b)
    # x log(x / m) with 0 log 0 = 0; m > 0 wherever x > 0.
    kl_a = torch.where(a > 0, a * torch.log2(a / m), torch.zeros_like(a)).sum()
    kl_b = torch.where(b > 0, b * torch.log2(b / m), torch.zeros_like(b)).sum()
    return float((0.5 * (kl_a + kl_b)).clamp(0.0, 1.0))


class NgramDivergence(NgramHashMetric):
    """Jensen-Shannon n-gram metric: ``ngram_js_<u><n>`` and ``ngram_seen_<u><n>`` of the samples against a reference
    split (see the config)."""

    Config = NgramDivergenceConfig
    config: NgramDivergenceConfig

    def __init__(self, config: NgramDivergenceConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.unit = "char" if config.tokenize == "char" else "word"
        splits = getattr(datamodule, "splits", None)
        if splits is None:
            raise ConfigError("ngram_divergence needs a set-up datamodule with splits to read the reference text from")
        split = getattr(splits, config.reference_split)
        texts = [str(datamodule.decode(split.tokens[i], int(split.lengths[i]))) for i in range(len(split))]
        units = [ngram_units(t, config.tokenize) for t in texts]
        self.reference: dict[int, Counter[int]] = {k: Counter(h for u in units for h in ngram_hashes(u, k))
                                                   for k in self.orders}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """The Jensen-Shannon divergence and the seen share for each order (both 0 when the samples hold no n-gram of it)."""
        out = {}
        for k in self.orders:
            counts = Counter(self.hashes(k).tolist())
            total = sum(counts.values())
            reference = self.reference[k]
            seen = sum(c for h, c in counts.items() if h in reference) / total if total else 0.0
            out[f"ngram_js_{self.unit}{k}"] = torch.tensor(jensen_shannon(counts, reference), dtype=torch.float32)
            out[f"ngram_seen_{self.unit}{k}"] = torch.tensor(seen, dtype=torch.float32)
        return out
