"""The ``moses`` dataset: the MOSES train/test CSVs read out of the ``molsets`` wheel, which is never installed."""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import numpy as np

from anyorder.downloads import fetch
from anyorder.errors import DataError
from anyorder_plugins.molecules.datamodule import MoleculeDataModule
from anyorder_plugins.molecules.moses_config import MOSES_MEMBERS, MOSES_WHEEL, MOSES_WHEEL_URL, MosesConfig


def read_wheel_member(wheel: Path, member: str) -> list[str]:
    """The ``SMILES`` column of a gzipped CSV inside a wheel (a zip file)."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or header[0].strip().upper() != "SMILES":
                raise DataError(f"moses: {member} in {wheel.name} has header {header}, expected SMILES")
            return [row[0].strip() for row in reader if row]
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"moses: cannot read {member} from {wheel}: {exc}") from exc


class MosesDataModule(MoleculeDataModule):
    """MOSES train (optionally subsampled) and test, from the molsets 0.3.1 wheel."""

    Config = MosesConfig
    config: MosesConfig

    def _fetch(self) -> Path:
        return fetch(MOSES_WHEEL, url=MOSES_WHEEL_URL, sha256=self.config.sha256, mirror=self.config.mirror or None)

    def download(self) -> None:
        self._fetch()

    def source_checksums(self) -> dict[str, str]:
        return {MOSES_WHEEL: self.config.sha256}

    def protocol_extra(self) -> dict[str, object]:
        return {"split_convention": "moses (given train/test)", "max_train": self.config.max_train,
                "wheel": MOSES_WHEEL}

    def load_smiles(self) -> dict[str, list[str]]:
        wheel = self._fetch()
        out = {split: read_wheel_member(wheel, member) for split, member in MOSES_MEMBERS.items()}
        n = self.config.max_train
        if n and n < len(out["train"]):
            pick = np.sort(np.random.default_rng([self.config.split_seed, 1]).choice(len(out["train"]), n, replace=False))
            train = out["train"]
            out["train"] = [train[i] for i in pick]
        return out
