"""Checkpoints: never execute code on load, never hold EMA weights in state_dict, survive a non-finite loss."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.checkpoint import DIGEST_KEY, load_checkpoint
from anyorder.cli import main
from anyorder.errors import NonFiniteLossError, RunError
from anyorder.train import train


class _Payload:
    """Unpickling this object would create a marker file (what an attack would do instead)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.makedirs, (self.marker, 0o755))


@pytest.mark.e2e
def test_loading_never_runs_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, steps=3))
    marker = tmp_path / "pwned"
    ckpt = run / "checkpoints" / "last.ckpt"
    good = torch.load(ckpt, weights_only=True)
    good["anyorder"]["payload"] = _Payload(str(marker))
    torch.save(good, ckpt)
    with pytest.raises(RunError, match="refusing to load"):
        load_checkpoint(ckpt)
    assert main(["evaluate", str(run)]) == 2
    assert "refusing to load" in capsys.readouterr().err
    with pytest.raises(RunError, match="refusing to load"):
        train(None, ["train.max_steps=5"], resume=str(run))
    assert not marker.exists()


def test_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RunError, match="x.ckpt"):
        load_checkpoint(path)
    with pytest.raises(RunError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


class SaveDuringValidation(L.Callback):
    """Writes a checkpoint while the EMA weights are swapped in, and records the trained weights at that moment."""

    def __init__(self, path: Path) -> None:
        self.path, self.trained = path, None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained is None:
            assert pl_module.ema is not None and pl_module.ema.is_swapped
            self.trained = {k: v.clone() for k, v in pl_module.ema.trained_weights().items()}
            self.ema = {k: v.clone() for k, v in pl_module.ema.shadow.items()}
            trainer.save_checkpoint(str(self.path))


@pytest.mark.e2e
def test_checkpoint_never_holds_swapped_ema_weights(tmp_path: Path) -> None:
    probe = SaveDuringValidation(tmp_path / "during-val.ckpt")
    train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "train.ema_decay=0.5", steps=3), extra_callbacks=[probe])
    ckpt = load_checkpoint(probe.path)
    assert probe.trained is not None
    differs = False
    for name, value in probe.trained.items():
        assert torch.equal(ckpt["state_dict"][name], value), name
        assert torch.equal(ckpt["anyorder"]["ema"]["shadow"][name], probe.ema[name])
        differs |= not torch.equal(value, probe.ema[name])
    assert differs  # the test would be vacuous if EMA and trained weights were equal


class PoisonAt(L.Callback):
    """Sets a weight to NaN before step ``at``, as an overflow would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if trainer.global_step == self.at:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


@pytest.mark.e2e
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError) as err:
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=nan", "train.ckpt_every_n_steps=2", steps=8),
              extra_callbacks=[PoisonAt(5)])
    msg = str(err.value)
    assert "step 5" in msg and "nan" in msg and "last.ckpt" in msg and "optim.lr" in msg
    ckpt = tmp_path / "runs" / "nan" / "checkpoints" / "last.ckpt"
    state = load_checkpoint(ckpt)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    # The good checkpoint resumes and finishes (the poison was the callback's, not the run's).
    train(None, [], resume=str(tmp_path / "runs" / "nan"))
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() != digest
    assert load_checkpoint(ckpt)["global_step"] == 8


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    from anyorder.atomic import write_with

    folder = tmp_path / "atomic"
    folder.mkdir()
    path = folder / "c.ckpt"
    path.write_bytes(b"old")

    def fail(f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in folder.iterdir()] == ["c.ckpt"]


@pytest.mark.e2e
def test_a_format_1_checkpoint_of_anyorder_0_1_still_resumes_and_evaluates(tmp_path: Path) -> None:
    """0.1 stored the objective's weights without the ``objective.`` prefix (the objective was the LightningModule):
    such a checkpoint is upgraded on load, by resume and by evaluate, to the same numbers."""
    run = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "train.ema_decay=0.9", steps=3))
    assert main(["evaluate", str(run), "--out", str(tmp_path / "new.json")]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert all(k.startswith("objective.") for k in state["state_dict"])
    strip = lambda d: {k.removeprefix("objective."): v for k, v in d.items()}  # noqa: E731
    state["state_dict"] = strip(state["state_dict"])
    state["anyorder"]["ema"]["shadow"] = strip(state["anyorder"]["ema"]["shadow"])
    state["anyorder"]["format"] = 1
    del state["anyorder"]["objective_state"]
    del state[DIGEST_KEY]  # 0.1 wrote no digest
    torch.save(state, ckpt)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "old.json")]) == 0
    new, old = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("new", "old"))
    assert new["nll_nats"] == old["nll_nats"]
    train(None, ["train.max_steps=6"], resume=str(run))
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 6 and resumed["anyorder"]["format"] == 2
