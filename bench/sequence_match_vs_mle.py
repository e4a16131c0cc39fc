"""SequenceMatch against MLE at equal training compute: sample quality over several seeds.

For each seed, trains ``configs/<dataset>/sequence_match.yaml`` for ``--sm-steps`` optimizer steps and
``configs/<dataset>/mle.yaml`` (the same network, data and optimiser) for ``round(ratio * sm-steps)`` steps, where
``--ratio`` is the cost of a SequenceMatch step over an MLE step measured by ``bench/sequence_match.py`` on the same
config (replay generation included). Equal compute therefore means equal training time on the same machine; the
wall time of every run is printed so the match can be checked. Each run's cosine schedule spans its own steps.

Then draws ``--num`` samples from each run (EMA weights, ``sample.*`` of the config plus ``--sample`` overrides,
identical for both objectives) and scores them with the run's metrics and the dataset's suite, exactly as
``anyorder sample RUN --num N --out FILE`` does. ``--reference`` also scores ``--num`` training datapoints with the same
suite: the figure a model that samples the training distribution exactly would reach at this sample size.

Prints a table of mean ± sd over seeds per metric, and writes every run's numbers with the protocol to ``--out``.
Run from the repository root, e.g.::

    python bench/sequence_match_vs_mle.py --dataset qm9 --sm-steps 1200 --ratio 2.14 --seeds 0 1 2 \\
        --num 10000 --out qm9.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def reference_scores(config: str, num: int, overrides: list[str]) -> dict[str, float]:
    """The suite of :func:`main` on ``num`` training datapoints (drawn at random, seed 0) decoded like samples: what
    a model that samples the training distribution exactly would score at this sample size. Metrics measured against
    the training split itself (novelty) are 0 here by construction."""
    import numpy as np

    from anyorder.build import build_datamodule
    from anyorder.config import load_config
    from anyorder.sample_eval import score
    from anyorder.sampling import full_suite

    cfg = load_config(config, overrides)
    data = build_datamodule(cfg)
    data.prepare_data()
    data.setup()
    train = data.splits.train
    picked = np.random.default_rng(0).choice(len(train), size=min(num, len(train)), replace=False)
    objs = [data.decode(train.tokens[int(i)], int(train.lengths[int(i)])) for i in picked]
    return score(data, objs, full_suite(cfg, data))["values"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a folder of configs/ holding mle.yaml and sequence_match.yaml")
    parser.add_argument("--sm-steps", type=int, required=True)
    parser.add_argument("--ratio", type=float, required=True,
                        help="SequenceMatch step cost over MLE step cost (bench/sequence_match.py on this config)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num", type=int, default=10000, help="samples scored per run")
    parser.add_argument("--sample", nargs="*", default=[], help="sample.* overrides for both objectives")
    parser.add_argument("--train", nargs="*", default=[], help="further overrides for both trainings")
    parser.add_argument("--reference", action="store_true", help="also score --num training datapoints")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from anyorder.sampling import sample_run
    from anyorder.train import train

    steps = {"sequence_match": args.sm_steps, "mle": round(args.ratio * args.sm_steps)}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for objective, n in steps.items():
                config = f"configs/{args.dataset}/{objective}.yaml"
                overrides = [f"output_dir={tmp}", "logger.name=csv", f"seed={seed}", f"train.max_steps={n}",
                             f"train.val_every_n_steps={n}", f"train.ckpt_every_n_steps={n}",
                             "train.test_at_end=false", "sample.num_val_samples=0",
                             "trainer.enable_progress_bar=false", *args.train, *args.sample]
                start = time.perf_counter()
                run = train(config, overrides)
                seconds = time.perf_counter() - start
                out = Path(tmp) / f"{objective}-{seed}.txt"
                meta = sample_run(run, num=args.num, out=out, overrides=args.sample) or {}
                result = {"objective": objective, "seed": seed, "steps": n, "train_seconds": round(seconds, 1),
                          **{f"stat_{k}": v for k, v in meta.get("stats", {}).items()},
                          "mean_length": meta.get("mean_length"), **meta.get("scores", {})}
                rows.append(result)
                print(json.dumps(result), flush=True)
        reference = reference_scores(f"configs/{args.dataset}/mle.yaml", args.num, [*args.train, *args.sample]) \
            if args.reference else {}
    keys = [k for k in rows[0] if k not in ("objective", "seed") and isinstance(rows[0][k], (int, float))]
    print(f"\n{args.dataset}: SequenceMatch {steps['sequence_match']} steps vs MLE {steps['mle']} steps "
          f"(ratio {args.ratio}), {args.num} samples per run, seeds {args.seeds}; mean ± sd over seeds")
    print(f"{'':24s}" + "".join(f"{name:>22s}" for name in steps) + (f"{'training data':>16s}" if reference else ""))
    for key in keys:
        cells = []
        for objective in steps:
            values = [r[key] for r in rows if r["objective"] == objective and isinstance(r.get(key), (int, float))]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}".rjust(22) if values else " " * 22)
        ref = f"{reference[key]:16.4f}" if key in reference else ""
        print(f"{key:24s}" + "".join(cells) + ref)
    if args.out:
        from anyorder.runs import git_state, package_versions

        protocol = {"dataset": args.dataset, "steps": steps, "ratio": args.ratio, "seeds": args.seeds,
                    "num_samples": args.num, "sample_overrides": args.sample, "train_overrides": args.train,
                    "weights": "EMA", "git": git_state(Path.cwd()),
                    "packages": package_versions(),
                    "equal_compute": "MLE steps = ratio x SequenceMatch steps (bench/sequence_match.py)"}
        Path(args.out).write_text(json.dumps({"protocol": protocol, "runs": rows, "reference": reference}, indent=1))


if __name__ == "__main__":
    main()
