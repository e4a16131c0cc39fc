"""Read W&B run files (``run-<id>.wandb``) without the network: history, summary, config, tags and completeness.

An offline W&B run (``WANDB_MODE=offline``, what anyorder uses when no API key is configured) keeps everything it
logged in one transaction log, ``<run_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``; wandb 0.31 writes no
summary or config JSON beside it. This test helper reads that file back, so tests can check what a run logged (or
a developer can inspect it before ``wandb sync``, with ``tests/`` on ``sys.path``)::

    from wandb_offline import find_run_files, read_run

    for path in find_run_files("runs/markov-mle-20250101-120000/wandb"):
        run = read_run(path)
        print(run.run_id, run.complete, run.values("val/nll"))

The file format, as written by wandb's core: a 7-byte header (``b":W&B"``, the magic ``0xBEE1`` little-endian and a
version byte, 0), then the LevelDB log format: the file is cut into 32 KiB blocks, and each chunk in a block has a
7-byte header (CRC-32 of the type byte and the payload, little-endian uint32; payload length, uint16; type: 1 a whole
record, 2/3/4 the first/middle/last piece of a record split over blocks) followed by its payload. A block's tail too
short for a chunk header is zero padding. Each reassembled record is a serialized
``wandb.proto.wandb_internal_pb2.Record`` protobuf; only the protobuf classes of the installed wandb are used.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyorder.errors import RunError

MAGIC = b":W&B"
"""The first four bytes of a W&B run file."""

HEADER_IDENT = 0xBEE1
"""The 16-bit magic number after :data:`MAGIC` (little-endian)."""

HEADER_VERSION = 0
"""The only file version this reader knows."""

HEADER_SIZE = 7
"""Bytes in the file header: :data:`MAGIC`, the 16-bit magic number and the version byte."""

BLOCK_SIZE = 32 * 1024
"""Size of the blocks the log is cut into (LevelDB log format)."""

CHUNK_HEADER_SIZE = 7
"""Bytes in a chunk header: CRC-32 (4), payload length (2), chunk type (1)."""

FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
"""Chunk types: a whole record, or the first, a middle or the last piece of a record split over blocks."""

_CHUNK_HEADER = struct.Struct("<IHB")
_FILE_HEADER = struct.Struct("<4sHB")


@dataclass
class OfflineRun:
    """What one W&B run file holds.

    ``history`` has one dict per logged row (``wandb.log`` call), in order, with wandb's own keys (``_step``,
    ``_runtime``, ``_timestamp``) and the step Lightning logged at (``trainer/global_step``) beside the metrics;
    media such as tables are dicts describing the file wandb wrote (``{"_type": "table-file", "path": ...}``).
    ``summary`` is the last value of each key, ``config`` the run config without W&B's own ``_wandb`` entry.
    ``complete`` is True when the file holds an exit record, i.e. the run was finished (``wandb.finish``) and the
    file was flushed; ``exit_code`` is that record's exit code. ``resumed`` and ``starting_step`` are what the run
    record says (an offline run cannot know about earlier parts of the same run: both stay unset there).
    """

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    display_name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    starting_step: int = 0
    complete: bool = False
    exit_code: int | None = None

    def values(self, key: str, step_key: str = "trainer/global_step") -> list[tuple[Any, Any]]:
        """``(step, value)`` for every history row that has ``key``, in order. The step is the row's ``step_key``
        (by default the step Lightning's ``WandbLogger`` logged the row at), or W&B's ``_step`` where the row has no
        ``step_key``."""
        return [(row.get(step_key, row.get("_step")), row[key]) for row in self.history if key in row]


def find_run_files(wandb_dir: str | Path) -> list[Path]:
    """The run files (``*/run-*.wandb``) under a ``wandb`` directory, oldest first.

    ``wandb_dir`` may also be a directory that holds a ``wandb`` directory, such as an anyorder run directory. The
    ``latest-run`` link is skipped, so each file is listed once. Files are ordered by the start time in their run
    directory's name, then by the start time in the file's run record (which has nanoseconds), then by modification
    time.
    """
    root = Path(wandb_dir)
    if not root.is_dir():
        raise RunError(f"{str(root)!r} is not a directory, so it holds no W&B run files")
    if (root / "wandb").is_dir():
        root = root / "wandb"
    files = [p for p in root.glob("*/run-*.wandb") if p.is_file() and not p.parent.is_symlink()]
    # The directory time stamp has whole seconds: a run and its resume can share one, and W&B may still be writing
    # the first file when the second starts, so modification times alone can put them in the wrong order.
    return sorted(files, key=lambda p: (_start_time(p.parent.name), _recorded_start(p), p.stat().st_mtime_ns, str(p)))


def _recorded_start(path: Path) -> tuple[int, int]:
    """(seconds, nanoseconds) of the start time in the file's first run record; (0, 0) when it has none or cannot
    be read."""
    try:
        for record in iter_records(path):
            if record.WhichOneof("record_type") == "run":
                return int(record.run.start_time.seconds), int(record.run.start_time.nanos)
    except RunError:
        pass
    return 0, 0


def _start_time(dirname: str) -> str:
    # "offline-run-20250101_120000-abc123" or "run-20250101_120000-abc123": the time stamp sorts as text.
    parts = dirname.split("-")
    return parts[-2] if len(parts) >= 3 else dirname


def _check_header(data: bytes, path: Path) -> None:
    if len(data) < HEADER_SIZE:
        raise RunError(f"{str(path)!r} is not a W&B run file: it has {len(data)} bytes, fewer than the "
                       f"{HEADER_SIZE}-byte header")
    magic, ident, version = _FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC or ident != HEADER_IDENT:
        raise RunError(f"{str(path)!r} is not a W&B run file: it starts with {data[:HEADER_SIZE]!r}, not "
                       f"{MAGIC!r} followed by the magic number 0x{HEADER_IDENT:04X}")
    if version != HEADER_VERSION:
        raise RunError(f"{str(path)!r} is a W&B run file of version {version}; this reader knows version "
                       f"{HEADER_VERSION} only (a newer wandb may have written it)")


def iter_record_bytes(path: str | Path) -> Iterator[bytes]:
    """The serialized records of a W&B run file, in order.

    Raises :class:`~anyorder.errors.RunError` on a bad file header or a chunk whose checksum or type is wrong.
    A file that ends in the middle of a record (a run still being written, or killed) yields the complete records
    before that point.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"cannot read the W&B run file {str(path)!r}: {exc}") from exc
    _check_header(data, path)
    pos = HEADER_SIZE
    pending: bytearray | None = None  # pieces of a record split over blocks
    while pos + CHUNK_HEADER_SIZE <= len(data):
        room = BLOCK_SIZE - pos % BLOCK_SIZE
        if room < CHUNK_HEADER_SIZE:  # zero padding at the end of a block
            pos += room
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0 and crc == 0:
            # Zeros: space not written yet (or preallocated). Nothing after it in this block is a record.
            if any(data[pos:pos + room]):
                raise RunError(f"{str(path)!r}: damaged W&B run file (an empty chunk header at byte {pos} is "
                               "followed by data)")
            pos += room
            continue
        if length > room - CHUNK_HEADER_SIZE:
            raise RunError(f"{str(path)!r}: damaged W&B run file (the chunk at byte {pos} claims {length} bytes, "
                           f"more than the {room - CHUNK_HEADER_SIZE} left in its block)")
        chunk_at, start = pos, pos + CHUNK_HEADER_SIZE
        pos = start + length
        if pos > len(data):
            break  # the file ends inside this chunk: a record still being written
        payload = data[start:pos]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise RunError(f"{str(path)!r}: damaged W&B run file (checksum mismatch in the chunk at byte {chunk_at})")
        if kind == FULL:
            pending = None
            yield payload
        elif kind == FIRST:
            pending = bytearray(payload)
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise RunError(f"{str(path)!r}: damaged W&B run file (the continuation chunk at byte {chunk_at} "
                               "follows no first chunk)")
            pending += payload
            if kind == LAST:
                record, pending = bytes(pending), None
                yield record
        else:
            raise RunError(f"{str(path)!r}: damaged W&B run file (unknown chunk type {kind} at byte {chunk_at})")


