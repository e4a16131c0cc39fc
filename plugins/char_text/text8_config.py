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
TEXT8_ZIP_SHA1 = "6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e"
"""SHA-1 of text8.zip as pinned by GluonNLP (only a cross-check for a user establishing the SHA-256)."""
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

    **The SHA-256 of text8.zip is not built in**: no value could be established with certainty when this plugin
    was written, so ``sha256`` is required and a config without it is refused. To set it, download ``text8.zip``
    from ``url`` (31,344,016 bytes; GluonNLP pins its SHA-1 as ``6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e``, check
    it with ``sha1sum text8.zip``), then run ``sha256sum text8.zip`` and set ``data.sha256`` to its output.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.char_text.text8:Text8DataModule"

    # What CharTextDataModule reads from its options, fixed for text8.
    path: ClassVar[str] = ""
    filename: ClassVar[str] = TEXT8_ZIP
    encoding: ClassVar[str] = "ascii"

    sha256: str = opt("", "SHA-256 of text8.zip (required; run `sha256sum text8.zip` on a copy you trust)")
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

    def check(self) -> None:
        """Raise :class:`~anyorder.errors.ConfigError` for inconsistent options or a missing or malformed digest."""
        if self.block_size < 1:
            raise ConfigError(f"text8: block_size must be at least 1 (got {self.block_size})")
        if self.block_size > SPLIT_CHARS["val"]:
            raise ConfigError(f"text8: block_size must be at most {SPLIT_CHARS['val']} (the size of val and test; "
                              f"got {self.block_size})")
        if self.stride < 0:
            raise ConfigError(f"text8: stride must be 0 (= block_size) or positive (got {self.stride})")
        value = self.sha256.strip()
        if not value:
            raise ConfigError(
                "text8: data.sha256 must be set: this plugin has no built-in checksum of text8.zip and never uses it "
                "unverified. Download it from data.url (31,344,016 bytes; GluonNLP's SHA-1 is "
                f"{TEXT8_ZIP_SHA1}: check `sha1sum text8.zip`), then set data.sha256 to the output of "
                "`sha256sum text8.zip`"
            )
        if not _SHA256_RE.match(value):
            raise ConfigError(f"text8: data.sha256 must be 64 hex digits (got {value!r}); compute it with "
                              f"`sha256sum text8.zip`")

    def __post_init__(self) -> None:
        self.check()
