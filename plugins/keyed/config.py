"""Options of the ``keyed`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


@dataclass
class KeyedConfig(PluginConfig):
    """Fixed-size datapoints in which one variable, the key, determines all the others.

    The key (variable ``key_index``) is uniform over ``key_values`` values; every other variable j is T_j[key] for a
    seeded random table T_j with values in 0..``vocab_size``-1 (drawn with numpy, seeded by ``table_seed``, and
    redrawn until different keys give different datapoints). The entropy of a datapoint is exactly
    log(``key_values``), whatever the order it is generated in; a model that generates the key first needs only
    the key's marginal and D-1 table lookups, while any other order must infer which keys fit the variables so far.
    It is the source on which a learned order-policy should discover "key first".
    """

    implementation: ClassVar[Any] = "anyorder_plugins.keyed.data:KeyedDataModule"

    num_variables: int = opt(12, "D, variables per datapoint (the key and D-1 determined ones; >= 2)")
    key_index: int = opt(5, "which variable is the key (0..D-1); not the first, so that no position gives it away")
    key_values: int = opt(64, "values of the key (>= 2)")
    vocab_size: int = opt(4, "values of every other variable (>= 2)")
    num_train: int = opt(20000, "datapoints in the training split")
    num_val: int = opt(1000, "datapoints in the validation split")
    num_test: int = opt(2000, "datapoints in the test split")
    table_seed: int = opt(0, "seed of the tables T_j")
    data_seed: int = opt(1, "seed of the keys; each split draws from its own stream of this seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_variables < 2:
            raise ConfigError(f"keyed: num_variables must be at least 2 (got {self.num_variables})")
        if not 0 <= self.key_index < self.num_variables:
            raise ConfigError(f"keyed: key_index must be in 0..{self.num_variables - 1} (got {self.key_index})")
        for name in ("key_values", "vocab_size"):
            if getattr(self, name) < 2:
                raise ConfigError(f"keyed: {name} must be at least 2 (got {getattr(self, name)})")
        if self.vocab_size ** (self.num_variables - 1) < self.key_values:
            raise ConfigError(f"keyed: vocab_size ** (num_variables - 1) = {self.vocab_size ** (self.num_variables - 1)}"
                              f" datapoints cannot tell {self.key_values} keys apart; raise vocab_size or "
                              f"num_variables")
        if self.num_train < 1 or self.num_val < 0 or self.num_test < 0:
            raise ConfigError("keyed: num_train must be >= 1 and num_val, num_test >= 0")
        if self.table_seed < 0 or self.data_seed < 0:
            raise ConfigError("keyed: table_seed and data_seed must be >= 0 (numpy seeds)")
