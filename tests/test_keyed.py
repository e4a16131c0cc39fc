"""The ``keyed`` synthetic source: the key determines every datapoint, the splits are seeded, bad options fail."""

from __future__ import annotations

import math

import pytest
import torch

from anyorder.errors import ConfigError, DataError
from anyorder_plugins.keyed.config import KeyedConfig
from anyorder_plugins.keyed.data import KeyedDataModule


def _data(**options: int) -> KeyedDataModule:
    base = {"num_train": 500, "num_val": 50, "num_test": 50, **options}
    return KeyedDataModule(KeyedConfig(**base), global_batch_size=8)  # type: ignore[arg-type]


def test_the_key_determines_every_variable_and_keys_are_uniform() -> None:
    dm = _data(num_variables=6, key_index=2, key_values=16, vocab_size=3, num_train=16000)
    dm.setup()
    train = dm.splits.train.tokens
    assert dm.space.vocab_sizes == (3, 3, 16, 3, 3, 3)
    assert bool(dm.is_consistent(train).all())
    # The non-key variables alone identify the key (distinct rows), so the entropy is exactly log(key_values).
    others = torch.from_numpy(dm.table)[:, [0, 1, 3, 4, 5]]
    assert len(torch.unique(others, dim=0)) == 16
    counts = torch.bincount(train[:, 2], minlength=16).double() / len(train)
    assert float((counts - 1 / 16).abs().max()) < 0.01
    assert dm.reference()["sequence_entropy_nats_per_token"] == pytest.approx(math.log(16) / 6)
    corrupted = train[:4].clone()
    corrupted[:, 0] = (corrupted[:, 0] + 1) % 3
    assert not bool(dm.is_consistent(corrupted).any())


def test_splits_are_seeded_and_distinct() -> None:
    a, b = _data(), _data()
    a.setup()
    b.setup()
    assert torch.equal(a.splits.test.tokens, b.splits.test.tokens)
    assert not torch.equal(a.splits.val.tokens, a.splits.test.tokens[:50])
    c = _data(table_seed=3)
    c.setup()
    assert not torch.equal(torch.as_tensor(a.table), torch.as_tensor(c.table))


def test_text_round_trip_and_bad_input() -> None:
    dm = _data()
    dm.setup()
    row = dm.splits.test.tokens[0]
    text = dm.to_text(dm.decode(row, len(row)))
    assert torch.equal(dm.encode([text]).tokens[0], row)
    with pytest.raises(DataError, match="must be 12 values"):
        dm.encode(["1 2 3"])


@pytest.mark.parametrize(("options", "match"), [
    ({"key_index": 12}, "key_index"), ({"key_values": 1}, "key_values"),
    ({"num_variables": 3, "key_index": 0, "vocab_size": 2, "key_values": 8}, "cannot tell 8 keys apart"),
])
def test_bad_options(options: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KeyedConfig(**options)  # type: ignore[arg-type]
