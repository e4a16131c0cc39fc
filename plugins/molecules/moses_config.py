"""Options of the ``moses`` dataset (a light module: no torch, numpy or RDKit import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import opt
from anyorder.errors import ConfigError
from anyorder_plugins.molecules.options import MoleculeConfig

MOSES_WHEEL = "molsets-0.3.1-py3-none-any.whl"
MOSES_WHEEL_SHA256 = "7f4450e3ebecebe79c3a2a55950c93daddee071120daf64a163d03481e811d34"
MOSES_WHEEL_URL = ("https://files.pythonhosted.org/packages/ca/04/335f23e9ae95ca381ac7c3f335303dbbeb0f8a604d167891cf60c9"
                   "360178/" + MOSES_WHEEL)
MOSES_MEMBERS = {"train": "moses/dataset/data/train.csv.gz", "test": "moses/dataset/data/test.csv.gz"}


@dataclass
class MosesConfig(MoleculeConfig):
    """MOSES (ZINC Clean Leads subset): 1,584,663 train / 176,074 test SMILES, read from the ``molsets`` 0.3.1 wheel.

    The wheel is fetched as a file (never installed or imported) and its members ``moses/dataset/data/train.csv.gz``
    and ``test.csv.gz`` are read with ``zipfile`` + ``gzip``. ``max_train`` subsamples the training split (seeded by
    ``split_seed``) before the validation carve-out; the test split is always the whole MOSES test set.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.molecules.moses:MosesDataModule"
    dataset_name: ClassVar[str] = "moses"

    max_train: int = opt(0, "use this many training molecules, drawn without replacement (seeded); 0 means all 1.58M")
    sha256: str = opt(MOSES_WHEEL_SHA256, "sha256 of the molsets wheel (PyPI's digest of molsets-0.3.1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_train < 0:
            raise ConfigError(f"moses: max_train must be 0 (all) or positive (got {self.max_train})")
