"""The ``ptb`` dataset: the standard counts, vocabulary, round trips, the cap and subsample, and download errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anyorder.downloads import CACHE_ENV
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.ptb.config import (
    PTB_FILES,
    PTB_MAX_WORDS,
    PTB_SENTENCES,
    PTB_VOCAB_SIZE,
    PTB_WORDS,
    UNK,
    PTBConfig,
)
from anyorder_plugins.ptb.data import PTBDataModule

DATA_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_mirror = pytest.mark.skipif(not all((DATA_MIRROR / f).is_file() for f in PTB_FILES.values()),
                                  reason="the PTB files are not in the local data mirror")


def _module(**options: object) -> PTBDataModule:
    return PTBDataModule(PTBConfig(**options), seed=0, global_batch_size=4)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ptb() -> PTBDataModule:
    """The full dataset, built once (from the mirror the test environment points at)."""
    if not all((DATA_MIRROR / f).is_file() for f in PTB_FILES.values()):
        pytest.skip("the PTB files are not in the local data mirror")
    dm = PTBDataModule(PTBConfig(mirror=str(DATA_MIRROR)), seed=0, global_batch_size=4)
    dm.setup()
    return dm


@needs_mirror
def test_standard_counts(ptb: PTBDataModule) -> None:
    counts = ptb.protocol()["counts"]
    for split in ("train", "val", "test"):
        assert counts[split]["sentences"] == PTB_SENTENCES[split] == len(getattr(ptb.splits, split))
        assert counts[split]["words"] == PTB_WORDS[split]
        assert counts[split]["tokens"] == PTB_WORDS[split] + PTB_SENTENCES[split]
    assert (PTB_SENTENCES["train"], PTB_SENTENCES["val"], PTB_SENTENCES["test"]) == (42_068, 3_370, 3_761)
    # The number perplexities are reported over: test words plus one end per sentence.
    assert counts["test"]["words"] == 78_669 and counts["test"]["tokens"] == 82_430
    assert int(ptb.splits.test.lengths.sum()) + len(ptb.splits.test) == 82_430


@needs_mirror
def test_vocabulary_and_space(ptb: PTBDataModule) -> None:
    # The file's words are 9,999 types; the objective's EOS is the 10,000th of the usual "10k vocabulary".
    assert len(ptb.vocab) == PTB_VOCAB_SIZE == 9_999 and ptb.protocol()["vocab_size"] == 9_999
    assert UNK in ptb.vocab and "<eos>" not in ptb.vocab and "N" in ptb.vocab
    assert ptb.vocab[:3] == ("the", UNK, "N")  # by decreasing frequency
    space = ptb.space
    assert space.structure == "sequence" and space.variable_length and space.vocab_size == 9_999
    assert space.num_variables == PTB_MAX_WORDS == 82 == int(ptb.splits.train.lengths.max())
    for split in ("train", "val", "test"):
        ts = getattr(ptb.splits, split)
        pad = torch.arange(space.num_variables)[None] >= ts.lengths[:, None]
        assert ts.tokens.dtype == torch.int64 and not bool(ts.tokens[pad].any())
        assert bool((ts.lengths >= 1).all())


@needs_mirror
def test_sentences_are_the_lines_of_the_file(ptb: PTBDataModule) -> None:
    lines = (DATA_MIRROR / PTB_FILES["test"]).read_text().splitlines()
    test = ptb.splits.test
    for i in (0, 1, 1000, len(lines) - 1):
        assert ptb.decode(test.tokens[i], int(test.lengths[i])) == " ".join(lines[i].split())
    assert ptb.decode(test.tokens[0], int(test.lengths[0])) == "no it was n't black monday"


@needs_mirror
def test_round_trip(ptb: PTBDataModule) -> None:
    val = ptb.splits.val
    texts = [ptb.to_text(ptb.decode(val.tokens[i], int(val.lengths[i]))) for i in range(len(val))]
    parsed = [ptb.parse_text(t) for t in texts]
    assert parsed == texts
    back = ptb.encode(parsed)
    assert torch.equal(back.tokens, val.tokens) and torch.equal(back.lengths, val.lengths)


@needs_mirror
def test_parse_text_maps_unknown_words_and_encode_is_strict(ptb: PTBDataModule) -> None:
    assert ptb.parse_text("  the  zyzzyva\tof N  ") == f"the {UNK} of N"
    with pytest.raises(DataError, match="outside the vocabulary"):
        ptb.encode(["the zyzzyva"])
    with pytest.raises(DataError, match="at most 82"):
        ptb.encode([" ".join(["the"] * 83)])
    empty = ptb.encode([""])
    assert int(empty.lengths[0]) == 0 and not bool(empty.tokens.any())


@needs_mirror
def test_cap_filters_every_split_and_is_recorded() -> None:
    dm = _module(mirror=str(DATA_MIRROR), max_words=20, num_train=500)
    info = dm.protocol()
    assert dm.space.num_variables == 20 and info["max_words"] == 20 and info["num_train"] == 500
    assert len(dm.splits.train) == 500 and bool((dm.splits.train.lengths <= 20).all())
    assert len(dm.vocab) == 9_999  # the vocabulary is always the whole training file's
    for split in ("val", "test"):
        kept = len(getattr(dm.splits, split))
        assert info["dropped_by_max_words"][split] > 0
        assert kept + info["dropped_by_max_words"][split] == PTB_SENTENCES[split]
    assert info["train_sentences_before_subsampling"] + info["dropped_by_max_words"]["train"] == PTB_SENTENCES["train"]
    again = _module(mirror=str(DATA_MIRROR), max_words=20, num_train=500)
    assert torch.equal(again.splits.train.tokens, dm.splits.train.tokens)  # a fixed subset


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="max_words"):
        PTBConfig(max_words=-1)
    with pytest.raises(ConfigError, match="num_train"):
        PTBConfig(num_train=-3)


def test_bad_checksum_in_mirror_is_a_one_line_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in PTB_FILES.values():
        (mirror / name).write_text(" the cat sat \n")
    dm = _module(mirror=str(mirror), base_url="")
    with pytest.raises(DataError) as info:
        dm.setup()
    message = str(info.value)
    assert "checksum mismatch" in message and "ptb.train.txt" in message and "\n" not in message
    assert not (tmp_path / "cache" / "ptb.train.txt").exists()


def test_options_module_imports_no_torch() -> None:
    code = "import sys\nimport anyorder_plugins.ptb.config\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
