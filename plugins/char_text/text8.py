"""The ``text8`` dataset: :class:`~anyorder_plugins.char_text.data.CharTextDataModule` over the text8 corpus.

What text8 adds to ``char_text``: ``text8.zip`` is fetched (SHA-256 verified by :func:`anyorder.downloads.fetch`),
its member ``text8`` is extracted once into the cache as ``text8-<zip sha256 prefix>.txt`` (written to a temporary
file, checked, then renamed: readers never see a partial or unchecked file), and checked to hold exactly 10^8
characters of the 27 symbols. The vocabulary is fixed to those 27 symbols (space = 0, a..z = 1..26) whatever a
file contains. Reading, the positional split (90M / 5M / 5M) and chunking are ``char_text``'s.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anyorder.atomic import atomic_open
from anyorder.data import DataSpace, Splits, TokenSet
from anyorder.downloads import default_cache_dir
from anyorder.errors import DataError
from anyorder_plugins.char_text.data import CharTextDataModule
from anyorder_plugins.char_text.text8_config import (
    ALPHABET,
    SPLIT_CHARS,
    TEXT8_MEMBER,
    TEXT8_NUM_CHARS,
    TEXT8_SHA256,
    TEXT8_URL,
    Text8Config,
)

_CHUNK = 1 << 20
_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = True


class Text8DataModule(CharTextDataModule):
    """text8 as fixed-length chunks over the 27 symbols, with the standard 90M / 5M / 5M positional split."""

    Config = Text8Config  # type: ignore[assignment]
    config: Text8Config  # type: ignore[assignment]
    num_chars: ClassVar[int] = TEXT8_NUM_CHARS
    """The exact length the extracted text must have (a test subclass sets a small one)."""
    text_sha256: ClassVar[str | None] = TEXT8_SHA256
    """The SHA-256 the extracted text must have (None: no check; only for a test subclass's synthetic text)."""

    def __init__(self, config: Text8Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)  # type: ignore[arg-type]

    # -- files ------------------------------------------------------------------------------------------------------
    def text_path(self) -> Path:
        """Where the extracted text lives in the cache (named after the zip's digest)."""
        return default_cache_dir() / f"text8-{self.config.sha256.strip().lower()[:32]}.txt"

    def download(self) -> None:
        """Fetch text8.zip and extract ``text8`` (nothing to do when the checked text is cached already)."""
        self.source_path()

    def source_path(self) -> Path:
        """The extracted, checked text file (fetching and extracting it if needed)."""
        target = self.text_path()
        if target.is_file() and target.stat().st_size == self.num_chars:
            return target
        return self.extract(self._fetch(), target)

    def extract(self, archive: Path, target: Path) -> Path:
        """Extract the member ``text8`` of ``archive`` to ``target`` atomically, checking length and alphabet."""
        try:
            with zipfile.ZipFile(archive) as zf:
                if TEXT8_MEMBER not in zf.namelist():
                    raise DataError(f"text8: {archive} has no member {TEXT8_MEMBER!r} (it holds {zf.namelist()[:5]})")
                with zf.open(TEXT8_MEMBER) as member, atomic_open(target, "wb") as out:
                    total, digest = 0, hashlib.sha256()
                    for chunk in iter(lambda: member.read(_CHUNK), b""):
                        data = np.frombuffer(chunk, dtype=np.uint8)
                        bad = ~_ALLOWED[data]
                        if bad.any():
                            pos = int(np.argmax(bad))
                            raise DataError(
                                f"text8: character {total + pos} of {TEXT8_MEMBER} in {archive} is "
                                f"{bytes(data[pos:pos + 1])!r}, not one of the 27 symbols a-z and space"
                            )
                        total += len(data)
                        if total > self.num_chars:
                            break
                        digest.update(chunk)
                        out.write(chunk)
                    if total != self.num_chars:
                        raise DataError(
                            f"text8: {TEXT8_MEMBER} in {archive} has {'more than ' if total > self.num_chars else ''}"
                            f"{total} characters, expected exactly {self.num_chars}"
                        )
                    if self.text_sha256 is not None and digest.hexdigest() != self.text_sha256:
                        raise DataError(
                            f"text8: {TEXT8_MEMBER} in {archive} has SHA-256 {digest.hexdigest()}, expected "
                            f"{self.text_sha256} (the standard text8); the zip is not the published text8.zip"
                        )
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
            raise DataError(f"text8: cannot extract {TEXT8_MEMBER} from {archive}: {exc}") from exc
        return target

    def read_text(self) -> tuple[str, Path]:
        """The whole text (checked to have exactly ``num_chars`` characters) and the file it came from."""
        text, path = super().read_text()
        if len(text) != self.num_chars:
            raise DataError(f"text8: {path} has {len(text)} characters, expected exactly {self.num_chars}; delete "
                            f"it to extract it again")
        return text, path

    # -- splits -----------------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        splits = super().build()
        info = splits.info
        present = str(info["vocab"])
        unknown = sorted(set(present) - set(ALPHABET))
        if unknown:
            raise DataError(f"text8: {info['source']} has characters outside a-z and space: {unknown!r}")
        scale = self.num_chars / TEXT8_NUM_CHARS
        expected = {split: round(chars * scale) for split, chars in SPLIT_CHARS.items()}
        if info["split_chars"] != expected:  # the char_text fractions must give the standard cut exactly
            raise DataError(f"text8: the split by position gave {info['split_chars']} characters, expected {expected}")
        if present != ALPHABET:
            # Some symbol never occurs (only possible in a file other than text8): map char_text's ids onto the
            # fixed vocabulary.
            lut = torch.tensor([ALPHABET.index(ch) for ch in present], dtype=torch.long)
            for split in ("train", "val", "test"):
                ts: TokenSet = getattr(splits, split)
                setattr(splits, split, TokenSet(lut[ts.tokens], ts.lengths))
        c = self.config
        splits.space = DataSpace.sequence(c.block_size, len(ALPHABET), token_names=tuple(ALPHABET))
        info.update({
            "dataset": "text8",
            "url": c.url or TEXT8_URL,
            "zip_sha256": c.sha256.strip().lower(),
            "vocab": ALPHABET,
            "split": "by position: characters [0, 90M) train, [90M, 95M) val, [95M, 100M) test",
            "block_size": c.block_size,
            "train_stride": c.train_stride,
        })
        return splits

    def protocol(self) -> dict[str, Any]:
        """The dataset, the zip's digest, the split by position, the chunking and the chunk counts."""
        return {k: v for k, v in self.splits.info.items() if k != "source"}
