"""Options of the ``arithmetic_accuracy`` metric (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError
from anyorder_plugins.arithmetic.equations import MAX_BASE, MIN_BASE


@dataclass
class ArithmeticAccuracyConfig(PluginConfig):
    """Exact-answer accuracy of equation samples ``a op b=c`` (the ``arithmetic`` dataset's format).

    A sample is well formed when it parses as ``a op b=c`` with digits of the base (optional ``-`` signs), and
    correct when ``c`` is exactly the canonical answer (no leading zeros, no ``-0``). Reports ``accuracy`` (correct
    over all samples) and ``well_formed`` (well formed over all samples).
    """

    implementation: ClassVar[Any] = "anyorder_plugins.arithmetic.metric:ArithmeticAccuracy"

    base: int = opt(7, f"the base the samples are written in ({MIN_BASE}..{MAX_BASE}); the dataset's own base")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.base, bool) or not MIN_BASE <= self.base <= MAX_BASE:
            raise ConfigError(f"arithmetic_accuracy: base must be in {MIN_BASE}..{MAX_BASE} (got {self.base})")
