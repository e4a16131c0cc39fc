"""The molecule metric plugins: torchmetrics states over the definitions of :mod:`.scoring`, correct under DDP.

Every state is per-sample data or a sum, reduced by concatenation or summation, so ``compute`` after the ranks'
states are gathered sees exactly what one process would have seen:

* ``mol_validity``: sums (samples, valid, valid and connected, corrected valid).
* ``mol_uniqueness`` / ``mol_novelty``: a signed 64-bit BLAKE2b hash of each valid sample's canonical SMILES (equal
  in every process; two different SMILES share a hash with probability ~2**-64 per pair).
* ``fcd``: ChemNet activation rows of the valid samples (float32 [n, 512]); the Gaussian statistics are taken in
  ``compute``.
* ``nspdk``: per update, the sum of the samples' normalized NSPDK vectors (ids, values) and the sample count; the
  mean embedding is a sum over updates and ranks.
* ``mol_properties``: SA score and QED of each valid sample.
* ``mol_type_distributions``: per update, (hashed type, count) pairs of atom types and bond types.

Reference data (``datamodule.reference_smiles(split)``) is turned into hashes, ChemNet statistics, an NSPDK mean
embedding, property values or histograms once per datamodule instance and kept while the datamodule lives; the
numeric results are also kept on disk, under a digest of the reference SMILES, the options and the code
(:mod:`.reference`), so that a later run or ``evaluate-samples`` on the same data does not recompute them.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from anyorder.metrics import SampleMetric
from anyorder_plugins.molecules.metrics import reference, scoring
from anyorder_plugins.molecules.metrics.config import (
    FCDConfig,
    MolNoveltyConfig,
    MolPropertiesConfig,
    MolTypeDistributionsConfig,
    MolUniquenessConfig,
    MolValidityConfig,
    NSPDKConfig,
)

_REFERENCE_CACHE: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _cat(state: Any, dtype: torch.dtype, width: int | None = None) -> Tensor:
    """A list (or gathered) state as one tensor; an empty tensor of the right shape when nothing was added."""
    if isinstance(state, list) and len(state) == 0:
        return torch.zeros((0,) if width is None else (0, width), dtype=dtype)
    return dim_zero_cat(state)


def _hashes(smiles: Sequence[str]) -> list[int]:
    return [scoring.stable_hash(s) for s in smiles]


_LAST_PARSE: list[Any] = []


def _parse(samples: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Sanitized Mol (or None) of every sample and the canonical SMILES of the valid ones.

    The run's metrics are updated one after the other with the same list of decoded samples, so the result for the
    last list seen is kept (with a reference to the list itself, so its identity cannot be reused, and checked
    element by element by identity) and shared: each sample is parsed once, not once per metric.
    """
    if _LAST_PARSE and _LAST_PARSE[0] is samples and len(_LAST_PARSE[1]) == len(samples) and all(
            a is b for a, b in zip(_LAST_PARSE[1], samples, strict=True)):
        return _LAST_PARSE[2]
    mols = [scoring.to_mol(s) for s in samples]
    smiles = [scoring.canonical_from(s, m) for s, m in zip(samples, mols, strict=True) if m is not None]
    _LAST_PARSE[:] = [samples, list(samples), (mols, smiles)]
    return mols, smiles


