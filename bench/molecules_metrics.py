"""Molecule metric suite benchmark: every molecule metric plugin on the embedded set (RDKit's wehi_mols.csv) against
itself, timed per metric.

The samples are the first ``--n`` SMILES of the embedded set; the reference ("train" and "test") is the same set,
canonicalized. Each ``--batch``-sized list of samples is given to every plugin in turn (as validation does, so the
plugins share the parse of the list and the first one pays for it). Then each plugin runs ``compute`` twice: the
first builds the reference data (ChemNet statistics, NSPDK mean embedding, SAS/QED values, histograms) and caches
it per datamodule; the second reuses it, which is what each later validation pays. The SAS/QED cache (by canonical
SMILES) is cleared before the updates and before each first compute, so that the reference and the samples (the
same molecules here) are both scored: the worst case. Expected values: novelty 0, FCD ~0, NSPDK ~0.

Usage: ``python bench/molecules_metrics.py [--n 10000] [--batch 1000]``; prints one line per metric and the totals.
"""

from __future__ import annotations

import argparse
import csv
import time
from typing import Any

from rdkit import Chem, RDConfig

from anyorder_plugins.molecules.metrics import config as mcfg
from anyorder_plugins.molecules.metrics import core
from anyorder_plugins.molecules.metrics import metric as mm

PLUGINS: list[tuple[str, Any, Any]] = [
    ("mol_validity", mm.MolValidity, mcfg.MolValidityConfig),
    ("mol_uniqueness", mm.MolUniqueness, mcfg.MolUniquenessConfig),
    ("mol_novelty", mm.MolNovelty, mcfg.MolNoveltyConfig),
    ("fcd", mm.FCD, mcfg.FCDConfig),
    ("nspdk", mm.NSPDK, mcfg.NSPDKConfig),
    ("mol_properties", mm.MolProperties, mcfg.MolPropertiesConfig),
    ("mol_type_distributions", mm.MolTypeDistributions, mcfg.MolTypeDistributionsConfig),
]


class EmbeddedReference:
    """A stand-in molecule datamodule: every split is the given canonical SMILES."""

    def __init__(self, smiles: list[str]) -> None:
        self.smiles = smiles

    def reference_smiles(self, split: str) -> list[str]:
        return list(self.smiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="molecules (at most 10000)")
    parser.add_argument("--batch", type=int, default=1000, help="samples per update")
    args = parser.parse_args()
    with open(f"{RDConfig.RDDataDir}/Pains/test_data/wehi_mols.csv", newline="") as fh:
        samples = [row[0] for row in csv.reader(fh)][: args.n]
    canon = [Chem.MolToSmiles(m) for m in (Chem.MolFromSmiles(s) for s in samples) if m is not None]
    data = EmbeddedReference(canon)
    totals = {"update": 0.0, "compute_first": 0.0, "compute_cached": 0.0}
    print(f"{len(samples)} samples vs {len(canon)} reference molecules ({core.fcd_package()})")
    metrics = [cls(config(), data) for _, cls, config in PLUGINS]
    update_time = [0.0] * len(metrics)
    core._PROPERTY_CACHE.clear()
    # As in validation: each list of samples goes to every metric in turn (they share its parse).
    for start in range(0, len(samples), args.batch):
        batch = samples[start:start + args.batch]
        for i, metric in enumerate(metrics):
            t0 = time.perf_counter()
            metric.update(batch)
            update_time[i] += time.perf_counter() - t0
    for (name, _, _), metric, t_update in zip(PLUGINS, metrics, update_time, strict=True):
        core._PROPERTY_CACHE.clear()
        t1 = time.perf_counter()
        values = metric.compute()
        t2 = time.perf_counter()
        metric.compute()
        t3 = time.perf_counter()
        for key, dt in zip(totals, (t_update, t2 - t1, t3 - t2), strict=True):
            totals[key] += dt
        shown = ", ".join(f"{k}={v.item():.6g}" for k, v in values.items())
        print(f"{name:24s} update {t_update:6.1f} s  compute(first) {t2 - t1:6.1f} s  "
              f"compute(cached) {t3 - t2:5.1f} s  {shown}", flush=True)
    print(f"total: update {totals['update']:.1f} s, first compute {totals['compute_first']:.1f} s "
          f"(all: {totals['update'] + totals['compute_first']:.1f} s); "
          f"later validations: {totals['update'] + totals['compute_cached']:.1f} s")


if __name__ == "__main__":
    main()
