"""The ``qm9`` dataset: ``qm9_smiles.csv`` (GDB-id order) and the standard test ids ``valid_idx_qm9.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from anyorder.downloads import fetch
from anyorder_plugins.molecules.datamodule import MoleculeDataModule, published_split, read_lines
from anyorder_plugins.molecules.qm9_config import QM9_SHA256, QM9_SPLIT_SHA256, QM9_SPLIT_URL, QM9_URL, QM9Config

QM9_FILE = "qm9_smiles.csv"
QM9_SPLIT_FILE = "valid_idx_qm9.json"


class QM9DataModule(MoleculeDataModule):
    """QM9 with the GDSS (row = id, default) or MoFlow (row = id - 1) reading of the standard test ids."""

    Config = QM9Config
    config: QM9Config

    def _fetch(self) -> tuple[Path, Path]:
        mirror = self.config.mirror or None
        return (fetch(QM9_FILE, url=QM9_URL, sha256=QM9_SHA256, mirror=mirror),
                fetch(QM9_SPLIT_FILE, url=QM9_SPLIT_URL, sha256=QM9_SPLIT_SHA256, mirror=mirror))

    def download(self) -> None:
        self._fetch()

    def source_checksums(self) -> dict[str, str]:
        return {QM9_FILE: QM9_SHA256, QM9_SPLIT_FILE: QM9_SPLIT_SHA256}

    def protocol_extra(self) -> dict[str, Any]:
        rule = "row = id (GDSS, off by one)" if self.config.split_convention == "gdss" else "row = id - 1 (MoFlow)"
        return {"split_convention": self.config.split_convention, "split_rule": rule, "split_file": QM9_SPLIT_FILE}

    def split_rows(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """All SMILES in file order, and the 0-based train and test rows under ``split_convention``."""
        csv_path, split_path = self._fetch()
        smiles = read_lines(csv_path, skip_header=True)
        ids = [int(x) for x in json.loads(split_path.read_text())["valid_idxs"]]
        train, test = published_split(len(smiles), ids, self.config.split_convention, "qm9")
        return smiles, train, test

    def load_smiles(self) -> dict[str, list[str]]:
        smiles, train, test = self.split_rows()
        return {"train": [smiles[i] for i in train], "test": [smiles[i] for i in test]}
