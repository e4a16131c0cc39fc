"""The ``ngram_divergence`` metric against a plain computation on strings, and scipy's Jensen-Shannon distance."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from anyorder.errors import ConfigError
from anyorder_plugins.char_text.config import CharTextConfig
from anyorder_plugins.char_text.data import CharTextDataModule
from anyorder_plugins.text_metrics.config import NgramDivergenceConfig
from anyorder_plugins.text_metrics.jensen_shannon import NgramDivergence, jensen_shannon

TEXT = ("Now is the winter of our discontent made glorious summer by this sun of York;\n" * 20
        + "And all the clouds that lour'd upon our house in the deep bosom of the ocean buried.\n" * 20)


@pytest.fixture()
def data(tmp_path: Path) -> CharTextDataModule:
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    module = CharTextDataModule(CharTextConfig(path=str(path), block_size=32, split={"train": 0.5, "val": 0.25,
                                                                                     "test": 0.25}),
                                seed=0, global_batch_size=4)
    module.setup()
    return module


def _texts(module: CharTextDataModule, split: str) -> list[str]:
    tokens = getattr(module.splits, split)
    return [module.decode(tokens.tokens[i], int(tokens.lengths[i])) for i in range(len(tokens))]


def _plain(samples: list[str], reference: list[str], n: int, tokenize: str) -> tuple[float, float]:
    """JS (bits) and the seen share computed on n-gram tuples of strings, with scipy for the divergence."""
    def grams(texts: list[str]) -> Counter[tuple[str, ...]]:
        out: Counter[tuple[str, ...]] = Counter()
        for t in texts:
            units = t.split() if tokenize == "whitespace" else list(t)
            out.update(tuple(units[i:i + n]) for i in range(len(units) - n + 1))
        return out

    s, r = grams(samples), grams(reference)
    keys = sorted(s.keys() | r.keys())
    p = np.array([s[k] for k in keys], dtype=float)
    q = np.array([r[k] for k in keys], dtype=float)
    seen = sum(c for k, c in s.items() if k in r) / sum(s.values())
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2), seen


@pytest.mark.parametrize("tokenize", ["char", "whitespace"])
def test_matches_a_plain_computation(data: CharTextDataModule, tokenize: str) -> None:
    samples = ["Now is the summer of our York; glorious winter", "the deep ocean of our house", "zzz qqq the",
               "And all the clouds"]
    metric = NgramDivergence(NgramDivergenceConfig(n=[1, 2, 3], tokenize=tokenize), data)
    metric.update(samples[:2])
    metric.update(samples[2:])
    values = {k: float(v) for k, v in metric.compute().items()}
    unit = "char" if tokenize == "char" else "word"
    reference = _texts(data, "test")
    for n in (1, 2, 3):
        js, seen = _plain(samples, reference, n, tokenize)
        assert values[f"ngram_js_{unit}{n}"] == pytest.approx(js, abs=1e-6)
        assert values[f"ngram_seen_{unit}{n}"] == pytest.approx(seen, abs=1e-6)
        assert 0.0 < values[f"ngram_js_{unit}{n}"] < 1.0


def test_reference_text_scores_zero_and_disjoint_text_scores_one(data: CharTextDataModule) -> None:
    metric = NgramDivergence(NgramDivergenceConfig(n=[1, 4], reference_split="val"), data)
    metric.update(_texts(data, "val"))
    values = metric.compute()
    assert float(values["ngram_js_char4"]) == pytest.approx(0.0, abs=1e-6)
    assert float(values["ngram_seen_char4"]) == 1.0
    metric.reset()
    metric.update(["@@@@@@@@", "########"])
    values = metric.compute()
    assert float(values["ngram_js_char1"]) == pytest.approx(1.0, abs=1e-6)
    assert float(values["ngram_seen_char1"]) == 0.0


def test_reference_split_is_used(data: CharTextDataModule) -> None:
    samples = _texts(data, "train")[:3]
    on_test = NgramDivergence(NgramDivergenceConfig(n=[3]), data)
    on_train = NgramDivergence(NgramDivergenceConfig(n=[3], reference_split="train"), data)
    on_test.update(samples)
    on_train.update(samples)
    assert float(on_train.compute()["ngram_seen_char3"]) == 1.0
    assert float(on_test.compute()["ngram_js_char3"]) == pytest.approx(
        _plain(samples, _texts(data, "test"), 3, "char")[0], abs=1e-6)


def test_jensen_shannon_against_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = Counter({int(k): int(c) for k, c in enumerate(rng.integers(0, 5, size=12)) if c})
        q = Counter({int(k): int(c) for k, c in enumerate(rng.integers(0, 5, size=12)) if c})
        keys = range(12)
        a = np.array([p[k] for k in keys], dtype=float)
        b = np.array([q[k] for k in keys], dtype=float)
        expected = jensenshannon(a / a.sum(), b / b.sum(), base=2) ** 2
        assert jensen_shannon(p, q) == pytest.approx(expected, abs=1e-12)
    assert jensen_shannon(Counter(), Counter({1: 2})) == 0.0
    assert jensen_shannon(Counter({1: 1}), Counter({2: 1})) == pytest.approx(1.0)
    assert math.isclose(jensen_shannon(Counter({1: 3, 2: 1}), Counter({1: 6, 2: 2})), 0.0, abs_tol=1e-12)


def test_empty_samples_give_zero(data: CharTextDataModule) -> None:
    metric = NgramDivergence(NgramDivergenceConfig(n=[2]), data)
    metric.update(["", "a"])
    values = metric.compute()
    assert float(values["ngram_js_char2"]) == 0.0 and float(values["ngram_seen_char2"]) == 0.0
    assert isinstance(values["ngram_js_char2"], torch.Tensor)


@pytest.mark.parametrize(("options", "match"), [
    ({"n": []}, "non-empty"), ({"n": [0]}, "orders >= 1"), ({"n": [2, 2]}, "distinct"),
    ({"tokenize": "bytes"}, "tokenize"), ({"reference_split": "dev"}, "reference_split"),
])
def test_invalid_options(data: CharTextDataModule, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NgramDivergence(NgramDivergenceConfig(**options), data)  # type: ignore[arg-type]


def test_needs_a_datamodule_with_splits() -> None:
    with pytest.raises(ConfigError, match="set-up datamodule"):
        NgramDivergence(NgramDivergenceConfig(), None)


def test_char_text_suite_names_it(data: CharTextDataModule) -> None:
    names = [s["name"] for s in data.default_metrics()]
    assert names.count("ngram_divergence") == 2 and "distinct_ngrams" in names
