"""Faults and bad input: signals, non-finite updates, run-directory races, writes over things that are not files,
damaged checkpoints, settings refused before a run starts, and one clean line (exit status 2) for every error a
user can cause."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov

from anyorder.atomic import atomic_open, write_text, write_with
from anyorder.checkpoint import load_checkpoint
from anyorder.cli import main
from anyorder.config import load_config
from anyorder.errors import ConfigError, NonFiniteLossError, RunError, RunInterrupted
from anyorder.runs import create_run_dir, is_launch_rank_zero, wait_for_run_dir
from anyorder.train import train


class Signal(L.Callback):
    """Sends SIGTERM to this process at the start of step ``at``, as a scheduler ending the job would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


class Blowup(L.Callback):
    """Makes the update of step ``at`` overflow (an infinite learning rate for that one step)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: object) -> None:
        if trainer.global_step == self.at:
            for group in optimizer.param_groups:  # type: ignore[attr-defined]
                group["lr"] = float("inf")


# -- 1. SIGTERM -------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_sigterm_saves_the_step_exits_143_and_resumes_bitwise(tmp_path: Path) -> None:
    extra = ("train.ckpt_every_n_steps=4", "network.dropout=0.1", "train.ema_decay=0.9")
    full = train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=full", *extra, steps=12))
    with pytest.raises(RunInterrupted) as info:
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=stopped", *extra, steps=12), extra_callbacks=[Signal(6)])
    stopped = tmp_path / "runs" / "stopped"
    assert info.value.exit_status == 143
    assert "--resume" in str(info.value) and "step 7" in str(info.value)
    assert load_checkpoint(stopped / "checkpoints" / "last.ckpt")["global_step"] == 7  # the step that was running
    train(None, [], resume=str(stopped))
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt") for r in (full, stopped))
    assert a["global_step"] == b["global_step"] == 12
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.e2e
def test_sigterm_from_outside_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "anyorder.cli", "train", str(MARKOV_CONFIG),
            *tiny_markov(tmp_path, "name=job", "train.ckpt_every_n_steps=2", "train.val_every_n_steps=1000",
                         steps=100000)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "runs" / "job" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("anyorder train: error:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0]
    assert load_checkpoint(ckpt)["global_step"] >= 2


# -- 2. non-finite update ---------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_non_finite_update_is_never_checkpointed(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="non-finite") as info:
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=nan", "train.ckpt_every_n_steps=1",
                                              "train.ema_decay=0.9", "train.grad_clip=0", steps=6),
              extra_callbacks=[Blowup(2)])
    assert "last.ckpt still holds the last good state" in str(info.value)
    state = load_checkpoint(tmp_path / "runs" / "nan" / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values() if v.is_floating_point())
    assert all(bool(torch.isfinite(v).all()) for v in state["anyorder"]["ema"]["shadow"].values())


# -- 3. run directories -----------------------------------------------------------------------------------------------
def _claim(args: tuple[str, str, str]) -> str:
    output_dir, name, start = args
    overrides = [f"output_dir={output_dir}", "logger.name=csv"] + ([f"name={name}"] if name else [])
    cfg = load_config(str(MARKOV_CONFIG), overrides)
    while time.time() < float(start):
        pass
    try:
        return str(create_run_dir(cfg, ["test"]))
    except RunError:
        return "refused"


@pytest.mark.parametrize("name", ["same", ""])
def test_run_directories_are_claimed_atomically(tmp_path: Path, name: str) -> None:
    start = str(time.time() + 2.0)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_claim, [(str(tmp_path), name, start)] * 4)
    claimed = [r for r in results if r != "refused"]
    if name:  # one winner; the others are told the run exists
        assert len(claimed) == 1 and results.count("refused") == 3
    else:  # unnamed runs of the same second get distinct names
        assert len(set(claimed)) == 4
    for run in claimed:
        assert (Path(run) / "config.yaml").is_file()


def test_other_nodes_find_a_named_run_and_need_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(str(MARKOV_CONFIG), [f"output_dir={tmp_path}", "name=multi"])
    run = create_run_dir(cfg, ["node0"])
    monkeypatch.setenv("NODE_RANK", "1")
    assert not is_launch_rank_zero()
    assert wait_for_run_dir(load_config(str(MARKOV_CONFIG), [f"output_dir={tmp_path}", "name=multi"])) == run
    with pytest.raises(RunError, match="name=RUN on every node"):
        wait_for_run_dir(load_config(str(MARKOV_CONFIG), [f"output_dir={tmp_path}"]))


@pytest.mark.e2e
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tmp_path: Path) -> None:
    class Crash(L.Callback):
        def on_train_batch_start(self, *args: object) -> None:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=early", steps=4), extra_callbacks=[Crash()])
    run = tmp_path / "runs" / "early"
    assert not list((run / "checkpoints").glob("*.ckpt"))
    train(None, [], resume=str(run))
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4


# -- 4. writes --------------------------------------------------------------------------------------------------------
def test_writes_refuse_non_files_follow_links_and_honour_the_umask(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a regular file"):
        write_text("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(RunError, match="directory"):
        write_text(tmp_path, "x")
    target = tmp_path / "target.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "shared.txt", "x")
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "shared.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "private.txt").st_mode) == 0o600


def test_temp_files_of_a_killed_writer_are_cleaned_up(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    code = ("import os, sys; from anyorder.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as f:\n    f.write('half'); f.flush(); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.txt")], check=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "the killed write left no temp file"
    write_text(tmp_path / "other.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


def test_a_full_disk_keeps_the_previous_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"good")

    def full(f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    with pytest.raises(RunError, match="No space left on device.*unchanged"):
        write_with(path, full)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    with pytest.raises(RunError, match="not a directory"), atomic_open(path / "x.txt"):
        pass


# -- 5. checkpoint integrity ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    return train(str(MARKOV_CONFIG), tiny_markov(tmp, "name=r", steps=6))


def test_damaged_checkpoints_are_refused(trained: Path, tmp_path: Path) -> None:
    source = (trained / "checkpoints" / "last.ckpt").read_bytes()
    reference = load_checkpoint(trained / "checkpoints" / "last.ckpt")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "best.ckpt").write_bytes(source)
    rng = random.Random(0)
    refused = 0
    for _ in range(60):
        data = bytearray(source)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        (folder / "last.ckpt").write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(folder / "last.ckpt")
        except RunError as exc:
            refused += 1
            assert "last.ckpt" in str(exc) and "best.ckpt" in str(exc)
            continue
        # A flip that loads must have hit bytes without content (zip padding, a header field): nothing changed.
        for key, value in reference["state_dict"].items():
            assert torch.equal(loaded["state_dict"][key], value)
    assert refused >= 50


@pytest.mark.parametrize("overrides", [
    ["train.val_every_n_steps=0"], ["optim.lr=-1"], ["trainer.precision=bogus"], ["trainer.devices=0"],
    ["train.limit_val_batches=-1"], ["trainer.devices=3"], ["train.ckpt_every_n_steps=0"], ["sample.batch_size=0"],
    ["train.monitor=nll"],
])
def test_bad_settings_fail_in_a_second_before_the_run_directory(tmp_path: Path, overrides: list[str]) -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "anyorder.cli", "train", str(MARKOV_CONFIG),
                           *tiny_markov(tmp_path, "trainer.accelerator=cpu", *overrides)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert overrides[0].split("=")[0].split(".")[-1] in proc.stderr
    assert not (tmp_path / "runs").exists()
    assert time.monotonic() - start < 30  # no torch import, no Trainer (typically about a second)


@pytest.mark.e2e
def test_a_monitor_typo_fails_at_the_start_and_frees_the_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean val/nll"):
        train(str(MARKOV_CONFIG), tiny_markov(tmp_path, "name=typo", "train.monitor=val/nl"))
    assert not (tmp_path / "runs" / "typo").exists()


# -- 7. one line, exit status 2, for every error a user can cause -----------------------------------------------------
def _foreign(run: Path, tmp_path: Path) -> list[str]:
    import shutil

    copy = tmp_path / "foreign"
    shutil.copytree(run, copy)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, copy / "checkpoints" / "last.ckpt")
    return ["evaluate", str(copy)]


def _file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


BAD_INPUT = {
    "changed architecture, evaluate": (lambda run, tmp: ["evaluate", str(run), "network.d_model=32"], "do not fit"),
    "changed architecture, resume": (lambda run, tmp: ["train", "--resume", str(run), "network.d_model=32"],
                                     "do not fit"),
    "foreign checkpoint": (_foreign, "not a checkpoint written by"),
    "binary samples file": (lambda run, tmp: ["evaluate-samples", _file(tmp, "s.txt", b"ab\x00\x01"), "--dataset",
                                              "markov"], "binary"),
    "non-UTF-8 samples file": (lambda run, tmp: ["evaluate-samples", _file(tmp, "s.txt", b"caf\xe9\n"), "--dataset",
                                                 "markov"], "UTF-8"),
    "empty samples file": (lambda run, tmp: ["evaluate-samples", _file(tmp, "s.txt", b""), "--dataset", "markov"],
                           "holds no samples"),
    "decompress a missing file": (lambda run, tmp: ["decompress", str(run), str(tmp / "none.bin"), str(tmp / "o")],
                                  "does not exist"),
    "decompress a directory": (lambda run, tmp: ["decompress", str(run), str(tmp), str(tmp / "o")], "not a file"),
    "compress a missing input": (lambda run, tmp: ["compress", str(run), str(tmp / "none.txt"), str(tmp / "o")],
                                 "does not exist"),
    "output_dir is a file": (lambda run, tmp: ["train", str(MARKOV_CONFIG),
                                               *tiny_markov(tmp, f"output_dir={_file(tmp, 'f', b'')}")],
                             "not a directory"),
    "report over a device": (lambda run, tmp: ["evaluate", str(run), "--out", "/dev/null"], "not a regular file"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_with_status_2(case: str, trained: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    make, needle = BAD_INPUT[case]
    argv = make(trained, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("anyorder ")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.e2e
def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Through the CLI: the disk fills while the step-6 checkpoint is written; the step-3 one stays loadable."""
    real_save = torch.save

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if isinstance(obj, dict) and obj.get("global_step", 0) >= 6:
            f.write(b"partial")  # type: ignore[attr-defined]
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "save", save)
    capsys.readouterr()
    assert main(["train", str(MARKOV_CONFIG), *tiny_markov(tmp_path, "name=full")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("anyorder ")]
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert "Traceback" not in err
    checkpoints = tmp_path / "runs" / "full" / "checkpoints"
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 3
    assert not [p.name for p in checkpoints.iterdir() if p.name.endswith(".tmp")]


# -- 11. what a user sees on the way ----------------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_bar_counts_steps_and_no_tips_or_deprecation_noise(tmp_path: Path) -> None:
    args = tiny_markov(tmp_path, "name=seen", "logger.name=wandb", "logger.mode=offline",
                       "trainer.enable_progress_bar=true", steps=6)
    proc = subprocess.run([sys.executable, "-m", "anyorder.cli", "train", str(MARKOV_CONFIG), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "6/6" in out and "steps" in out
    assert "Epoch" not in out
    assert "litlogger" not in out and "litmodels" not in out
    assert "anonymous" not in out


# -- 9. a killed run's history --------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_history_up_to_the_last_checkpoint_survives_kill_9(tmp_path: Path) -> None:
    import json

    args = tiny_markov(tmp_path, "name=k", "logger.name=wandb", "logger.mode=offline", "train.ckpt_every_n_steps=4",
                       "train.val_every_n_steps=1000", steps=100000)
    proc = subprocess.Popen([sys.executable, "-m", "anyorder.cli", "train", str(MARKOV_CONFIG), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "k"
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=60)
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    records = [json.loads(line) for line in (run / "logs" / "history.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and "session" in records[0]
    logged = {r["step"] for r in records if "train/loss" in r}
    assert set(range(saved)) - logged <= {saved - 1}, (saved, sorted(set(range(saved)) - logged))
    train(None, [f"train.max_steps={saved + 3}"], resume=str(run))
    records = [json.loads(line) for line in (run / "logs" / "history.jsonl").read_text().splitlines()]
    sessions = [r for r in records if "session" in r]
    assert [s["step"] for s in sessions] == [0, saved]


# -- 10. the main job -------------------------------------------------------------------------------------------------
# The job takes 4 minutes alone on a fast machine and 15 on a slow shared one; the pytest limit leaves the subprocess
# time to fail with its own message.
MAIN_JOB_LIMIT_S = 2400


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_LIMIT_S + 300)
def test_the_main_job_shows_a_model_that_works(tmp_path: Path) -> None:
    """The README's first command, as it is: at least 80% valid molecules, and the pictures it names."""
    import json
    import re

    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = re.search(r"\.venv/bin/anyorder train (\S+)", readme)
    assert command is not None
    config = Path(__file__).resolve().parents[1] / command.group(1)
    proc = subprocess.run([sys.executable, "-m", "anyorder.cli", "train", str(config), f"output_dir={tmp_path}",
                           "name=main", "trainer.enable_progress_bar=false"],
                          capture_output=True, text=True, timeout=MAIN_JOB_LIMIT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = json.loads((tmp_path / "main" / "samples" / "final.txt.scores.json").read_text())
    assert scores["values"]["validity"] >= 0.80
    assert re.search(r"^validity\s+0\.(8|9)", proc.stdout, re.M)
    orders = tmp_path / "main" / "samples" / "final-orders.png"
    assert f"orders picture   {orders}" in proc.stdout
    assert Image.open(orders).size == (1280, 1280)  # a 4 x 4 grid: 16 molecules


# -- 12. a README a newcomer can read ---------------------------------------------------------------------------------
def test_the_readme_starts_with_what_to_run_and_links_the_reference_tables() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    first_screen = readme.split("\n## ")[1]  # the first section
    assert first_screen.startswith("Start here") and "anyorder train configs/" in first_screen
    assert "## Reference numbers" not in readme and "## Benchmarks" not in readme  # moved to docs/
    assert "docs/results.md" in readme
    results = (root / "docs" / "results.md").read_text()
    assert "## Reference numbers" in results and "## Benchmarks" in results