class MoleculeMetric(SampleMetric):
    """Shared parts: parsing of samples, and reference data cached per datamodule."""

    def __init__(self, config: Any, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self._local_cache: dict[Any, Any] = {}

    def _valid(self, samples: Sequence[Any]) -> tuple[list[Any], list[str]]:
        """Sanitized Mols and canonical SMILES of the valid samples (same order, duplicates kept)."""
        parsed = _parse(samples)
        return [m for m in parsed[0] if m is not None], parsed[1]

    def _reference(self, key: Any, build: Callable[[list[str]], reference.Arrays], split: str) -> reference.Arrays:
        """``build(reference canonical SMILES of split)``: named numeric arrays, computed once per datamodule
        instance and key, and read from the disk store (:func:`.reference.cached`) when it holds them."""
        try:
            cache = _REFERENCE_CACHE.setdefault(self.datamodule, {})
        except TypeError:  # None, or a datamodule that cannot be weakly referenced
            cache = self._local_cache
        full_key = (type(self).__name__, split, key)
        if full_key not in cache:
            getter = getattr(self.datamodule, "reference_smiles", None)
            if getter is None:
                raise RuntimeError(f"{type(self).__name__} needs a datamodule with reference_smiles(split) "
                                   f"(a molecule datamodule); got {type(self.datamodule).__name__}")
            smiles = list(getter(split))
            cache[full_key] = reference.cached(type(self).__name__, key, split, smiles, build)
        return cache[full_key]


def _reference_mols(smiles: list[str]) -> Iterator[Any]:
    """The sanitized Mols of reference SMILES, one at a time (a training split need not fit in memory as Mols)."""
    from rdkit import Chem

    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        if mol is not None and mol.GetNumAtoms() > 0:
            yield mol


class MolValidity(MoleculeMetric):
    """``validity``, ``validity_connected`` and optionally ``validity_corrected``, all over ALL samples."""

    Config = MolValidityConfig
    config: MolValidityConfig
    count: Tensor
    valid: Tensor
    connected: Tensor
    corrected: Tensor
    too_long: Tensor

    def __init__(self, config: MolValidityConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        for name in ("count", "valid", "connected", "corrected", "too_long"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self._correct_fn = scoring.default_correct_fn() if config.corrected else None

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Count the samples, the valid ones, the valid single-fragment ones (and the correctable ones)."""
        valid, _ = self._valid(samples)
        self.count += len(samples)
        self.valid += len(valid)
        self.connected += sum(1 for m in valid if scoring.num_fragments(m) == 1)
        self.too_long += sum(1 for s in samples if scoring.too_long(s))
        if self._correct_fn is not None:
            self.corrected += sum(1 for s in samples if scoring.corrected_valid(s, self._correct_fn))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Rates over all samples (0 when there is no sample)."""
        n = self.count.clamp(min=1)
        out = {"validity": self.valid / n, "validity_connected": self.connected / n,
               "invalid_too_long": self.too_long / n}
        if self._correct_fn is not None:
            out["validity_corrected"] = self.corrected / n
        return out


class _CanonicalHashes(MoleculeMetric):
    """Keeps a 64-bit hash of each valid sample's canonical SMILES (concatenated over ranks)."""

    hashes: list[Tensor]

    def __init__(self, config: Any, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.add_state("hashes", default=[], dist_reduce_fx="cat")

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add the hashes of the valid samples' canonical SMILES."""
        _, smiles = self._valid(samples)
        self.hashes.append(torch.tensor(_hashes(smiles), dtype=torch.int64, device=self.device))


class MolUniqueness(_CanonicalHashes):
    """``uniqueness``: distinct canonical SMILES hashes among the valid samples / valid samples."""

    Config = MolUniquenessConfig

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Unique / valid (0 when no sample is valid)."""
        hashes = _cat(self.hashes, torch.int64)
        value = torch.unique(hashes).numel() / hashes.numel() if hashes.numel() else 0.0
        return {"uniqueness": torch.tensor(value, dtype=torch.float64)}


class MolNovelty(_CanonicalHashes):
    """``novelty``: valid unique samples absent from the reference (training) split / valid unique."""

    Config = MolNoveltyConfig
    config: MolNoveltyConfig

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Novel unique / valid unique (0 when no sample is valid)."""
        split = self.config.reference_split
        ref = self._reference("hashes", lambda s: {"hashes": np.unique(np.array(_hashes(s), dtype=np.int64))}, split)
        unique = np.unique(_cat(self.hashes, torch.int64).cpu().numpy())
        value = float(np.mean(~np.isin(unique, ref["hashes"]))) if len(unique) else 0.0
        return {"novelty": torch.tensor(value, dtype=torch.float64)}


class FCD(MoleculeMetric):
    """``fcd``: Fréchet ChemNet Distance of the valid samples to the reference split (NaN below 2 valid samples)."""

    Config = FCDConfig
    config: FCDConfig
    activations: list[Tensor]

    def __init__(self, config: FCDConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.add_state("activations", default=[], dist_reduce_fx="cat")

    def _chemnet_device(self) -> str:
        return "cpu" if self.config.chemnet_device == "cpu" else str(self.device)

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add the ChemNet activations of the valid samples' canonical SMILES."""
        _, smiles = self._valid(samples)
        act = scoring.chemnet_activations(smiles, int(self.config.batch_size), self._chemnet_device())
        self.activations.append(torch.from_numpy(act).to(self.device))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """The Fréchet distance between the Gaussian fits of the samples' and the reference's activations."""
        def build(smiles: list[str]) -> reference.Arrays:
            canon = [scoring.canonical_strict(s) for s in smiles]
            act = scoring.chemnet_activations(canon, int(self.config.batch_size), self._chemnet_device())
            return scoring.gaussian_stats(act)

        # ChemNet's float32 activations differ slightly between a CPU and an accelerator: separate statistics.
        ref = self._reference(("stats", torch.device(self._chemnet_device()).type), build, self.config.reference_split)
        act = _cat(self.activations, torch.float32, 512).cpu().numpy()
        value = float("nan")
        if act.shape[0] >= 2:
            gen = scoring.gaussian_stats(act)
            value = scoring.frechet_distance(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"])
        return {"fcd": torch.tensor(value, dtype=torch.float64)}


class NSPDK(MoleculeMetric):
    """``nspdk_mmd``: NSPDK MMD^2 (linear kernel) between the valid samples and the reference split."""

    Config = NSPDKConfig
    config: NSPDKConfig
    ids: list[Tensor]
    values: list[Tensor]
    count: Tensor

    def __init__(self, config: NSPDKConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add the summed feature vectors of the valid samples (aggregated per update: sums are associative)."""
        mols, _ = self._valid(samples)
        uniq, sums, count = scoring.nspdk_sum(mols, int(self.config.radius), int(self.config.distance))
        self.ids.append(torch.from_numpy(uniq.astype(np.int64)).to(self.device))
        self.values.append(torch.from_numpy(sums.astype(np.float64)).to(self.device))
        self.count += count

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """||mean embedding of the samples - mean embedding of the reference||^2 (NaN when no sample is valid)."""
        radius, distance = int(self.config.radius), int(self.config.distance)

        def build(smiles: list[str]) -> reference.Arrays:
            ids, values, _ = scoring.nspdk_mean(_reference_mols(smiles), radius, distance)
            return {"ids": ids, "values": values}

        stored = self._reference((radius, distance), build, self.config.reference_split)
        ref = (stored["ids"], stored["values"])
        count = int(self.count.item())
        value = float("nan")
        if count:
            ids = _cat(self.ids, torch.int64).cpu().numpy()
            values = _cat(self.values, torch.float64).cpu().numpy()
            value = scoring.mmd_linear(scoring.mean_embedding(ids, values, count), ref)
        return {"nspdk_mmd": torch.tensor(value, dtype=torch.float64)}


class MolProperties(MoleculeMetric):
    """SA score and QED: means over the valid samples, Wasserstein-1 and mean difference to the reference split."""

    Config = MolPropertiesConfig
    config: MolPropertiesConfig
    sas: list[Tensor]
    qed: list[Tensor]

    def __init__(self, config: MolPropertiesConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        self.add_state("sas", default=[], dist_reduce_fx="cat")
        self.add_state("qed", default=[], dist_reduce_fx="cat")

    def _workers(self) -> int | None:
        return int(self.config.workers) or None

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add the SA score and QED of each valid sample."""
        _, smiles = self._valid(samples)
        sas, qed = scoring.sas_qed(smiles, self._workers())
        self.sas.append(torch.from_numpy(sas).to(self.device))
        self.qed.append(torch.from_numpy(qed).to(self.device))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """``sas_mean``, ``sas_w1``, ``sas_mean_diff``, ``qed_mean``, ``qed_w1``, ``qed_mean_diff``."""
        def build(smiles: list[str]) -> reference.Arrays:
            sas, qed = scoring.sas_qed(smiles, self._workers())
            return {"sas": sas, "qed": qed}

        ref = self._reference("values", build, self.config.reference_split)
        out: dict[str, float] = {}
        out.update(scoring.property_distances(_cat(self.sas, torch.float64).cpu().numpy(), ref["sas"], "sas"))
        out.update(scoring.property_distances(_cat(self.qed, torch.float64).cpu().numpy(), ref["qed"], "qed"))
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


class MolTypeDistributions(MoleculeMetric):
    """``atom_type_tv`` and ``bond_type_tv``: total variation between the samples' and the reference's histograms."""

    Config = MolTypeDistributionsConfig
    config: MolTypeDistributionsConfig
    atom_keys: list[Tensor]
    atom_counts: list[Tensor]
    bond_keys: list[Tensor]
    bond_counts: list[Tensor]

    def __init__(self, config: MolTypeDistributionsConfig, datamodule: Any = None) -> None:
        super().__init__(config, datamodule)
        for name in ("atom_keys", "atom_counts", "bond_keys", "bond_counts"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, samples: Sequence[Any]) -> None:  # type: ignore[override]
        """Add (hashed type, count) pairs of the valid samples' atoms and bonds."""
        mols, _ = self._valid(samples)
        atoms, bonds = scoring.type_histograms(mols)
        for prefix, hist in (("atom", atoms), ("bond", bonds)):
            keys = [scoring.stable_hash(k) for k in hist]
            getattr(self, f"{prefix}_keys").append(torch.tensor(keys, dtype=torch.int64, device=self.device))
            getattr(self, f"{prefix}_counts").append(
                torch.tensor(list(hist.values()), dtype=torch.float64, device=self.device))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Total variation per histogram (NaN when either side is empty)."""
        def build(smiles: list[str]) -> reference.Arrays:
            out: reference.Arrays = {}
            for prefix, hist in zip(("atom", "bond"), scoring.type_histograms(_reference_mols(smiles)), strict=True):
                out[f"{prefix}_keys"] = np.array([scoring.stable_hash(k) for k in hist], dtype=np.int64)
                out[f"{prefix}_counts"] = np.array(list(hist.values()), dtype=np.float64)
            return out

        stored = self._reference("histograms", build, self.config.reference_split)
        out = {}
        for prefix in ("atom", "bond"):
            ref: Counter[int] = Counter(dict(zip(stored[f"{prefix}_keys"].tolist(),
                                                 stored[f"{prefix}_counts"].tolist(), strict=True)))
            keys = _cat(getattr(self, f"{prefix}_keys"), torch.int64).cpu().tolist()
            counts = _cat(getattr(self, f"{prefix}_counts"), torch.float64).cpu().tolist()
            hist: Counter[int] = Counter()
            for k, c in zip(keys, counts, strict=True):
                hist[k] += c
            out[f"{prefix}_type_tv"] = torch.tensor(scoring.total_variation(hist, ref), dtype=torch.float64)
        return out
