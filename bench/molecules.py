"""Molecule benchmark: QM9 preprocessing (cold, then from the cache), and every molecule metric plugin on the embedded
set (RDKit's wehi_mols.csv) against itself, timed per metric.

Preprocessing: the ``qm9`` dataset is built twice in a fresh cache directory (``--cache``, default a temporary one),
for ``--representation`` (graph by default): the first build parses, canonicalizes and encodes all 133,885
molecules and writes the cache; the second loads it. The QM9 files come through ``$ANYORDER_DATA_MIRROR`` (or
are downloaded). ``--skip-preprocessing`` leaves this part out.

The samples are the first ``--n`` SMILES of the embedded set; the reference ("train" and "test") is the same set,
canonicalized. Each ``--batch``-sized list of samples is given to every plugin in turn (as validation does, so the
plugins share the parse of the list and the first one pays for it). Then each plugin runs ``compute`` three ways:
cold (the reference data -- ChemNet statistics, NSPDK mean embedding, SAS/QED values, histograms -- is built from
the SMILES and written to the metric reference store), from the store (a new datamodule, as a later run or a later
``evaluate-samples`` on the same data sees it), and from memory (the same datamodule, as each later validation of a
run sees it). The SAS/QED cache (by canonical SMILES) is cleared before the updates and before the cold compute, so
that the reference and the samples (the same molecules here) are both scored: the worst case. The store lives in a
fresh temporary ``$ANYORDER_CACHE`` unless ``--cache`` is given. Expected values: novelty 0, FCD ~0, NSPDK ~0.

Usage: ``python bench/molecules.py [--n 10000] [--batch 1000]``; prints the preprocessing times, one line per metric
and the totals.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from typing import Any

from rdkit import Chem, RDConfig

from anyorder_plugins.molecules.metrics import config as mcfg
from anyorder_plugins.molecules.metrics import metric as mm
from anyorder_plugins.molecules.metrics import scoring

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


def preprocessing(representation: str, cache: str | None) -> None:
    """Time a cold QM9 build (parse, canonicalize, encode, write the cache) and a cached reload."""
    from anyorder_plugins.molecules.qm9 import QM9DataModule
    from anyorder_plugins.molecules.qm9_config import QM9Config

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ANYORDER_CACHE"] = cache or tmp
        times = []
        for _ in range(2):
            start = time.perf_counter()
            dm = QM9DataModule(QM9Config(representation=representation))
            dm.setup()
            times.append(time.perf_counter() - start)
        sizes = {k: len(getattr(dm.splits, k)) for k in ("train", "val", "test")}
        print(f"qm9 preprocessing ({representation}): cold {times[0]:.1f} s, cached reload {times[1]:.2f} s; "
              f"splits {sizes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="molecules (at most 10000)")
    parser.add_argument("--batch", type=int, default=1000, help="samples per update")
    parser.add_argument("--representation", default="graph", choices=("graph", "smiles"))
    parser.add_argument("--cache", help="cache directory for the preprocessing part (default: a fresh temporary one)")
    parser.add_argument("--skip-preprocessing", action="store_true")
    args = parser.parse_args()
    if not args.skip_preprocessing:
        preprocessing(args.representation, args.cache)
    tmp = tempfile.TemporaryDirectory()
    os.environ["ANYORDER_CACHE"] = args.cache or tmp.name
    with open(f"{RDConfig.RDDataDir}/Pains/test_data/wehi_mols.csv", newline="") as fh:
        samples = [row[0] for row in csv.reader(fh)][: args.n]
    canon = [Chem.MolToSmiles(m) for m in (Chem.MolFromSmiles(s) for s in samples) if m is not None]
    data = EmbeddedReference(canon)
    totals: dict[str, float] = {"update": 0.0, "compute_cold": 0.0, "compute_stored": 0.0, "compute_memory": 0.0}
    print(f"{len(samples)} samples vs {len(canon)} reference molecules ({scoring.fcd_package()})")
    metrics = [cls(config(), data) for _, cls, config in PLUGINS]
    update_time = [0.0] * len(metrics)
    scoring._PROPERTY_CACHE.clear()
    # As in validation: each list of samples goes to every metric in turn (they share its parse).
    for start in range(0, len(samples), args.batch):
        batch = samples[start:start + args.batch]
        for i, metric in enumerate(metrics):
            t0 = time.perf_counter()
            metric.update(batch)
            update_time[i] += time.perf_counter() - t0
    for (name, cls, config), metric, t_update in zip(PLUGINS, metrics, update_time, strict=True):
        scoring._PROPERTY_CACHE.clear()
        t1 = time.perf_counter()
        values = metric.compute()
        t2 = time.perf_counter()
        metric.compute()
        t3 = time.perf_counter()
        fresh = cls(config(), EmbeddedReference(canon))  # a new datamodule: the reference comes from the store
        fresh.merge_state(metric)
        fresh._update_count = metric._update_count  # merge_state copies the states only; this silences a warning
        scoring._PROPERTY_CACHE.clear()
        t4 = time.perf_counter()
        stored = fresh.compute()
        t5 = time.perf_counter()
        if any(stored[k].item() != v.item() for k, v in values.items()):
            raise SystemExit(f"{name}: the values from the stored reference differ: {stored} vs {values}")
        for key, dt in zip(totals, (t_update, t2 - t1, t5 - t4, t3 - t2), strict=True):
            totals[key] += dt
        shown = ", ".join(f"{k}={v.item():.6g}" for k, v in values.items())
        print(f"{name:24s} update {t_update:5.1f} s  compute: cold {t2 - t1:5.1f} s, stored {t5 - t4:4.1f} s, "
              f"memory {t3 - t2:4.1f} s  {shown}", flush=True)
    update = totals["update"]
    print(f"total: update {update:.1f} s; with the compute: cold {update + totals['compute_cold']:.1f} s, "
          f"reference from the store {update + totals['compute_stored']:.1f} s, "
          f"from memory {update + totals['compute_memory']:.1f} s")
    tmp.cleanup()

if __name__ == "__main__":
    main()
