"""Options of the ``zinc250k`` dataset (a light module: no torch, numpy or RDKit import)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import opt
from anyorder.errors import ConfigError
from anyorder_plugins.molecules.options import MoleculeConfig

ZINC_URL = ("https://raw.githubusercontent.com/aspuru-guzik-group/chemical_vae/master/models/zinc_properties/"
            "250k_rndm_zinc_drugs_clean_3.csv")
ZINC_FILE = "250k_rndm_zinc_drugs_clean_3.csv"
ZINC_SHA256 = "35e3f1a52b1badc0697e373d73a18ad773f415936ff992f4c6baa2e067b3e6ae"
"""From a third-party Git-LFS pointer (lianghsun/miniCDDD); NOT verified by us against the real file."""
ZINC_MD5 = "b59078b2b04c6e9431280e3dc42048d5"
"""The md5 that TorchDrug checks for this file."""
ZINC_SPLIT_URL = ("https://raw.githubusercontent.com/harryjo97/GDSS/24cc490e0c5b39cbd265fda33ab2bc8b528d4454/"
                  "data/valid_idx_zinc250k.json")
ZINC_SPLIT_FILE = "valid_idx_zinc250k.json"
ZINC_SPLIT_SHA256 = "cf1af3a8588c947493ff0a2b60178db6726e9a4dbb445235b149cd3bbe6831df"
SPLIT_CONVENTIONS = ("gdss", "moflow")


@dataclass
class Zinc250kConfig(MoleculeConfig):
    """ZINC250k: 249,455 drug-like molecules (chemical_vae ``250k_rndm_zinc_drugs_clean_3.csv``), at most 38 heavy atoms.

    Checksums: :func:`anyorder.downloads.fetch` verifies ``sha256``, whose default comes from a third-party Git-LFS
    pointer and has not been checked against the real file; after fetching, the file is also checked against
    ``md5`` (default: the md5 TorchDrug verifies), so a download is accepted only when both agree. If the default
    sha256 turns out wrong, fetch refuses the file: set ``sha256`` to the digest of a copy whose md5 matches.

    The test split is GDSS's ``valid_idx_zinc250k.json`` (24,887 ints): ``gdss`` (and CGVAE) read them as 0-based
    rows (default; reproduces published tables); ``moflow`` subtracts 1.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.molecules.zinc250k:Zinc250kDataModule"
    dataset_name: ClassVar[str] = "zinc250k"

    split_convention: str = opt("gdss", "which rows the test indices name: gdss (0-based rows, as CGVAE; reproduces "
                                        "published tables) | moflow (index - 1)", choices=SPLIT_CONVENTIONS)
    sha256: str = opt(ZINC_SHA256, "sha256 the CSV must have (verified by fetch; the default is unverified, see doc)")
    md5: str = opt(ZINC_MD5, "md5 the CSV must also have (TorchDrug's value); empty skips this second check")
    split_sha256: str = opt(ZINC_SPLIT_SHA256, "sha256 of valid_idx_zinc250k.json (GDSS @ 24cc490e)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.md5 and not re.fullmatch(r"[0-9a-f]{32}", self.md5):
            raise ConfigError(f"zinc250k: md5 must be 32 lowercase hex digits or empty (got {self.md5!r})")
