"""The cost of a SequenceMatch training step against an MLE step on the same network, replay generation included.

Both objectives are built from ``--config`` (default ``configs/arithmetic/sequence_match.yaml``); the MLE model is
the same config with ``objective={name: mle}``, so the causal transformer is identical. Each timed block runs
``--steps`` optimizer steps (forward, backward, AdamW) on real training batches; SequenceMatch runs past its BC
warm-up, so its blocks include the noise augmentation, the one-pass layout, the replay rows in the batch and one
replay generation every ``replay_every`` steps (the config's). Blocks alternate between the two models and the
median block time per step is compared. Prints the ratio, and the replay-generation time on its own.

Run from the repository root::

    python bench/sequence_match.py [--config configs/arithmetic/sequence_match.yaml] [--steps 20] [--blocks 5] \\
        [--set data.block_size=64 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from common import build

from anyorder.objective import StepContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/arithmetic/sequence_match.yaml")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed block")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for both models")
    args = parser.parse_args()

    sm, data, cfg = build(args.config, overrides=args.set)
    mle, _, _ = build(args.config, {"name": "mle"}, overrides=args.set)
    # Past the BC warm-up from the first step: the warm-up is `ctx.step < bc_warmup * ctx.max_steps`, so with
    # bc_warmup = 0 every step is a full SequenceMatch step (a larger max_steps would lengthen the warm-up instead).
    sm.config.bc_warmup = 0.0
    total = (args.blocks + 1) * args.steps
    train = data.splits.train
    batch_size = int(cfg.train.global_batch_size)
    rng = np.random.default_rng(0)
    optimizers = {"sequence_match": torch.optim.AdamW(sm.parameters(), lr=1e-4),
                  "mle": torch.optim.AdamW(mle.parameters(), lr=1e-4)}
    models = {"sequence_match": sm, "mle": mle}
    per_step: dict[str, list[float]] = {name: [] for name in models}
    step = 0
    for block in range(args.blocks + 1):
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            for _ in range(args.steps):
                batch = train.batch(torch.from_numpy(rng.integers(0, len(train), size=batch_size)))
                # The replay schedule (one generation every replay_every steps) follows ctx.step.
                ctx = StepContext.standalone(step=step, max_steps=total, seed=int(cfg.seed), logs=False)
                if name == "sequence_match":
                    assert not model.warm(ctx), "the benchmark must run past the BC warm-up"
                    step += 1
                optimizers[name].zero_grad(set_to_none=True)
                model.loss(batch, ctx).loss.backward()
                optimizers[name].step()
            if block > 0:  # the first block warms up
                per_step[name].append((time.perf_counter() - start) / args.steps)
    median = {name: statistics.median(v) for name, v in per_step.items()}
    sm.eval()
    prompts = [[sm.bos_id]] * sm.config.replay_batch
    start = time.perf_counter()
    sm.generate(len(prompts), generator=torch.Generator().manual_seed(0), prompts=prompts)
    generation = time.perf_counter() - start
    result = {"config": args.config, "overrides": args.set, "batch": batch_size, "threads": torch.get_num_threads(),
              "seconds_per_step": median, "ratio_sequence_match_over_mle": median["sequence_match"] / median["mle"],
              "replay_every": sm.config.replay_every, "replay_batch": sm.config.replay_batch,
              "replay_generation_seconds": generation,
              "protocol": f"{args.blocks} alternating blocks of {args.steps} steps after one warm-up block; median"}
    print(f"SequenceMatch vs MLE on {args.config} (batch {batch_size}, {torch.get_num_threads()} threads)")
    print(f"  per step   sequence_match {median['sequence_match'] * 1e3:8.1f} ms   mle {median['mle'] * 1e3:8.1f} ms   "
          f"ratio {result['ratio_sequence_match_over_mle']:.2f} (replay generation every {sm.config.replay_every} "
          f"steps included)")
    print(f"  one replay generation of {sm.config.replay_batch} sequences: {generation * 1e3:.0f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
