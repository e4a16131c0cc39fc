"""A content-addressed disk store for the reference statistics of the molecule metrics.

Scoring samples is cheap next to preparing the reference (ChemNet over the test set, NSPDK features, SA/QED of
every test molecule); a run validates many times, and ``evaluate-samples`` is run once per sample file. The
statistics depend only on the reference SMILES, on the metric and its options, and on the code and packages that
compute them, so they are stored under a digest of exactly those:

* the metric's name and its option key (e.g. NSPDK's radius and distance), the split name;
* the SHA-256 of the reference SMILES, in order;
* the versions of RDKit, numpy and fcd_torch, and the SHA-256 of the metric definitions (``scoring.py``).

A changed reference set, option, package or definition gives a new file; nothing is ever invalidated by hand.
Files are ``.npz`` archives of plain numeric arrays, read with ``allow_pickle=False`` (a file cannot run code),
written atomically, and rebuilt with a warning when unreadable. They live in ``<anyorder cache>/molecules/
reference`` (``$ANYORDER_CACHE``, else ``~/.cache/anyorder``); ``ANYORDER_METRIC_REFERENCE_CACHE=0`` turns the
store off (the values are the same either way).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from anyorder.atomic import write_with
from anyorder.downloads import default_cache_dir

log = logging.getLogger(__name__)

DISABLE_ENV = "ANYORDER_METRIC_REFERENCE_CACHE"
"""Set to ``0`` to compute reference statistics in memory only."""

Arrays = dict[str, np.ndarray]


def store_dir() -> Path:
    """The directory of the stored reference statistics."""
    return default_cache_dir() / "molecules" / "reference"


def enabled() -> bool:
    """Whether the disk store is used (``$ANYORDER_METRIC_REFERENCE_CACHE`` is not ``0``)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the metric definitions (``scoring.py``) and of this file's format."""
    from anyorder_plugins.molecules.metrics import scoring

    digest = hashlib.sha256(b"reference-store-v1\x00")
    digest.update(Path(scoring.__file__).read_bytes())
    return digest.hexdigest()


def smiles_digest(smiles: Sequence[str]) -> str:
    """SHA-256 of a list of SMILES, in order."""
    digest = hashlib.sha256()
    for s in smiles:
        digest.update(s.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def key(metric: str, option_key: Any, split: str, smiles: Sequence[str]) -> str:
    """The digest naming the statistics of ``metric`` (with ``option_key``) over the reference ``smiles``."""
    from rdkit import rdBase

    payload = {
        "metric": metric, "options": repr(option_key), "split": split, "smiles": smiles_digest(smiles),
        "count": len(smiles), "rdkit": rdBase.rdkitVersion, "numpy": np.__version__,
        "fcd_torch": _version("fcd_torch"), "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load(path: Path) -> Arrays | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 -- a damaged file is rebuilt, not trusted
        log.warning("cannot read stored reference statistics %s (%s); recomputing them", path, exc)
        return None


def _save(path: Path, arrays: Arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub wants positional arrays

    def write(fh: IO[bytes]) -> None:
        fh.write(buffer.getvalue())

    try:
        write_with(path, write)
    except OSError as exc:  # a read-only cache costs time, never a result
        log.warning("cannot store reference statistics at %s (%s)", path, exc)


def cached(metric: str, option_key: Any, split: str, smiles: Sequence[str], build: Callable[[list[str]], Arrays],
           ) -> Arrays:
    """``build(smiles)``, read from the store when it holds the same statistics, else computed and stored."""
    if not enabled():
        return build(list(smiles))
    path = store_dir() / f"{metric}-{key(metric, option_key, split, smiles)[:32]}.npz"
    arrays = _load(path)
    if arrays is None:
        arrays = build(list(smiles))
        _save(path, arrays)
    return arrays
