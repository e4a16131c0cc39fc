"""The arithmetic experiment of SequenceMatch: held-out accuracy against the noise level, for three methods.

Every run trains ``configs/arithmetic/sequence_match.yaml`` (base 7, up to 2 digits, 5,000 training questions, 200
held-out test questions; the question is the prompt) for ``--steps`` steps with one of:

* ``mle``: maximum likelihood on corrupted answers: at the noise level, wrong tokens are inserted and left in place
  (``lam=0``, ``imitate_noise=true``, ``noise_backspace=false``);
* ``mle_bksp``: maximum likelihood on the same corruption with each wrong token followed by BKSP, every action
  imitated, the wrong tokens included (``lam=0``, ``imitate_noise=true``);
* ``sm``: SequenceMatch-chi2: the wrong tokens are not imitated, BC warm-up, then (1 - lam) BC + lam L_SM with a
  replay buffer of the model's own generations.

Then it answers the 200 test questions greedily (temperature 0; BKSP allowed), folds the actions and scores the
folded answer exactly. Prints a table of mean accuracy (± the standard deviation over seeds) per method and noise
level, and writes every run's numbers with the protocol to ``--out``.

Run from the repository root (about a minute per run on 2 CPU cores)::

    python bench/sequence_match_arithmetic.py --steps 1500 --seeds 0 1 --noise 0 0.2 --out arith.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CONFIG = "configs/arithmetic/sequence_match.yaml"
METHODS: dict[str, list[str]] = {
    "mle": ["objective.lam=0.0", "objective.imitate_noise=true", "objective.noise_backspace=false",
            "objective.replay_every=0"],
    "mle_bksp": ["objective.lam=0.0", "objective.imitate_noise=true", "objective.replay_every=0"],
    "sm": [],
}


def accuracy(run: Path) -> dict[str, float]:
    """Greedy answers to the held-out test questions: exact-match accuracy, well-formed share, backspace rate."""
    from anyorder.build import restore_run
    from anyorder_plugins.arithmetic.equations import is_correct

    restored = restore_run(run)
    # The objective plugin inside the core's RunModule, with the trained weights (not the EMA averages).
    model, data = restored.module.objective.eval(), restored.datamodule
    data.setup()
    test = data.splits.test
    prompts = [row[:p].tolist() for row, p in zip(test.tokens, test.prompt_lengths, strict=True)]
    answers, bksp_rate = model.complete(prompts, generator=torch.Generator().manual_seed(0), temperature=0.0)
    texts = [data.decode(torch.tensor(p + a), len(p) + len(a)) for p, a in zip(prompts, answers, strict=True)]
    scores = [is_correct(t, data.config.base) for t in texts]
    return {"accuracy": sum(c for _, c in scores) / len(scores), "well_formed": sum(w for w, _ in scores) / len(scores),
            "backspace_rate": bksp_rate, "num_test": len(scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--lam", type=float, nargs="+", default=[0.5], help="lam values of the sm runs")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from anyorder.train import train

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in args.noise:
            for method in args.methods:
                for lam in (args.lam if method == "sm" else [None]):
                    for seed in args.seeds:
                        overrides = [
                            f"output_dir={tmp}", "logger.name=csv", f"seed={seed}", f"train.max_steps={args.steps}",
                            f"train.val_every_n_steps={args.steps}", f"train.ckpt_every_n_steps={args.steps}",
                            "train.test_at_end=false", "sample.num_val_samples=0",
                            "trainer.enable_progress_bar=false", f"objective.noise_rate={noise}",
                            *METHODS[method], *([f"objective.lam={lam}"] if lam is not None else []),
                        ]
                        start = time.perf_counter()
                        run = train(CONFIG, overrides)
                        seconds = time.perf_counter() - start
                        result = {"method": method, "lam": lam, "noise": noise, "seed": seed, "train_seconds": seconds,
                                  **accuracy(run)}
                        rows.append(result)
                        print(json.dumps(result), flush=True)
    print(f"\nheld-out accuracy (greedy, {args.steps} steps, seeds {args.seeds}; mean ± sd over seeds)")
    print(f"{'method':16s}" + "".join(f"noise {n:<12}" for n in args.noise))
    keys = sorted({(r["method"], r["lam"]) for r in rows}, key=lambda k: (list(METHODS).index(k[0]), k[1] or 0))
    for method, lam in keys:
        name = method if lam is None else f"{method} lam={lam}"
        cells = []
        for noise in args.noise:
            accs = [r["accuracy"] for r in rows if r["method"] == method and r["lam"] == lam and r["noise"] == noise]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.3f}±{sd:.3f}    " if accs else " " * 18)
        print(f"{name:16s}" + "".join(cells))
    if args.out:
        from anyorder.runs import git_state, package_versions

        protocol = {"git": git_state(Path.cwd()), "packages": package_versions(),
                    "config": CONFIG, "steps": args.steps, "seeds": args.seeds, "decoding": "greedy, BKSP allowed",
                    "test": "the 200 held-out questions of the seeded arithmetic split", "methods": METHODS}
        Path(args.out).write_text(json.dumps({"protocol": protocol, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
