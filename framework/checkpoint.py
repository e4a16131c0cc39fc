"""Checkpoint files: written atomically, loaded without ever executing code from the file.

Loading uses ``torch.load(weights_only=True)``: the unpickler accepts tensors, containers and primitive types
only, so a tampered checkpoint cannot run code. Everything anyorder stores in a checkpoint is of those types.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from anyorder.atomic import write_with
from anyorder.errors import RunError


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe unpickler; a file that needs code to load is a :class:`RunError`."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RunError(
            f"refusing to load {str(path)!r}: it contains objects other than tensors and plain data, which "
            f"could run code when unpickled ({str(exc).splitlines()[0]}). Only load checkpoints written by anyorder."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise RunError(f"cannot read checkpoint {str(path)!r} (damaged or truncated?): {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RunError(f"{str(path)!r} is not an anyorder/Lightning checkpoint (no state_dict)")
    return ckpt


class SafeAtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes atomically (temp file + fsync + rename) and loads safely."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        write_with(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")
