"""Options of the example smoothers (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class NoneConfig(PluginConfig):
    """No smoothing: maximum likelihood on the observed categories."""

    implementation: ClassVar[Any] = "anyorder_example.smoothing.smoothers:NoSmoothing"


@dataclass
class LabelConfig(PluginConfig):
    """Label smoothing: the targets mixed with the uniform law by eps."""

    implementation: ClassVar[Any] = "anyorder_example.smoothing.smoothers:LabelSmoothing"

    eps: float = opt(0.1, "weight of the uniform law in the targets, in [0, 1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"smoother label: eps must be in [0, 1) (got {self.eps})")
