"""Options of the ``binarized_mnist`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

BASE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
FILE_SPLITS = {"train": "train", "val": "valid", "test": "test"}
"""Our split name -> the split name in the published file name ``binarized_mnist_{name}.amat``."""

# The SHA-256 digests of the published files as pinned by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/binarized_mnist.txt, with sizes 78,400,000 / 15,680,000 / 15,680,000 bytes).
TRAIN_SHA256 = "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"
VALID_SHA256 = "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"
TEST_SHA256 = "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def file_name(split: str) -> str:
    """The published file of one of our splits (train, val, test)."""
    return f"binarized_mnist_{FILE_SPLITS[split]}.amat"


@dataclass
class BinarizedMNISTConfig(PluginConfig):
    """The fixed binarization of MNIST by Larochelle & Murray (2011), the standard benchmark of discrete image models.

    Three published files, ``binarized_mnist_{train,valid,test}.amat``, hold 50,000 / 10,000 / 10,000 rows of 784
    space-separated 0/1 pixels; they are the train / val / test splits as published (nothing is drawn at random).
    Each file is fetched from the cache, the mirror directory or ``base_url`` and verified against its SHA-256
    option. The defaults are the digests pinned by TensorFlow Datasets; a digest set to ``""`` is refused with an
    error that says how to compute it (``sha256sum binarized_mnist_train.amat``). The parsed pixels are cached
    beside the files as ``.npy`` arrays keyed on the file digests.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.images.binarized_mnist:BinarizedMNISTDataModule"

    base_url: str = opt(BASE_URL, "directory URL of the binarized_mnist_{train,valid,test}.amat files")
    sha256_train: str = opt(TRAIN_SHA256, "SHA-256 of binarized_mnist_train.amat (50,000 rows)")
    sha256_valid: str = opt(VALID_SHA256, "SHA-256 of binarized_mnist_valid.amat (10,000 rows; the val split)")
    sha256_test: str = opt(TEST_SHA256, "SHA-256 of binarized_mnist_test.amat (10,000 rows)")
    mirror: str = opt("", "local directory holding the .amat files (offline use); empty means $ANYORDER_DATA_MIRROR")

    def sha256_option(self, split: str) -> str:
        """The name of the option that holds the digest of ``split``'s file."""
        return f"sha256_{FILE_SPLITS[split]}"

    def sha256(self, split: str) -> str:
        """The expected digest of ``split``'s file (lowercase)."""
        return str(getattr(self, self.sha256_option(split))).strip().lower()

    def __post_init__(self) -> None:
        super().__post_init__()
        for split in FILE_SPLITS:
            key, value = self.sha256_option(split), str(getattr(self, self.sha256_option(split))).strip()
            if not value:
                raise ConfigError(
                    f"binarized_mnist: data.{key} is empty, and {file_name(split)} is never used unverified. Set "
                    f"data.{key} to the file's SHA-256: run `sha256sum {file_name(split)}` on a copy you trust"
                )
            if not _SHA256_RE.match(value):
                raise ConfigError(
                    f"binarized_mnist: data.{key} must be 64 hex digits (got {value!r}); compute it with "
                    f"`sha256sum {file_name(split)}`"
                )
