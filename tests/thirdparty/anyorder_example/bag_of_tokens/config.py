"""Options of the ``bag_of_tokens`` objective (a light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt, plugin_field
from anyorder.errors import ConfigError


@dataclass
class BagOfTokensConfig(PluginConfig):
    """Bag of tokens: every position drawn i.i.d. from one learned distribution; exact likelihood, no network.

    The model is p(x) = prod_t softmax(w)[x_t] with a learned logit vector w. For variable-length data w has one
    more entry, an end-of-sequence symbol, so lengths follow a geometric law truncated at the maximum length.
    The run's ``network`` section is not used.
    """

    implementation: ClassVar[Any] = "anyorder_example.bag_of_tokens.objective:BagOfTokens"

    smoother: Any = plugin_field("smoother", "how the training targets are softened (a smoother plugin, a kind this "
                                             "distribution declares): none | label", default={"name": "none"})
    init_std: float = opt(0.0, "standard deviation of the initial logits; 0 starts from the uniform law")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_std < 0:
            raise ConfigError(f"bag_of_tokens: init_std must not be negative (got {self.init_std})")
