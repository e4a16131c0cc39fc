"""The ``keyed`` dataset: a key variable and D-1 variables that are seeded random functions of it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.errors import DataError
from anyorder_plugins.keyed.config import KeyedConfig

SPLITS = ("train", "val", "test")


def key_tables(num_variables: int, key_index: int, key_values: int, vocab_size: int, seed: int) -> np.ndarray:
    """The datapoint of every key: int64 [key_values, D] (column ``key_index`` is the key itself), with distinct
    rows (tables are redrawn from the same seeded stream until no two keys collide)."""
    rng = np.random.default_rng(seed)
    while True:
        table = rng.integers(0, vocab_size, size=(key_values, num_variables), dtype=np.int64)
        table[:, key_index] = np.arange(key_values)
        others = np.delete(table, key_index, axis=1)
        if len(np.unique(others, axis=0)) == key_values:
            return table


class KeyedDataModule(DiscreteDataModule):
    """Datapoints whose key is uniform and whose other variables are looked up from the key."""

    Config = KeyedConfig
    config: KeyedConfig

    def __init__(self, config: KeyedConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        c = config
        self.table = key_tables(c.num_variables, c.key_index, c.key_values, c.vocab_size, c.table_seed)

    def vocab_sizes(self) -> tuple[int, ...]:
        """Per variable: ``key_values`` for the key, ``vocab_size`` for the others."""
        c = self.config
        return tuple(c.key_values if d == c.key_index else c.vocab_size for d in range(c.num_variables))

    def build(self) -> Splits:
        c = self.config
        sets = {}
        for i, split in enumerate(SPLITS):
            n = {"train": c.num_train, "val": c.num_val, "test": c.num_test}[split]
            keys = np.random.default_rng([c.data_seed, i + 1]).integers(0, c.key_values, size=n)
            sets[split] = TokenSet.fixed(torch.from_numpy(self.table[keys]))
        space = DataSpace("sequence", c.num_variables, self.vocab_sizes(), shape=(c.num_variables,))
        return Splits(sets["train"], sets["val"], sets["test"], space, {"key_index": c.key_index, **self.reference()})

    def reference(self) -> dict[str, float]:
        """The exact entropy per variable (log key_values / D nats): the best achievable NLL in any order."""
        return {"sequence_entropy_nats_per_token": math.log(self.config.key_values) / self.config.num_variables}

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Datapoints given as whitespace-separated values (what ``decode`` writes) or as integer sequences."""
        sizes = self.vocab_sizes()
        rows = []
        for i, obj in enumerate(objs):
            try:
                ids = [int(t) for t in (obj.split() if isinstance(obj, str) else obj)]
            except (TypeError, ValueError) as exc:
                raise DataError(f"keyed: datapoint {i} is not a sequence of values: {obj!r}") from exc
            if len(ids) != len(sizes) or any(not 0 <= v < k for v, k in zip(ids, sizes, strict=True)):
                raise DataError(f"keyed: datapoint {i} must be {len(sizes)} values within {sizes}; got {obj!r}")
            rows.append(ids)
        return TokenSet.fixed(torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(sizes)))

    def is_consistent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Whether each datapoint [N, D] is the one its key determines (a sample-quality check)."""
        table = torch.from_numpy(self.table).to(tokens.device)
        return (table[tokens[:, self.config.key_index]] == tokens).all(dim=1)
