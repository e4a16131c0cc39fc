"""The ``char_text`` dataset: vocabulary, positional splits, chunking, round trips, errors and tiny-shakespeare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anyorder.downloads import CACHE_ENV, MIRROR_ENV, sha256_file
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.char_text.config import TINY_SHAKESPEARE_SHA256, CharTextConfig
from anyorder_plugins.char_text.data import CharTextDataModule

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Varied characters, Windows line ends (kept as is) and a character ("Z") that occurs only at the very end, in test.
TEXT = ("To be, or not to be: that is the question.\r\nWhether 'tis nobler in the mind to suffer\n" * 30) + "Z!"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's cache or mirror.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def _text_file(tmp_path: Path, text: str = TEXT, name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _module(**options: object) -> CharTextDataModule:
    return CharTextDataModule(CharTextConfig(**options), seed=0, global_batch_size=4)  # type: ignore[arg-type]


def _bounds(n: int, train: float = 0.9, val: float = 0.05) -> tuple[int, int]:
    return round(n * train), round(n * (train + val))


def test_vocabulary_is_the_sorted_characters_of_the_whole_file(tmp_path: Path) -> None:
    dm = _module(path=str(_text_file(tmp_path)), block_size=16)
    assert dm.vocab == tuple(sorted(set(TEXT)))
    assert "Z" in dm.vocab and "\r" in dm.vocab
    assert dm.space.vocab_size == len(set(TEXT)) and dm.space.num_variables == 16
    assert dm.space.structure == "sequence" and not dm.space.variable_length


def test_splits_are_contiguous_chunks_by_position(tmp_path: Path) -> None:
    block = 16
    dm = _module(path=str(_text_file(tmp_path)), block_size=block)
    n = len(TEXT)
    b1, b2 = _bounds(n)
    parts = {"train": TEXT[:b1], "val": TEXT[b1:b2], "test": TEXT[b2:]}
    for split, part in parts.items():
        ts = getattr(dm.splits, split)
        assert len(ts) == len(part) // block
        assert ts.tokens.dtype == torch.int64 and bool((ts.lengths == block).all())
        for i in range(len(ts)):
            assert dm.decode(ts.tokens[i], block) == part[i * block:(i + 1) * block]
        assert dm.splits.info["unused_chars"][split] == len(part) % block
    assert dm.splits.info["num_chars"] == n and dm.splits.info["split_chars"]["val"] == b2 - b1


def test_round_trip(tmp_path: Path) -> None:
    dm = _module(path=str(_text_file(tmp_path)), block_size=24)
    for split in ("train", "val", "test"):
        tokens = getattr(dm.splits, split).tokens
        texts = [dm.decode(row, 24) for row in tokens]
        assert torch.equal(dm.encode(texts).tokens, tokens)
    assert dm.to_text(texts[0]) == texts[0]


def test_overlapping_training_chunks(tmp_path: Path) -> None:
    block, stride = 20, 7
    dm = _module(path=str(_text_file(tmp_path)), block_size=block, stride=stride)
    b1, b2 = _bounds(len(TEXT))
    train = dm.splits.train
    assert len(train) == (b1 - block) // stride + 1
    for i in (0, 1, len(train) - 1):
        assert dm.decode(train.tokens[i], block) == TEXT[i * stride:i * stride + block]
    assert len(dm.splits.val) == (b2 - b1) // block  # evaluation chunks never overlap
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (4, block)


def test_stride_zero_means_block_size(tmp_path: Path) -> None:
    a = _module(path=str(_text_file(tmp_path)), block_size=10)
    b = _module(path=str(_text_file(tmp_path)), block_size=10, stride=10)
    assert torch.equal(a.splits.train.tokens, b.splits.train.tokens)


def test_custom_split_fractions(tmp_path: Path) -> None:
    dm = _module(path=str(_text_file(tmp_path)), block_size=8, split={"train": 0.5, "val": 0.5, "test": 0.0})
    n = len(TEXT)
    assert len(dm.splits.train) == round(n * 0.5) // 8
    assert len(dm.splits.val) == (n - round(n * 0.5)) // 8
    assert len(dm.splits.test) == 0 and dm.splits.test.tokens.shape == (0, 8)


def test_fetch_through_a_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = _text_file(mirror, name="play.txt")
    dm = _module(url="http://127.0.0.1:9/unreachable.txt", sha256=sha256_file(source), filename="play.txt",
                 mirror=str(mirror), block_size=16)
    dm.prepare_data()
    cached = tmp_path / "cache" / "play.txt"
    assert cached.read_bytes() == source.read_bytes()
    assert dm.splits.info["source"] == str(cached)
    assert dm.decode(dm.splits.train.tokens[0], 16) == TEXT[:16]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*data.path"):
        _module(path=str(tmp_path / "nope.txt")).setup()


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        _module(path=str(_text_file(tmp_path, ""))).setup()


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(DataError, match="data.encoding"):
        _module(path=str(path), block_size=8).setup()
    dm = _module(path=str(path), block_size=8, encoding="latin-1", split={"train": 0.8, "val": 0.1, "test": 0.1})
    assert "\xe9" in dm.vocab


def test_block_size_longer_than_a_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"val part .* fewer than block_size 1000.*lower data.block_size"):
        _module(path=str(_text_file(tmp_path)), block_size=1000).setup()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"block_size": 0}, "block_size"),
        ({"stride": -1}, "stride"),
        ({"split": {"train": 0.9, "val": 0.2, "test": 0.05}}, "sum to 1"),
        ({"split": {"train": 0.9, "valid": 0.1}}, "keys train, val, test"),
        ({"split": {"train": 0.0, "val": 0.5, "test": 0.5}}, "split.train"),
        ({"url": "https://example.org/x.txt", "sha256": ""}, "data.sha256"),
        ({"url": "", "path": ""}, "data.path"),
    ],
)
def test_invalid_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _module(**options)


def test_encode_rejects_unknown_characters_and_wrong_lengths(tmp_path: Path) -> None:
    dm = _module(path=str(_text_file(tmp_path)), block_size=4)
    with pytest.raises(DataError, match="outside the vocabulary"):
        dm.encode(["#@#@"])
    with pytest.raises(DataError, match="has 3 characters"):
        dm.encode(["abc"])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no shared data mirror at {SHARED_DATA} (../shared/data "
                                                      "beside the repository)")
def test_tiny_shakespeare_default_through_the_shared_mirror(tmp_path: Path) -> None:
    if not (SHARED_DATA / "tiny_shakespeare.txt").is_file():
        pytest.skip(f"{SHARED_DATA} has no tiny_shakespeare.txt")
    dm = _module(mirror=str(SHARED_DATA))  # every other option at its default
    dm.prepare_data()
    cached = tmp_path / "cache" / "tiny_shakespeare.txt"
    assert sha256_file(cached) == TINY_SHAKESPEARE_SHA256
    info = dm.splits.info
    assert info["num_chars"] == 1_115_394
    assert dm.space.vocab_size == 65 and dm.space.num_variables == 256
    text = cached.read_text(encoding="utf-8")
    b1, b2 = _bounds(len(text))
    assert info["num_chunks"] == {"train": b1 // 256, "val": (b2 - b1) // 256, "test": (len(text) - b2) // 256}
    first = dm.decode(dm.splits.train.tokens[0], 256)
    assert first == text[:256] and first.startswith("First Citizen:")
    assert dm.decode(dm.splits.test.tokens[-1], 256) == text[b2 + (len(dm.splits.test) - 1) * 256:][:256]


def test_config_module_is_light() -> None:
    code = ("import sys, anyorder_plugins.char_text.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
