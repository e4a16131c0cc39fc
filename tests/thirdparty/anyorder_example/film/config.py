"""Options of the ``film_mlp`` network (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class FiLMConfig(PluginConfig):
    """Per-token MLP whose hidden layer is scaled and shifted by a linear map of a conditioning vector (FiLM)."""

    implementation: ClassVar[Any] = "anyorder_example.film.network:FiLMNetwork"

    width: int = opt(32, "hidden width")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width < 1:
            raise ConfigError(f"film_mlp: width must be positive (got {self.width})")
