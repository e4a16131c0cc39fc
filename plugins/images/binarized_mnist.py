"""The ``binarized_mnist`` dataset: Larochelle & Murray's fixed binarization of MNIST as 28x28 binary grids.

Each ``.amat`` file is fetched with :func:`anyorder.downloads.fetch` (cache, mirror or URL; SHA-256 verified), parsed
once into a ``uint8`` [N, 784] array and cached as ``binarized_mnist_{split}-<sha256 prefix>.npy`` in the
``binarized_mnist`` folder of the cache directory, written atomically. The cache is keyed on the file's digest,
so a different file can never be read through a stale array; a damaged array is parsed again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyorder.atomic import atomic_open
from anyorder.data import Splits, TokenSet
from anyorder.downloads import default_cache_dir, fetch
from anyorder.errors import DataError
from anyorder_plugins.images.binarized_mnist_config import FILE_SPLITS, BinarizedMNISTConfig, file_name
from anyorder_plugins.images.grid import GridImageDataModule

PIXELS = 784
CACHE_FORMAT = "v1"
"""Part of the cached array's name: a change of the parsed format reparses."""

log = logging.getLogger(__name__)

_ZERO, _ONE = ord("0"), ord("1")
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True


def parse_amat(raw: bytes, name: str = "file") -> np.ndarray:
    """Rows of whitespace-separated 0/1 values (784 per non-empty line) as ``uint8`` [N, 784]."""
    data = np.frombuffer(raw, dtype=np.uint8)
    digit = (data == _ZERO) | (data == _ONE)
    bad = ~(digit | _WHITESPACE[data])
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(f"binarized_mnist: {name} has the byte {bytes(data[pos:pos + 1])!r} at offset {pos}; "
                        f"only 0, 1 and whitespace are expected")
    if (digit[1:] & digit[:-1]).any():
        pos = int(np.argmax(digit[1:] & digit[:-1]))
        raise DataError(f"binarized_mnist: {name} has a value of more than one digit at offset {pos}")
    # Values per line: the count of digits between consecutive line ends (a last line may lack its newline).
    ends = np.flatnonzero(data == ord("\n"))
    if len(data) and data[-1] != ord("\n"):
        ends = np.append(ends, len(data) - 1)
    counts = np.diff(np.concatenate([[0], np.cumsum(digit, dtype=np.int64)[ends]]))
    lines = np.flatnonzero(counts)  # blank lines are skipped
    wrong = counts[lines] != PIXELS
    if wrong.any():
        first = int(lines[np.argmax(wrong)])
        raise DataError(f"binarized_mnist: line {first + 1} of {name} has {int(counts[first])} values, expected "
                        f"{PIXELS}; the file is damaged or not a binarized MNIST .amat file")
    if not len(lines):
        raise DataError(f"binarized_mnist: {name} holds no rows")
    return (data[digit] - _ZERO).astype(np.uint8).reshape(len(lines), PIXELS)


def cache_dir() -> Path:
    """Where parsed arrays are cached: ``anyorder.downloads.default_cache_dir() / "binarized_mnist"``."""
    return default_cache_dir() / "binarized_mnist"


class BinarizedMNISTDataModule(GridImageDataModule):
    """28x28 binary images: the published train (50,000), valid (10,000, our val) and test (10,000) files."""

    Config = BinarizedMNISTConfig
    config: BinarizedMNISTConfig
    name = "binarized_mnist"
    image_shape = (28, 28)
    levels = 2

    def __init__(self, config: BinarizedMNISTConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)

    # -- files ------------------------------------------------------------------------------------------------------
    def fetch_file(self, split: str) -> Path:
        """A verified local copy of ``split``'s ``.amat`` file (from the cache, the mirror or the URL)."""
        c = self.config
        name = file_name(split)
        url = c.base_url.rstrip("/") + "/" + name if c.base_url else ""
        return fetch(name, url=url, sha256=c.sha256(split), mirror=c.mirror or None)

    def download(self) -> None:
        """Fetch the three files, unless their parsed arrays are cached already."""
        for split in FILE_SPLITS:
            if self._load_cached(self.array_path(split)) is None:
                self.fetch_file(split)

    def array_path(self, split: str) -> Path:
        """The cached parsed array of ``split`` (named after the file's digest)."""
        return cache_dir() / f"binarized_mnist_{FILE_SPLITS[split]}-{CACHE_FORMAT}-{self.config.sha256(split)[:32]}.npy"

    def _load_cached(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the cached array %s (%s); parsing the file again", path, exc)
            return None
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != PIXELS or (array.size and array.max() > 1):
            log.warning("the cached array %s has shape %s and dtype %s; parsing the file again", path, array.shape,
                        array.dtype)
            return None
        return array

    def load_split(self, split: str) -> np.ndarray:
        """``split`` as ``uint8`` [N, 784]: from the cached array, else fetched, parsed and cached (atomically)."""
        path = self.array_path(split)
        array = self._load_cached(path)
        if array is None:
            source = self.fetch_file(split)
            array = parse_amat(source.read_bytes(), source.name)
            with atomic_open(path, "wb") as f:
                np.save(f, array, allow_pickle=False)
        return array

    # -- splits -----------------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        c = self.config
        arrays = {split: self.load_split(split) for split in FILE_SPLITS}
        sets = {split: TokenSet.fixed(torch.from_numpy(a.astype(np.int64))) for split, a in arrays.items()}
        info = {
            "dataset": "binarized_mnist",
            "source": "fixed binarization of MNIST by Larochelle & Murray (2011)",
            "files": {split: file_name(split) for split in FILE_SPLITS},
            "sha256": {split: c.sha256(split) for split in FILE_SPLITS},
            "split": "as published: train = binarized_mnist_train, val = binarized_mnist_valid, "
                     "test = binarized_mnist_test (no random choice, no seed)",
            "split_sizes": {split: len(ts) for split, ts in sets.items()},
            "shape": list(self.image_shape),
            "levels": self.levels,
        }
        return Splits(sets["train"], sets["val"], sets["test"], self.make_space(), info)

    def protocol(self) -> dict[str, Any]:
        """The dataset, its files and their digests, the split convention and sizes."""
        return dict(self.splits.info)
