"""The ``distinct_ngrams`` metric against a direct computation, its stable hashing and its rank merging."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from anyorder.errors import ConfigError
from anyorder_plugins.text_metrics.config import DistinctNgramsConfig
from anyorder_plugins.text_metrics.metric import DistinctNgrams, ngram_hashes

SAMPLES = [
    "the cat sat on the mat",
    "the cat sat on the hat",
    "a dog",
    "",
    "the the the the",
    "unicode ✓ words ✓ too",
]


def _direct(samples: list[str], n: int, tokenize: str = "whitespace") -> float:
    """distinct-n computed plainly: the set of n-gram tuples over the list of all n-gram tuples."""
    grams = []
    for s in samples:
        units = s.split() if tokenize == "whitespace" else list(s)
        grams += [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _metric(**options: object) -> DistinctNgrams:
    return DistinctNgrams(DistinctNgramsConfig(**options), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("tokenize", ["whitespace", "char"])
def test_matches_direct_computation(tokenize: str) -> None:
    metric = _metric(n=[1, 2, 3, 4], tokenize=tokenize)
    metric.update(SAMPLES[:3])
    metric.update(SAMPLES[3:])
    got = metric.compute()
    assert set(got) == {"distinct_1", "distinct_2", "distinct_3", "distinct_4"}
    for n in (1, 2, 3, 4):
        assert got[f"distinct_{n}"].item() == pytest.approx(_direct(SAMPLES, n, tokenize), abs=1e-6)


def test_known_values() -> None:
    metric = _metric()
    metric.update(["the cat sat on the mat", "the cat sat on the hat"])
    got = {k: v.item() for k, v in metric.compute().items()}
    # unigrams: 12 tokens, {the, cat, sat, on, mat, hat} = 6; bigrams: 10, 6 distinct; trigrams: 8, 5 distinct.
    assert got == pytest.approx({"distinct_1": 6 / 12, "distinct_2": 6 / 10, "distinct_3": 5 / 8})


def test_samples_are_read_with_str() -> None:
    class Sample:
        def __str__(self) -> str:
            return "a b a b"

    metric = _metric(n=[2])
    metric.update([Sample()])
    assert metric.compute()["distinct_2"].item() == pytest.approx(2 / 3)


def test_no_ngrams_gives_zero() -> None:
    metric = _metric(n=[3])
    metric.update(["a b", ""])
    assert metric.compute()["distinct_3"].item() == 0.0
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own notice
        assert _metric(n=[1]).compute()["distinct_1"].item() == 0.0  # never updated


def test_merged_ranks_equal_one_rank() -> None:
    # What DDP does: each rank keeps its hashes and the union is counted. A shared n-gram counts once.
    single, rank0, rank1 = _metric(), _metric(), _metric()
    single.update(SAMPLES)
    rank0.update(SAMPLES[:2])
    rank1.update(SAMPLES[2:])
    rank0.merge_state(rank1)
    merged, whole = rank0.compute(), single.compute()
    for key, value in whole.items():
        assert merged[key].item() == pytest.approx(value.item())
    assert merged["distinct_1"].item() == pytest.approx(_direct(SAMPLES, 1))


def test_reset() -> None:
    metric = _metric(n=[1])
    metric.update(["x x x x"])
    assert metric.compute()["distinct_1"].item() == pytest.approx(0.25)
    metric.reset()
    metric.update(["x y"])
    assert metric.compute()["distinct_1"].item() == pytest.approx(1.0)


def test_hashes_are_stable_across_processes() -> None:
    # Python's own hash() is salted per process; the metric's must not be, or ranks would disagree.
    code = "from anyorder_plugins.text_metrics.metric import ngram_hashes; print(ngram_hashes(['a', 'bc', 'd'], 2))"
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert runs == {str(ngram_hashes(["a", "bc", "d"], 2))}


def test_unit_boundaries_are_part_of_the_hash() -> None:
    assert ngram_hashes(["ab", "c"], 2) != ngram_hashes(["a", "bc"], 2)
    assert ngram_hashes(["a", "b"], 3) == []


@pytest.mark.parametrize(
    ("options", "match"),
    [({"n": []}, "non-empty"), ({"n": [0]}, ">= 1"), ({"n": [2, 2]}, "twice"), ({"tokenize": "bpe"}, "tokenize")],
)
def test_invalid_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _metric(**options)


def test_config_module_is_light() -> None:
    code = ("import sys, anyorder_plugins.text_metrics.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
