"""Fine-tuning (``train.init_from``): a new run starts from another run's weights and EMA, with a fresh optimizer,
schedule and step counter; it resumes exactly like any run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.checkpoint import load_checkpoint
from anyorder.errors import RunError
from anyorder.train import train

pytestmark = pytest.mark.e2e


class Capture(L.Callback):
    """Keeps the weights and EMA a run starts training with."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.ema = {k: v.clone() for k, v in pl_module.ema.shadow.items()}  # type: ignore[union-attr]
        self.step = trainer.global_step


class Crash(L.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


COMMON = ("train.ema_decay=0.9", "network.dropout=0.1", "train.ckpt_every_n_steps=4", "scheduler.warmup_steps=2")


def test_a_fine_tuning_run_starts_from_the_source_weights(tmp_path: Path) -> None:
    source = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=source", *COMMON, steps=8))
    capture = Capture()
    tuned = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=tuned", *COMMON, f"train.init_from={source}:best",
                                                  "optim.lr=1e-4", steps=3), extra_callbacks=[capture])
    best = load_checkpoint(source / "checkpoints" / "best.ckpt")
    assert capture.step == 0  # a fresh step counter (and so a fresh schedule)
    assert capture.weights.keys() == best["state_dict"].keys()
    for key, value in best["state_dict"].items():
        assert torch.equal(capture.weights[key], value), key
    for key, value in best["anyorder"]["ema"]["shadow"].items():
        assert torch.equal(capture.ema[key], value), key
    state = load_checkpoint(tuned / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 3
    assert state["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(1e-4)
    manifest = json.loads((tuned / "manifest.json").read_text())
    assert manifest["init_from"]["run"] == str(source.resolve()) and manifest["init_from"]["checkpoint"] == "best.ckpt"
    assert len(manifest["init_from"]["file_sha256"]) == 64


def test_a_resumed_fine_tuning_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    source = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=source", *COMMON, steps=6))
    extra = (*COMMON, f"train.init_from={source}")
    full = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=full", *extra, steps=10))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=crashed", *extra, steps=10),
              extra_callbacks=[Crash(at=6)])
    crashed = tmp_path / "runs" / "crashed"
    train(None, [], resume=str(crashed))
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt") for r in (full, crashed))
    assert a["global_step"] == b["global_step"] == 10
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["anyorder"]["ema"]["shadow"]:
        assert torch.equal(a["anyorder"]["ema"]["shadow"][key], b["anyorder"]["ema"]["shadow"][key]), key


def test_a_missing_or_unfitting_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="init_from"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=x", f"train.init_from={tmp_path / 'none'}"))
    assert not (tmp_path / "runs" / "x").exists()
    source = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=source", steps=3))
    with pytest.raises(RunError, match="do not fit"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=wide", f"train.init_from={source}",
                                              "network.d_model=32", steps=3))
    assert not (tmp_path / "runs" / "wide").exists()


def test_sequence_match_fine_tunes_an_mle_run(tmp_path: Path) -> None:
    """The paper's protocol: SequenceMatch starts from a trained language model. Its output head has one more
    action (BKSP), which starts at logit 0; every other weight is the source's."""
    source = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=mle", steps=4))
    capture = Capture()
    with pytest.raises(RunError, match="tie_embeddings=false"):  # fixed-length: SequenceMatch's actions = inputs
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=tied", "objective.name=sequence_match",
                                              f"train.init_from={source}", steps=2))
    assert not (tmp_path / "runs" / "tied").exists()
    train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=sm", "objective.name=sequence_match",
                                          "network.tie_embeddings=false",
                                          f"train.init_from={source}", "train.ema_decay=0.9", steps=2),
          extra_callbacks=[capture])
    mle = load_checkpoint(source / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in capture.weights.items():
        old = mle[key]
        if old.shape == value.shape:
            assert torch.equal(value, old), key
        else:  # grown along the first dimension: the source's rows, then zeros
            assert torch.equal(value[: old.shape[0]], old), key
            assert not value[old.shape[0]:].any(), key
    assert any(mle[k].shape != v.shape for k, v in capture.weights.items())
