"""A run stopped by a crash and resumed ends bitwise equal to an uninterrupted run with the same seed."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.checkpoint import load_checkpoint
from anyorder.train import train

pytestmark = pytest.mark.e2e  # every test here trains a run through the real entry points


class Crash(L.Callback):
    """Raises at the start of step ``at`` (after checkpoints of earlier steps were written), like a killed job."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


# 100 training examples / batch 8 = 12 batches per epoch: the crash (step 10) and the checkpoint it resumes from
# (step 8) are mid-epoch, and the run crosses two epoch boundaries. Dropout and EMA exercise the RNG and EMA state.
STEPS = 30
COMMON = ("train.ckpt_every_n_steps=8", "train.val_every_n_steps=7", "network.dropout=0.1",
          "train.ema_decay=0.9", "scheduler.warmup_steps=5")


def _final(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


# SequenceMatch also carries state outside the weights: its replay buffer (refreshed at steps 6, 9, 12, ...; the
# resumed run restarts at step 8 and must draw its step-8 replay rows from the buffer written at step 6).
OBJECTIVES = {
    "mle": (),
    "sequence_match": ("objective.name=sequence_match", "objective.bc_warmup=0.1", "objective.replay_every=3",
                       "objective.replay_batch=4", "objective.replay_rows=2", "objective.noise_rate=0.2"),
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_crash_and_resume_is_bitwise_equal(tmp_path: Path, objective: str) -> None:
    extra = (*COMMON, *OBJECTIVES[objective])
    full = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=full", *extra, steps=STEPS))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=crashed", *extra, steps=STEPS),
              extra_callbacks=[Crash(at=10)])
    crashed = tmp_path / "runs" / "crashed"
    assert load_checkpoint(crashed / "checkpoints" / "last.ckpt")["global_step"] == 8
    train(None, [], resume=str(crashed))

    a, b = _final(full), _final(crashed)
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    ema_a, ema_b = a["anyorder"]["ema"], b["anyorder"]["ema"]
    assert ema_a["num_updates"] == ema_b["num_updates"] == STEPS
    for key in ema_a["shadow"]:
        assert torch.equal(ema_a["shadow"][key], ema_b["shadow"][key]), key
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in state_a:
        for k in state_a[i]:
            assert torch.equal(torch.as_tensor(state_a[i][k]), torch.as_tensor(state_b[i][k]))
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    manifest = (crashed / "manifest.json").read_text()
    assert manifest.count('"argv"') == 2  # the resume is recorded


def test_resume_can_extend_training(tmp_path: Path) -> None:
    run = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=short", steps=4))
    train(None, ["train.max_steps=7"], resume=str(run))
    assert _final(run)["global_step"] == 7
