"""`anyorder evaluate-samples`: scoring a samples file with metric plugins, through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyorder.cli import main
from anyorder.sample_eval import read_samples


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
