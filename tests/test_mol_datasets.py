"""Molecule datasets: QM9 split conventions, the preprocessing cache, skipped molecules, the embedded split, mirrors.

The full preprocessing of QM9 (133,885 molecules) runs only with ``ANYORDER_MOL_FULL=1`` (it prints its timings);
``ANYORDER_TEST_MOLSETS_DIR`` names a directory holding the real ``molsets-0.3.1-py3-none-any.whl`` for the test
that reads it. Every other test uses small synthetic files or the QM9 split only.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rdkit import Chem

from anyorder.downloads import MIRROR_ENV, sha256_file
from anyorder.errors import ConfigError, DataError
from anyorder_plugins.molecules import datamodule as mdm
from anyorder_plugins.molecules.embedded import EmbeddedDataModule
from anyorder_plugins.molecules.embedded_config import EmbeddedConfig
from anyorder_plugins.molecules.moses import MosesDataModule
from anyorder_plugins.molecules.moses_config import MOSES_MEMBERS, MOSES_WHEEL, MosesConfig
from anyorder_plugins.molecules.qm9 import QM9DataModule
from anyorder_plugins.molecules.qm9_config import QM9Config
from anyorder_plugins.molecules.zinc250k import Zinc250kDataModule, md5_file
from anyorder_plugins.molecules.zinc250k_config import ZINC_FILE, ZINC_SPLIT_FILE, Zinc250kConfig


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test preprocesses into its own cache, so "first build is not a cache hit" holds in any order.
    monkeypatch.setenv("ANYORDER_CACHE", str(tmp_path / "cache"))


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_qm9 = pytest.mark.skipif(not (SHARED_DATA / "qm9_smiles.csv").is_file(), reason="shared/data/qm9_smiles.csv absent")

# Small drug-like molecules (kekulizable, neutral and charged), an unparsable one and a too-large one.
GOOD = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[NH3+]", "CC(=O)[O-]", "N#Cc1ccccc1", "OC(=O)CCl", "CSC",
        "FC(F)(F)c1ccccc1", "CCN(CC)CC", "O=C1CCCCC1", "Brc1ccccc1", "CC#N", "OCCO", "c1ccncc1", "CCCCCC"]
UNPARSABLE = "C1CC(=O"
LARGE = "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"  # 44 carbons


def _write_zinc(mirror: Path, train: list[str], test: list[str]) -> dict[str, str]:
    """A synthetic chemical_vae-style CSV (quoted SMILES ending in a newline) and a GDSS-style split file."""
    mirror.mkdir(parents=True, exist_ok=True)
    smiles = train + test
    with open(mirror / ZINC_FILE, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        w.writerow(["smiles", "logP", "qed", "SAS"])
        for s in smiles:
            w.writerow([s + "\n", 1.0, 0.5, 2.0])
    (mirror / ZINC_SPLIT_FILE).write_text(json.dumps(list(range(len(train), len(smiles)))))
    return {"mirror": str(mirror), "sha256": sha256_file(mirror / ZINC_FILE), "md5": md5_file(mirror / ZINC_FILE),
            "split_sha256": sha256_file(mirror / ZINC_SPLIT_FILE)}


def _zinc(tmp_path: Path, module: dict[str, Any] | None = None, **options: Any) -> Zinc250kDataModule:
    train = GOOD * 3 + [UNPARSABLE, LARGE]
    test = GOOD[:6] + [UNPARSABLE]
    base = _write_zinc(tmp_path / "mirror", train, test)
    return Zinc250kDataModule(Zinc250kConfig(**{**base, "val_fraction": 0.1, **options}), **(module or {}))


# -- QM9 ---------------------------------------------------------------------------------------------------------------
@needs_qm9
def test_qm9_split_conventions_sizes_overlap_and_charged_fraction() -> None:
    gdss = QM9DataModule(QM9Config(split_convention="gdss"))
    moflow = QM9DataModule(QM9Config(split_convention="moflow"))
    smiles, g_train, g_test = gdss.split_rows()
    _, m_train, m_test = moflow.split_rows()
    assert len(smiles) == 133_885
    assert (len(g_train), len(g_test)) == (120_803, 13_082) == (len(m_train), len(m_test))
    assert len(np.intersect1d(g_test, m_test)) == 1_345
    assert np.array_equal(np.sort(g_test), np.sort(m_test + 1))
    charged = sum(any(a.GetFormalCharge() for a in Chem.MolFromSmiles(smiles[i]).GetAtoms()) for i in m_test)
    assert charged / len(m_test) == pytest.approx(0.0047, abs=0.0005)
    charged_gdss = sum(any(a.GetFormalCharge() for a in Chem.MolFromSmiles(smiles[i]).GetAtoms()) for i in g_test)
    assert charged_gdss / len(g_test) > 0.007  # the off-by-one test set is not depleted in charged molecules
    assert gdss.protocol_extra()["split_convention"] == "gdss"
    assert moflow.protocol_extra()["split_convention"] == "moflow"


@needs_qm9
@pytest.mark.parametrize("representation", ["graph", "smiles"])
def test_qm9_full_preprocessing_and_cached_reload(representation: str) -> None:
    config = QM9Config(representation=representation, split_convention="moflow")
    dm = QM9DataModule(config)
    dm.setup()
    first = dm.build_seconds
    assert dm.cache_hit is False
    again = QM9DataModule(dataclasses.replace(config))
    again.setup()
    print(f"\nQM9 {representation}: preprocessing {first:.1f} s, cached reload {again.build_seconds:.2f} s")
    assert again.cache_hit is True and again.build_seconds is not None and again.build_seconds <= 2.0
    assert torch.equal(dm.splits.train.tokens, again.splits.train.tokens)
    p = dm.protocol()
    assert p["split_convention"] == "moflow"
    assert p["sizes"]["test"] + p["skipped_total"]["test"] == 13_082
    assert p["sizes"]["train"] + p["sizes"]["val"] + p["skipped_total"]["train"] + p["skipped_total"]["val"] == 120_803
    if representation == "graph" and config.atom_types == "element_charge":
        assert p["skipped_total"] == {"train": 0, "val": 0, "test": 0}
        assert dm.space.num_variables == 45
        for i in range(0, len(dm.splits.test), 997):
            mol = dm.decode(dm.splits.test.tokens[i], 45)
            assert Chem.MolToSmiles(Chem.MolFromSmiles(dm.to_text(mol))) == dm.splits.info["smiles"]["test"][i]


# -- synthetic ZINC: mirror, checksums, skipped molecules, cache ------------------------------------------------------
def test_zinc250k_through_a_mirror_counts_skipped_molecules(tmp_path: Path) -> None:
    dm = _zinc(tmp_path, max_atoms=20)
    dm.setup()
    p = dm.protocol()
    assert p["dataset"] == "zinc250k" and p["split_convention"] == "gdss"
    assert p["source_sizes"]["test"] == 7
    assert p["skipped"]["test"]["unparsable"] == 1 and p["sizes"]["test"] == 6
    train_val = {k: p["skipped"]["train"][k] + p["skipped"]["val"][k] for k in mdm.SKIP_REASONS}
    assert train_val["unparsable"] == 1 and train_val["too_many_atoms"] == 1
    assert p["sizes"]["train"] + p["sizes"]["val"] == len(GOOD) * 3
    assert dm.space.num_variables == 20 + 20 * 19 // 2
    assert len(dm.reference_smiles("test")) == 6  # the unparsable one is not a reference molecule
    assert len(dm.reference_smiles("train")) == len(GOOD) * 3 + 1  # fit + val, the large one included
    assert len(dm.reference_smiles("fit")) + len(dm.reference_smiles("val")) == len(GOOD) * 3 + 1
    assert dm.reference_smiles("test", isomeric=False) == dm.reference_smiles("test")  # no stereo in GOOD
    with pytest.raises(DataError):
        dm.reference_smiles("valid")
    # every training row decodes to the canonical SMILES it was encoded from
    for i in range(len(dm.splits.train)):
        mol = dm.decode(dm.splits.train.tokens[i], int(dm.splits.train.lengths[i]))
        assert Chem.MolToSmiles(Chem.MolFromSmiles(dm.to_text(mol))) == dm.splits.info["smiles"]["train"][i]
    assert dm.to_text(None) == ""


def test_zinc250k_split_convention_moflow_and_checksums(tmp_path: Path) -> None:
    gdss = _zinc(tmp_path)
    moflow = Zinc250kDataModule(dataclasses.replace(gdss.config, split_convention="moflow"))
    _, _, g_test = gdss.split_rows()
    _, _, m_test = moflow.split_rows()
    assert np.array_equal(g_test - 1, m_test)
    bad = Zinc250kDataModule(dataclasses.replace(gdss.config, md5="0" * 32))
    (Path(os.environ["ANYORDER_CACHE"]) / ZINC_FILE).unlink()
    with pytest.raises(DataError, match="md5"):
        bad.load_smiles()
    with pytest.raises(DataError):
        Zinc250kDataModule(dataclasses.replace(gdss.config, sha256="0" * 64)).load_smiles()


def _changed(value: Any, name: str) -> Any:
    alternatives = {"representation": "smiles", "atom_types": "element", "split_convention": "moflow",
                    "mirror": "elsewhere"}
    if name in alternatives:
        return alternatives[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.01
    if isinstance(value, str) and len(value) in (32, 64):
        return "f" * len(value)
    raise AssertionError(f"no alternative value for option {name}")


def test_cache_key_changes_with_every_option_source_and_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = _zinc(tmp_path)
    key = dm.cache_key()
    assert key == Zinc250kDataModule(dataclasses.replace(dm.config)).cache_key()
    fields = [f.name for f in dataclasses.fields(dm.config)]
    assert {"representation", "atom_types", "max_atoms", "smiles_max_len", "val_fraction", "split_seed", "mirror",
            "split_convention", "sha256", "md5", "split_sha256"} <= set(fields)
    assert "randomize_smiles" in fields
    for cls, config in [(Zinc250kDataModule, dm.config), (QM9DataModule, QM9Config()), (MosesDataModule, MosesConfig()),
                        (EmbeddedDataModule, EmbeddedConfig())]:
        for name in [f.name for f in dataclasses.fields(config)]:
            # randomize_smiles is only valid with the smiles representation: compare within it
            base = dataclasses.replace(config, representation="smiles") if name == "randomize_smiles" else config
            other = dataclasses.replace(base, **{name: _changed(getattr(base, name), name)})
            assert cls(other).cache_key() != cls(base).cache_key(), (cls.__name__, name)
    monkeypatch.setattr(mdm, "codec_version", lambda: "another codec")
    assert dm.cache_key() != key
    monkeypatch.setattr(mdm, "FORMAT_VERSION", mdm.FORMAT_VERSION + 1)
    assert dm.cache_key() != key


def test_cached_reload_is_identical_fast_and_safe(tmp_path: Path) -> None:
    dm = _zinc(tmp_path, representation="smiles")
    dm.setup()
    assert dm.cache_hit is False and dm.cache_path().is_file()
    assert dm.cache_path().parent == Path(os.environ["ANYORDER_CACHE"]) / "molecules"
    # the cache is loadable without pickle of arbitrary objects
    payload = torch.load(dm.cache_path(), weights_only=True)
    assert payload["splits"]["train"]["tokens"].dtype == torch.uint8  # stored small ...
    assert dm.splits.train.tokens.dtype == torch.long  # ... served as int64
    again = Zinc250kDataModule(dataclasses.replace(dm.config))
    again.setup()
    assert again.cache_hit is True and again.build_seconds is not None and again.build_seconds < 2.0
    for split in ("train", "val", "test"):
        a, b = getattr(dm.splits, split), getattr(again.splits, split)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    assert dm.space == again.space and dm.protocol() == again.protocol()
    assert dm.reference_smiles("train") == again.reference_smiles("train")
    assert again.decode(again.splits.test.tokens[0], int(again.splits.test.lengths[0])) == \
        again.splits.info["smiles"]["test"][0]
    # a damaged cache file is rebuilt, not trusted
    dm.cache_path().write_bytes(b"not a torch file")
    third = Zinc250kDataModule(dataclasses.replace(dm.config))
    third.setup()
    assert third.cache_hit is False and torch.equal(third.splits.train.tokens, dm.splits.train.tokens)


def test_smiles_representation_skips_unknown_tokens_and_too_long(tmp_path: Path) -> None:
    train = GOOD * 2
    test = ["CCO", "CCI", "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", "C1CC(=O"]  # I: not in the train vocabulary
    base = _write_zinc(tmp_path / "mirror", train, test)
    dm = Zinc250kDataModule(Zinc250kConfig(**base, representation="smiles", smiles_max_len=30, val_fraction=0.0))
    dm.setup()
    skipped = dm.protocol()["skipped"]["test"]
    assert (skipped["unknown_token"], skipped["too_long"], skipped["unparsable"]) == (1, 1, 1)
    assert dm.protocol()["sizes"] == {"train": len(train), "val": 0, "test": 1}
    assert dm.space.structure == "sequence" and dm.space.variable_length and dm.space.num_variables == 30


def test_encode_round_trip_and_options_errors(tmp_path: Path) -> None:
    dm = _zinc(tmp_path)
    ts = dm.encode(["OCC", "c1ccccc1O"])
    # "OCC" is written differently from the dataset's "CCO" but is the same molecule: the same encoding
    where = dm.splits.info["smiles"]["test"].index("CCO")
    assert torch.equal(ts.tokens[0], dm.splits.test.tokens[where])
    assert Chem.MolToSmiles(Chem.MolFromSmiles(dm.to_text(dm.decode(ts.tokens[1], int(ts.lengths[1]))))) == "Oc1ccccc1"
    with pytest.raises(DataError):
        dm.encode([UNPARSABLE])
    bad_options: list[dict[str, Any]] = [{"representation": "selfies"}, {"atom_types": "isotope"},
                                         {"val_fraction": 1.0}, {"max_atoms": -1}]
    for bad in bad_options:
        with pytest.raises(ConfigError):
            QM9Config(**bad)
    with pytest.raises(ConfigError):
        QM9Config(split_convention="digress")
    with pytest.raises(ConfigError):
        MosesConfig(max_train=-1)
    with pytest.raises(ConfigError, match="randomize_smiles"):
        QM9Config(randomize_smiles=True)  # graph representation


def test_randomized_smiles_augmentation_is_real_seeded_and_resumable(tmp_path: Path) -> None:
    dm = _zinc(tmp_path, {"seed": 3, "global_batch_size": 8}, representation="smiles", randomize_smiles=True)
    loader = dm.train_dataloader()
    assert isinstance(loader, mdm.RandomSmilesLoader)
    epochs = [list(loader), list(loader)]
    canonical, vocab = dm.splits.info["smiles"]["train"], dm.space.token_names
    assert vocab is not None
    seen: list[dict[int, str]] = [{}, {}]
    for e, batches in enumerate(epochs):
        for batch in batches:
            for tok, n, i in zip(batch["tokens"], batch["lengths"].tolist(), batch["index"].tolist(), strict=True):
                text = "".join(vocab[t] for t in tok[:n].tolist())
                assert Chem.MolToSmiles(Chem.MolFromSmiles(text)) == canonical[i]  # the same molecule
                seen[e][i] = text
    assert sum(text != canonical[i] for i, text in seen[0].items()) > len(seen[0]) // 3  # really randomized
    assert any(seen[0][i] != seen[1][i] for i in seen[0].keys() & seen[1].keys())  # drawn anew each epoch
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 1, "yielded": 0})
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(list(resumed), epochs[1], strict=True))
    val = dm.val_dataloader()  # evaluation stays canonical
    assert not isinstance(val, mdm.RandomSmilesLoader)


# -- embedded ---------------------------------------------------------------------------------------------------------
def test_embedded_split_is_seeded_deterministic_and_recorded() -> None:
    a = EmbeddedDataModule(EmbeddedConfig()).split_rows()
    b = EmbeddedDataModule(EmbeddedConfig()).split_rows()
    c = EmbeddedDataModule(EmbeddedConfig(split_seed=1)).split_rows()
    assert {k: len(v) for k, v in a.items()} == {"train": 9_000, "val": 500, "test": 500}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(10_000))
    extra = EmbeddedDataModule(EmbeddedConfig()).protocol_extra()
    assert "split_seed=0" in extra["split_convention"] and extra["test_fraction"] == 0.05


def test_embedded_builds_without_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    dm = EmbeddedDataModule(EmbeddedConfig(representation="smiles"))
    dm.setup()
    p = dm.protocol()
    assert sum(p["source_sizes"].values()) == 10_000 and p["skipped"]["train"]["unparsable"] == 0
    assert p["sizes"]["val"] + p["skipped_total"]["val"] == 500
    assert p["sizes"]["train"] == 9_000 and p["val_carved_from_train"] is False
    assert dm.decode(dm.splits.train.tokens[5], int(dm.splits.train.lengths[5])) == dm.splits.info["smiles"]["train"][5]


# -- MOSES ------------------------------------------------------------------------------------------------------------
def _write_wheel(path: Path, train: list[str], test: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for split, rows in (("train", train), ("test", test)):
            zf.writestr(MOSES_MEMBERS[split], gzip.compress(("SMILES\n" + "\n".join(rows) + "\n").encode()))
        zf.writestr("moses/__init__.py", "raise RuntimeError('must not be imported')\n")


def test_moses_reads_the_wheel_through_a_mirror_and_subsamples(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    train = [f"C{'C' * (i % 7)}O" for i in range(40)] + GOOD
    _write_wheel(mirror / MOSES_WHEEL, train, GOOD[:5])
    sha = sha256_file(mirror / MOSES_WHEEL)
    dm = MosesDataModule(MosesConfig(mirror=str(mirror), sha256=sha, max_train=30, val_fraction=0.1))
    raw = dm.load_smiles()
    assert len(raw["train"]) == 30 and set(raw["train"]) <= set(train) and raw["test"] == GOOD[:5]
    assert raw == MosesDataModule(dataclasses.replace(dm.config)).load_smiles()
    assert raw["train"] != MosesDataModule(dataclasses.replace(dm.config, split_seed=3)).load_smiles()["train"]
    dm.setup()
    p = dm.protocol()
    assert p["sizes"] == {"train": 27, "val": 3, "test": 5} and p["max_train"] == 30
    assert "moses" not in sys.modules


@pytest.mark.skipif(not os.environ.get("ANYORDER_TEST_MOLSETS_DIR"), reason="set ANYORDER_TEST_MOLSETS_DIR to a "
                    "directory holding the real molsets-0.3.1 wheel")
def test_moses_real_wheel_sizes() -> None:
    dm = MosesDataModule(MosesConfig(mirror=os.environ["ANYORDER_TEST_MOLSETS_DIR"], max_train=1000))
    raw = dm.load_smiles()
    assert len(raw["train"]) == 1000 and len(raw["test"]) == 176_074
    full = MosesDataModule(MosesConfig(mirror=os.environ["ANYORDER_TEST_MOLSETS_DIR"])).load_smiles()
    assert len(full["train"]) == 1_584_663 and set(raw["train"]) <= set(full["train"])
    assert "moses" not in sys.modules


def test_light_config_modules_import_no_heavy_packages() -> None:
    code = ("import sys; import anyorder_plugins.molecules.qm9_config, anyorder_plugins.molecules.zinc250k_config, "
            "anyorder_plugins.molecules.moses_config, anyorder_plugins.molecules.embedded_config; "
            "print(sorted(m for m in ('torch', 'numpy', 'rdkit') if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"



def test_worker_processes_give_the_same_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = _zinc(tmp_path, max_atoms=20)
    serial.setup()
    monkeypatch.setattr(mdm, "PARALLEL_MIN", 0)
    monkeypatch.setattr(mdm, "_CHUNK", 5)
    monkeypatch.setattr(mdm, "_workers", lambda: 2)
    monkeypatch.setenv("ANYORDER_CACHE", str(tmp_path / "other-cache"))
    parallel = Zinc250kDataModule(dataclasses.replace(serial.config))
    parallel.setup()
    assert parallel.cache_hit is False
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(serial.splits, split).tokens, getattr(parallel.splits, split).tokens)
    assert serial.protocol()["skipped"] == parallel.protocol()["skipped"]
