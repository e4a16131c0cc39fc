"""Run directories: layout, the manifest (what produced the run) and the rank-0 rule for writing them.

Layout of ``<output_dir>/<name>/``::

    config.yaml          the resolved config (what `anyorder train --resume` reloads)
    manifest.json        package versions, git commits, seed, command lines, plugins and their distributions
    checkpoints/         last.ckpt (every train.ckpt_every_n_steps) and best.ckpt (lowest train.monitor)
    eval/                JSON written by `anyorder evaluate`, each with its protocol
    samples/             text written at validation and by `anyorder sample`
    logs/                CSV / TensorBoard logs; wandb/ holds the W&B run files
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anyorder.atomic import write_json, write_text
from anyorder.config import plugin_sections
from anyorder.errors import RunError
from anyorder.registry import REGISTRY

RUN_DIR_ENV = "ANYORDER_RUN_DIR"
"""Set by rank 0 for the processes Lightning launches, so every rank of a run uses one directory."""

PACKAGES = ("anyorder", "torch", "lightning", "torchmetrics", "omegaconf", "numpy", "wandb", "tensorboard")


_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "GROUP_RANK", "NODE_RANK", "LOCAL_RANK")


def is_launch_rank_zero() -> bool:
    """True in the process that owns the run directory: the one a user started on the first node. Launchers mark the
    others (torchrun: RANK, GROUP_RANK; srun: SLURM_PROCID; Lightning's own launcher: NODE_RANK, LOCAL_RANK)."""
    return all(os.environ.get(var, "0") == "0" for var in _RANK_VARIABLES)


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the stack (and ``extra`` distributions); ``"not installed"`` where missing."""
    out = {"python": platform.python_version()}
    for name in PACKAGES + extra:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(path: Path) -> dict[str, Any]:
    """Commit and dirtiness of the git checkout containing ``path``, or ``None`` values outside a checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def plugins_used(cfg: DictConfig) -> list[dict[str, str]]:
    """Kind, name, target, distribution, version and key path (``key``) of every plugin the config names, nested
    plugins (e.g. ``objective.divergence``) included."""
    out = []
    for ps in plugin_sections(cfg):
        info = REGISTRY.info(ps.kind, ps.section["name"])
        out.append({"kind": ps.kind, "name": info.name, "target": info.target, "distribution": info.distribution,
                    "version": info.version, "key": ps.key_path})
    return out


def invocation(argv: list[str]) -> dict[str, Any]:
    """One command that acted on the run: its command line, time, host and the git state of the code."""
    import anyorder

    return {
        "argv": list(argv),
        "cwd": os.getcwd(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "anyorder_git": git_state(Path(anyorder.__file__).resolve().parent),
        "cwd_git": git_state(Path.cwd()),
    }


def new_manifest(cfg: DictConfig, argv: list[str]) -> dict[str, Any]:
    """The manifest of a new run."""
    dists = tuple(sorted({p["distribution"] for p in plugins_used(cfg)} - {"anyorder", "<register()>"}))
    return {
        "format": 1,
        "seed": int(cfg.seed),
        "packages": package_versions(dists),
        "platform": platform.platform(),
        "plugins": plugins_used(cfg),
        "invocations": [invocation(argv)],
    }


def default_run_name(cfg: DictConfig) -> str:
    return f"{cfg.data.name}-{cfg.objective.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _claim(run_dir: Path) -> bool:
    """Claim ``run_dir`` for a new run: true for the one process whose ``mkdir`` of its ``checkpoints`` made it.

    ``mkdir`` is atomic, so of several processes that claim one directory at the same instant exactly one succeeds.
    An existing empty directory (made by hand) can be claimed; one that holds a run cannot.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir()
        return True
    except FileExistsError as exc:
        if not run_dir.is_dir():
            raise RunError(f"{str(run_dir)!r} exists and is not a directory; choose another name= or output_dir=") from exc
        return False
    except NotADirectoryError as exc:
        raise RunError(f"output_dir {str(run_dir.parent)!r} is not a directory; set output_dir= to a directory") from exc
    except OSError as exc:
        raise RunError(f"cannot create the run directory {str(run_dir)!r}: {exc.strerror or exc}; set output_dir= "
                       f"to a writable directory") from exc


def create_run_dir(cfg: DictConfig, argv: list[str]) -> Path:
    """Claim ``output_dir/name`` (never reusing an existing run) and write config.yaml and manifest.json.

    A run without ``name`` is named ``<data>-<objective>-<time>``; when another run took that name in the same
    second, ``-2``, ``-3``, ... is appended. A named run that exists is refused.
    """
    base = cfg.name or default_run_name(cfg)
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        run_dir = Path(cfg.output_dir) / name
        if _claim(run_dir):
            break
        if cfg.name:
            raise RunError(
                f"run directory {str(run_dir)!r} already exists; resume it with `anyorder train --resume {run_dir}` "
                f"or choose another name= override"
            )
    else:
        raise RunError(f"could not find a free run name like {base!r} in {cfg.output_dir!r}; set name=")
    cfg.name = name
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "manifest.json", new_manifest(cfg, argv))
    return run_dir


def wait_for_run_dir(cfg: DictConfig, timeout_s: float = 600.0) -> Path:
    """The run directory that rank 0 (on another node) creates, once its config.yaml exists.

    Processes of the other nodes of a multi-node run cannot be told the directory by rank 0, so they find it by
    name: the run must be named (``name=`` on every node) and ``output_dir`` must be on a shared file system.
    """
    if not cfg.name:
        raise RunError("this process is not rank 0 of its run (another node of a multi-node run): give the run a "
                       "name with name=RUN on every node, so that all nodes use one run directory")
    run_dir = Path(cfg.output_dir) / str(cfg.name)
    deadline = time.monotonic() + timeout_s
    while not (run_dir / "config.yaml").is_file():
        if time.monotonic() > deadline:
            raise RunError(f"rank 0 did not create {str(run_dir)!r} within {timeout_s:.0f} s; is output_dir on a "
                           f"file system shared by all nodes?")
        time.sleep(0.5)
    return run_dir


def read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {str(path)!r}: {exc}") from exc


def append_invocation(run_dir: Path, argv: list[str]) -> None:
    """Record a resume (or another command) in the manifest."""
    path = run_dir / "manifest.json"
    manifest = read_json(path)
    manifest.setdefault("invocations", []).append(invocation(argv))
    manifest["packages_at_last_invocation"] = package_versions()
    write_json(path, manifest)


def require_run_dir(path: str | Path) -> Path:
    """A path that holds a run (config.yaml), or a :class:`RunError` explaining what is missing."""
    run_dir = Path(path)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{str(run_dir)!r} is not an anyorder run directory (no config.yaml)")
    return run_dir


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    """``checkpoints/<which>.ckpt``, which must exist."""
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        have = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.ckpt"))
        raise RunError(f"{str(path)!r} does not exist; this run has checkpoints: {', '.join(have) or '(none)'}")
    return path


def init_source(spec: str) -> Path:
    """The checkpoint named by ``train.init_from``: ``RUN``, ``RUN:last`` or ``RUN:best`` (it must exist)."""
    run, _, which = spec.rpartition(":")
    if which not in ("last", "best") or not run:
        run, which = spec, "last"
    try:
        return checkpoint_path(require_run_dir(run), which)
    except RunError as exc:
        raise RunError(f"train.init_from={spec!r}: {exc}") from exc


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
