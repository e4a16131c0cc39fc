"""Molecule metrics (plugins/molecules/metrics) against independent computations.

* validity / uniqueness / novelty against a direct RDKit loop over a mixed list (valid, invalid, duplicates,
  unparsable, None, Mol objects, multi-fragment);
* FCD against ``fcd_torch.FCD(canonize=True)`` called directly;
* NSPDK against a deliberately naive implementation written here (explicit BFS levels of the edge-expanded graph,
  neighbourhoods as nested tuples, dict features, an explicit kernel matrix);
* SA score / QED against direct RDKit calls, distances against scipy/numpy;
* the plugins: two updates = one update, a simulated two-rank merge = one rank, and the scoring functions' values.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rdkit")
from rdkit import Chem, RDConfig, RDLogger
from rdkit.Chem import QED
from rdkit.Contrib.SA_Score import sascorer

from anyorder.errors import ConfigError
from anyorder_plugins.molecules.metrics import config as mcfg
from anyorder_plugins.molecules.metrics import metric as mm
from anyorder_plugins.molecules.metrics import reference, scoring

RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]


def _wehi(n: int, start: int = 0) -> list[str]:
    path = f"{RDConfig.RDDataDir}/Pains/test_data/wehi_mols.csv"
    with open(path, newline="") as fh:
        rows = [row[0] for row in csv.reader(fh)]
    return rows[start:start + n]


WEHI = _wehi(400)
GEN_SMILES = WEHI[:100]
REF_SMILES = WEHI[100:200]


def _mixed() -> list[Any]:
    """Valid, duplicate (as string, as Mol, as an unsanitized Kekulé Mol), unparsable, None, empty, invalid Mols."""
    return [
        "CCO", "OCC", "c1ccccc1", Chem.MolFromSmiles("c1ccccc1"),
        Chem.MolFromSmiles("C1=CC=CC=C1", sanitize=False),  # valid once sanitized; benzene again
        "C1CC",  # unclosed ring: unparsable
        "not a smiles", None, "",
        "CC.O",  # two fragments: valid, not connected
        Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False),  # pentavalent carbon: fails SanitizeMol
        "c1cccc1",  # cannot be kekulized
        "[Na+].[Cl-]", "CC(=O)O", "CC(=O)O", "N#N",
    ]


def _direct_valid(samples: list[Any]) -> list[Chem.Mol | None]:
    """A plain RDKit loop: a string is parsed (parsing sanitizes); a Mol is copied and sanitized; no atom = invalid."""
    out: list[Chem.Mol | None] = []
    for s in samples:
        mol = None
        if isinstance(s, str) and s:
            mol = Chem.MolFromSmiles(s)
        elif isinstance(s, Chem.Mol):
            mol = Chem.Mol(s)
            if Chem.SanitizeMol(mol, catchErrors=True) != Chem.SanitizeFlags.SANITIZE_NONE:
                mol = None
        out.append(mol if mol is not None and mol.GetNumAtoms() else None)
    return out


def _direct_canonical(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(mol)))


# ---------------------------------------------------------------------------------------------------------------
# validity, uniqueness, novelty
# ---------------------------------------------------------------------------------------------------------------


def test_validity_uniqueness_novelty_against_direct_loop() -> None:
    samples = _mixed()
    mols = _direct_valid(samples)
    valid = [m for m in mols if m is not None]
    canon = [_direct_canonical(m) for m in valid]
    train = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in ("OCC", "C1=CC=CC=C1", "CCCC")]
    got = scoring.validity(samples)
    assert got["validity"] == pytest.approx(len(valid) / len(samples))
    assert got["validity_connected"] == pytest.approx(
        sum(1 for m in valid if len(Chem.GetMolFrags(m)) == 1) / len(samples))
    assert scoring.uniqueness(samples)["uniqueness"] == pytest.approx(len(set(canon)) / len(canon))
    assert scoring.valid_canonical(samples) == canon
    novel = {c for c in canon if c not in set(train)}
    assert scoring.novelty(canon, train)["novelty"] == pytest.approx(len(novel) / len(set(canon)))
    # The same numbers by hand: 16 samples; valid: CCO, OCC, benzene x3, CC.O, [Na+].[Cl-], acetic acid x2, N#N.
    assert got["num_samples"] == 16 and got["num_valid"] == 10
    assert got["validity"] == pytest.approx(10 / 16) and got["validity_connected"] == pytest.approx(8 / 16)
    assert scoring.uniqueness(samples)["uniqueness"] == pytest.approx(6 / 10)  # CCO, benzene, CC.O, NaCl, AcOH, N2
    assert scoring.novelty(canon, train)["novelty"] == pytest.approx(4 / 6)


def test_novelty_against_itself_is_zero_and_empty_inputs() -> None:
    canon = scoring.valid_canonical(WEHI[:50])
    assert scoring.novelty(canon, canon)["novelty"] == 0.0
    assert scoring.validity([])["validity"] == 0.0
    assert scoring.uniqueness([None, "xx"])["uniqueness"] == 0.0
    assert scoring.novelty([], canon)["novelty"] == 0.0
    with pytest.raises(TypeError, match="SMILES string"):
        scoring.to_mol(3)


def test_validity_corrected_takes_the_correction_function(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = _mixed()
    methane = Chem.MolFromSmiles("C")
    # Every sample that is at least a graph with atoms becomes valid with a correction that returns methane.
    graphs = sum(1 for s in samples if (scoring.unsanitized_mol(s) is not None and scoring.unsanitized_mol(s).GetNumAtoms()))
    got = scoring.validity_corrected(samples, lambda mol: methane)["validity_corrected"]
    assert got == pytest.approx(graphs / len(samples))
    assert scoring.validity_corrected(samples, lambda mol: None)["validity_corrected"] == 0.0

    def boom(mol: Chem.Mol) -> Chem.Mol:
        raise ValueError("cannot fix")

    assert scoring.validity_corrected(samples, boom)["validity_corrected"] == 0.0
    # The default correction repairs an over-valent carbon (five bonds) that fails sanitization as it is.
    over = Chem.RWMol(Chem.MolFromSmiles("CC(C)(C)C", sanitize=False))
    over.AddAtom(Chem.Atom(6))
    over.AddBond(1, 5, Chem.BondType.SINGLE)
    assert scoring.validity([over.GetMol()])["validity"] == 0.0
    assert scoring.validity_corrected([over.GetMol()])["validity_corrected"] == 1.0


# ---------------------------------------------------------------------------------------------------------------
# FCD
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fcd_torch_value() -> float:
    fcd_torch = pytest.importorskip("fcd_torch")
    with pytest.warns(DeprecationWarning):  # fcd_torch's own np.row_stack / sqrtm(disp=) calls
        return float(fcd_torch.FCD(device="cpu", canonize=True)(GEN_SMILES, REF_SMILES))


def test_fcd_equals_fcd_torch(fcd_torch_value: float) -> None:
    got = scoring.fcd(GEN_SMILES, REF_SMILES)
    assert got["fcd"] == pytest.approx(fcd_torch_value, abs=1e-6)
    assert got["fcd_package"].startswith("fcd_torch ")
    stats = scoring.fcd_stats(REF_SMILES)
    assert scoring.fcd(GEN_SMILES, ref_stats=stats)["fcd"] == pytest.approx(fcd_torch_value, abs=1e-6)


def test_fcd_of_a_set_with_itself_is_zero_and_needs_two_samples() -> None:
    assert abs(scoring.fcd(GEN_SMILES, GEN_SMILES)["fcd"]) < 1e-3
    assert math.isnan(scoring.fcd(GEN_SMILES[:1], REF_SMILES)["fcd"])
    with pytest.raises(ValueError, match="exactly one"):
        scoring.fcd(GEN_SMILES)


def test_frechet_distance_of_known_gaussians() -> None:
    # N(0, I) vs N(1, 4 I) in 3-d: 3 * 1 + 3 * (1 + 4 - 2 * 2) = 6.
    eye = np.eye(3)
    assert scoring.frechet_distance(np.zeros(3), eye, np.ones(3), 4 * eye) == pytest.approx(6.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# NSPDK against a naive implementation
# ---------------------------------------------------------------------------------------------------------------


def _naive_nspdk(mol: Chem.Mol, r_max: int = 4, d_max: int = 4) -> dict[Any, float]:
    """EDeN's NSPDK written plainly: bonds become vertices, BFS levels from each atom root, a neighbourhood of
    radius r = the levels 0..2r as sorted (label, degree) tuples, pair and half features as exact tuples."""
    adj: dict[Any, list[Any]] = defaultdict(list)
    label: dict[Any, Any] = {}
    for atom in mol.GetAtoms():
        label[("a", atom.GetIdx())] = atom.GetSymbol()
        adj[("a", atom.GetIdx())]
    for bond in mol.GetBonds():
        e = ("b", bond.GetIdx())
        label[e] = int(bond.GetBondTypeAsDouble())
        for end in (bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()):
            adj[e].append(("a", end))
            adj[("a", end)].append(e)
    max_depth = 2 * max(r_max, d_max)

    def levels(root: Any) -> list[list[Any]]:
        seen, frontier, out = {root}, [root], [[root]]
        for _ in range(max_depth):
            nxt = []
            for x in frontier:
                for y in adj[x]:
                    if y not in seen:
                        seen.add(y)
                        nxt.append(y)
            if not nxt:
                break
            out.append(nxt)
            frontier = nxt
        return out

    atoms = [v for v in label if v[0] == "a"]
    lv = {v: levels(v) for v in atoms}
    sig = {v: [tuple(tuple(sorted((label[x], len(adj[x])) for x in lv[v][j])) for j in range(i + 1))
               for i in range(len(lv[v]))] for v in atoms}
    blocks: dict[Any, Counter[Any]] = defaultdict(Counter)
    for v in atoms:
        for dist in range(0, 2 * d_max + 1, 2):
            if dist >= len(lv[v]):
                break
            for u in lv[v][dist]:
                if u[0] != "a":
                    continue
                for rad in range(0, 2 * r_max + 1, 2):
                    if rad < len(sig[v]) and rad < len(sig[u]):
                        lo, hi = sorted([sig[v][rad], sig[u][rad]])
                        blocks[(rad, dist)][("pair", lo, hi, rad, dist)] += 1
                        blocks[(rad, dist)][("half", sig[u][rad], rad, dist)] += 1
    vec: dict[Any, float] = {}
    for feats in blocks.values():
        norm = math.sqrt(sum(c * c for c in feats.values()))
        vec.update({f: c / norm for f, c in feats.items()})
    total = math.sqrt(sum(v * v for v in vec.values()))
    return {f: v / total for f, v in vec.items()}


def _dot(a: dict[Any, float], b: dict[Any, float]) -> float:
    return sum(v * b.get(f, 0.0) for f, v in a.items())


def _naive_mmd(xs: list[dict[Any, float]], ys: list[dict[Any, float]]) -> float:
    def mean_k(a: list[dict[Any, float]], b: list[dict[Any, float]]) -> float:
        return float(np.mean([[_dot(p, q) for q in b] for p in a]))

    return mean_k(xs, xs) + mean_k(ys, ys) - 2 * mean_k(xs, ys)


@pytest.fixture(scope="module")
def nspdk_mols() -> tuple[list[Chem.Mol], list[Chem.Mol]]:
    mols = [m for m in (Chem.MolFromSmiles(s) for s in WEHI[200:260]) if m is not None]
    # Add the corner cases: one atom, a salt (two components), a triple bond, a charged atom.
    extra = [Chem.MolFromSmiles(s) for s in ("C", "[Na+].[Cl-]", "CC#N", "C[N+](C)(C)C", "CC(=O)[O-]")]
    return mols[:30] + extra[:3], mols[30:60] + extra[3:]


def test_nspdk_against_naive_implementation(nspdk_mols: tuple[list[Chem.Mol], list[Chem.Mol]]) -> None:
    xs, ys = nspdk_mols
    naive_x, naive_y = [_naive_nspdk(m) for m in xs], [_naive_nspdk(m) for m in ys]
    feats = [scoring.nspdk_features(m) for m in xs]
    # Same number of features per graph, the same sorted values, the same Gram matrix.
    for (ids, vals), naive in zip(feats, naive_x, strict=True):
        assert len(ids) == len(naive) == len(set(ids.tolist()))
        np.testing.assert_allclose(np.sort(vals), np.sort(list(naive.values())), atol=1e-12)
    dicts = [dict(zip(i.tolist(), v.tolist(), strict=True)) for i, v in feats]
    gram = np.array([[_dot(a, b) for b in dicts] for a in dicts])
    naive_gram = np.array([[_dot(a, b) for b in naive_x] for a in naive_x])
    np.testing.assert_allclose(gram, naive_gram, atol=1e-10)
    expected = _naive_mmd(naive_x, naive_y)
    got = scoring.nspdk_mmd(xs, ys)["nspdk_mmd"]
    assert got == pytest.approx(expected, abs=1e-4)
    assert got == pytest.approx(expected, rel=1e-9)
    assert expected > 1e-3


def test_nspdk_other_radius_and_distance(nspdk_mols: tuple[list[Chem.Mol], list[Chem.Mol]]) -> None:
    xs, ys = nspdk_mols
    xs, ys = xs[:12], ys[:12]
    for r, d in ((3, 4), (1, 2), (0, 0)):
        expected = _naive_mmd([_naive_nspdk(m, r, d) for m in xs], [_naive_nspdk(m, r, d) for m in ys])
        assert scoring.nspdk_mmd(xs, ys, r, d)["nspdk_mmd"] == pytest.approx(expected, abs=1e-10)


def test_nspdk_of_a_set_with_itself_is_zero(nspdk_mols: tuple[list[Chem.Mol], list[Chem.Mol]]) -> None:
    xs, _ = nspdk_mols
    assert abs(scoring.nspdk_mmd(xs, list(reversed(xs)))["nspdk_mmd"]) < 1e-12
    assert math.isnan(scoring.nspdk_mmd([], xs)["nspdk_mmd"])


def test_nspdk_against_eden_when_installed(nspdk_mols: tuple[list[Chem.Mol], list[Chem.Mol]]) -> None:
    """EDeN itself (``pip install eden-kernel``, not a dependency), with 40-bit features so that none collide."""
    graph = pytest.importorskip("eden.graph")
    nx = pytest.importorskip("networkx")
    xs, ys = nspdk_mols

    def embed(mols: list[Chem.Mol]) -> dict[int, float]:
        vectorizer = graph.Vectorizer(complexity=4, discrete=True, nbits=40)
        acc: dict[int, float] = defaultdict(float)
        for mol in mols:
            g = nx.Graph()
            for a in mol.GetAtoms():
                g.add_node(a.GetIdx(), label=a.GetSymbol())
            for b in mol.GetBonds():
                g.add_edge(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), label=int(b.GetBondTypeAsDouble()))
            for f, v in vectorizer._transform(g).items():
                acc[f] += v / len(mols)
        return acc

    ex, ey = embed(xs), embed(ys)
    expected = _dot(ex, ex) + _dot(ey, ey) - 2 * _dot(ex, ey)
    assert scoring.nspdk_mmd(xs, ys)["nspdk_mmd"] == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# SA score, QED, type distributions
# ---------------------------------------------------------------------------------------------------------------


def test_sas_qed_against_direct_calls() -> None:
    from scipy.stats import wasserstein_distance

    smiles = scoring.valid_canonical(WEHI[260:300])
    ref = scoring.valid_canonical(WEHI[300:340])
    scoring._PROPERTY_CACHE.clear()
    sas, qed = scoring.sas_qed(smiles, workers=1)
    direct = [(sascorer.calculateScore(Chem.MolFromSmiles(s)), QED.qed(Chem.MolFromSmiles(s))) for s in smiles]
    np.testing.assert_allclose(sas, [d[0] for d in direct], rtol=0, atol=1e-12)
    np.testing.assert_allclose(qed, [d[1] for d in direct], rtol=0, atol=1e-12)
    assert scoring.properties(smiles) == pytest.approx({"sas_mean": np.mean(sas), "qed_mean": np.mean(qed)})
    rsas, _ = scoring.sas_qed(ref)
    got = scoring.property_distances(sas, rsas, "sas")
    assert got["sas_w1"] == pytest.approx(wasserstein_distance(sas, rsas), abs=1e-12)
    assert got["sas_mean_diff"] == pytest.approx(np.mean(sas) - np.mean(rsas), abs=1e-12)
    assert scoring.property_distances(sas, sas, "sas")["sas_w1"] == 0.0
    assert scoring.sas_qed_of_smiles("CC(=O)Oc1ccccc1C(=O)O")[1] == pytest.approx(0.550, abs=1e-3)  # aspirin


def test_sas_qed_in_worker_processes_equal_one_process() -> None:
    smiles = scoring.valid_canonical(WEHI[340:360])
    scoring._PROPERTY_CACHE.clear()
    parallel = scoring.sas_qed(smiles, workers=2)
    scoring._PROPERTY_CACHE.clear()
    serial = scoring.sas_qed(smiles, workers=1)
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])


def test_type_distributions_against_direct_histograms() -> None:
    gen = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccncc1", "C[N+](C)(C)C", "CC#N")]
    ref = [Chem.MolFromSmiles(s) for s in ("CCCl", "C=CO", "CC(=O)[O-]")]

    def hist(mols: list[Chem.Mol], atoms: bool) -> dict[str, float]:
        items = [((a.GetSymbol(), a.GetFormalCharge()) if atoms else str(a.GetBondType()))
                 for m in mols for a in (m.GetAtoms() if atoms else m.GetBonds())]
        return {str(k): c / len(items) for k, c in Counter(items).items()}

    def tv(p: dict[str, float], q: dict[str, float]) -> float:
        return 0.5 * sum(abs(p.get(k, 0) - q.get(k, 0)) for k in set(p) | set(q))

    got = scoring.type_distributions(gen, ref)
    assert got["atom_type_tv"] == pytest.approx(tv(hist(gen, True), hist(ref, True)))
    assert got["bond_type_tv"] == pytest.approx(tv(hist(gen, False), hist(ref, False)))
    assert scoring.type_distributions(gen, gen) == {"atom_type_tv": 0.0, "bond_type_tv": 0.0}
    assert scoring.atom_types(Chem.MolFromSmiles("C[N+](C)(C)C")) == ["C", "N+1", "C", "C", "C"]


# ---------------------------------------------------------------------------------------------------------------
# The plugins
# ---------------------------------------------------------------------------------------------------------------


class FakeMoleculeData:
    """What the metrics use of a molecule datamodule: canonical SMILES of a split."""

    def __init__(self, train: list[str], test: list[str]) -> None:
        self.splits = {"train": train, "val": test, "test": test}
        self.calls: Counter[str] = Counter()

    def reference_smiles(self, split: str) -> list[str]:
        self.calls[split] += 1
        return list(self.splits[split])


PLUGIN_SAMPLES: list[Any] = _mixed() + WEHI[200:230] + [Chem.MolFromSmiles(s) for s in WEHI[200:205]]
TRAIN = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in WEHI[200:215] + ["CCO"]]
TEST = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in REF_SMILES[:60]]
DATA = FakeMoleculeData(TRAIN, TEST)

PLUGINS = {
    "mol_validity": (mm.MolValidity, mcfg.MolValidityConfig),
    "mol_uniqueness": (mm.MolUniqueness, mcfg.MolUniquenessConfig),
    "mol_novelty": (mm.MolNovelty, mcfg.MolNoveltyConfig),
    "fcd": (mm.FCD, mcfg.FCDConfig),
    "nspdk": (mm.NSPDK, mcfg.NSPDKConfig),
    "mol_properties": (mm.MolProperties, mcfg.MolPropertiesConfig),
    "mol_type_distributions": (mm.MolTypeDistributions, mcfg.MolTypeDistributionsConfig),
}


def _make(name: str, **options: Any) -> Any:
    cls, config = PLUGINS[name]
    return cls(config(**options), DATA)


def _expected() -> dict[str, float]:
    valid = [m for m in _direct_valid(PLUGIN_SAMPLES) if m is not None]
    canon = scoring.valid_canonical(PLUGIN_SAMPLES)
    out = scoring.validity(PLUGIN_SAMPLES)
    out.update(scoring.uniqueness(PLUGIN_SAMPLES))
    out.update(scoring.novelty(canon, TRAIN))
    out.update(scoring.fcd(canon, TEST))
    test_mols = [Chem.MolFromSmiles(s) for s in TEST]
    out.update(scoring.nspdk_mmd(valid, test_mols))
    gsas, gqed = scoring.sas_qed(canon)
    rsas, rqed = scoring.sas_qed(TEST)
    out.update(scoring.property_distances(gsas, rsas, "sas"))
    out.update(scoring.property_distances(gqed, rqed, "qed"))
    out.update(scoring.type_distributions(valid, test_mols))
    return out


@pytest.fixture(scope="module")
def expected() -> dict[str, float]:
    return _expected()


def test_evaluate_gives_every_metric(expected: dict[str, float]) -> None:
    got = scoring.evaluate(PLUGIN_SAMPLES, TRAIN, TEST, correct_fn=lambda mol: None, with_corrected=True)
    assert got["validity_corrected"] == 0.0 and got["fcd_package"].startswith("fcd_torch")
    for key, value in expected.items():
        if key != "fcd_package":
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_one_update_two_updates_two_ranks(name: str, expected: dict[str, float]) -> None:
    half = len(PLUGIN_SAMPLES) // 2
    one, two, rank0, rank1 = (_make(name) for _ in range(4))
    one.update(PLUGIN_SAMPLES)
    two.update(PLUGIN_SAMPLES[:half])
    two.update(PLUGIN_SAMPLES[half:])
    rank0.update(PLUGIN_SAMPLES[:half])
    rank1.update(PLUGIN_SAMPLES[half:])
    rank0.merge_state(rank1)  # what the DDP gather does with cat / sum states
    whole = {k: v.item() for k, v in one.compute().items()}
    assert whole, name
    for key, value in whole.items():
        assert key in expected, key
        assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key
        assert two.compute()[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert rank0.compute()[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_shared_parse_sees_a_list_changed_in_place() -> None:
    samples = ["CCO", "CCO"]
    first = _make("mol_uniqueness")
    first.update(samples)
    samples[1] = "CCN"
    second = _make("mol_uniqueness")
    second.update(samples)
    assert first.compute()["uniqueness"].item() == 0.5
    assert second.compute()["uniqueness"].item() == 1.0


def test_plugins_reference_data_is_cached_per_datamodule() -> None:
    data = FakeMoleculeData(TRAIN, TEST[:20])
    for _ in range(2):
        metric = mm.MolTypeDistributions(mcfg.MolTypeDistributionsConfig(), data)
        metric.update(["CCO"])
        metric.compute()
    assert data.calls == Counter({"test": 1})


def test_plugin_sanity_against_itself() -> None:
    data = FakeMoleculeData(TEST, TEST)
    novelty = mm.MolNovelty(mcfg.MolNoveltyConfig(), data)
    fcd = mm.FCD(mcfg.FCDConfig(), data)
    nspdk = mm.NSPDK(mcfg.NSPDKConfig(), data)
    for metric in (novelty, fcd, nspdk):
        metric.update(TEST)
    assert novelty.compute()["novelty"].item() == 0.0
    assert abs(fcd.compute()["fcd"].item()) < 1e-3
    assert abs(nspdk.compute()["nspdk_mmd"].item()) < 1e-12


def test_plugins_with_no_valid_sample() -> None:
    got = {}
    for name in PLUGINS:
        metric = _make(name)
        metric.update([None, "C1CC"])
        got.update({k: v.item() for k, v in metric.compute().items()})
    assert got["validity"] == 0.0 and got["uniqueness"] == 0.0 and got["novelty"] == 0.0
    for key in ("fcd", "nspdk_mmd", "sas_w1", "qed_w1", "atom_type_tv", "bond_type_tv"):
        assert math.isnan(got[key]), key


def test_validity_plugin_corrected_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "default_correct_fn", lambda: (lambda mol: Chem.MolFromSmiles("C")))
    metric = mm.MolValidity(mcfg.MolValidityConfig(corrected=True), None)
    metric.update(["CCO", None, "C1CC", Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)])
    got = {k: v.item() for k, v in metric.compute().items()}
    assert got == pytest.approx({"validity": 0.25, "validity_connected": 0.25, "validity_corrected": 0.5,
                                 "invalid_too_long": 0.0})


def test_an_over_long_sample_is_invalid_without_being_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """One 5,000-character line among good SMILES once cost minutes in the suite: it must never reach RDKit."""
    parse = Chem.MolFromSmiles

    def guarded(smiles: str, *args: Any, **kwargs: Any) -> Any:
        assert len(smiles) <= scoring.MAX_SAMPLE_CHARS, "an over-long sample reached the parser"
        return parse(smiles, *args, **kwargs)

    monkeypatch.setattr(scoring.Chem, "MolFromSmiles", guarded)
    samples = ["CCO", "c1ccccc1", "C" * 5000, "C" * 200_000, None, "CC(=O)O"]
    got = scoring.validity(samples)
    assert got["num_valid"] == 3 and got["num_too_long"] == 2
    metric = mm.MolValidity(mcfg.MolValidityConfig(corrected=True), None)
    metric.update(samples)
    values = {k: v.item() for k, v in metric.compute().items()}
    assert values["validity"] == pytest.approx(3 / 6) and values["invalid_too_long"] == pytest.approx(2 / 6)
    big = Chem.MolFromSmiles("C" * (scoring.MAX_SAMPLE_ATOMS + 1))
    assert scoring.to_mol(big) is None


def test_plugin_without_molecule_datamodule() -> None:
    metric = mm.MolNovelty(mcfg.MolNoveltyConfig(), None)
    metric.update(["CCO"])
    with pytest.raises(RuntimeError, match="reference_smiles"):
        metric.compute()


@pytest.mark.parametrize(
    ("config", "options", "match"),
    [(mcfg.MolNoveltyConfig, {"reference_split": "dev"}, "reference_split"),
     (mcfg.FCDConfig, {"batch_size": 0}, "batch_size"),
     (mcfg.FCDConfig, {"chemnet_device": "gpu"}, "chemnet_device"),
     (mcfg.NSPDKConfig, {"radius": -1}, "radius"),
     (mcfg.MolPropertiesConfig, {"workers": -1}, "workers"),
     (mcfg.MolTypeDistributionsConfig, {"reference_split": "x"}, "reference_split")],
)
def test_invalid_options(config: type, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config(**options)


def test_config_module_is_light() -> None:
    code = ("import sys, anyorder_plugins.molecules.metrics.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'torchmetrics', 'rdkit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_configs_resolve_through_the_registry() -> None:
    from anyorder.config import plugin_options
    from anyorder.registry import REGISTRY

    for name, (cls, config) in PLUGINS.items():
        key = f"test_{name}"
        REGISTRY.register("metric", key, config, replace=True)
        try:
            assert REGISTRY.implementation("metric", key) is cls
            options = plugin_options("metric", {"name": key})
            assert isinstance(options, config)
            metric = REGISTRY.implementation("metric", key)(options, DATA)
            metric.update(["CCO", "c1ccccc1"])
        finally:
            REGISTRY.unregister("metric", key)


# -- the disk store of reference statistics ------------------------------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each reference build that runs (rather than being read from the store)."""
    built: list[str] = []
    real = reference.cached

    def spy(metric: str, key: Any, split: str, smiles: Any, build: Any) -> Any:
        def counted(s: list[str]) -> Any:
            built.append(metric)
            return build(s)
        return real(metric, key, split, smiles, counted)

    monkeypatch.setattr(reference, "cached", spy)
    return built


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_stored_reference_statistics_are_reused_and_equal(name: str, expected: dict[str, float], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYORDER_CACHE", str(tmp_path))
    built = _counting(monkeypatch)
    values = []
    for _ in range(2):  # a new datamodule each time: only the disk store can save the second build
        cls, config = PLUGINS[name]
        metric = cls(config(), FakeMoleculeData(TRAIN, TEST))
        metric.update(PLUGIN_SAMPLES)
        values.append({k: v.item() for k, v in metric.compute().items()})
    uses_reference = name not in ("mol_validity", "mol_uniqueness")
    assert len(built) == (1 if uses_reference else 0)
    assert len(list(reference.store_dir().glob("*.npz"))) == len(built)
    for key, value in values[0].items():
        assert values[1][key] == value, key
        assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key


def test_reference_store_key_damage_and_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYORDER_CACHE", str(tmp_path))
    calls: list[list[str]] = []

    def build(smiles: list[str]) -> dict[str, np.ndarray]:
        calls.append(smiles)
        return {"n": np.array([len(smiles)], dtype=np.int64), "x": np.arange(3, dtype=np.float64) / 7}

    first = reference.cached("m", 1, "test", ["CCO", "CCN"], build)
    again = reference.cached("m", 1, "test", ["CCO", "CCN"], build)
    assert len(calls) == 1 and set(again) == {"n", "x"}
    assert all(np.array_equal(first[k], again[k]) for k in first)
    for other in [("m", 2, "test", ["CCO", "CCN"]), ("m", 1, "val", ["CCO", "CCN"]),
                  ("m", 1, "test", ["CCN", "CCO"]), ("other", 1, "test", ["CCO", "CCN"])]:
        reference.cached(*other, build)  # type: ignore[arg-type]
    assert len(calls) == 5
    files = sorted(reference.store_dir().glob("*.npz"))
    assert len(files) == 5
    for path in files:
        path.write_bytes(b"not an npz archive")
    reference.cached("m", 1, "test", ["CCO", "CCN"], build)  # damaged: recomputed (and rewritten), not trusted
    assert len(calls) == 6
    reference.cached("m", 1, "test", ["CCO", "CCN"], build)
    assert len(calls) == 6
    monkeypatch.setenv(reference.DISABLE_ENV, "0")
    reference.cached("m", 1, "test", ["CCO", "CCN"], build)
    assert len(calls) == 7


def test_reference_store_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYORDER_CACHE", str(tmp_path))
    path = reference.store_dir() / f"m-{reference.key('m', 1, 'test', ['C'])[:32]}.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))  # an object array needs pickle to load
    out = reference.cached("m", 1, "test", ["C"], lambda s: {"ok": np.ones(1)})
    assert set(out) == {"ok"}


def test_nspdk_sum_in_chunks_equals_one_reduction(nspdk_mols: tuple[list[Chem.Mol], list[Chem.Mol]]) -> None:
    mols = nspdk_mols[0] + nspdk_mols[1]
    ids, values, count = scoring.nspdk_batch(mols)
    uniq, inverse = np.unique(ids, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    for chunk in (1, 3, 1000):
        got_ids, got_sums, got_count = scoring.nspdk_sum(iter(mols), chunk=chunk)
        assert got_count == count == len(mols)
        np.testing.assert_array_equal(got_ids, uniq)
        np.testing.assert_allclose(got_sums, sums, rtol=1e-12, atol=1e-15)
