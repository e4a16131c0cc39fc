"""LO-ARM against AO-ARM (ardm) on the same network: training-step time as a ratio, and sampling throughput.

Both objectives are built from one config (by default ``configs/qm9/lo_arm.yaml``: the graph transformer on QM9's
45 node and edge variables) on the dataset's space; the AO-ARM model is the same config with
``objective={name: ardm}``, so the classifier network is identical. Training steps (forward, backward, AdamW step)
on random batches of real training datapoints are timed interleaved, LO-ARM then AO-ARM, ``--steps`` times after
``--warmup`` untimed steps each, and the medians are compared: the ratio is what LO-ARM's K prefixes and its q
network cost. Sampling draws ``--samples`` datapoints in batches of ``--batch`` with each model (D network calls
per batch for both) and reports datapoints per second. Everything runs on one device in float32, single process.

Run from the repository root (QM9 comes from the data mirror or is downloaded)::

    ANYORDER_DATA_MIRROR=../shared/data python bench/lo_arm.py [--config configs/qm9/lo_arm.yaml] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from common import build

from anyorder.objective import SampleContext, StepContext


def step_seconds(model: Any, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, ctx: StepContext) -> float:
    """Wall-clock seconds of one training step on ``tokens``."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model.loss({"tokens": tokens}, ctx).loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/qm9/lo_arm.yaml")
    parser.add_argument("--batch-size", type=int, default=0, help="training batch (0: the config's global batch)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--batch", type=int, default=250, help="sampling batch")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lo, data, cfg = build(args.config)
    ao, _, _ = build(args.config, {"name": "ardm"})
    lo.train()
    ao.train()
    batch = args.batch_size or int(cfg.train.global_batch_size)
    train = data.splits.train.tokens
    generator = torch.Generator().manual_seed(0)
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in (("lo_arm", lo), ("ardm", ao))}
    times: dict[str, list[float]] = {"lo_arm": [], "ardm": []}
    total = args.warmup + args.steps
    for i in range(total):
        tokens = train[torch.randint(0, len(train), (batch,), generator=generator)]
        # A step that is not logged (logs=False), as most steps of a run: no gradient-variance diagnostic.
        ctx = StepContext.standalone(step=i, max_steps=total, seed=int(cfg.seed), logs=False)
        for name, model in (("lo_arm", lo), ("ardm", ao)):
            seconds = step_seconds(model, optimizers[name], tokens, ctx)
            if i >= args.warmup:
                times[name].append(seconds)
    median = {name: statistics.median(v) for name, v in times.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("lo_arm", lo), ("ardm", ao))}

    throughput = {}
    for name, model in (("lo_arm", lo), ("ardm", ao)):
        model.eval()
        ctx = SampleContext.standalone(1)  # one generator for the warm-up and the timed batches
        model.sample(min(args.batch, args.samples), ctx)  # warm-up
        start = time.perf_counter()
        done = 0
        while done < args.samples:
            n = min(args.batch, args.samples - done)
            model.sample(n, ctx)
            done += n
        throughput[name] = args.samples / (time.perf_counter() - start)

    result = {
        "config": args.config, "variant": lo.variant, "num_variables": lo.num_variables, "batch": batch,
        "threads": torch.get_num_threads(), "parameters": params,
        "train_step_seconds_median": median, "train_step_ratio_lo_arm_over_ardm": median["lo_arm"] / median["ardm"],
        "sampling_per_second": throughput, "sampling_batch": args.batch,
        "protocol": f"{args.steps} interleaved steps after {args.warmup} warm-up steps each; sampling {args.samples} "
                    f"datapoints in batches of {args.batch} after one warm-up batch; one process, float32",
    }
    print(f"{lo.variant} vs AO-ARM on {args.config} (D = {lo.num_variables}, batch {batch}, "
          f"{torch.get_num_threads()} threads)")
    print(f"  parameters          lo_arm {params['lo_arm']:,}   ardm {params['ardm']:,}")
    print(f"  training step       lo_arm {median['lo_arm'] * 1e3:8.1f} ms   ardm {median['ardm'] * 1e3:8.1f} ms   "
          f"ratio {result['train_step_ratio_lo_arm_over_ardm']:.2f}")
    print(f"  sampling            lo_arm {throughput['lo_arm']:8.1f} /s   ardm {throughput['ardm']:8.1f} /s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
