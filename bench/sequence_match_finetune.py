"""The discriminating experiment for SequenceMatch: fine-tune a trained MLE model, as the paper does, and compare
continued MLE with SequenceMatch as it was in 0.2.0 and with the corrected loss over lam and alpha, over seeds.

``--source RUN`` is a trained MLE run (for QM9 SMILES: a run of ``configs/qm9/mle.yaml``). Every arm starts from
its weights and EMA (``train.init_from``), with a fresh optimizer and schedule, trains ``--steps`` optimizer steps
with each seed, draws ``--num`` samples (EMA weights, the sample settings of the source's config plus ``--sample``)
and scores them with the run's metrics and the dataset's suite, as ``anyorder sample`` does. The arms:

- ``mle``: the source's config, continued;
- ``sm_as_was``: SequenceMatch with 0.2.0's loss (``noise_in_mixture=true mixture=per_action
  truncation=terminal``) and the lam and alpha of ``configs/<dataset>/sequence_match.yaml``;
- ``sm_lam<L>_alpha<A>``: the corrected loss for every ``--lams`` x ``--alphas``.

SequenceMatch arms take the objective section of ``configs/<dataset>/sequence_match.yaml`` (noise, replay, gamma)
and the source's network, with ``bc_warmup=0`` (the source is the warm start) and untied output embeddings (their
head has one more action, BKSP, which starts at logit 0). Prints mean ± standard error over seeds per metric and
arm, and the SequenceMatch diagnostics of the last logged step; writes every run with the protocol to ``--out``.
Run from the repository root, e.g.::

    anyorder train configs/qm9/mle.yaml name=qm9-mle
    python bench/sequence_match_finetune.py --dataset qm9 --source runs/qm9-mle --steps 400 --seeds 0 1 2 \\
        --num 10000 --out qm9-finetune.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

DIAGNOSTICS = ("train/r_data", "train/r_replay", "train/r_noise", "train/entropy_data", "train/bksp_prob_clean",
               "train/loglik_replay")
OLD_LOSS = ["objective.noise_in_mixture=true", "objective.mixture=per_action", "objective.truncation=terminal"]


def _flatten(prefix: str, section: dict[str, Any]) -> list[str]:
    out = []
    for key, value in section.items():
        if isinstance(value, dict):
            out.append(f"{prefix}.{key}={json.dumps(value)}")
        else:
            out.append(f"{prefix}.{key}={json.dumps(value) if isinstance(value, (bool, str)) else value}")
    return out


def arms(dataset: str, lams: list[float], alphas: list[float]) -> dict[str, list[str]]:
    """Overrides of the source's config for each arm."""
    sm = yaml.safe_load(Path(f"configs/{dataset}/sequence_match.yaml").read_text())["objective"]
    base = [*_flatten("objective", sm), "objective.bc_warmup=0", "network.tie_embeddings=false"]
    out: dict[str, list[str]] = {"mle": [], "sm_as_was": [*base, *OLD_LOSS]}
    for lam in lams:
        for alpha in alphas:
            out[f"sm_lam{lam:g}_alpha{alpha:g}"] = [*base, f"objective.lam={lam}",
                                                    f"objective.divergence={{name: chi2, alpha: {alpha}}}"]
    return out


def last_diagnostics(run: Path) -> dict[str, float]:
    """The SequenceMatch diagnostics of the run's last logged training step (CSV logger)."""
    files = sorted(run.glob("logs/csv/session-*/metrics.csv"))
    if not files:
        return {}
    with files[-1].open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    if not rows:
        return {}
    return {k.removeprefix("train/"): float(rows[-1][k]) for k in DIAGNOSTICS if rows[-1].get(k)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="the folder of configs/ holding sequence_match.yaml")
    parser.add_argument("--source", required=True, help="a trained MLE run directory")
    parser.add_argument("--checkpoint", default="last", choices=["last", "best"])
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps per arm and seed")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of every arm")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num", type=int, default=10000, help="samples scored per run")
    parser.add_argument("--sample", nargs="*", default=[], help="sample.* overrides for every arm")
    parser.add_argument("--train", nargs="*", default=[], help="further overrides for every arm")
    parser.add_argument("--only", nargs="*", default=[], help="run only these arms")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from anyorder.runs import git_state, package_versions, require_run_dir
    from anyorder.sampling import sample_run
    from anyorder.train import train

    source = require_run_dir(args.source).resolve()
    config = str(source / "config.yaml")
    plan = {name: o for name, o in arms(args.dataset, args.lams, args.alphas).items()
            if not args.only or name in args.only}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm, extra in plan.items():
                n = args.steps
                overrides = [f"output_dir={tmp}", f"name={arm}-{seed}", "logger.name=csv", f"seed={seed}",
                             f"train.init_from={source}:{args.checkpoint}", f"train.max_steps={n}",
                             f"train.val_every_n_steps={n}", f"train.ckpt_every_n_steps={n}",
                             "train.log_every_n_steps=10", "train.test_at_end=false", "sample.num_val_samples=0",
                             "sample.num_final_samples=0", f"optim.lr={args.lr}", "trainer.enable_progress_bar=false",
                             *extra, *args.train, *args.sample]
                start = time.perf_counter()
                run = train(config, overrides)
                seconds = time.perf_counter() - start
                meta = sample_run(run, num=args.num, out=Path(tmp) / f"{arm}-{seed}.txt", overrides=args.sample) or {}
                result = {"arm": arm, "seed": seed, "steps": n, "train_seconds": round(seconds, 1),
                          **{f"stat_{k}": v for k, v in meta.get("stats", {}).items()},
                          "mean_length": meta.get("mean_length"), **meta.get("scores", {}),
                          **{f"diag_{k}": v for k, v in last_diagnostics(run).items()}}
                rows.append(result)
                print(json.dumps(result), flush=True)
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in ("seed",)})
    print(f"\n{args.dataset}: fine-tuned {args.steps} steps from {source} ({args.checkpoint}), {args.num} samples per "
          f"run, seeds {args.seeds}; mean ± standard error over seeds")
    print(f"{'':26s}" + "".join(f"{name:>24s}" for name in plan))
    for key in keys:
        cells = []
        for arm in plan:
            values = [r[key] for r in rows if r["arm"] == arm and isinstance(r.get(key), (int, float))
                      and not math.isnan(r[key])]
            se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {se:.4f}".rjust(24) if values else " " * 24)
        print(f"{key:26s}" + "".join(cells))
    if args.out:
        protocol = {"dataset": args.dataset, "source": str(source), "checkpoint": args.checkpoint,
                    "steps": args.steps, "lr": args.lr, "seeds": args.seeds, "num_samples": args.num,
                    "arms": plan, "sample_overrides": args.sample, "train_overrides": args.train,
                    "weights": "EMA where the source keeps one", "git": git_state(Path.cwd()),
                    "packages": package_versions()}
        Path(args.out).write_text(json.dumps({"protocol": protocol, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
