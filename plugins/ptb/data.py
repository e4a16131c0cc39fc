"""The ``ptb`` dataset: each line of Mikolov's Penn Treebank files is one variable-length datapoint of word ids.

How the splits are made: the three standard files are the three splits. A line's words are its whitespace-separated
tokens, as the file has them. The vocabulary is the distinct words of the training file (9,999 of them, ``<unk>``
included), ordered by decreasing frequency and then alphabetically, so that it never depends on a dict's order; a
word of the validation or test file outside it is an error (the standard files have none). The cap ``max_words``
filters every split before ``num_train`` subsamples the training split, and the sequence length of the space is the
longest kept sentence of the (unsubsampled) splits: subsampling for a test never changes the space.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.downloads import fetch
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.ptb.config import PTB_FILES, PTB_SHA256, UNK, PTBConfig

SPLITS = ("train", "val", "test")
_SUBSAMPLE_SEED = 0
"""Seed of the ``num_train`` subset: fixed (not the run's seed), so a given ``num_train`` always names the same
sentences and runs with different seeds see the same data."""


def read_sentences(path: Path) -> list[list[str]]:
    """The sentences of a PTB file: one per line, split on whitespace."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"ptb: {path} is not UTF-8 text ({exc})") from exc
    return [line.split() for line in text.splitlines()]


def build_vocab(sentences: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The distinct words of ``sentences`` by decreasing count, ties broken alphabetically."""
    counts = Counter(word for sentence in sentences for word in sentence)
    return tuple(sorted(counts, key=lambda w: (-counts[w], w)))


def to_token_set(sentences: Sequence[Sequence[str]], index: dict[str, int], max_len: int) -> TokenSet:
    """Sentences as a :class:`TokenSet` [N, max_len] of word ids, 0 past each length."""
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    flat = torch.tensor([index[w] for s in sentences for w in s], dtype=torch.long)
    tokens = torch.zeros(len(sentences), max_len, dtype=torch.long)
    if len(flat):
        # Scatter the concatenated words into their rows: row r's words go to columns 0..len_r-1.
        rows = torch.repeat_interleave(torch.arange(len(sentences)), lengths)
        starts = torch.cumsum(lengths, 0) - lengths
        cols = torch.arange(len(flat)) - torch.repeat_interleave(starts, lengths)
        tokens[rows, cols] = flat
    return TokenSet(tokens, lengths)


class PTBDataModule(DiscreteDataModule):
    """Penn Treebank sentences as variable-length sequences of word ids (no end token: objectives add EOS)."""

    Config = PTBConfig
    config: PTBConfig

    def __init__(self, config: PTBConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)

    # -- files ------------------------------------------------------------------------------------------------------
    def download(self) -> None:
        """Fetch the three files into the cache (verified)."""
        for split in SPLITS:
            self.source_path(split)

    def source_path(self, split: str) -> Path:
        """The verified local copy of ``split``'s file (fetching it if needed)."""
        c = self.config
        return fetch(PTB_FILES[split], url=c.url(split), sha256=PTB_SHA256[split], mirror=c.mirror or None)

    # -- splits -----------------------------------------------------------------------------------------------------
    def build(self) -> Splits:
        c = self.config
        sentences = {split: read_sentences(self.source_path(split)) for split in SPLITS}
        vocab = build_vocab(sentences["train"])
        index = {w: i for i, w in enumerate(vocab)}
        for split in ("val", "test"):
            unknown = sorted({w for s in sentences[split] for w in s} - index.keys())
            if unknown:
                raise DataError(f"ptb: {len(unknown)} words of {PTB_FILES[split]} are not in the vocabulary of "
                                f"{PTB_FILES['train']} (e.g. {unknown[:5]}); the files are not the standard ones")
        if UNK not in index:
            raise DataError(f"ptb: {PTB_FILES['train']} has no {UNK!r} word; it is not Mikolov's PTB")

        dropped = {split: 0 for split in SPLITS}
        if c.max_words:
            for split in SPLITS:
                kept = [s for s in sentences[split] if len(s) <= c.max_words]
                dropped[split] = len(sentences[split]) - len(kept)
                sentences[split] = kept
        empty = [split for split in SPLITS if not sentences[split]]
        if empty:
            raise ConfigError(f"ptb: data.max_words={c.max_words} leaves no sentence in {', '.join(empty)}; raise it")
        max_len = max(len(s) for split in SPLITS for s in sentences[split])

        num_train_total = len(sentences["train"])
        if c.num_train:
            if c.num_train > num_train_total:
                raise ConfigError(f"ptb: data.num_train={c.num_train} is more than the {num_train_total} training "
                                  f"sentences; lower it (or set 0 for all)")
            g = torch.Generator().manual_seed(_SUBSAMPLE_SEED)
            keep = torch.randperm(num_train_total, generator=g)[: c.num_train].sort().values.tolist()
            sentences["train"] = [sentences["train"][i] for i in keep]
        subsets: dict[str, list[int]] = {}
        if c.eval_subset:
            for split in ("val", "test"):
                total = len(sentences[split])
                if c.eval_subset < total:
                    g = torch.Generator().manual_seed(_SUBSAMPLE_SEED + 1)
                    subsets[split] = torch.randperm(total, generator=g)[: c.eval_subset].sort().values.tolist()
                    sentences[split] = [sentences[split][i] for i in subsets[split]]

        sets = {split: to_token_set(sentences[split], index, max_len) for split in SPLITS}
        counts = {}
        for split in SPLITS:
            n, words = len(sets[split]), int(sets[split].lengths.sum())
            counts[split] = {"sentences": n, "words": words, "tokens": words + n}
        info = {
            "dataset": "ptb",
            "files": {split: {"file": PTB_FILES[split], "sha256": PTB_SHA256[split], "url": c.url(split)}
                      for split in SPLITS},
            "tokenisation": "whitespace, as in the files (one sentence per line)",
            "vocab_size": len(vocab),
            "vocab": f"the distinct words of {PTB_FILES['train']} ({UNK} included) by decreasing count, then "
                     f"alphabetically",
            "end_token": "none in the data: objectives add EOS after the last word, so tokens = words + sentences "
                         "(the data vocabulary plus EOS makes the usual 10k)",
            "counts": counts,
            "max_len": max_len,
            "max_words": c.max_words,
            "dropped_by_max_words": dropped,
            "num_train": c.num_train,
            "train_sentences_before_subsampling": num_train_total,
            "eval_subset": {split: {"size": len(rows), "indices_sha256": hashlib.sha256(
                ",".join(map(str, rows)).encode()).hexdigest(), "first_indices": rows[:10]}
                for split, rows in subsets.items()},
        }
        space = DataSpace.sequence(max_len, len(vocab), variable_length=True, token_names=vocab)
        return Splits(sets["train"], sets["val"], sets["test"], space, info)

    def protocol(self) -> dict[str, Any]:
        """The files and their digests, the vocabulary, the counts per split, the cap and the subsample."""
        return dict(self.splits.info)

    # -- domain objects ---------------------------------------------------------------------------------------------
    @property
    def vocab(self) -> tuple[str, ...]:
        """The words, in token-id order."""
        names = self.space.token_names
        assert names is not None
        return names

    def decode(self, tokens: Tensor, length: int) -> str:
        """The sentence: its words joined by single spaces."""
        vocab = self.vocab
        return " ".join(vocab[i] for i in tokens[:length].tolist())

    def to_text(self, obj: Any) -> str:
        """A sentence as its words joined by single spaces."""
        return " ".join(str(obj).split())

    def parse_text(self, text: str) -> str:
        """A sentence from text: its whitespace-separated words, each outside the vocabulary replaced by ``<unk>``
        (as the file's preprocessing did), joined by single spaces."""
        index = self._index()
        return " ".join(w if w in index else UNK for w in text.split())

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Sentences (strings, or sequences of words) as word ids; every word must be in the vocabulary (use
        :meth:`parse_text` first to map unknown words to ``<unk>``) and no sentence may exceed the space's length."""
        index, max_len = self._index(), self.space.num_variables
        sentences = []
        for i, obj in enumerate(objs):
            words = obj.split() if isinstance(obj, str) else [str(w) for w in obj]
            unknown = sorted(set(words) - index.keys())
            if unknown:
                raise DataError(f"ptb: sentence {i} has words outside the vocabulary: {unknown[:5]!r}")
            if len(words) > max_len:
                raise DataError(f"ptb: sentence {i} has {len(words)} words; the space holds at most {max_len}")
            sentences.append(words)
        return to_token_set(sentences, index, max_len)

    def _index(self) -> dict[str, int]:
        """Word -> id (built once)."""
        index: dict[str, int] | None = getattr(self, "_word_index", None)
        if index is None:
            index = {w: i for i, w in enumerate(self.vocab)}
            self._word_index = index
        return index

    def default_metrics(self) -> list[dict[str, Any]]:
        """Diversity (distinct word n-grams) and word n-gram statistics against the test sentences."""
        return [
            {"name": "distinct_ngrams", "n": [1, 2, 3]},
            {"name": "ngram_divergence", "n": [1, 2], "tokenize": "whitespace"},
        ]
