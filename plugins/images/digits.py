"""The ``digits`` dataset: scikit-learn's bundled 8x8 handwritten digits as 64 pixels with 17 levels.

The source is ``sklearn.datasets.load_digits`` (the test part of the UCI "Optical Recognition of Handwritten Digits"
data: 1,797 images whose pixels count the set cells of a 4x4 block of a 32x32 bitmap, hence 0..16). Nothing is
downloaded. How the splits are made is in :class:`~anyorder_plugins.images.digits_config.DigitsConfig`; the
protocol records the seed, the sizes and the sha256 of the pixel data and of each split's source indices, so that
a change of the bundled data (or of the split) cannot go unnoticed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from anyorder.data import Splits, TokenSet
from anyorder.errors import DataError
from anyorder_plugins.images.digits_config import NUM_DIGITS, DigitsConfig, split_sizes
from anyorder_plugins.images.grid import GridImageDataModule

LEVELS = 17


def load_digit_images() -> np.ndarray:
    """The 1,797 images as ``uint8`` [1797, 8, 8] with values 0..16 (labels are dropped)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("digits: the dataset comes with scikit-learn; install it (`pip install scikit-learn`)") from exc
    images = np.asarray(load_digits().images)
    if images.shape != (NUM_DIGITS, 8, 8):
        raise DataError(f"digits: scikit-learn returned images of shape {images.shape}, expected ({NUM_DIGITS}, 8, 8)")
    if images.min() < 0 or images.max() > LEVELS - 1 or not np.array_equal(images, np.round(images)):
        raise DataError(f"digits: scikit-learn returned pixel values outside the whole numbers 0..{LEVELS - 1}")
    return images.astype(np.uint8)


def split_indices(seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Source indices of each split (sorted): test, then val, then train from one seeded permutation."""
    sizes = split_sizes(val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(NUM_DIGITS)
    n_test, n_val = sizes["test"], sizes["val"]
    parts = {"train": perm[n_test + n_val:], "val": perm[n_test:n_test + n_val], "test": perm[:n_test]}
    return {split: np.sort(idx).astype(np.int64) for split, idx in parts.items()}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class DigitsDataModule(GridImageDataModule):
    """The 8x8 digits, 17 grey levels, with a seeded train/val/test split."""

    Config = DigitsConfig
    config: DigitsConfig
    name = "digits"
    image_shape = (8, 8)
    levels = LEVELS

    def __init__(self, config: DigitsConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)

    def build(self) -> Splits:
        c = self.config
        images = load_digit_images()
        flat = torch.from_numpy(images.reshape(NUM_DIGITS, 64).astype(np.int64))
        indices = split_indices(c.split_seed, c.val_fraction, c.test_fraction)
        sets = {split: TokenSet.fixed(flat[torch.from_numpy(idx)]) for split, idx in indices.items()}
        try:
            import sklearn

            sklearn_version = sklearn.__version__
        except ImportError:  # pragma: no cover - load_digit_images needed it
            sklearn_version = "?"
        info = {
            "dataset": "digits",
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, 1,797 images)",
            "sklearn_version": sklearn_version,
            "data_sha256": _sha256(images),
            "shape": list(self.image_shape),
            "levels": LEVELS,
            "split": "seeded permutation (numpy default_rng(split_seed)): first test, then val, the rest train",
            "split_seed": c.split_seed,
            "split_sizes": {split: len(ts) for split, ts in sets.items()},
            "split_indices_sha256": {split: _sha256(idx) for split, idx in indices.items()},
            "labels": "not part of a datapoint",
        }
        return Splits(sets["train"], sets["val"], sets["test"], self.make_space(), info)

    def protocol(self) -> dict[str, Any]:
        """The dataset, its source and version, the split seed and sizes, and the data and split checksums."""
        return dict(self.splits.info)
