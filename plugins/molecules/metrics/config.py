"""Options of the molecule metric plugins (a light module: no torch, numpy or RDKit import).

Every metric receives the decoded samples (``str | Chem.Mol | None``) and counts None / unparsable / unsanitizable
samples as invalid, dividing by ALL samples. Reference sets come from the datamodule's ``reference_smiles(split)``.
The definitions live in :mod:`anyorder_plugins.molecules.metrics.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError

SPLITS = ("train", "val", "test")
_IMPL = "anyorder_plugins.molecules.metrics.metric:"


@dataclass
class MolValidityConfig(PluginConfig):
    """Validity without correction: samples RDKit sanitizes as they are / ALL samples.

    Reports ``validity``, ``validity_connected`` (valid and one fragment / all samples) and, with ``corrected``,
    the separate ``validity_corrected`` (after ``anyorder_plugins.molecules.chem.valency_correct``).
    """

    implementation: ClassVar[Any] = _IMPL + "MolValidity"

    corrected: bool = opt(False, "also report validity_corrected (valency correction of molecules.chem)")


@dataclass
class MolUniquenessConfig(PluginConfig):
    """Uniqueness: distinct canonical SMILES among the valid samples / valid samples (``uniqueness``)."""

    implementation: ClassVar[Any] = _IMPL + "MolUniqueness"


@dataclass
class MolNoveltyConfig(PluginConfig):
    """Novelty: valid unique samples whose canonical SMILES is not in the reference (training) split / valid unique."""

    implementation: ClassVar[Any] = _IMPL + "MolNovelty"

    reference_split: str = opt("train", "split the samples must be new to", choices=SPLITS)


@dataclass
class FCDConfig(PluginConfig):
    """Fréchet ChemNet Distance (``fcd``) of the valid samples (canonical SMILES, duplicates kept) to a reference split.

    ChemNet and its SMILES encoding are fcd_torch's (it reads a SMILES up to its first '.'); the Fréchet distance
    is computed in float64 by this plugin. NaN with fewer than 2 valid samples.
    """

    implementation: ClassVar[Any] = _IMPL + "FCD"

    reference_split: str = opt("test", "reference split", choices=SPLITS)
    batch_size: int = opt(512, "SMILES per ChemNet forward pass")
    chemnet_device: str = opt("cpu", "where ChemNet runs: cpu (reproducible everywhere) | metric (the metric's device)",
                              choices=("cpu", "metric"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.batch_size) < 1:
            raise ConfigError(f"fcd: batch_size must be >= 1 (got {self.batch_size})")


@dataclass
class NSPDKConfig(PluginConfig):
    """NSPDK MMD^2 (``nspdk_mmd``, linear kernel) between the valid samples and a reference split, as in GDSS.

    GDSS calls EDeN with complexity=4 (radius <= 4, distance <= 4); atoms are labelled by symbol, bonds by
    int(bond order) so aromatic bonds count as single. Features are exact 64-bit hashes (EDeN folds them into 2**16
    buckets). NaN when no sample is valid.
    """

    implementation: ClassVar[Any] = _IMPL + "NSPDK"

    reference_split: str = opt("test", "reference split", choices=SPLITS)
    radius: int = opt(4, "largest neighbourhood radius r (GDSS: 4)")
    distance: int = opt(4, "largest distance d between the two roots (GDSS: 4)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.radius) < 0 or int(self.distance) < 0:
            raise ConfigError(f"nspdk: radius and distance must be >= 0 (got {self.radius}, {self.distance})")


@dataclass
class MolPropertiesConfig(PluginConfig):
    """SA score and QED of the valid samples: ``sas_mean``, ``qed_mean``, and their distance to a reference split
    (``sas_w1``/``qed_w1``: Wasserstein-1; ``sas_mean_diff``/``qed_mean_diff``: generated minus reference mean)."""

    implementation: ClassVar[Any] = _IMPL + "MolProperties"

    reference_split: str = opt("test", "reference split", choices=SPLITS)
    workers: int = opt(0, "processes scoring SAS/QED; 0 = 2 from 4000 uncached molecules on, else 1")

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.workers) < 0:
            raise ConfigError(f"mol_properties: workers must be >= 0 (got {self.workers})")


@dataclass
class MolTypeDistributionsConfig(PluginConfig):
    """Total variation between the atom-type (element, with its charge when non-zero) and bond-type histograms of
    the valid samples and of a reference split: ``atom_type_tv``, ``bond_type_tv``."""

    implementation: ClassVar[Any] = _IMPL + "MolTypeDistributions"

    reference_split: str = opt("test", "reference split", choices=SPLITS)
