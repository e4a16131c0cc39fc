"""Options of the ``text8`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_ZIP = "text8.zip"
TEXT8_MEMBER = "text8"
TEXT8_ZIP_BYTES = 31_344_016
"""Size of the published text8.zip (the size that many loaders check)."""
TEXT8_ZIP_SHA256 = "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232"
"""SHA-256 of the published text8.zip. Not published by its author; this is the value that independent public
projects pin (Python and Haskell loaders, each together with the size 31,344,016 bytes). GluonNLP pins the same
file by SHA-1 (6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e)."""
TEXT8_SHA256 = "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7"
"""SHA-256 of the extracted member ``text8`` (10^8 bytes), as pinned by several independent public projects: a
second, independent check that the text is the standard one."""
TEXT8_NUM_CHARS = 100_000_000
ALPHABET = " abcdefghijklmnopqrstuvwxyz"
"""The 27 symbols of text8 in token-id order (space is id 0, then a..z)."""
SPLIT_CHARS = {"train": 90_000_000, "val": 5_000_000, "test": 5_000_000}
"""The standard split by position: the first 90M characters train, the next 5M validation, the last 5M test."""

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass
class Text8Config(PluginConfig):
    """text8: the first 10^8 characters of a cleaned English Wikipedia dump (Mahoney), over 27 symbols (a-z, space).

    The standard split by position (90M train, 5M val, 5M test), each part cut into chunks of ``block_size``
    characters (250, as in the ARDM paper); training chunks may overlap with ``stride``.

    The zip is verified against ``sha256`` (built in: :data:`TEXT8_ZIP_SHA256`) and the extracted text against
    :data:`TEXT8_SHA256`, so a copy from anywhere (a mirror, a colleague) is the standard corpus or is refused.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.char_text.text8:Text8DataModule"

    # What CharTextDataModule reads from its options, fixed for text8.
    path: ClassVar[str] = ""
    filename: ClassVar[str] = TEXT8_ZIP
    encoding: ClassVar[str] = "ascii"

    sha256: str = opt(TEXT8_ZIP_SHA256, "SHA-256 of text8.zip (the built-in value is the published file's)")
    url: str = opt(TEXT8_URL, "where to download text8.zip when it is neither in the cache nor in the mirror")
    mirror: str = opt("", "local directory holding text8.zip (offline use); empty means $ANYORDER_DATA_MIRROR")
    block_size: int = opt(250, "characters per datapoint (the fixed sequence length)")
    stride: int = opt(0, "distance between the starts of training chunks; 0 means block_size (no overlap). "
                         "val and test chunks never overlap")

    @property
    def split(self) -> dict[str, float]:
        """The split fractions of the text by position (90% / 5% / 5%), as CharTextDataModule takes them."""
        return {name: chars / TEXT8_NUM_CHARS for name, chars in SPLIT_CHARS.items()}

    @property
    def train_stride(self) -> int:
        """The stride between training chunks (``stride``, or ``block_size`` when 0)."""
        return self.stride or self.block_size

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1:
            raise ConfigError(f"text8: block_size must be at least 1 (got {self.block_size})")
        if self.block_size > SPLIT_CHARS["val"]:
            raise ConfigError(f"text8: block_size must be at most {SPLIT_CHARS['val']} (the size of val and test; "
                              f"got {self.block_size})")
        if self.stride < 0:
            raise ConfigError(f"text8: stride must be 0 (= block_size) or positive (got {self.stride})")
        value = self.sha256.strip()
        if not _SHA256_RE.match(value):
            raise ConfigError(f"text8: data.sha256 must be 64 hex digits (got {value!r}); compute it with "
                              f"`sha256sum text8.zip`")
