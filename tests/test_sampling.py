"""``SampleRequests``: how ``anyorder sample`` splits N samples into seeded requests over ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MARKOV_CONFIG, tiny_overrides

from anyorder.sampling import SampleRequests

EMPTY = {"index": SampleRequests.EMPTY, "size": 0}


def _all(num: int, batch: int, world: int) -> list[list[dict[str, int]]]:
    return [list(SampleRequests(num, batch, rank, world)) for rank in range(world)]


def test_fewer_requests_than_ranks_gives_the_idle_rank_one_empty_request() -> None:
    # `anyorder sample RUN --num 64` on 2 devices with sample.batch_size=64: one request, two ranks.
    assert _all(64, 64, 2) == [[{"index": 0, "size": 64}], [EMPTY]]
    assert [len(SampleRequests(64, 64, rank, 2)) for rank in range(2)] == [1, 1]  # Lightning refuses length 0
    assert _all(1, 64, 2) == [[{"index": 0, "size": 1}], [EMPTY]]
    assert _all(0, 64, 2) == [[EMPTY], [EMPTY]]
    assert _all(0, 64, 1) == [[EMPTY]]


@pytest.mark.parametrize(("num", "batch"), [(64, 64), (1, 64), (130, 64), (7, 2), (10, 3)])
def test_requests_do_not_depend_on_the_number_of_ranks(num: int, batch: int) -> None:
    single = _all(num, batch, 1)[0]
    assert [r["size"] for r in single] == [min(batch, num - s) for s in range(0, num, batch)]
    assert sum(r["size"] for r in single) == num
    for world in (2, 3, 8):
        per_rank = _all(num, batch, world)
        assert all(len(mine) >= 1 for mine in per_rank)
        real = sorted((r for mine in per_rank for r in mine if r != EMPTY), key=lambda r: r["index"])
        assert real == single  # the same requests (index, size), so the same seeded samples, on any world size
        for rank, mine in enumerate(per_rank):
            assert all(r["index"] % world == rank for r in mine if r != EMPTY)


def test_keep_drops_the_empty_requests_results_and_orders_the_rest() -> None:
    results = [{"index": 2, "n": "c"}, {"index": SampleRequests.EMPTY, "n": "-"}, {"index": 0, "n": "a"},
               {"index": 1, "n": "b"}]
    assert [r["n"] for r in SampleRequests.keep(results)] == ["a", "b", "c"]
    assert SampleRequests.keep([{"index": SampleRequests.EMPTY}]) == []


def test_bad_arguments_are_refused() -> None:
    for args in [(4, 0, 0, 1), (4, 2, 2, 2), (4, 2, -1, 2), (4, 2, 0, 0)]:
        with pytest.raises(ValueError, match="SampleRequests"):
            SampleRequests(*args)


def test_a_rank_with_only_the_empty_request_runs_predict(tmp_path: Path) -> None:
    """The predict loop of an idle rank: Lightning takes the one empty request and the module draws 0 samples."""
    from anyorder.build import build_datamodule, build_module, build_trainer
    from anyorder.config import load_config

    cfg = load_config(MARKOV_CONFIG, [*tiny_overrides(tmp_path), "trainer.accelerator=cpu", "trainer.devices=1"])
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    module = build_module(cfg, datamodule.space)
    trainer = build_trainer(cfg, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    results = trainer.predict(module, dataloaders=SampleRequests(1, 64, rank=1, world_size=2),
                              return_predictions=True)
    assert results is not None and len(results) == 1
    (result,) = results
    assert result["index"] == SampleRequests.EMPTY and len(result["lengths"]) == 0
    assert SampleRequests.keep(list(results)) == []
