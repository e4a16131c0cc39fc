"""Options of the ``distinct_ngrams`` metric (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

TOKENIZERS = ("whitespace", "char")


@dataclass
class DistinctNgramsConfig(PluginConfig):
    """distinct-n: the fraction of distinct n-grams among all n-grams of the samples (a diversity score).

    Samples are the decoded datapoints, read as strings and split into words (``whitespace``) or characters.
    Reports ``distinct_<n>`` for each ``n``.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.text_metrics.metric:DistinctNgrams"

    n: list[int] = opt([1, 2, 3], "the n-gram orders to report, each >= 1")
    tokenize: str = opt("whitespace", "units of an n-gram: whitespace (words, the usual distinct-n) | char",
                        choices=TOKENIZERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.n or any(int(k) < 1 for k in self.n):
            raise ConfigError(f"distinct_ngrams: n must be a non-empty list of orders >= 1 (got {list(self.n)})")
        if len(set(self.n)) != len(self.n):
            raise ConfigError(f"distinct_ngrams: n lists an order twice (got {list(self.n)})")


@dataclass
class NgramDivergenceConfig(PluginConfig):
    """Jensen-Shannon n-gram metric: n-gram statistics of the samples against text of a reference split (held-out text
    by default).

    The samples and the reference datapoints are read as strings and cut into words (``whitespace``) or characters;
    n-grams never cross a datapoint boundary. For each ``n`` it reports, with u = ``char`` or ``word``:

    * ``ngram_js_<u><n>``: the Jensen-Shannon divergence (bits, in [0, 1]) between the n-gram frequencies of the
      samples and those of the reference;
    * ``ngram_seen_<u><n>``: the share of the samples' n-grams (with repeats) that occur in the reference.

    Both depend on the number of samples and the size of the reference: compare models at equal sample counts.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.text_metrics.jensen_shannon:NgramDivergence"

    n: list[int] = opt([1, 2, 3, 4], "the n-gram orders to report, each >= 1")
    tokenize: str = opt("char", "units of an n-gram: char | whitespace (words)", choices=TOKENIZERS)
    reference_split: str = opt("test", "the split whose text is the reference", choices=("train", "val", "test"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.n or any(int(k) < 1 for k in self.n) or len(set(self.n)) != len(self.n):
            raise ConfigError(f"ngram_divergence: n must be a non-empty list of distinct orders >= 1 (got {list(self.n)})")
