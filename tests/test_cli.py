"""The sample and evaluate commands on a trained run, through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.cli import main

pytestmark = pytest.mark.e2e  # every test here trains a run through the real entry points


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    assert main(["train", str(MARKOV_CONFIG), *tiny_markov(tmp, "train.ema_decay=0.5", "name=r", steps=6)]) == 0
    return tmp / "runs" / "r"


def test_evaluate_writes_report_with_protocol(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(run), "--split", "val", "--checkpoint", "best"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((run / "eval" / "val-best.json").read_text())
    assert printed["nll_nats"] == report["nll_nats"]
    assert report["num_sequences"] == 20 and report["num_tokens"] == 20 * 12
    assert report["bits_per_token"] == pytest.approx(report["nll_nats"] / 0.6931471805599453)
    assert report["nll_nats_se"] > 0
    protocol = report["protocol"]
    assert protocol["split"] == "val" and protocol["checkpoint"] == "checkpoints/best.ckpt"
    assert protocol["ema_weights"] is True and protocol["likelihood"] == "exact"
    assert protocol["packages"]["torch"].startswith("2.") and protocol["seed"] == 0
    assert "entropy_rate_nats" in report["reference"]


def test_evaluate_matches_validation_metric(run: Path) -> None:
    # The training-time validation of the final step and `evaluate` on the val split use the same weights (EMA).
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    report = json.loads((run / "eval" / "val-last.json").read_text())
    rows = (run / "logs" / "csv" / "session-1" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:] if r.split(",")[header.index("val/nll")]]
    assert float(last[-1]["val/nll"]) == pytest.approx(report["nll_nats"], rel=1e-5)


def test_sample_writes_files(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(run), "--num", "7", "--out", str(out), "sample.batch_size=3"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 7 and all(len(x["tokens"]) == 12 for x in lines)
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert meta["num_samples"] == 7 and meta["ema_weights"] is True and meta["settings"]["batch_size"] == 3
    # Same seed, same requests: the same samples.
    again = tmp_path / "t.jsonl"
    assert main(["sample", str(run), "--num", "7", "--out", str(again), "sample.batch_size=3"]) == 0
    assert again.read_text() == out.read_text()
    # The run's metrics scored the samples, and the run's (CSV) logger got them at the checkpoint's step.
    scores = json.loads((tmp_path / "s.jsonl.scores.json").read_text())
    assert set(scores["values"]) == {"distinct_1", "distinct_2", "distinct_3"}
    assert scores["protocol"]["num_samples"] == 7
    txt = tmp_path / "s.txt"
    assert main(["sample", str(run), "--num", "3", "--out", str(txt)]) == 0
    assert len(txt.read_text().splitlines()) == 3


def test_cli_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(run), "--num", "2", "--out", str(tmp_path / "x.csv")]) == 2
    assert "use a .txt" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not an anyorder run directory" in capsys.readouterr().err
    assert main(["train", str(MARKOV_CONFIG), *tiny_markov(tmp_path, "name=r2"), "--resume", str(run)]) == 2
    assert main(["train", "train.max_steps=3"]) == 2
    assert "must be a config file" in capsys.readouterr().err
