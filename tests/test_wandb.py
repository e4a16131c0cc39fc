"""W&B logging, offline: what a tiny run writes to its ``run-*.wandb`` file, resuming one W&B run, and the reader.

Every test runs with WANDB_MODE=offline (see conftest.py); nothing here may ever run online.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import MARKOV_CONFIG, isolated_environment, tiny_overrides
from wandb_offline import BLOCK_SIZE, find_run_files, iter_record_bytes, read_run

from anyorder.errors import RunError

MAX_STEPS = 4
"""Steps of the run the tests share; with validations every 2 steps it validates after steps 2 and 4."""

VAL_STEPS = [2, 4]
"""The global steps (optimizer steps taken) at which that run validates."""

RESUMED_STEPS = 6
"""``train.max_steps`` of the resumed run (one more validation, after step 6)."""


@dataclass
class TrainedRun:
    """A finished tiny W&B run: its directory, resolved config (a plain dict), and its W&B run files and the bytes of
    the first, as they were before any test resumed the run."""

    run_dir: Path
    config: dict[str, Any]
    run_files: list[Path]
    first_file_bytes: bytes


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> TrainedRun:
    """One tiny markov run logged to W&B (offline), shared by the tests of this module (it takes a few seconds)."""
    from omegaconf import OmegaConf

    from anyorder.config import load_config
    from anyorder.train import train

    root = tmp_path_factory.mktemp("wandb-run")
    with isolated_environment(root, session_cache):
        run_dir = train(str(MARKOV_CONFIG), tiny_overrides(root, logger="wandb", max_steps=MAX_STEPS))
    config = OmegaConf.to_container(load_config(run_dir / "config.yaml"), resolve=True)
    assert isinstance(config, dict)
    files = find_run_files(run_dir)
    return TrainedRun(run_dir, config, files, files[0].read_bytes() if files else b"")


def _the_run_file(run: TrainedRun) -> Path:
    assert len(run.run_files) == 1, f"expected one W&B run file, found {run.run_files}"
    return run.run_files[0]


@pytest.mark.e2e
def test_run_file_holds_what_the_run_logged(wandb_run: TrainedRun) -> None:
    run = read_run(_the_run_file(wandb_run))
    state = json.loads((wandb_run.run_dir / "logger.json").read_text())

    assert run.complete and run.exit_code == 0
    assert run.run_id == state["wandb_id"] and state["wandb_mode"] == "offline"
    assert run.project == "anyorder" and run.display_name == wandb_run.config["name"]
    cfg = wandb_run.config
    assert {cfg["objective"]["name"], cfg["network"]["name"], cfg["data"]["name"]} <= set(run.tags)
    assert set(run.tags) == {"mle", "causal_transformer", "markov"}
    # The whole resolved config, not only the plugin names.
    assert run.config == cfg
    assert (run.config["objective"]["name"], run.config["network"]["name"], run.config["data"]["name"]) == (
        "mle", "causal_transformer", "markov")

    # Training metrics every step (log_every_n_steps=1). Lightning logs the batch that takes optimizer step k+1 at
    # step k, i.e. the loss of the weights after k steps.
    losses = run.values("train/loss")
    assert [step for step, _ in losses] == list(range(MAX_STEPS))
    assert all(isinstance(v, float) and v > 0 for _, v in losses)
    assert [s for s, _ in run.values("train/grad_norm")] == list(range(MAX_STEPS))

    # One row of validation metrics per validation, over the whole validation split.
    val = [row for row in run.history if "val/nll" in row]
    assert len(val) == len(VAL_STEPS)
    for row in val:
        assert row["val/num_sequences"] == cfg["data"]["num_val"]
        assert row["val/num_tokens"] == cfg["data"]["num_val"] * cfg["data"]["length"]
        assert 0 < row["val/nll"] < 3 and row["val/bits_per_token"] == pytest.approx(row["val/nll"] / math.log(2))
    assert run.summary["val/nll"] == val[-1]["val/nll"]

    # The sample table of every validation, at the step of the validation, equal to samples/val-step<N>.txt.
    tables = run.values("val/samples")
    assert [step for step, _ in tables] == VAL_STEPS
    for step, table in tables:
        assert table["_type"] == "table-file" and table["nrows"] == cfg["sample"]["num_val_samples"]
        data = json.loads((_the_run_file(wandb_run).parent / "files" / table["path"]).read_text())
        assert data["columns"] == ["i", "sample"]
        written = (wandb_run.run_dir / "samples" / f"val-step{step:08d}.txt").read_text().splitlines()
        assert [text for _, text in data["data"]] == written

    # The final test evaluation, logged at the last step, equal to eval/test-final.json.
    report = json.loads((wandb_run.run_dir / "eval" / "test-final.json").read_text())
    assert run.values("test/nll") == [(MAX_STEPS, pytest.approx(report["nll_nats"]))]


@pytest.mark.e2e
def test_validation_metrics_share_the_step_of_their_validation(wandb_run: TrainedRun) -> None:
    run = read_run(_the_run_file(wandb_run))
    assert [step for step, _ in run.values("val/nll")] == [step for step, _ in run.values("val/samples")]


@pytest.fixture(scope="module")
def resumed_run(wandb_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory,
                session_cache: Path) -> Path:
    """:func:`wandb_run` resumed in place with ``train.max_steps`` raised to :data:`RESUMED_STEPS`."""
    from anyorder.train import train

    with isolated_environment(tmp_path_factory.mktemp("wandb-resume"), session_cache):
        return train(None, [f"train.max_steps={RESUMED_STEPS}"], resume=str(wandb_run.run_dir))


@pytest.mark.e2e
def test_resume_continues_the_same_wandb_run(wandb_run: TrainedRun, resumed_run: Path) -> None:
    first, *later = find_run_files(resumed_run)
    assert first == _the_run_file(wandb_run)
    assert first.read_bytes() == wandb_run.first_file_bytes  # the first part is untouched
    assert len(later) == 1, "an offline resume writes its records to a new run file of the same run"
    wandb_id = json.loads((resumed_run / "logger.json").read_text())["wandb_id"]
    before, after = read_run(first), read_run(later[0])
    assert before.run_id == after.run_id == wandb_id
    assert after.complete
    assert set(after.tags) == set(before.tags)
    assert after.config["train"]["max_steps"] == RESUMED_STEPS
    assert len(after.values("train/loss")) == RESUMED_STEPS - MAX_STEPS
    assert len(after.values("val/nll")) == 1


@pytest.mark.e2e
def test_resume_continues_the_logging_steps(resumed_run: Path) -> None:
    after = read_run(find_run_files(resumed_run)[-1])
    assert [step for step, _ in after.values("train/loss")] == list(range(MAX_STEPS, RESUMED_STEPS))


@pytest.mark.e2e
def test_run_files_of_one_second_are_ordered_by_their_recorded_start(resumed_run: Path, tmp_path: Path) -> None:
    # A run and its resume in the same second, the resume's directory sorting first by name and the first part
    # written last: only the start time recorded in each file (with nanoseconds) can order them.
    first, resumed = find_run_files(resumed_run)
    wandb_dir = tmp_path / "wandb"
    copies = [wandb_dir / "offline-run-20250101_000000-zzz" / first.name,
              wandb_dir / "offline-run-20250101_000000-aaa" / resumed.name]
    for source, copy in zip((first, resumed), copies, strict=True):
        copy.parent.mkdir(parents=True)
        copy.write_bytes(source.read_bytes())
    os.utime(copies[0], ns=(2 * 10**18, 2 * 10**18))
    os.utime(copies[1], ns=(10**18, 10**18))
    assert find_run_files(wandb_dir) == copies
    last = read_run(find_run_files(wandb_dir)[-1])
    assert [step for step, _ in last.values("train/loss")] == list(range(MAX_STEPS, RESUMED_STEPS))


def test_auto_mode_is_offline_without_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anyorder.loggers import wandb_has_key, wandb_mode

    netrc = tmp_path / "netrc"
    netrc.write_text("")
    netrc.chmod(0o600)
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    assert not wandb_has_key()
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("disabled") == "disabled"
    # With a key (a netrc entry, as `wandb login` writes), auto would go online; only the decision is checked here.
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert wandb_has_key() and wandb_mode("auto") == "online"
    # WANDB_MODE wins over the config.
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("online") == "offline"


# ---------------------------------------------------------------------------------------------------------------
# The reader on its own
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_run_file(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """A run file of several 32 KiB blocks, written by wandb itself: 1500 rows of known values, a config, tags."""
    import wandb

    root = tmp_path_factory.mktemp("wandb-long")
    with isolated_environment(root, session_cache):
        run = wandb.init(project="anyorder-test", dir=str(root), mode="offline", id="longrun1",
                         config={"a": 1, "nested": {"b": [1, 2]}}, tags=["x", "y"])
        for i in range(1500):
            run.log({"i": i, "half": i / 2, "name": f"row-{i:05d}", "group/value": -i})
        run.config.update({"late": "yes"})
        run.summary["best"] = 7
        run.finish()
    (path,) = find_run_files(root)
    return path


def test_reader_reassembles_records_over_blocks(long_run_file: Path) -> None:
    assert long_run_file.stat().st_size > 3 * BLOCK_SIZE
    run = read_run(long_run_file)
    rows = [row for row in run.history if "i" in row]
    assert [row["i"] for row in rows] == list(range(1500))
    assert all(row["half"] == row["i"] / 2 and row["name"] == f"row-{row['i']:05d}" and row["group/value"] == -row["i"]
               for row in rows)
    assert [row["_step"] for row in rows] == list(range(1500))
    assert run.run_id == "longrun1" and run.tags == ["x", "y"] and run.complete
    assert run.config == {"a": 1, "nested": {"b": [1, 2]}, "late": "yes"}
    assert run.summary["i"] == 1499 and run.summary["best"] == 7


def test_reader_rejects_a_bad_header(tmp_path: Path, long_run_file: Path) -> None:
    empty = tmp_path / "run-empty.wandb"
    empty.write_bytes(b"")
    with pytest.raises(RunError, match="not a W&B run file"):
        read_run(empty)
    other = tmp_path / "run-other.wandb"
    other.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(RunError, match="not a W&B run file"):
        read_run(other)
    newer = tmp_path / "run-newer.wandb"
    data = bytearray(long_run_file.read_bytes())
    data[6] = 9
    newer.write_bytes(bytes(data))
    with pytest.raises(RunError, match="version 9"):
        read_run(newer)


def test_reader_detects_damage_and_reads_a_truncated_file(tmp_path: Path, long_run_file: Path) -> None:
    data = long_run_file.read_bytes()
    whole = list(iter_record_bytes(long_run_file))
    damaged = tmp_path / "run-damaged.wandb"
    damaged.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(RunError, match="checksum"):
        read_run(damaged)
    # A file cut short (a run still writing, or killed) gives the records before the cut, and is not complete.
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(data[:2 * BLOCK_SIZE + 1000])
    partial = list(iter_record_bytes(cut))
    assert 0 < len(partial) < len(whole) and partial == whole[:len(partial)]
    assert not read_run(cut).complete


def test_find_run_files(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a directory"):
        find_run_files(tmp_path / "missing")
    wandb_dir = tmp_path / "run" / "wandb"
    for name in ["offline-run-20250102_000000-abc", "offline-run-20250101_000000-abc"]:
        (wandb_dir / name).mkdir(parents=True)
        (wandb_dir / name / "run-abc.wandb").write_bytes(b"")
    (wandb_dir / "latest-run").symlink_to(wandb_dir / "offline-run-20250102_000000-abc")
    expected = [wandb_dir / "offline-run-20250101_000000-abc" / "run-abc.wandb",
                wandb_dir / "offline-run-20250102_000000-abc" / "run-abc.wandb"]
    assert find_run_files(wandb_dir) == expected
    assert find_run_files(tmp_path / "run") == expected  # a run directory: its wandb/ is searched
