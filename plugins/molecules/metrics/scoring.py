"""Molecule metrics as plain functions: the single definition used by the metric plugins and by offline evaluation.

Samples are ``str | Chem.Mol | None`` (a SMILES string, a possibly unsanitized Mol, or nothing). A sample is
*valid* when RDKit sanitizes it as it is: a string that ``Chem.MolFromSmiles`` parses (parsing sanitizes), or a Mol
whose copy passes ``Chem.SanitizeMol``. ``None``, an unparsable string and a molecule with no atom are invalid.
Every rate below that mentions "samples" divides by the number of ALL samples (the protocol of GDSS/MOSES; a known
GDSS bug divided by the survivors).

* :func:`validity`, :func:`validity_corrected` (labelled: with the valency correction of
  ``anyorder_plugins.molecules.chem.valency_correct`` or a function passed in), :func:`uniqueness`, :func:`novelty`.
* :func:`fcd`: Fréchet ChemNet Distance. ChemNet and its one-hot SMILES encoding come from ``fcd_torch`` (the
  package MOSES and GDSS use; it reads a SMILES only up to its first ``.``); the Fréchet distance is computed here in
  float64 (``scipy.linalg.sqrtm``), so SciPy's deprecation of ``sqrtm(disp=...)`` does not matter.
* :func:`nspdk_mmd`: squared MMD with the linear kernel on normalized NSPDK feature vectors, the GDSS protocol (EDeN
  ``vectorize(complexity=4, discrete=True)``: radius r <= 4, distance d <= 4; nodes labelled by atom symbol, edges by
  ``int(bond.GetBondTypeAsDouble())``, so an aromatic bond counts as a single bond exactly as in GDSS). Features are
  hashed to 64 bits (EDeN folds them into 2**16 buckets, where distinct features collide); see :func:`nspdk_features`.
* :func:`properties`, :func:`property_distances`: SA score and QED, their means and their distance to a reference
  sample (Wasserstein-1 and the difference of means).
* :func:`type_distributions`: total variation between the atom-type and bond-type histograms.
* :func:`evaluate`: all of the above at once, as a flat dict.

Importing this module imports RDKit and numpy, never torch (FCD imports torch and fcd_torch when called).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]

Sample = Any  # str | Chem.Mol | None

MAX_SAMPLE_CHARS = 500
"""A SMILES sample longer than this is invalid without being parsed (reason ``too_long``). The largest molecules of
QM9 and ZINC250k take under 120 characters; one very long line would otherwise cost minutes and gigabytes in the
graph kernels and RDKit."""

MAX_SAMPLE_ATOMS = 150
"""A sample with more heavy atoms than this is invalid (reason ``too_long``): ZINC250k's largest has 38."""


def too_long(sample: Sample) -> bool:
    """Whether ``sample`` is over the cost cap (:data:`MAX_SAMPLE_CHARS`, :data:`MAX_SAMPLE_ATOMS`)."""
    if isinstance(sample, str):
        return len(sample) > MAX_SAMPLE_CHARS
    return isinstance(sample, Chem.Mol) and sample.GetNumAtoms() > MAX_SAMPLE_ATOMS

# ---------------------------------------------------------------------------------------------------------------
# Parsing, canonical SMILES, stable hashes
# ---------------------------------------------------------------------------------------------------------------


def to_mol(sample: Sample) -> Chem.Mol | None:
    """A sanitized copy of ``sample`` (a SMILES string or a Mol), or None when it is not a valid molecule.

    A Mol is copied and sanitized as it is (no fixing); a string is parsed with ``Chem.MolFromSmiles``. A molecule
    with no atom (e.g. the empty string) is invalid.
    """
    if sample is None or too_long(sample):
        return None
    if isinstance(sample, str):
        mol = Chem.MolFromSmiles(sample) if sample else None
    elif isinstance(sample, Chem.Mol):
        mol = Chem.Mol(sample)
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # noqa: BLE001 -- RDKit raises several exception types for invalid molecules
            return None
    else:
        raise TypeError(f"a molecule sample is a SMILES string, an RDKit Mol or None (got {type(sample).__name__})")
    if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumAtoms() > MAX_SAMPLE_ATOMS:
        return None
    return mol


