"""`anyorder evaluate-samples`: scoring a samples file with metric plugins, through the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from anyorder.cli import main
from anyorder.config import PluginConfig
from anyorder.errors import ConfigError
from anyorder.metrics import SampleMetric
from anyorder.registry import REGISTRY, register
from anyorder.sample_eval import merge_results, read_samples

MARKOV_DATA = ["data.length=4", "data.num_train=16", "data.num_val=4", "data.num_test=4"]


def test_evaluate_samples_with_a_metric_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "s.txt"
    samples.write_text("0 1 2 3\n0 1 2 3\n4 5 6 7\n")
    rc = main(["evaluate-samples", str(samples), "--dataset", "markov", "--metrics", "distinct_ngrams",
               "data.length=4", "data.num_train=16", "data.num_val=4", "data.num_test=4"])
    assert rc == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "s.txt.scores.json").read_text())
    # Word unigrams: 8 distinct of 12; bigrams: 6 distinct of 9.
    assert report["values"]["distinct_1"] == pytest.approx(8 / 12)
    assert report["values"]["distinct_2"] == pytest.approx(6 / 9)
    assert "distinct_1" in out and report["protocol"]["num_samples"] == 3
    assert report["protocol"]["dataset"]["length"] == 4
    assert report["metrics"][0]["distribution"].startswith("anyorder")


def test_evaluate_samples_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"sample": "0 1"}\n')
    assert read_samples(samples) == ["0 1"]
    assert main(["evaluate-samples", str(samples), "--dataset", "markov"]) == 2
    assert "names no default metrics" in capsys.readouterr().err
    assert main(["evaluate-samples", str(samples), "--dataset", "markov", "--metrics", "nope"]) == 2
    assert "unknown metric plugin 'nope'" in capsys.readouterr().err
    assert main(["evaluate-samples", str(samples), "--dataset", "markov", "train.max_steps=3"]) == 2
    assert "data.<option>=<value>" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("not json\n")
    bad = str(tmp_path / "bad.jsonl")
    assert main(["evaluate-samples", bad, "--dataset", "markov", "--metrics", "distinct_ngrams"]) == 2


@dataclass
class _SameKeyConfig(PluginConfig):
    """A metric whose result is named like one of distinct_ngrams' (``distinct_1``)."""


class _SameKeyMetric(SampleMetric):
    Config = _SameKeyConfig

    def update(self, samples: Any) -> None:
        pass

    def compute(self) -> dict[str, torch.Tensor]:
        return {"distinct_1": torch.tensor(0.5)}


def test_a_result_name_produced_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "s.txt"
    samples.write_text("0 1 2 3\n4 5 6 7\n")
    register("metric", "same_key_metric", _SameKeyMetric)
    try:
        rc = main(["evaluate-samples", str(samples), "--dataset", "markov", "--metrics",
                   "distinct_ngrams,same_key_metric", *MARKOV_DATA])
    finally:
        REGISTRY.unregister("metric", "same_key_metric")
    assert rc == 2
    err = capsys.readouterr().err
    assert "'distinct_ngrams' and 'same_key_metric' both produce 'distinct_1'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.txt.scores.json").exists()
    # The merge itself: distinct names pass, a repeated one names both producers.
    values: dict[str, float] = {}
    producer: dict[str, str] = {}
    merge_results(values, producer, {"a": 1.0, "b": 2.0}, "m1")
    merge_results(values, producer, {"c": 3.0}, "m2")
    assert values == {"a": 1.0, "b": 2.0, "c": 3.0}
    with pytest.raises(ConfigError, match="'m1' and 'm3' both produce 'b'"):
        merge_results(values, producer, {"b": 0.0}, "m3")


def test_the_same_metric_listed_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "s.txt"
    samples.write_text("0 1 2 3\n4 5 6 7\n")
    rc = main(["evaluate-samples", str(samples), "--dataset", "markov", "--metrics", "distinct_ngrams,distinct_ngrams",
               *MARKOV_DATA])
    assert rc == 2
    err = capsys.readouterr().err
    assert "metric 'distinct_ngrams' is listed twice with the same options" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.txt.scores.json").exists()
