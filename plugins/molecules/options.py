"""Options shared by the molecule datasets (a light module: no torch, numpy or RDKit import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

REPRESENTATIONS = ("graph", "smiles")
ATOM_TYPES = ("element", "element_charge")


@dataclass
class MoleculeConfig(PluginConfig):
    """Options common to every molecule dataset (see :class:`anyorder_plugins.molecules.datamodule.MoleculeDataModule`).

    Every option (and the checksums of the source files, the codec and format versions and the RDKit version) is
    part of the key of the preprocessed cache, so changing any of them never reuses a stale encoding.
    """

    implementation: ClassVar[Any] = None
    dataset_name: ClassVar[str] = "molecules"

    representation: str = opt("graph", "graph (node + upper-triangle edge variables) | smiles (canonical token sequence)",
                              choices=REPRESENTATIONS)
    atom_types: str = opt(
        "element_charge",
        "graph node types: element (the literature's choice; charges are lost) | element_charge (exact encoding)",
        choices=ATOM_TYPES,
    )
    max_atoms: int = opt(0, "graph: node slots N; 0 means the largest molecule over all splits; larger ones are skipped")
    smiles_max_len: int = opt(0, "smiles: sequence length; 0 means the longest over all splits; longer ones are skipped")
    randomize_smiles: bool = opt(
        False,
        "smiles: train on a random RDKit SMILES of each molecule, drawn anew every epoch (seeded by the run seed, "
        "the epoch and the example); the canonical one when the random one exceeds the length or the vocabulary",
    )
    val_fraction: float = opt(
        0.05,
        "fraction held out for validation (seeded by split_seed): of the published training split for qm9, zinc250k "
        "and moses; of the whole set for mol_embedded",
    )
    split_seed: int = opt(0, "seed of every random data choice (validation carve-out, subsampling, embedded split)")
    mirror: str = opt("", "local directory holding the source files (offline use); empty means $ANYORDER_DATA_MIRROR")

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.dataset_name
        if self.max_atoms < 0 or self.smiles_max_len < 0:
            raise ConfigError(f"{name}: max_atoms and smiles_max_len must be 0 (from the data) or positive")
        if self.randomize_smiles and self.representation != "smiles":
            raise ConfigError(f"{name}: randomize_smiles needs representation=smiles (got {self.representation!r})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{name}: val_fraction must be in [0, 1) (got {self.val_fraction})")
