"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file.

A write goes to a temp file beside the target, which is fsynced and renamed over it. The target must be a regular
file or not exist: a device, a pipe or a directory is refused (a rename would replace the node itself), and a
symbolic link is followed, so its target is written. New files get the usual ``0666 & ~umask`` mode. Temp files
left by a writer that was killed midway (their names carry the host and process id) are removed by the next write
into the same directory.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from anyorder.errors import RunError

_TEMP_SUFFIX = ".tmp"
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def writable_target(path: str | Path) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or where its symbolic link points. Raises
    :class:`RunError` when that is not a regular file (a device, a pipe, a directory, a socket)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        kind = "a directory" if path.is_dir() else "not a regular file (a device, a pipe or a socket)"
        raise RunError(f"refusing to write {str(path)!r}: it is {kind}; give the path of a file")
    return path


def _remove_stale_temps(directory: Path) -> None:
    """Remove the temp files of writers on this host whose process no longer exists."""
    prefix = f"{_host()}-"
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX) and f".{prefix}" in name):
            continue
        try:
            pid = int(name.split(f".{prefix}", 1)[1].split(".", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            Path(entry.path).unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue  # not ours to judge: another user's process, or a name we did not write


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``; on error remove it."""
    path = writable_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise RunError(f"cannot write {str(path)!r}: {str(path.parent)!r} is not a directory") from exc
    except OSError as exc:
        raise RunError(f"cannot create the directory of {str(path)!r}: {exc.strerror or exc}") from exc
    _remove_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=_TEMP_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise RunError(f"cannot write into {str(path.parent)!r}: {exc.strerror or exc}") from exc
    try:
        mode_bits = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
        os.fchmod(fd, mode_bits)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRORS:
            # A full disk or a directory that became unwritable: the previous file is intact (only the temp failed).
            raise RunError(f"cannot write {str(path)!r} ({exc.strerror or exc}); the previous version of the file, "
                           f"if any, is unchanged") from exc
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(binary_file)`` and commit the result atomically (e.g. ``torch.save``)."""
    with atomic_open(path, "wb") as f:
        writer(f)


def input_file(path: str | Path, what: str) -> Path:
    """``path`` if it is an existing regular file; else a :class:`RunError` naming ``what`` it should be."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise RunError(f"{what} {str(path)!r} is not a file" + (" (it is a directory)" if path.is_dir() else ""))
    return path


def read_text_input(path: str | Path, what: str) -> str:
    """The UTF-8 text of the input file ``path``; a missing, binary or non-UTF-8 file is a :class:`RunError`."""
    data = input_file(path, what).read_bytes()
    if b"\x00" in data:
        raise RunError(f"{what} {str(path)!r} is a binary file; give a text file (UTF-8, one item per line)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}); give a UTF-8 text file") from exc
