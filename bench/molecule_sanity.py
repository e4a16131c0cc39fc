"""Sanity figures of the molecule suite: the QM9 test set scored as if it were samples, against the QM9 training set,
and a copy of the test set with its atom types shuffled.

A suite that is right gives the real test set validity 1 and an FCD near 0 (the test and training sets are draws
from one distribution: expected below 0.1), and gives the shuffled copy a large FCD. The shuffled copy keeps every
test molecule's graph (kekulized bonds) and gives its atoms the (element, formal charge) pairs of the whole test
set in a seeded random order, with implicit hydrogens recomputed; the copies are handed to the metrics as
unsanitized Mols, so the ones RDKit cannot sanitize count as invalid, and the distances are over the valid ones.

Everything is scored by the metric plugins a run uses (the same code path as validation and ``anyorder sample``),
with every distance taken to the training split (``reference_split=train``); novelty is against the training set
too. The QM9 files come through ``$ANYORDER_DATA_MIRROR`` (or are downloaded).

Usage: ``python bench/molecule_sanity.py [--split-convention gdss|moflow] [--seed 0] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from rdkit import Chem

from anyorder import sample_eval
from anyorder.runs import package_versions
from anyorder_plugins.molecules.qm9 import QM9DataModule
from anyorder_plugins.molecules.qm9_config import QM9Config

SECTIONS = [{"name": "mol_validity"}, {"name": "mol_uniqueness"}, {"name": "mol_novelty"}] + [
    {"name": name, "reference_split": "train"} for name in ("fcd", "nspdk", "mol_properties", "mol_type_distributions")]


def shuffled_atom_types(smiles: list[str], seed: int) -> list[Chem.Mol]:
    """Unsanitized copies of the molecules with all their atoms' (element, charge) pairs permuted across the set."""
    mols = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        Chem.Kekulize(mol, clearAromaticFlags=True)
        mols.append(mol)
    types = [(a.GetAtomicNum(), a.GetFormalCharge()) for m in mols for a in m.GetAtoms()]
    order = np.random.default_rng(seed).permutation(len(types))
    out, k = [], 0
    for mol in mols:
        rw = Chem.RWMol(mol)
        for atom in rw.GetAtoms():
            number, charge = types[order[k]]
            k += 1
            atom.SetAtomicNum(int(number))
            atom.SetFormalCharge(int(charge))
            atom.SetNumExplicitHs(0)
            atom.SetNoImplicit(False)
        out.append(rw.GetMol())
    return out


def score(samples: list[Any], datamodule: Any) -> dict[str, float]:
    """Every molecule metric plugin over ``samples``, distances to the training split."""
    return sample_eval.score(datamodule, samples, SECTIONS)["values"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-convention", default="gdss", choices=("gdss", "moflow"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the atom-type shuffle")
    parser.add_argument("--out", help="also write the figures, with the protocol, to this JSON file")
    args = parser.parse_args()
    start = time.perf_counter()
    data = QM9DataModule(QM9Config(representation="smiles", split_convention=args.split_convention))
    train, test = data.reference_smiles("train"), data.reference_smiles("test")
    print(f"QM9 ({args.split_convention} split): {len(test)} test molecules scored against {len(train)} training "
          f"molecules")
    rows = {"test set": score(list(test), data),
            f"test set, atom types shuffled (seed {args.seed})": score(shuffled_atom_types(test, args.seed), data)}
    keys = list(next(iter(rows.values())))
    width = max(len(k) for k in keys)
    print(f"{'':{width}s}  " + "  ".join(f"{name:>42s}" for name in rows))
    for key in keys:
        print(f"{key:{width}s}  " + "  ".join(f"{row[key]:42.6g}" for row in rows.values()))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.out:
        from anyorder.atomic import write_json

        protocol = {"dataset": data.protocol(), "samples": "the test split's canonical SMILES",
                    "reference_split": "train", "shuffle_seed": args.seed, "metrics": SECTIONS,
                    "versions": package_versions(("rdkit", "fcd_torch"))}
        write_json(args.out, {"values": rows, "protocol": protocol})


if __name__ == "__main__":
    main()
