"""The ``char_text`` dataset: a text file as fixed-length chunks of character ids.

How the splits are made: the whole text is cut by position into train | val | test (in that order, with the
``split`` fractions), then each part is cut into chunks of ``block_size`` characters starting at its first
character. Validation and test chunks never overlap; training chunks start every ``stride`` characters. The
characters after the last whole chunk of a part (fewer than ``block_size``, or than ``stride`` for training) are
dropped, so no datapoint is padded and no chunk crosses a split boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.downloads import fetch
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.char_text.config import SPLIT_NAMES, CharTextConfig


def char_codes(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as uint32 (vectorized: one encode, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def chunk(ids: Tensor, block_size: int, stride: int) -> Tensor:
    """Chunks [N, block_size] of the 1-D ``ids`` starting at 0, stride, 2*stride, ... (the tail is dropped).

    Non-overlapping chunks are a reshaped view; overlapping ones are an ``unfold`` view, so a small stride costs
    no memory beyond the text itself.
    """
    num = (len(ids) - block_size) // stride + 1 if len(ids) >= block_size else 0
    if stride == block_size:
        return ids[: num * block_size].reshape(num, block_size)
    if num == 0:
        return ids.new_empty((0, block_size))
    return ids.unfold(0, block_size, stride)


class CharTextDataModule(DiscreteDataModule):
    """Character-level modelling of a text file; the vocabulary is the file's sorted distinct characters."""

    Config = CharTextConfig
    config: CharTextConfig

    def __init__(self, config: CharTextConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)

    # -- files ------------------------------------------------------------------------------------------------------
    def download(self) -> None:
        """Fetch the file into the cache when it comes from a URL (nothing to do for a local ``path``)."""
        if not self.config.path:
            self._fetch()

    def _fetch(self) -> Path:
        c = self.config
        return fetch(c.filename, url=c.url, sha256=c.sha256, mirror=c.mirror or None)

    def source_path(self) -> Path:
        """The local file the text is read from (fetching it if needed)."""
        if not self.config.path:
            return self._fetch()
        path = Path(self.config.path).expanduser()
        if not path.is_file():
            raise DataError(
                f"char_text: the text file {str(path)!r} does not exist; set data.path to an existing file, or "
                f"leave data.path empty to fetch data.url"
            )
        return path

    def read_text(self) -> tuple[str, Path]:
        """The whole text, exactly as stored (no newline translation), and where it came from."""
        path = self.source_path()
        try:
            with open(path, encoding=self.config.encoding, newline="") as f:
                text = f.read()
        except UnicodeDecodeError as exc:
            raise DataError(
                f"char_text: {path} is not valid {self.config.encoding} text ({exc}); set data.encoding to the "
                f"file's encoding"
            ) from exc
        except LookupError as exc:
            raise ConfigError(f"char_text: unknown data.encoding {self.config.encoding!r}") from exc
        if not text:
            raise DataError(f"char_text: {path} is empty; point data.path (or data.url) at a non-empty text file")
        return text, path

    # -- splits -----------------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        c = self.config
        text, path = self.read_text()
        vocab = sorted(set(text))
        ids_np = np.searchsorted(char_codes("".join(vocab)), char_codes(text)).astype(np.int64)
        ids = torch.from_numpy(ids_np)

        n = len(text)
        f_train, f_val = float(c.split["train"]), float(c.split["val"])
        bounds = [0, round(n * f_train), min(n, round(n * (f_train + f_val))), n]
        sets: dict[str, TokenSet] = {}
        chars: dict[str, int] = {}
        unused: dict[str, int] = {}
        for i, split in enumerate(SPLIT_NAMES):
            part = ids[bounds[i]:bounds[i + 1]]
            if len(part) < c.block_size and float(c.split[split]) > 0:
                raise ConfigError(
                    f"char_text: the {split} part of {path.name} has {len(part)} characters, fewer than block_size "
                    f"{c.block_size}; lower data.block_size or raise data.split.{split}"
                )
            stride = c.train_stride if split == "train" else c.block_size
            tokens = chunk(part, c.block_size, stride)
            sets[split] = TokenSet.fixed(tokens)
            chars[split] = len(part)
            last_end = (len(tokens) - 1) * stride + c.block_size if len(tokens) else 0
            unused[split] = len(part) - last_end

        info = {
            "source": str(path), "num_chars": n, "vocab": "".join(vocab), "split_chars": chars,
            "unused_chars": unused, "num_chunks": {s: len(t) for s, t in sets.items()},
        }
        space = DataSpace.sequence(c.block_size, len(vocab), token_names=vocab)
        return Splits(sets["train"], sets["val"], sets["test"], space, info)

    # -- domain objects ---------------------------------------------------------------------------------------------
    @property
    def vocab(self) -> tuple[str, ...]:
        """The characters, in token-id order."""
        names = self.space.token_names
        assert names is not None
        return names

    def decode(self, tokens: Tensor, length: int) -> str:
        """The text of one datapoint."""
        vocab = self.vocab
        return "".join(vocab[i] for i in tokens[:length].tolist())

    def default_metrics(self) -> list[dict[str, Any]]:
        """Diversity (distinct words and word pairs) and n-gram statistics against the held-out test text, for
        characters (n = 1..4) and words (n = 1, 2)."""
        return [
            {"name": "distinct_ngrams", "n": [1, 2]},
            {"name": "ngram_divergence", "n": [1, 2, 3, 4], "tokenize": "char"},
            {"name": "ngram_divergence", "n": [1, 2], "tokenize": "whitespace"},
        ]

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Strings of exactly ``block_size`` characters of the vocabulary, as token ids."""
        vocab = self.vocab
        index = {ch: i for i, ch in enumerate(vocab)}
        rows = []
        for i, obj in enumerate(objs):
            s = str(obj)
            if len(s) != self.config.block_size:
                raise DataError(f"char_text: sample {i} has {len(s)} characters; the space has {self.config.block_size}")
            unknown = sorted(set(s) - index.keys())
            if unknown:
                raise DataError(f"char_text: sample {i} has characters outside the vocabulary: {unknown!r}")
            rows.append([index[ch] for ch in s])
        return TokenSet.fixed(torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.config.block_size))
