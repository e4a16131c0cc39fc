"""The selectable loggers: TensorBoard writes events (scalars and sample text); none writes no log files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.train import train

pytestmark = pytest.mark.e2e  # every test here trains a run through the real entry points


def test_tensorboard_logger(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "logger.name=tensorboard", steps=4))
    (events,) = run.glob("logs/**/events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "train/loss" in tags["scalars"] and "val/nll" in tags["scalars"]
    assert [e.step for e in acc.Scalars("val/nll")] == [3]  # validations at step 3 (every 3 steps, 4 steps in all)
    assert any(t.startswith("val/samples") for t in tags["tensors"])  # the sample text


def test_no_logger(tmp_path: Path) -> None:
    run = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "logger.name=none", steps=3))
    assert not (run / "logs").exists() and not (run / "wandb").exists()
    assert (run / "checkpoints" / "last.ckpt").is_file() and any((run / "samples").iterdir())