def canonical_of_mol(mol: Chem.Mol) -> str:
    """Canonical SMILES of a sanitized Mol, as a string parser would produce it.

    ``MolToSmiles`` is re-applied to the parsed SMILES (as MOSES does), so a Mol sample and the same molecule given
    as a string get the same canonical form even where RDKit's canonicalization is not idempotent.
    """
    smiles = Chem.MolToSmiles(mol)
    again = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(again) if again is not None else smiles


def canonical_from(sample: Sample, mol: Chem.Mol) -> str:
    """Canonical SMILES of a valid sample whose sanitized Mol (:func:`to_mol`) is ``mol``.

    A string's parsed Mol is written once (``MolToSmiles(MolFromSmiles(s))``); a Mol sample goes through
    :func:`canonical_of_mol`. Both give what a reference set canonicalized from strings holds.
    """
    return Chem.MolToSmiles(mol) if isinstance(sample, str) else canonical_of_mol(mol)


def canonical(sample: Sample) -> str | None:
    """Canonical SMILES of a valid sample, None for an invalid one."""
    mol = to_mol(sample)
    return canonical_from(sample, mol) if mol is not None else None


def stable_hash(text: str) -> int:
    """Signed 64-bit BLAKE2b hash of ``text``: equal in every process (unlike Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def num_fragments(mol: Chem.Mol) -> int:
    """Number of connected components of ``mol``."""
    return len(Chem.GetMolFrags(mol))


# ---------------------------------------------------------------------------------------------------------------
# Validity, uniqueness, novelty
# ---------------------------------------------------------------------------------------------------------------


def validity(samples: Sequence[Sample]) -> dict[str, float]:
    """Validity without correction, over ALL samples.

    Returns ``validity`` (valid / samples; multi-fragment molecules count as valid, as in GDSS),
    ``validity_connected`` (valid and a single fragment / samples: the largest fragment is the whole molecule),
    ``num_samples``, ``num_valid``, and the samples over the cost cap (:func:`too_long`, invalid):
    ``invalid_too_long`` (a rate) and ``num_too_long``.
    """
    n = len(samples)
    mols = [to_mol(s) for s in samples]
    valid = [m for m in mols if m is not None]
    connected = sum(1 for m in valid if num_fragments(m) == 1)
    long = sum(1 for s in samples if too_long(s))
    return {"validity": len(valid) / n if n else 0.0, "validity_connected": connected / n if n else 0.0,
            "num_samples": float(n), "num_valid": float(len(valid)),
            "invalid_too_long": long / n if n else 0.0, "num_too_long": float(long)}


def default_correct_fn() -> Callable[[Chem.Mol], Chem.Mol | None]:
    """The standard valency correction, ``anyorder_plugins.molecules.chem.valency_correct``."""
    from anyorder_plugins.molecules import chem

    return chem.valency_correct


def unsanitized_mol(sample: Sample) -> Chem.Mol | None:
    """``sample`` as a Mol without sanitization (a copy for a Mol; ``sanitize=False`` parsing for a string)."""
    if sample is None or too_long(sample):
        return None
    if isinstance(sample, str):
        return Chem.MolFromSmiles(sample, sanitize=False) if sample else None
    return Chem.Mol(sample)


def corrected_valid(sample: Sample, correct_fn: Callable[[Chem.Mol], Chem.Mol | None]) -> bool:
    """Whether ``correct_fn`` turns ``sample`` into a molecule that sanitizes (and has an atom)."""
    mol = unsanitized_mol(sample)
    if mol is None or mol.GetNumAtoms() == 0:
        return False
    try:
        fixed = correct_fn(mol)
    except Exception:  # noqa: BLE001 -- a correction that fails leaves the sample invalid
        return False
    return fixed is not None and to_mol(fixed) is not None


def validity_corrected(samples: Sequence[Sample],
                       correct_fn: Callable[[Chem.Mol], Chem.Mol | None] | None = None) -> dict[str, float]:
    """Validity WITH valency correction (a separate, labelled number): corrected valid / ALL samples.

    ``correct_fn(mol) -> Mol | None`` receives an unsanitized copy; by default
    ``anyorder_plugins.molecules.chem.valency_correct``.
    """
    fn = correct_fn if correct_fn is not None else default_correct_fn()
    n = len(samples)
    ok = sum(1 for s in samples if corrected_valid(s, fn))
    return {"validity_corrected": ok / n if n else 0.0}


def valid_canonical(samples: Sequence[Sample]) -> list[str]:
    """Canonical SMILES of the valid samples, in order, duplicates kept."""
    return [c for c in (canonical(s) for s in samples) if c is not None]


def uniqueness(samples: Sequence[Sample]) -> dict[str, float]:
    """Unique canonical SMILES among the valid samples / valid samples (0 when none is valid)."""
    smiles = valid_canonical(samples)
    return {"uniqueness": len(set(smiles)) / len(smiles) if smiles else 0.0, "num_valid": float(len(smiles))}


def novelty(valid_unique: Iterable[str], train_canonical: Iterable[str]) -> dict[str, float]:
    """Valid unique canonical SMILES absent from the training set / valid unique (0 when there is none).

    Both arguments are canonical SMILES (duplicates in ``valid_unique`` are removed here).
    """
    gen = set(valid_unique)
    train = train_canonical if isinstance(train_canonical, (set, frozenset)) else set(train_canonical)
    return {"novelty": sum(1 for s in gen if s not in train) / len(gen) if gen else 0.0}


# ---------------------------------------------------------------------------------------------------------------
# FCD
# ---------------------------------------------------------------------------------------------------------------


def fcd_package() -> str:
    """The package providing ChemNet, with its version (recorded next to FCD values)."""
    from importlib import metadata

    return f"fcd_torch {metadata.version('fcd_torch')}"


@lru_cache(maxsize=1)
def _chemnet() -> Any:
    import os

    import fcd_torch
    import torch
    from fcd_torch.utils import load_imported_model

    path = os.path.join(os.path.dirname(fcd_torch.__file__), "ChemNet_v0.13_pretrained.pt")
    model = load_imported_model(torch.load(path))
    model.eval()
    return model


def chemnet_activations(smiles: Sequence[str], batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """ChemNet penultimate activations (float32 [n, 512]) of SMILES strings, encoded exactly as fcd_torch does.

    The strings are used as given (canonicalize them first: :func:`fcd` does).
    """
    import torch
    from fcd_torch.utils import get_one_hot

    if len(smiles) == 0:
        return np.zeros((0, 512), dtype=np.float32)
    model = _chemnet().to(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(smiles), batch_size):
            chunk = smiles[start:start + batch_size]
            one_hot = np.stack([get_one_hot(s, 350) for s in chunk])
            x = torch.from_numpy(one_hot / one_hot.shape[2]).float().transpose(1, 2).to(device)
            # A copy: ChemNet's output is a view into the LSTM's whole [batch, length, 512] output, which the view
            # would keep alive (~370 MB per batch of 512; 22 GB over QM9's training set).
            out.append(model(x).cpu().numpy().copy())
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


def gaussian_stats(activations: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and covariance (ddof 1) of activation rows, in float64."""
    act = np.asarray(activations, dtype=np.float64)
    return {"mu": act.mean(axis=0), "sigma": np.cov(act, rowvar=False)}


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.

    When the square root of the product is not finite, ``eps`` is added to both diagonals (the usual fallback); a
    small imaginary part from round-off is dropped (a large one raises ValueError).
    """
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    s1, s2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fcd_stats(smiles: Sequence[str], canonicalize: bool = True) -> dict[str, np.ndarray]:
    """ChemNet mean and covariance of a set of SMILES (canonicalized first unless told otherwise)."""
    if canonicalize:
        smiles = [canonical_strict(s) for s in smiles]
    return gaussian_stats(chemnet_activations(smiles))


def canonical_strict(smiles: str) -> str:
    """``MolToSmiles(MolFromSmiles(smiles))``, raising ValueError on an invalid SMILES (what fcd_torch does)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES {smiles!r}")
    return Chem.MolToSmiles(mol)


