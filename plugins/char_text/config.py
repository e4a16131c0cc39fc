"""Options of the ``char_text`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class CharTextConfig(PluginConfig):
    """Character-level text: a text file cut by position into train/val/test, then into fixed-length chunks.

    The vocabulary is the sorted set of distinct characters of the whole file. Each split's part of the text is cut
    into chunks of ``block_size`` characters; the characters after the last whole chunk of a part are not used.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.char_text.data:CharTextDataModule"

    path: str = opt("", "a local text file; empty means fetch `filename` (from the cache, the mirror or `url`)")
    url: str = opt(TINY_SHAKESPEARE_URL, "where to download the file when `path` is empty")
    sha256: str = opt(TINY_SHAKESPEARE_SHA256, "SHA-256 that the fetched file must have (not used with `path`)")
    filename: str = opt("tiny_shakespeare.txt", "the file's name in the cache and in the mirror directory")
    mirror: str = opt("", "local directory holding `filename` (offline use); empty means $ANYORDER_DATA_MIRROR")
    encoding: str = opt("utf-8", "text encoding of the file")
    block_size: int = opt(256, "characters per datapoint (the fixed sequence length)")
    split: dict[str, float] = opt(
        {"train": 0.9, "val": 0.05, "test": 0.05},
        "fractions of the text (by position, in this order) for train, val and test; they sum to 1",
    )
    stride: int = opt(0, "distance between the starts of training chunks; 0 means block_size (no overlap). "
                         "val and test chunks never overlap")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1:
            raise ConfigError(f"char_text: block_size must be at least 1 (got {self.block_size})")
        if self.stride < 0:
            raise ConfigError(f"char_text: stride must be 0 (= block_size) or positive (got {self.stride})")
        if set(self.split) != set(SPLIT_NAMES):
            raise ConfigError(f"char_text: split must have exactly the keys train, val, test (got {sorted(self.split)})")
        if any(not (0.0 <= float(f) <= 1.0) for f in self.split.values()):
            raise ConfigError(f"char_text: every split fraction must be in [0, 1] (got {dict(self.split)})")
        if not math.isclose(sum(float(f) for f in self.split.values()), 1.0, abs_tol=1e-6):
            raise ConfigError(
                f"char_text: the split fractions must sum to 1 (got {dict(self.split)}); when you change one, "
                f"lower another by as much"
            )
        if float(self.split["train"]) <= 0.0:
            raise ConfigError("char_text: split.train must be positive")
        if not self.path and not self.url:
            raise ConfigError("char_text: set data.path to a local text file, or data.url (with data.sha256)")
        if not self.path and not self.filename:
            raise ConfigError("char_text: data.filename (the file's name in the cache and mirror) must not be empty")
        if not self.path and not self.sha256:
            raise ConfigError(
                f"char_text: data.sha256 is needed to verify the download of {self.url}; set it to the file's "
                f"SHA-256 (`sha256sum FILE`), or download the file yourself and set data.path"
            )

    @property
    def train_stride(self) -> int:
        """The stride between training chunks (``stride``, or ``block_size`` when 0)."""
        return self.stride or self.block_size
