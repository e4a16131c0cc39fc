"""Shared test setup: an isolated, offline environment for every test, and helpers for tiny runs.

* :func:`_isolated_env` (autouse) keeps every test away from the network and the user's home (see
  :func:`isolated_environment`).
* :func:`tiny_overrides` returns ``key=value`` overrides that make any markov run small and fast.
* :data:`REPO` is the repository root, e.g. to find ``configs/``; :data:`MARKOV_CONFIG` the markov config.

Torch runs one intra-op thread per process in tests (``OMP_NUM_THREADS=1`` unless already set, before torch is
imported, and inherited by subprocesses): test models are tiny, and on a small, busy machine a second OpenMP thread
turns a 10 µs matmul into a 10 ms spin-wait (a tiny run took 46 s instead of 14 s under load).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
"""The repository root (the directory holding ``framework/``, ``plugins/``, ``configs/`` and ``tests/``)."""

DATA_MIRROR = REPO.parent / "shared" / "data"
"""Where a checkout keeps local copies of the dataset files (``$ANYORDER_DATA_MIRROR`` in tests, when it exists)."""

MARKOV_CONFIG = REPO / "configs" / "markov" / "mle.yaml"
"""The markov config most tests train (made tiny with :func:`tiny_overrides`)."""

if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported before this file (by a pytest plugin): too late for the variable alone
        sys.modules["torch"].set_num_threads(1)

RUN_DIR_ENV = "ANYORDER_RUN_DIR"
"""``anyorder.runs.RUN_DIR_ENV``, spelled out so that this module imports nothing heavy."""


def tiny_overrides(tmp_path: Path, *, logger: str = "csv", max_steps: int = 4) -> list[str]:
    """Overrides that make a markov run tiny: runs go to ``tmp_path/runs``; a 1-layer, 32-wide network; sequences of
    16 tokens; 512 training and 64 validation/test sequences; ``max_steps`` steps of 16 sequences with a validation
    and a ``last`` checkpoint every 2 steps; 2 samples per validation.

    ``logger`` is ``logger.name`` (``csv`` by default: no W&B unless a test asks for it). Later overrides win, so a
    test can append its own.
    """
    return [
        f"output_dir={tmp_path / 'runs'}",
        f"logger.name={logger}",
        "network.n_layers=1", "network.d_model=32", "network.n_heads=2",
        "data.length=16", "data.num_train=512", "data.num_val=64", "data.num_test=64",
        f"train.max_steps={max_steps}", "train.global_batch_size=16", "train.val_every_n_steps=2",
        "train.ckpt_every_n_steps=2", "train.log_every_n_steps=1",
        "scheduler.warmup_steps=0",
        "sample.num_val_samples=2", "sample.batch_size=2",
        "trainer.enable_progress_bar=false",
    ]


def _wandb_teardown() -> None:
    # Only when wandb was imported already: importing it here would slow every light test down.
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()


@contextlib.contextmanager
def isolated_environment(root: Path, cache: Path) -> Iterator[None]:
    """Environment of a test (restored on exit): offline W&B writing under ``root``, no network for data.

    Sets WANDB_MODE=offline and WANDB_SILENT=true, points WANDB_DIR/WANDB_CACHE_DIR/WANDB_CONFIG_DIR/WANDB_DATA_DIR at
    subdirectories of ``root/_wandb``, ANYORDER_CACHE at ``cache``, ANYORDER_DATA_MIRROR at :data:`DATA_MIRROR` (when
    it exists) and MPLCONFIGDIR at ``root/_mpl``. ``wandb.teardown()`` runs on entry and exit, because wandb reads its
    settings once per process; the run directory that ``anyorder.train.train`` exports for the ranks it launches
    (ANYORDER_RUN_DIR) is cleared on entry and exit.

    Fixtures with a wider scope than a test (which run before the autouse fixture) use this directly.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var, sub in [("WANDB_DIR", "dir"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                         ("WANDB_DATA_DIR", "data")]:
            path = root / "_wandb" / sub
            path.mkdir(parents=True, exist_ok=True)
            mp.setenv(var, str(path))
        mp.setenv("ANYORDER_CACHE", str(cache))
        if DATA_MIRROR.is_dir():
            mp.setenv("ANYORDER_DATA_MIRROR", str(DATA_MIRROR))
        else:
            mp.delenv("ANYORDER_DATA_MIRROR", raising=False)
        mp.setenv("MPLCONFIGDIR", str(root / "_mpl"))
        os.environ.pop(RUN_DIR_ENV, None)
        _wandb_teardown()
        try:
            yield
        finally:
            _wandb_teardown()
            os.environ.pop(RUN_DIR_ENV, None)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset download cache for the whole session (``$ANYORDER_CACHE`` in every test)."""
    return tmp_path_factory.mktemp("anyorder-cache")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, session_cache: Path) -> Iterator[None]:
    """Every test runs in :func:`isolated_environment` rooted at its ``tmp_path``."""
    with isolated_environment(tmp_path, session_cache):
        yield