def iter_records(path: str | Path) -> Iterator[Any]:
    """The records of a W&B run file as ``wandb.proto.wandb_internal_pb2.Record`` messages."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in iter_record_bytes(path):
        record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf classes have no stubs
        try:
            record.ParseFromString(raw)
        except DecodeError as exc:
            raise RunError(f"{str(path)!r}: a record is not a valid W&B protobuf message: {exc}") from exc
        yield record


def _json(text: str) -> Any:
    # wandb writes non-finite floats as the bare words NaN / Infinity / -Infinity, which json accepts.
    return json.loads(text) if text else None


def _history_value(item: Any) -> Any:
    """The value of a ``HistoryItem``: the typed field that is set, else ``value_json``."""
    which = item.WhichOneof("value")
    if which is None:
        return _json(item.value_json)
    if which == "none":
        return None
    if which == "json":
        return _json(item.json)
    value = getattr(item, which)
    return float(value) if which == "number" else value


def _path(item: Any) -> list[str]:
    """An item's key as a path: ``[key]``, or ``nested_key`` (wandb's core writes every key that way; the parts of a
    media value such as a table are one level deeper, e.g. ``["val/samples", "path"]``)."""
    return [item.key] if item.key else list(item.nested_key)


def _set_nested(target: dict[str, Any], item: Any, value: Any) -> None:
    node = target
    parts = _path(item)
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _del_nested(target: dict[str, Any], item: Any) -> None:
    parts = _path(item)
    node: Any = target
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _apply_config(config: dict[str, Any], record: Any) -> None:
    for item in record.update:
        _set_nested(config, item, _json(item.value_json))
    for item in record.remove:
        _del_nested(config, item)


def _apply_summary(summary: dict[str, Any], record: Any) -> None:
    for item in record.update:
        _set_nested(summary, item, _json(item.value_json))
    for item in record.remove:
        _del_nested(summary, item)


def _history_row(record: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in record.item:
        _set_nested(row, item, _history_value(item))
    row.setdefault("_step", int(record.step.num))
    return row


def read_run(path: str | Path) -> OfflineRun:
    """Everything one W&B run file holds, as an :class:`OfflineRun`.

    Raises :class:`~anyorder.errors.RunError` when ``path`` is not a W&B run file (bad header) or is damaged.
    """
    path = Path(path)
    run = OfflineRun(path=path)
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id = r.run_id or run.run_id
            run.project, run.entity = r.project or run.project, r.entity or run.entity
            run.display_name = r.display_name or run.display_name
            run.tags = list(r.tags)
            run.resumed = run.resumed or bool(r.resumed)
            run.starting_step = int(r.starting_step)
            _apply_config(run.config, r.config)
            _apply_summary(run.summary, r.summary)
        elif kind == "config":
            _apply_config(run.config, record.config)
        elif kind == "history":
            run.history.append(_history_row(record.history))
        elif kind == "summary":
            _apply_summary(run.summary, record.summary)
        elif kind == "exit":
            run.complete = True
            run.exit_code = int(record.exit.exit_code)
    run.config.pop("_wandb", None)
    return run

