"""The ``mol_embedded`` dataset: RDKit's ``wehi_mols.csv`` (no header; columns SMILES, id), split 90/5/5 by a seed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import RDConfig

from anyorder.downloads import sha256_file
from anyorder.errors import DataError
from anyorder_plugins.molecules.datamodule import MoleculeDataModule
from anyorder_plugins.molecules.embedded_config import EmbeddedConfig

WEHI_RELPATH = ("Pains", "test_data", "wehi_mols.csv")


def wehi_path() -> Path:
    """``RDConfig.RDDataDir/Pains/test_data/wehi_mols.csv`` of the installed RDKit."""
    path = Path(RDConfig.RDDataDir).joinpath(*WEHI_RELPATH)
    if not path.is_file():
        raise DataError(f"mol_embedded: {path} is missing; this RDKit installation does not ship wehi_mols.csv")
    return path


class EmbeddedDataModule(MoleculeDataModule):
    """10,000 molecules from the RDKit wheel, with a seeded train/val/test split."""

    Config = EmbeddedConfig
    config: EmbeddedConfig

    def __init__(self, config: EmbeddedConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._sha256: str | None = None

    def source_checksums(self) -> dict[str, str]:
        if self._sha256 is None:
            self._sha256 = sha256_file(wehi_path())
        return {"wehi_mols.csv": self._sha256}

    def protocol_extra(self) -> dict[str, Any]:
        c = self.config
        return {"split_convention": f"seeded permutation (split_seed={c.split_seed}): "
                                    f"test {c.test_fraction}, val {c.val_fraction} of the whole set",
                "test_fraction": c.test_fraction, "source": "rdkit Data/Pains/test_data/wehi_mols.csv"}

    def split_rows(self) -> dict[str, np.ndarray]:
        """The sorted row indices of each split: one permutation, test first, then val, the rest train."""
        n = len(self.read_all())
        perm = np.random.default_rng([self.config.split_seed, 2]).permutation(n)
        n_test, n_val = round(self.config.test_fraction * n), round(self.config.val_fraction * n)
        return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
                "train": np.sort(perm[n_test + n_val:])}

    def read_all(self) -> list[str]:
        """The SMILES column of the file, in file order."""
        with open(wehi_path(), encoding="utf-8", newline="") as f:
            return [row[0].strip() for row in csv.reader(f) if row]

    def load_smiles(self) -> dict[str, list[str]]:
        smiles = self.read_all()
        return {split: [smiles[i] for i in idx] for split, idx in self.split_rows().items()}
