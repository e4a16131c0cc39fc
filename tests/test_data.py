"""The sharded, resumable loader and the data space."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anyorder.data import DataSpace, ShardedLoader, TokenSet
from anyorder.errors import ConfigError


def _data(n: int) -> TokenSet:
    return TokenSet.fixed(torch.arange(n).unsqueeze(1))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 7), world=st.integers(1, 4))
def test_eval_shards_cover_every_example_once(n: int, batch: int, world: int) -> None:
    seen = []
    for rank in range(world):
        loader = ShardedLoader(_data(n), batch, shuffle=False, rank=rank, world_size=world)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [int(i) for b in batches for i in b["index"]]
    assert sorted(seen) == list(range(n))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(8, 60), batch=st.integers(1, 4), world=st.integers(1, 3), seed=st.integers(0, 5))
def test_train_shards_partition_each_global_batch(n: int, batch: int, world: int, seed: int) -> None:
    if n < batch * world:
        return
    loaders = [ShardedLoader(_data(n), batch, shuffle=True, seed=seed, rank=r, world_size=world) for r in range(world)]
    steps = [list(loader) for loader in loaders]
    assert len({len(s) for s in steps}) == 1  # ranks stay in lockstep
    # The union over ranks of step b is the same global batch a single device would get.
    single = list(ShardedLoader(_data(n), batch * world, shuffle=True, seed=seed))
    for b, global_batch in enumerate(single):
        union = torch.cat([steps[r][b]["index"] for r in range(world)])
        assert torch.equal(union, global_batch["index"])
    seen = torch.cat([b["index"] for s in steps for b in s])
    assert len(set(seen.tolist())) == len(seen)  # no example twice in an epoch


def test_resume_mid_epoch_and_across_epochs() -> None:
    data = _data(23)
    full = ShardedLoader(data, 4, shuffle=True, seed=3)
    reference = [b["index"] for _ in range(3) for b in full]
    loader = ShardedLoader(data, 4, shuffle=True, seed=3)
    got = []
    for b in loader:
        got.append(b["index"])
        if len(got) == 3:
            break
    state = loader.state_dict()
    resumed = ShardedLoader(data, 4, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    for _ in range(3):
        got += [b["index"] for b in resumed]
        if len(got) >= len(reference):
            break
    got = got[:len(reference)]
    assert all(torch.equal(a, b) for a, b in zip(reference, got, strict=True))
    assert not torch.equal(reference[0], reference[len(full)])  # epochs are reshuffled


def test_too_small_for_one_batch() -> None:
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        ShardedLoader(_data(3), 4, shuffle=True)


def test_space_round_trip_and_checks() -> None:
    space = DataSpace.sequence(5, 3, variable_length=True, token_names=["a", "b", "c"])
    assert DataSpace.from_dict(space.to_dict()) == space
    graph = DataSpace("graph", 4, (5, 5, 3, 3), shape=(2,))
    assert DataSpace.from_dict(graph.to_dict()) == graph and not graph.shared_vocab
    with pytest.raises(ValueError, match="structure"):
        DataSpace("tree", 1, (2,))
    with pytest.raises(ValueError, match="vocab_sizes has 1 entries for 2 variables"):
        DataSpace("sequence", 2, (2,))