def fcd(gen_smiles: Sequence[str], ref_smiles: Sequence[str] | None = None, *,
        ref_stats: dict[str, np.ndarray] | None = None, canonicalize: bool = True) -> dict[str, Any]:
    """Fréchet ChemNet Distance between generated SMILES and a reference (SMILES, or its :func:`fcd_stats`).

    Pass the canonical SMILES of the VALID generated molecules (duplicates kept); with ``canonicalize`` each string
    is re-canonicalized as fcd_torch's ``canonize=True`` does. Returns ``{"fcd": value, "fcd_package": "fcd_torch
    <version>", "fcd_num_gen": n}``; the value is NaN with fewer than 2 generated molecules.
    """
    if (ref_smiles is None) == (ref_stats is None):
        raise ValueError("fcd: give exactly one of ref_smiles and ref_stats")
    ref = ref_stats if ref_stats is not None else fcd_stats(ref_smiles or [], canonicalize)
    value = float("nan")
    if len(gen_smiles) >= 2:
        gen = fcd_stats(gen_smiles, canonicalize)
        value = frechet_distance(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"])
    return {"fcd": value, "fcd_package": fcd_package(), "fcd_num_gen": float(len(gen_smiles))}


# ---------------------------------------------------------------------------------------------------------------
# NSPDK
# ---------------------------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _label_code(kind: str, label: Any, degree: int) -> int:
    digest = hashlib.blake2b(f"{kind}\x00{label}\x00{degree}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=4096)
def _atom_code(symbol: str, degree: int) -> int:
    return _label_code("atom", symbol, degree)


@lru_cache(maxsize=64)
def _bond_code(label: Any) -> int:
    return _label_code("bond", label, 2)


def bond_label(bond: Chem.Bond) -> int:
    """The NSPDK edge label of GDSS: ``int(bond.GetBondTypeAsDouble())`` (aromatic 1.5 -> 1)."""
    return int(bond.GetBondTypeAsDouble())


def nspdk_features(mol: Chem.Mol, radius: int = 4, distance: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The normalized NSPDK feature vector of one molecular graph: (feature ids int64, values float64).

    The definition is EDeN's ``Vectorizer(r=radius, d=distance, discrete=True)`` on the graph of GDSS's
    ``mols_to_nx`` (atoms labelled by symbol, bonds by :func:`bond_label`; the atoms of ``mol`` as they are, so
    explicit hydrogens count only when the Mol has them). EDeN first turns each bond into a vertex, so distances
    double. The rooted neighbourhood of atom v at radius r is described by its BFS levels 0..2r in that expanded
    graph, each level the multiset of (label, degree) of its vertices (and it exists only when some atom lies at
    distance >= r from v). For each ordered pair of atoms (v, u) at distance k <= ``distance`` and each r <=
    ``radius`` where both neighbourhoods exist, two features are counted in block (r, k): the unordered pair of
    neighbourhoods, and u's neighbourhood alone (EDeN's "half" feature). Each block is scaled to unit norm, then the
    whole vector. Features are 64-bit hashes (multiset hashes as sums of 64-bit label codes, levels chained with
    SplitMix64), so distinct features collide with negligible probability.
    """
    n = mol.GetNumAtoms()
    if n == 0:
        raise ValueError("nspdk_features: a molecule with no atom has no NSPDK features")
    dist = Chem.GetDistanceMatrix(mol)
    big = radius + distance + 10
    dmat = np.where(dist > n, big, dist).astype(np.int64)
    ecc = np.where(dmat < big, dmat, -1).max(axis=1)
    codes = np.array([_atom_code(a.GetSymbol(), a.GetDegree()) for a in mol.GetAtoms()], dtype=np.uint64)
    bonds = list(mol.GetBonds())
    levels = np.zeros((n, 2 * radius + 1), dtype=np.uint64)
    for k in range(radius + 1):
        levels[:, 2 * k] = ((dmat == k) * codes[None, :]).sum(axis=1, dtype=np.uint64)
    if bonds:
        ends_a = np.array([b.GetBeginAtomIdx() for b in bonds])
        ends_b = np.array([b.GetEndAtomIdx() for b in bonds])
        bcodes = np.array([_bond_code(bond_label(b)) for b in bonds], dtype=np.uint64)
        bmin = np.minimum(dmat[:, ends_a], dmat[:, ends_b])
        for k in range(radius):
            levels[:, 2 * k + 1] = ((bmin == k) * bcodes[None, :]).sum(axis=1, dtype=np.uint64)
    # Chained neighbourhood signatures; sig[:, r] describes levels 0..2r.
    sig = np.zeros((n, radius + 1), dtype=np.uint64)
    running = np.zeros(n, dtype=np.uint64)
    for i in range(2 * radius + 1):
        running = _mix(running * _GOLD + _mix(levels[:, i] + np.uint64(i + 1)))
        if i % 2 == 0:
            sig[:, i // 2] = running
    iv, iu = np.nonzero(dmat <= distance)
    kk = dmat[iv, iu].astype(np.uint64)
    feats, blocks = [], []
    for r in range(radius + 1):
        ok = (ecc[iv] >= r) & (ecc[iu] >= r)
        if not ok.any():
            continue
        hv, hu, k = sig[iv[ok], r], sig[iu[ok], r], kk[ok]
        block = np.uint64(r * (distance + 1)) + k
        lo, hi = np.minimum(hv, hu), np.maximum(hv, hu)
        pair = _mix(_mix(_mix(lo ^ np.uint64(0x1234567)) + hi) + block * _GOLD)
        half = _mix(_mix(hu ^ np.uint64(0x7654321)) + block * _GOLD + np.uint64(1))
        feats += [pair, half]
        blocks += [block, block]
    f = np.concatenate(feats)
    b = np.concatenate(blocks)
    uniq, first, counts = np.unique(f, return_index=True, return_counts=True)
    ublock = b[first].astype(np.int64)
    counts = counts.astype(np.float64)
    block_norm = np.sqrt(np.bincount(ublock, weights=counts * counts))
    values = counts / block_norm[ublock]
    values /= math.sqrt(float(values @ values))
    return uniq.view(np.int64), values


def nspdk_batch(mols: Iterable[Chem.Mol], radius: int = 4, distance: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenated feature ids and values of several molecules, and their count (molecules with no atom skipped)."""
    ids, vals, count = [], [], 0
    for mol in mols:
        if mol is None or mol.GetNumAtoms() == 0:
            continue
        i, v = nspdk_features(mol, radius, distance)
        ids.append(i)
        vals.append(v)
        count += 1
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), 0
    return np.concatenate(ids), np.concatenate(vals), count


def nspdk_sum(mols: Iterable[Chem.Mol], radius: int = 4, distance: int = 4,
              chunk: int = 2000) -> tuple[np.ndarray, np.ndarray, int]:
    """The summed feature vector (sorted unique ids, summed values) of several molecules, and their count.

    Equal to reducing :func:`nspdk_batch` over all of them, but reduced every ``chunk`` molecules, so the memory
    is bounded by the distinct features rather than by all features of all molecules (a QM9 molecule has ~10^3
    feature occurrences, a ZINC one ~10^4: the 120k-molecule QM9 training set would need gigabytes unreduced).
    """
    ids_acc = np.zeros(0, dtype=np.int64)
    vals_acc = np.zeros(0, dtype=np.float64)
    total = 0
    batch: list[Chem.Mol] = []

    def fold() -> None:
        nonlocal ids_acc, vals_acc, total
        ids, vals, count = nspdk_batch(batch, radius, distance)
        uniq, inverse = np.unique(np.concatenate([ids_acc, ids]), return_inverse=True)
        vals_acc = np.bincount(inverse, weights=np.concatenate([vals_acc, vals]), minlength=len(uniq)).astype(np.float64)
        ids_acc, total = uniq, total + count
        batch.clear()

    for mol in mols:
        batch.append(mol)
        if len(batch) >= chunk:
            fold()
    fold()
    return ids_acc, vals_acc, total


def nspdk_mean(mols: Iterable[Chem.Mol], radius: int = 4, distance: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """The mean feature vector (sorted unique ids, mean values) of several molecules, and their count."""
    ids, sums, count = nspdk_sum(mols, radius, distance)
    return ids, sums / max(count, 1), count


def mean_embedding(ids: np.ndarray, values: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean feature vector (sorted unique ids, mean values) of ``count`` graphs given as concatenated features."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    return uniq, np.bincount(inverse, weights=values, minlength=len(uniq)) / count


def mmd_linear(emb_x: tuple[np.ndarray, np.ndarray], emb_y: tuple[np.ndarray, np.ndarray]) -> float:
    """MMD^2 with the linear kernel between two samples given by their mean embeddings: ||mu_x - mu_y||^2.

    Equal to mean(K_xx) + mean(K_yy) - 2 mean(K_xy) (the biased estimate GDSS reports) for the linear kernel.
    """
    ids = np.concatenate([emb_x[0], emb_y[0]])
    vals = np.concatenate([emb_x[1], -emb_y[1]])
    uniq, inverse = np.unique(ids, return_inverse=True)
    diff = np.bincount(inverse, weights=vals, minlength=len(uniq))
    return float(diff @ diff)


def nspdk_mmd(gen_mols: Sequence[Chem.Mol], ref_mols: Sequence[Chem.Mol], radius: int = 4,
              distance: int = 4) -> dict[str, float]:
    """NSPDK MMD^2 between two sets of sanitized Mols (pass the valid generated ones). NaN when either is empty."""
    gx = nspdk_mean(gen_mols, radius, distance)
    gy = nspdk_mean(ref_mols, radius, distance)
    if gx[2] == 0 or gy[2] == 0:
        return {"nspdk_mmd": float("nan")}
    return {"nspdk_mmd": mmd_linear(gx[:2], gy[:2])}


# ---------------------------------------------------------------------------------------------------------------
# SA score and QED
# ---------------------------------------------------------------------------------------------------------------

_PROPERTY_CACHE: dict[str, tuple[float, float]] = {}
_PROPERTY_CACHE_MAX = 2_000_000
PARALLEL_MIN = 4000
"""From this many uncached molecules on, SAS/QED run in a pool of worker processes."""


def _sascorer() -> Any:
    from rdkit.Contrib.SA_Score import sascorer

    return sascorer


def sas_qed_of_smiles(smiles: str) -> tuple[float, float]:
    """(SA score, QED) of a canonical SMILES (NaN, NaN if it does not parse)."""
    from rdkit.Chem import QED

    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return float("nan"), float("nan")
    return float(_sascorer().calculateScore(mol)), float(QED.qed(mol))


def _sas_qed_chunk(chunk: list[str]) -> list[tuple[float, float]]:
    return [sas_qed_of_smiles(s) for s in chunk]


def sas_qed(smiles: Sequence[str], workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SA scores and QED values (float64 arrays) of canonical SMILES, cached by SMILES in this process.

    Uncached molecules are scored in ``workers`` spawned processes (default: 2 when there are at least
    :data:`PARALLEL_MIN` of them, else in this process). The values do not depend on ``workers``.
    """
    todo = sorted({s for s in smiles if s not in _PROPERTY_CACHE})
    if workers is None:
        workers = 2 if len(todo) >= PARALLEL_MIN else 1
    if todo:
        if workers > 1:
            size = math.ceil(len(todo) / (workers * 4))
            chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = [v for part in pool.map(_sas_qed_chunk, chunks) for v in part]
        else:
            results = _sas_qed_chunk(todo)
        if len(_PROPERTY_CACHE) + len(todo) > _PROPERTY_CACHE_MAX:
            _PROPERTY_CACHE.clear()
        _PROPERTY_CACHE.update(zip(todo, results, strict=True))
        local = dict(zip(todo, results, strict=True))
    else:
        local = {}
    pairs = [local[s] if s in local else _PROPERTY_CACHE[s] for s in smiles]
    arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def properties(smiles: Sequence[str], workers: int | None = None) -> dict[str, float]:
    """Means of the SA score and QED over canonical SMILES (NaN when empty)."""
    sas, qed = sas_qed(smiles, workers)
    return {"sas_mean": float(np.mean(sas)) if len(sas) else float("nan"),
            "qed_mean": float(np.mean(qed)) if len(qed) else float("nan")}


def property_distances(gen: np.ndarray, ref: np.ndarray, name: str) -> dict[str, float]:
    """``<name>_mean``, ``<name>_w1`` (Wasserstein-1 to the reference values) and ``<name>_mean_diff`` (gen - ref)."""
    from scipy.stats import wasserstein_distance

    gen = np.asarray(gen, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    gen, ref = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
    if len(gen) == 0 or len(ref) == 0:
        nan = float("nan")
        return {f"{name}_mean": float(gen.mean()) if len(gen) else nan, f"{name}_w1": nan, f"{name}_mean_diff": nan}
    return {f"{name}_mean": float(gen.mean()), f"{name}_w1": float(wasserstein_distance(gen, ref)),
            f"{name}_mean_diff": float(gen.mean() - ref.mean())}


# ---------------------------------------------------------------------------------------------------------------
# Atom-type and bond-type distributions
# ---------------------------------------------------------------------------------------------------------------


def atom_types(mol: Chem.Mol) -> list[str]:
    """Atom types of a sanitized Mol: element symbols, with the formal charge when non-zero (``N+1``, ``O-1``)."""
    out = []
    for atom in mol.GetAtoms():
        charge = atom.GetFormalCharge()
        out.append(atom.GetSymbol() if charge == 0 else f"{atom.GetSymbol()}{charge:+d}")
    return out


def bond_types(mol: Chem.Mol) -> list[str]:
    """Bond types of a sanitized Mol (``SINGLE``, ``DOUBLE``, ``TRIPLE``, ``AROMATIC``, ...)."""
    return [str(b.GetBondType()) for b in mol.GetBonds()]


def total_variation(p: Counter[Any] | dict[Any, float], q: Counter[Any] | dict[Any, float]) -> float:
    """Total variation distance 0.5 * sum |p - q| between two histograms (normalized here). NaN if one is empty."""
    sp, sq = float(sum(p.values())), float(sum(q.values()))
    if sp == 0 or sq == 0:
        return float("nan")
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in set(p) | set(q))


def type_histograms(mols: Iterable[Chem.Mol]) -> tuple[Counter[str], Counter[str]]:
    """Counts of atom types and bond types over sanitized Mols."""
    atoms: Counter[str] = Counter()
    bonds: Counter[str] = Counter()
    for mol in mols:
        atoms.update(atom_types(mol))
        bonds.update(bond_types(mol))
    return atoms, bonds


def type_distributions(gen_mols: Sequence[Chem.Mol], ref_mols: Sequence[Chem.Mol]) -> dict[str, float]:
    """``atom_type_tv`` and ``bond_type_tv``: total variation between the generated and reference histograms."""
    ga, gb = type_histograms(gen_mols)
    ra, rb = type_histograms(ref_mols)
    return {"atom_type_tv": total_variation(ga, ra), "bond_type_tv": total_variation(gb, rb)}


# ---------------------------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------------------------


def evaluate(samples: Sequence[Sample], train_smiles: Sequence[str], test_smiles: Sequence[str], *,
             correct_fn: Callable[[Chem.Mol], Chem.Mol | None] | None = None, with_corrected: bool = False,
             nspdk_radius: int = 4, nspdk_distance: int = 4) -> dict[str, Any]:
    """All molecule metrics of ``samples`` against a training set (novelty) and a test set (distances).

    FCD, NSPDK, SAS/QED and the type distributions use the valid samples (duplicates kept) and the test set.
    """
    mols = [to_mol(s) for s in samples]
    valid = [m for m in mols if m is not None]
    smiles = [canonical_from(s, m) for s, m in zip(samples, mols, strict=True) if m is not None]
    n = len(samples)
    out: dict[str, Any] = {
        "validity": len(valid) / n if n else 0.0,
        "validity_connected": sum(1 for m in valid if num_fragments(m) == 1) / n if n else 0.0,
        "invalid_too_long": sum(1 for x in samples if too_long(x)) / n if n else 0.0,
        "num_samples": float(n), "num_valid": float(len(valid)), "num_too_long": float(sum(map(too_long, samples))),
    }
    if with_corrected:
        out.update(validity_corrected(samples, correct_fn))
    out["uniqueness"] = len(set(smiles)) / len(smiles) if smiles else 0.0
    out.update(novelty(smiles, train_smiles))
    test_canon = [canonical_strict(s) for s in test_smiles]
    test_mols = [Chem.MolFromSmiles(s) for s in test_canon]
    out.update(fcd(smiles, test_canon, canonicalize=True))
    out.update(nspdk_mmd(valid, test_mols, nspdk_radius, nspdk_distance))
    gsas, gqed = sas_qed(smiles)
    rsas, rqed = sas_qed(test_canon)
    out.update(property_distances(gsas, rsas, "sas"))
    out.update(property_distances(gqed, rqed, "qed"))
    out.update(type_distributions(valid, test_mols))
    return out
