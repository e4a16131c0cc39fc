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
    tokenize: str = opt("whitespace", "units of an n-gram: whitespace (words, the usual distinct-n) | char")

    def check(self) -> None:
        """Raise :class:`~anyorder.errors.ConfigError` on an empty or invalid ``n`` or an unknown ``tokenize``."""
        if not self.n or any(int(k) < 1 for k in self.n):
            raise ConfigError(f"distinct_ngrams: n must be a non-empty list of orders >= 1 (got {list(self.n)})")
        if len(set(self.n)) != len(self.n):
            raise ConfigError(f"distinct_ngrams: n lists an order twice (got {list(self.n)})")
        if self.tokenize not in TOKENIZERS:
            raise ConfigError(f"distinct_ngrams: tokenize must be one of {', '.join(TOKENIZERS)} "
                              f"(got {self.tokenize!r})")
