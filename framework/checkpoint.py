"""Checkpoint files: written atomically, loaded without ever executing code from the file, checked for damage.

Loading uses ``torch.load(weights_only=True)``: the unpickler accepts tensors, containers and primitive types
only, so a tampered checkpoint cannot run code. Everything anyorder stores in a checkpoint is of those types.

Each checkpoint carries a SHA-256 digest of its content (every tensor's dtype, shape and bytes, and every other
value), computed before it is written and checked when it is read: a flipped bit in the weights, which the file
format itself does not notice, is refused. Checkpoints written before the digest existed load without the check.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from anyorder.atomic import write_with
from anyorder.errors import RunError

DIGEST_KEY = "anyorder_digest"
"""The top-level checkpoint key of the content digest (``sha256:<hex>``)."""


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in sorted(obj.items(), key=lambda kv: repr(kv[0])):
            h.update(repr(key).encode())
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def content_digest(checkpoint: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a checkpoint's content, leaving out its own digest entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k != DIGEST_KEY})
    return f"sha256:{h.hexdigest()}"


def _others(path: Path) -> str:
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
    return f"the run's other checkpoints: {', '.join(others)}" if others else "the run has no other checkpoint"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe unpickler and check its digest; a file that needs code to load, or that is
    damaged, is a :class:`RunError`."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).splitlines() or [""]
        reason = next((line.strip() for line in lines if "Unsupported" in line or "global" in line), lines[0])
        raise RunError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain data, which could run "
            f"code when unpickled ({reason}); it is damaged or was not written by anyorder; {_others(path)}"
        ) from exc
    except Exception as exc:  # any decoding failure of a damaged or foreign file (zip, pickle, unicode, ...)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RunError(f"cannot read checkpoint {str(path)!r} (damaged, truncated or not a checkpoint: {first}); "
                       f"{_others(path)}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise RunError(f"{str(path)!r} is not a checkpoint written by `anyorder train` (no Lightning state_dict)")
    expected = ckpt.pop(DIGEST_KEY, None)
    if expected is not None and content_digest(ckpt) != expected:
        raise RunError(f"checkpoint {str(path)!r} is damaged: its content does not match the digest written with it; "
                       f"{_others(path)} (use one with --checkpoint, or resume from an intact copy)")
    return ckpt


class SafeAtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically (temp file + fsync + rename) and loads safely."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        stamped = {**checkpoint, DIGEST_KEY: content_digest(checkpoint)}
        write_with(path, lambda f: torch.save(stamped, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")
