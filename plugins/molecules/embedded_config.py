"""Options of the ``mol_embedded`` dataset (a light module: no torch, numpy or RDKit import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import opt
from anyorder.errors import ConfigError
from anyorder_plugins.molecules.options import MoleculeConfig


@dataclass
class EmbeddedConfig(MoleculeConfig):
    """10,000 drug-like molecules that ship with RDKit (``RDConfig.RDDataDir/Pains/test_data/wehi_mols.csv``).

    No download. ≤ 34 heavy atoms of the nine ZINC250k elements, so it is a small ZINC-like stand-in. There is no
    published split: one permutation seeded by ``split_seed`` gives ``test_fraction`` of the molecules to test and
    ``val_fraction`` (of the whole set, here) to validation, the rest to train; 90/5/5 by default. The fractions,
    the seed, the sizes and the file's sha256 are recorded in ``protocol()``.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.molecules.embedded:EmbeddedDataModule"
    dataset_name: ClassVar[str] = "mol_embedded"

    test_fraction: float = opt(0.05, "fraction of the molecules in the test split (seeded by split_seed)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.test_fraction < 1.0 or self.test_fraction + self.val_fraction >= 1.0:
            raise ConfigError(f"mol_embedded: need 0 < test_fraction and test_fraction + val_fraction < 1 "
                              f"(got {self.test_fraction}, {self.val_fraction})")
