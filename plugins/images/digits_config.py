"""Options of the ``digits`` dataset (a light module: no torch, numpy or scikit-learn import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

NUM_DIGITS = 1797
"""Images in scikit-learn's bundled digits data."""


def split_sizes(val_fraction: float, test_fraction: float, total: int = NUM_DIGITS) -> dict[str, int]:
    """Split sizes: ``round(total * fraction)`` images for val and for test, the rest for train."""
    n_val, n_test = round(total * val_fraction), round(total * test_fraction)
    return {"train": total - n_val - n_test, "val": n_val, "test": n_test}


@dataclass
class DigitsConfig(PluginConfig):
    """scikit-learn's 8x8 handwritten digits (``sklearn.datasets.load_digits``, bundled: nothing to download).

    1,797 images of 8x8 pixels with values 0..16: 64 variables of 17 levels, a ``grid`` of shape (8, 8). The label
    is not part of a datapoint. The splits come from one permutation seeded by ``split_seed``: its first
    ``round(1797 * test_fraction)`` images are test, the next ``round(1797 * val_fraction)`` validation, the rest
    training (1437/180/180 with the defaults); within a split the images keep their order in the source.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.images.digits:DigitsDataModule"

    split_seed: int = opt(0, "seed of the permutation that assigns images to train/val/test (numpy default_rng)")
    val_fraction: float = opt(0.1, "fraction of the 1,797 images held out for validation (rounded to a count)")
    test_fraction: float = opt(0.1, "fraction of the 1,797 images held out for test (rounded to a count)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split_seed < 0:
            raise ConfigError(f"digits: split_seed must not be negative (numpy seeds are >= 0; got {self.split_seed})")
        for key in ("val_fraction", "test_fraction"):
            value = float(getattr(self, key))
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"digits: {key} must be in [0, 1) (got {value})")
        sizes = split_sizes(self.val_fraction, self.test_fraction)
        if sizes["train"] < 1:
            raise ConfigError(
                f"digits: val_fraction + test_fraction leave no training images ({sizes}); lower one of them"
            )
