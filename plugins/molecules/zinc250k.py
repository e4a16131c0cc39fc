"""The ``zinc250k`` dataset: chemical_vae's CSV (quoted SMILES ending in a newline) and GDSS's test indices."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from anyorder.downloads import fetch
from anyorder.errors import DataError
from anyorder_plugins.molecules.datamodule import MoleculeDataModule, published_split
from anyorder_plugins.molecules.zinc250k_config import (
    ZINC_FILE,
    ZINC_SPLIT_FILE,
    ZINC_SPLIT_URL,
    ZINC_URL,
    Zinc250kConfig,
)


def md5_file(path: Path) -> str:
    """The md5 of a file's bytes (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_zinc_csv(path: Path) -> list[str]:
    """The ``smiles`` column of the chemical_vae CSV, with the newline inside each quoted SMILES stripped."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "smiles" not in reader.fieldnames:
            raise DataError(f"zinc250k: {path.name} has no 'smiles' column (header {reader.fieldnames})")
        return [row["smiles"].strip() for row in reader]


class Zinc250kDataModule(MoleculeDataModule):
    """ZINC250k with the GDSS/CGVAE (0-based rows, default) or MoFlow (index - 1) reading of the test indices."""

    Config = Zinc250kConfig
    config: Zinc250kConfig

    def _fetch(self) -> tuple[Path, Path]:
        c = self.config
        mirror = c.mirror or None
        csv_path = fetch(ZINC_FILE, url=ZINC_URL, sha256=c.sha256, mirror=mirror)
        if c.md5:
            actual = md5_file(csv_path)
            if actual != c.md5:
                raise DataError(f"zinc250k: {csv_path} has md5 {actual}, expected {c.md5} (its sha256 matched "
                                f"{c.sha256}); set data.md5 and data.sha256 to the values of the file you trust")
        return csv_path, fetch(ZINC_SPLIT_FILE, url=ZINC_SPLIT_URL, sha256=c.split_sha256, mirror=mirror)

    def download(self) -> None:
        self._fetch()

    def source_checksums(self) -> dict[str, str]:
        c = self.config
        return {ZINC_FILE: c.sha256, f"{ZINC_FILE}.md5": c.md5, ZINC_SPLIT_FILE: c.split_sha256}

    def protocol_extra(self) -> dict[str, Any]:
        rule = "row = index (GDSS/CGVAE)" if self.config.split_convention == "gdss" else "row = index - 1 (MoFlow)"
        return {"split_convention": self.config.split_convention, "split_rule": rule, "split_file": ZINC_SPLIT_FILE}

    def split_rows(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """All SMILES in file order, and the 0-based train and test rows under ``split_convention``."""
        csv_path, split_path = self._fetch()
        smiles = read_zinc_csv(csv_path)
        values = [int(x) for x in json.loads(split_path.read_text())]
        train, test = published_split(len(smiles), values, self.config.split_convention, "zinc250k")
        return smiles, train, test

    def load_smiles(self) -> dict[str, list[str]]:
        smiles, train, test = self.split_rows()
        return {"train": [smiles[i] for i in train], "test": [smiles[i] for i in test]}
