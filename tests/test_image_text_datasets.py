"""The ``digits``, ``binarized_mnist`` and ``text8`` datasets, offline: the real bundled digits, synthetic files."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anyorder.downloads import CACHE_ENV, MIRROR_ENV, sha256_file
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.char_text.text8 import Text8DataModule
from anyorder_plugins.char_text.text8_config import ALPHABET, TEXT8_ZIP_SHA256, Text8Config
from anyorder_plugins.images.binarized_mnist import BinarizedMNISTDataModule, parse_amat
from anyorder_plugins.images.binarized_mnist_config import BinarizedMNISTConfig
from anyorder_plugins.images.digits import DigitsDataModule
from anyorder_plugins.images.digits_config import DigitsConfig

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="the digits come with scikit-learn, which is not installed")

UNREACHABLE = "http://127.0.0.1:9/"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # A private cache and mirror per test: nothing is read from the user's files or the network.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    return mirror


# -- digits -----------------------------------------------------------------------------------------------------------


def _digits(**options: object) -> DigitsDataModule:
    return DigitsDataModule(DigitsConfig(**options), global_batch_size=8)  # type: ignore[arg-type]


@needs_sklearn
def test_digits_space_shapes_and_values() -> None:
    dm = _digits()
    space = dm.space
    assert space.structure == "grid" and space.shape == (8, 8)
    assert space.num_variables == 64 and space.vocab_sizes == (17,) * 64
    assert {s: len(getattr(dm.splits, s)) for s in ("train", "val", "test")} == {"train": 1437, "val": 180, "test": 180}
    tokens = torch.cat([dm.splits.train.tokens, dm.splits.val.tokens, dm.splits.test.tokens])
    assert tokens.dtype == torch.int64 and tokens.shape == (1797, 64)
    assert int(tokens.min()) == 0 and int(tokens.max()) == 16
    from sklearn.datasets import load_digits

    source = {tuple(row) for row in load_digits().images.reshape(-1, 64).astype(int).tolist()}
    assert {tuple(row) for row in tokens.tolist()} == source  # every image, no label
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (8, 64)


@needs_sklearn
def test_digits_split_is_seeded_reproducible_and_disjoint() -> None:
    a, b, other = _digits(split_seed=3), _digits(split_seed=3), _digits(split_seed=4)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a.splits, split).tokens, getattr(b.splits, split).tokens)
    assert not torch.equal(a.splits.test.tokens, other.splits.test.tokens)
    from anyorder_plugins.images.digits import split_indices

    idx = split_indices(3, 0.1, 0.1)
    sets = [set(idx[s].tolist()) for s in ("train", "val", "test")]
    assert sum(len(s) for s in sets) == 1797 and set().union(*sets) == set(range(1797))
    protocol = a.protocol()
    assert protocol["split_seed"] == 3 and protocol["split_sizes"] == {"train": 1437, "val": 180, "test": 180}
    assert protocol["split_indices_sha256"] != other.protocol()["split_indices_sha256"]
    assert protocol["data_sha256"] == other.protocol()["data_sha256"] and len(protocol["data_sha256"]) == 64
    custom = _digits(val_fraction=0.2, test_fraction=0.0)
    assert (len(custom.splits.train), len(custom.splits.val), len(custom.splits.test)) == (1438, 359, 0)


@needs_sklearn
def test_digits_decode_encode_and_text_round_trip() -> None:
    dm = _digits()
    tokens = dm.splits.val.tokens
    images = [dm.decode(row, 64) for row in tokens]
    assert images[0].shape == (8, 8) and images[0].dtype == np.uint8
    assert torch.equal(dm.encode(images).tokens, tokens)
    texts = [dm.to_text(im) for im in images]
    assert all(len(t) == 8 * 8 + 7 and "\n" not in t for t in texts)
    assert torch.equal(dm.encode([dm.parse_text(t) for t in texts]).tokens, tokens)
    assert torch.equal(dm.encode(texts).tokens, tokens)
    assert dm.to_text("not an image") == ""


@needs_sklearn
def test_digits_encode_rejects_bad_images() -> None:
    dm = _digits()
    with pytest.raises(DataError, match="outside"):
        dm.encode([np.full((8, 8), 17)])
    with pytest.raises(DataError, match="8x8"):
        dm.encode([np.zeros((7, 8))])
    with pytest.raises(DataError, match="symbol 'z'"):
        dm.parse_text("/".join(["0000000z"] + ["00000000"] * 7))
    with pytest.raises(DataError, match="8 rows"):
        dm.parse_text("0000")


@needs_sklearn
def test_digits_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("PIL")
    dm = _digits()
    images = [dm.decode(row, 64) for row in dm.splits.test.tokens[:10]]
    path = tmp_path / "grid.png"
    assert dm.render(images + ["garbage"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not dm.render(["garbage"], tmp_path / "none.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert not dm.render(images, tmp_path / "nolib.png")


@needs_sklearn
@pytest.mark.parametrize(
    ("options", "match"),
    [({"split_seed": -1}, "split_seed"), ({"val_fraction": 1.0}, "val_fraction"),
     ({"val_fraction": 0.6, "test_fraction": 0.5}, "no training images")],
)
def test_digits_invalid_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DigitsConfig(**options)  # type: ignore[arg-type]


# -- binarized_mnist --------------------------------------------------------------------------------------------------

AMAT_ROWS = {"train": 12, "valid": 5, "test": 4}


def _amat_files(mirror: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, rows in AMAT_ROWS.items():
        array = (rng.random((rows, 784)) < 0.3).astype(np.uint8)
        lines = "".join(" ".join(str(v) for v in row) + "\n" for row in array)
        (mirror / f"binarized_mnist_{name}.amat").write_text(lines)
        arrays[name] = array
    return arrays


def _bmnist(mirror: Path, **options: object) -> BinarizedMNISTDataModule:
    sums = {f"sha256_{n}": sha256_file(mirror / f"binarized_mnist_{n}.amat") for n in AMAT_ROWS}
    config = BinarizedMNISTConfig(base_url=UNREACHABLE, **{**sums, **options})  # type: ignore[arg-type]
    return BinarizedMNISTDataModule(config, global_batch_size=4)


def test_binarized_mnist_parses_splits_and_caches(_isolated: Path, tmp_path: Path) -> None:
    arrays = _amat_files(_isolated)
    dm = _bmnist(_isolated)
    dm.prepare_data()
    assert dm.space.structure == "grid" and dm.space.shape == (28, 28) and dm.space.vocab_sizes == (2,) * 784
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert torch.equal(getattr(dm.splits, split).tokens, torch.from_numpy(arrays[name].astype(np.int64)))
    protocol = dm.protocol()
    assert protocol["split_sizes"] == {"train": 12, "val": 5, "test": 4}
    assert protocol["sha256"]["val"] == sha256_file(_isolated / "binarized_mnist_valid.amat")
    cached = sorted(p.name for p in (tmp_path / "cache" / "binarized_mnist").iterdir())
    assert len(cached) == 3 and all(p.endswith(".npy") for p in cached)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]  # no temp file left
    # The arrays are read back without the source files.
    for path in list(_isolated.iterdir()) + list((tmp_path / "cache").glob("*.amat")):
        path.unlink()
    again = _bmnist_with(dm.config)
    assert torch.equal(again.splits.train.tokens, dm.splits.train.tokens)
    image = again.decode(again.splits.test.tokens[0], 784)
    assert image.shape == (28, 28) and again.to_text(image).count("/") == 27
    assert torch.equal(again.encode([image]).tokens, again.splits.test.tokens[:1])


def _bmnist_with(config: BinarizedMNISTConfig) -> BinarizedMNISTDataModule:
    return BinarizedMNISTDataModule(config, global_batch_size=4)


def test_binarized_mnist_damaged_cache_is_reparsed(_isolated: Path, tmp_path: Path) -> None:
    _amat_files(_isolated)
    dm = _bmnist(_isolated)
    dm.setup()
    path = dm.array_path("train")
    path.write_bytes(b"not an array")
    again = _bmnist_with(dm.config)
    assert torch.equal(again.splits.train.tokens, dm.splits.train.tokens)
    assert np.load(path).shape == (12, 784)


def test_binarized_mnist_checksum_mismatch(_isolated: Path, tmp_path: Path) -> None:
    _amat_files(_isolated)
    dm = _bmnist(_isolated, sha256_test="0" * 64)
    with pytest.raises(DataError, match="checksum mismatch for binarized_mnist_test.amat"):
        dm.setup()
    assert not (tmp_path / "cache" / "binarized_mnist_test.amat").exists()


def test_binarized_mnist_missing_checksum(_isolated: Path) -> None:
    _amat_files(_isolated)
    with pytest.raises(ConfigError, match=r"data.sha256_valid is empty.*sha256sum binarized_mnist_valid.amat"):
        _bmnist(_isolated, sha256_valid="")
    with pytest.raises(ConfigError, match="64 hex digits"):
        _bmnist(_isolated, sha256_train="abc")


def test_binarized_mnist_defaults_are_the_published_digests() -> None:
    c = BinarizedMNISTConfig()
    assert [len(c.sha256(s)) for s in ("train", "val", "test")] == [64, 64, 64]


def test_parse_amat_errors() -> None:
    row = " ".join(["1"] * 784)
    assert parse_amat((row + "\n\n" + row).encode()).shape == (2, 784)
    with pytest.raises(DataError, match="line 2 .* 783 values"):
        parse_amat((row + "\n" + row[2:] + "\n").encode())
    with pytest.raises(DataError, match="byte b'2'"):
        parse_amat(row.replace("1", "2", 1).encode())
    with pytest.raises(DataError, match="more than one digit"):
        parse_amat(row.replace("1 1", "11", 1).encode())
    with pytest.raises(DataError, match="no rows"):
        parse_amat(b"\n\n")


# -- text8 ------------------------------------------------------------------------------------------------------------


class SmallText8(Text8DataModule):
    """text8 with a 4,000-character text: 3,600 train, 200 val, 200 test."""

    num_chars = 4000
    text_sha256 = None  # a synthetic text: the check against the real text8's digest has its own test


def _text8_text(seed: int = 0, alphabet: str = ALPHABET) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), size=SmallText8.num_chars))


def _text8_zip(mirror: Path, text: str, member: str = "text8") -> Path:
    path = mirror / "text8.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text.encode("ascii"))
    return path


def _text8(mirror: Path, cls: type[Text8DataModule] = SmallText8, **options: object) -> Text8DataModule:
    if "sha256" not in options:
        options["sha256"] = sha256_file(mirror / "text8.zip")
    options.setdefault("url", UNREACHABLE + "text8.zip")
    return cls(Text8Config(**options), global_batch_size=4)  # type: ignore[arg-type]


def test_text8_split_chunks_and_vocabulary(_isolated: Path, tmp_path: Path) -> None:
    text = _text8_text(alphabet="abc xyz")  # not every symbol occurs: the vocabulary stays the fixed 27
    _text8_zip(_isolated, text)
    dm = _text8(_isolated, block_size=25)
    dm.prepare_data()
    assert dm.space.vocab_size == 27 and dm.space.token_names == tuple(ALPHABET) and dm.space.num_variables == 25
    parts = {"train": text[:3600], "val": text[3600:3800], "test": text[3800:]}
    for split, part in parts.items():
        ts = getattr(dm.splits, split)
        assert len(ts) == len(part) // 25
        assert [dm.decode(row, 25) for row in ts.tokens] == [part[i:i + 25] for i in range(0, len(part), 25)]
        assert int(ts.tokens.max()) == ALPHABET.index("z")
    assert torch.equal(dm.encode([parts["val"][:25]]).tokens[0], dm.splits.val.tokens[0])
    protocol = dm.protocol()
    assert protocol["split_chars"] == {"train": 3600, "val": 200, "test": 200}
    assert protocol["num_chunks"] == {"train": 144, "val": 8, "test": 8}
    assert protocol["zip_sha256"] == sha256_file(_isolated / "text8.zip") and protocol["vocab"] == ALPHABET
    extracted = dm.text_path()
    assert extracted.read_text() == text and extracted.parent == tmp_path / "cache"


def test_text8_stride_and_default_block(_isolated: Path) -> None:
    text = _text8_text(1)
    _text8_zip(_isolated, text)
    dm = _text8(_isolated, block_size=100, stride=50)
    assert len(dm.splits.train) == (3600 - 100) // 50 + 1 and len(dm.splits.val) == 2
    assert dm.decode(dm.splits.train.tokens[1], 100) == text[50:150]
    assert Text8Config(sha256="0" * 64).block_size == 250


def test_text8_uses_the_extracted_cache(_isolated: Path, tmp_path: Path) -> None:
    text = _text8_text(2)
    zip_path = _text8_zip(_isolated, text)
    dm = _text8(_isolated, block_size=40)
    dm.setup()
    zip_path.unlink()
    (tmp_path / "cache" / "text8.zip").unlink()
    again = _text8(_isolated, sha256=dm.config.sha256, block_size=40)
    assert torch.equal(again.splits.test.tokens, dm.splits.test.tokens)


def test_text8_checksum_mismatch(_isolated: Path, tmp_path: Path) -> None:
    _text8_zip(_isolated, _text8_text())
    with pytest.raises(DataError, match="checksum mismatch for text8.zip"):
        _text8(_isolated, sha256="f" * 64).setup()
    assert not (tmp_path / "cache" / "text8.zip").exists()


def test_text8_builtin_checksums(_isolated: Path) -> None:
    assert Text8Config().sha256 == TEXT8_ZIP_SHA256  # no digest to set: the published file's is built in
    with pytest.raises(ConfigError, match="64 hex digits"):
        Text8Config(sha256="12")
    _text8_zip(_isolated, _text8_text())  # a zip that is not the published one is refused by default
    with pytest.raises(DataError, match="checksum mismatch for text8.zip"):
        _text8(_isolated, sha256=TEXT8_ZIP_SHA256).setup()


def test_text8_extracted_text_digest_is_checked(_isolated: Path, tmp_path: Path) -> None:
    text = _text8_text(3)

    class Pinned(SmallText8):
        text_sha256 = hashlib.sha256(text.encode("ascii")).hexdigest()

    _text8_zip(_isolated, text)
    assert _text8(_isolated, cls=Pinned, block_size=40).splits.val.tokens.shape == (5, 40)
    for path in (tmp_path / "cache").glob("text8-*"):
        path.unlink()
    _text8_zip(_isolated, _text8_text(4))  # right length and alphabet, other text
    with pytest.raises(DataError, match="has SHA-256 .* expected .* not the published text8.zip"):
        _text8(_isolated, cls=Pinned, block_size=40).setup()
    assert not list((tmp_path / "cache").glob("text8-*"))


@pytest.mark.parametrize(
    ("text", "member", "match"),
    [
        (_text8_text()[:-1], "text8", "3999 characters, expected exactly 4000"),
        (_text8_text() + "a", "text8", "more than 4001 characters"),
        ("A" + _text8_text()[1:], "text8", "character 0 .* b'A'"),
        (_text8_text(), "other", "no member 'text8'"),
    ],
)
def test_text8_bad_archives(_isolated: Path, tmp_path: Path, text: str, member: str, match: str) -> None:
    _text8_zip(_isolated, text, member)
    with pytest.raises(DataError, match=match):
        _text8(_isolated).setup()
    assert not list((tmp_path / "cache").glob("text8-*")) and not list((tmp_path / "cache").glob(".text8-*"))


def test_text8_real_length_is_required(_isolated: Path) -> None:
    _text8_zip(_isolated, _text8_text())
    with pytest.raises(DataError, match="expected exactly 100000000"):
        _text8(_isolated, cls=Text8DataModule).setup()


@pytest.mark.parametrize(
    ("options", "match"),
    [({"block_size": 0}, "block_size"), ({"block_size": 5_000_001}, "at most"), ({"stride": -1}, "stride")],
)
def test_text8_invalid_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Text8Config(sha256="0" * 64, **options)  # type: ignore[arg-type]


def test_options_modules_are_light() -> None:
    modules = ("anyorder_plugins.images.digits_config", "anyorder_plugins.images.binarized_mnist_config",
               "anyorder_plugins.char_text.text8_config")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in ('torch', 'numpy', 'lightning', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
