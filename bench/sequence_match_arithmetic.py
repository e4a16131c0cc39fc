"""The arithmetic experiment of SequenceMatch: held-out accuracy against the noise level, for four methods.

Every run trains ``configs/arithmetic/sequence_match.yaml`` (base 7, up to 2 digits, 5,000 training questions, 200
held-out test questions; the question is the prompt) for ``--steps`` steps with one of:

* ``mle_clean``: maximum likelihood on clean answers, whatever the noise level (``lam=0``, ``noise_rate=0``): the
  reference that the corruption is measured against; it runs once per seed;
* ``mle``: maximum likelihood on corrupted answers: at the noise level, wrong tokens are inserted and left in place
  (``lam=0``, ``imitate_noise=true``, ``noise_backspace=false``);
* ``mle_bksp``: maximum likelihood on the same corruption with each wrong token followed by BKSP, every action
  imitated, the wrong tokens included (``lam=0``, ``imitate_noise=true``);
* ``sm``: SequenceMatch-chi2: the wrong tokens are not imitated, BC warm-up, then (1 - lam) BC + lam L_SM with a
  replay buffer of the model's own generations.

Then it answers the 200 test questions greedily (temperature 0; BKSP allowed), folds the actions and scores the
folded answer exactly.

With ``--source RUN`` (a trained MLE run on clean answers: ``configs/arithmetic/sequence_match.yaml`` with
``objective.lam=0 objective.replay_every=0 objective.noise_rate=0``; ``configs/arithmetic/mle.yaml`` models whole
equations and answers too few questions to start from) every run is a fine-tuning run, the protocol of the paper:
it starts from the source's weights (``train.init_from``), with ``bc_warmup=0``, untied output embeddings and a
peak learning rate of ``--lr``. At noise 0,
``mle`` and ``mle_bksp`` are the same computation as ``mle_clean`` and are not run again (their noise-0 cells
show ``mle_clean``). Prints a table of mean accuracy (± the standard error over seeds) per method and noise
level, and writes every run's numbers with the protocol to ``--out``.

Run from the repository root (about a minute per run on 2 CPU cores)::

    python bench/sequence_match_arithmetic.py --steps 1500 --seeds 0 1 --noise 0 0.2 --out arith.json
    anyorder train configs/arithmetic/sequence_match.yaml objective.lam=0 objective.replay_every=0 \\
        objective.noise_rate=0 train.max_steps=3000 name=arith-clean
    python bench/sequence_match_arithmetic.py --source runs/arith-clean --steps 300 --seeds 0 1 2 3 \\
        --noise 0 0.05 0.1 0.2 --lam 0.1 0.5 --out arith-finetune.json
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
    "mle_clean": ["objective.lam=0.0", "objective.replay_every=0"],
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


def runs_as_clean(method: str, noise: float, fine_tuning: bool) -> bool:
    """Whether a (method, noise level) cell is the clean-data run: ``mle_clean`` always, and, when fine-tuning, the
    MLE methods at noise 0, which are then the same computation and are not run again."""
    return method == "mle_clean" or (fine_tuning and noise == 0 and method in ("mle", "mle_bksp"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--lam", type=float, nargs="+", default=[0.5], help="lam values of the sm runs")
    parser.add_argument("--alpha", type=float, default=1.0, help="the chi2 divergence's alpha in the sm runs")
    parser.add_argument("--source", default="", help="fine-tune every run from this trained MLE run")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate when fine-tuning")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from anyorder.train import train

    finetune: list[str] = []
    if args.source:
        from anyorder.runs import require_run_dir

        source = require_run_dir(args.source).resolve()
        finetune = [f"train.init_from={source}:last", "objective.bc_warmup=0", "network.tie_embeddings=false",
                    f"optim.lr={args.lr}"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in args.noise:
            for method in args.methods:
                if method == "mle_clean" and noise != args.noise[0]:
                    continue  # independent of the noise level: once per seed
                if method != "mle_clean" and runs_as_clean(method, noise, bool(args.source)) \
                        and "mle_clean" in args.methods:
                    continue  # the same computation as mle_clean, which runs anyway
                for lam in (args.lam if method == "sm" else [None]):
                    for seed in args.seeds:
                        overrides = [
                            f"output_dir={tmp}", "logger.name=csv", f"seed={seed}", f"train.max_steps={args.steps}",
                            f"train.val_every_n_steps={args.steps}", f"train.ckpt_every_n_steps={args.steps}",
                            "train.test_at_end=false", "sample.num_val_samples=0",
                            "trainer.enable_progress_bar=false",
                            f"objective.noise_rate={0.0 if method == 'mle_clean' else noise}",
                            f"objective.divergence={{name: chi2, alpha: {args.alpha}}}", *finetune,
                            *METHODS[method], *([f"objective.lam={lam}"] if lam is not None else []),
                        ]
                        start = time.perf_counter()
                        run = train(CONFIG, overrides)
                        seconds = time.perf_counter() - start
                        result = {"method": method, "lam": lam, "alpha": args.alpha if method == "sm" else None,
                                  "noise": 0.0 if method == "mle_clean" else noise, "seed": seed,
                                  "train_seconds": seconds,
                                  **accuracy(run)}
                        rows.append(result)
                        print(json.dumps(result), flush=True)
    how = f"fine-tuned {args.steps} steps from {args.source}" if args.source else f"{args.steps} steps"
    print(f"\nheld-out accuracy (greedy, {how}, seeds {args.seeds}; mean ± standard error over seeds; "
          f"mle_clean, and every mle method at noise 0, is the clean-data run)")
    print(f"{'method':16s}" + "".join(f"noise {n:<12}" for n in args.noise))
    keys = sorted({(r["method"], r["lam"]) for r in rows}, key=lambda k: (list(METHODS).index(k[0]), k[1] or 0))
    for method, lam in keys:
        name = method if lam is None else f"{method} lam={lam}"
        cells = []
        for noise in args.noise:
            accs = [r["accuracy"] for r in rows if r["method"] == method and r["lam"] == lam and r["noise"] == noise]
            if not accs and runs_as_clean(method, noise, bool(args.source)):
                accs = [r["accuracy"] for r in rows if r["method"] == "mle_clean"]
            se = statistics.stdev(accs) / len(accs) ** 0.5 if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.3f}±{se:.3f}    " if accs else " " * 18)
        print(f"{name:16s}" + "".join(cells))
    if args.out:
        from anyorder.runs import git_state, package_versions

        protocol = {"git": git_state(Path.cwd()), "packages": package_versions(),
                    "config": CONFIG, "steps": args.steps, "seeds": args.seeds, "decoding": "greedy, BKSP allowed",
                    "test": "the 200 held-out questions of the seeded arithmetic split", "methods": METHODS,
                    "alpha": args.alpha, "source": args.source, "finetune_overrides": finetune}
        Path(args.out).write_text(json.dumps({"protocol": protocol, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
