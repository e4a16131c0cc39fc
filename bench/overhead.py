"""Framework overhead benchmark: anyorder's training step against a hand-written PyTorch loop on the same work.

Both methods train the same network (a :class:`CausalTransformer`, copied with identical initial weights) on the
same batches (the same seeded ``markov`` data, the same shuffled order) with the same loss (left-to-right
next-token cross-entropy, token mean), the same optimizer (AdamW, no weight decay, constant learning rate), gradient
clipping to norm 1.0 and no EMA:

* **framework**: anyorder's ``mle`` objective in a Lightning ``Trainer.fit`` built by
  :func:`anyorder.build.build_trainer` from a validated run config, i.e. every per-step cost of a real run:
  Lightning's loop and data fetching, the core's ``RunModule`` (per-step seeding, the ``StepContext`` with its seeded
  generator, finite-loss and finite-gradient checks, ``self.log`` of the loss terms and the gradient norm), the
  objective's loss, the logger (CSV by default), the (constant) LR scheduler step and, with ``--progress-bar``, the
  progress bar. Validation and checkpoint callbacks are not part of a step and are
  not installed.
* **hand**: a plain loop: ``next(batches)``, forward, ``cross_entropy``, ``backward``, ``clip_grad_norm_``,
  ``step``, ``zero_grad``.

Method. One ``Trainer.fit`` runs ``(blocks + 1) * steps_per_block + 1`` steps; setup (building the Trainer, the
model, the data, the first iterator) happens before the first timestamp and is excluded. A callback's
``on_train_batch_start`` fires every ``steps_per_block`` steps. There it takes a timestamp, which ends the framework
block, runs a block of ``steps_per_block`` hand-written steps (timed on their own), and takes another timestamp,
which starts the next framework block. The time between two consecutive ``on_train_batch_start`` calls of the
Lightning loop is one full loop iteration (the rest of the step, batch-end hooks, logging, loop bookkeeping, and
fetching the next batch), so a framework block is exactly ``steps_per_block`` full iterations with nothing of the
hand block inside it. Blocks alternate (hand, framework, hand, framework, ...), so drifts of the machine (clock
boost, other load) hit both alike; the first block of each method is warm-up and is discarded. On a GPU, every
timestamp follows ``torch.cuda.synchronize()``. On a CPU shared with other processes, wall time mostly measures
waiting for a core (and idle spinning of torch's worker threads); ``--clock cpu --threads 1`` measures the CPU
seconds this process spends instead, which that waiting does not inflate.

It prints the median milliseconds per step of each method, the median over block pairs of the ratio framework /
hand (the acceptance target is <= 1.05), the absolute overhead per step, and a check that the two methods trained
the same thing: the largest difference between their per-step losses (same weights, same batches).

This is a measurement, not a test: ``python bench/overhead.py`` (defaults: 4 layers, width 256, 4 heads, batch
32 x 256 tokens; seconds per step on a laptop CPU). ``python bench/overhead.py --layers 1 --width 32 --heads 2
--batch 4 --seq 32 --steps-per-block 50`` makes the step tiny, so the ratio shows the fixed per-step cost.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from anyorder.build import build_datamodule, build_module, build_trainer
from anyorder.config import validate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256, help="d_model")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=8, help="vocabulary of the markov data")
    parser.add_argument("--blocks", type=int, default=4, help="timed blocks of each method (after one warm-up block)")
    parser.add_argument("--steps-per-block", type=int, default=5, help="optimizer steps per block")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 keeps torch's default")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--logger", default="csv", choices=("csv", "none"),
                        help="framework logger (csv writes every train.log_every_n_steps into a temporary directory)")
    parser.add_argument("--log-every", type=int, default=50, help="train.log_every_n_steps of the framework run")
    parser.add_argument("--progress-bar", action="store_true", help="enable Lightning's progress bar in the framework")
    parser.add_argument("--accelerator", default="auto", help="lightning accelerator: auto | cpu | gpu")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall: time.perf_counter; cpu: time.process_time, CPU seconds of this process, which "
                             "waiting for a core shared with other processes does not inflate (CPU runs only; use "
                             "with --threads 1 so that idle spinning of worker threads is not counted)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_config(args: argparse.Namespace) -> Any:
    """The validated run config of the framework side."""
    total = (args.blocks + 1) * args.steps_per_block + 1
    return validate({
        "seed": args.seed,
        "objective": {"name": "mle"},
        "network": {"name": "causal_transformer", "n_layers": args.layers, "d_model": args.width,
                    "n_heads": args.heads, "dropout": 0.0},
        # One epoch covers every step, so no epoch boundary falls inside a timed block.
        "data": {"name": "markov", "order": 2, "vocab_size": args.vocab, "length": args.seq,
                 "num_train": args.batch * total, "num_val": 0, "num_test": 0},
        "train": {"max_steps": total, "global_batch_size": args.batch, "grad_clip": 1.0, "ema_decay": 0.0,
                  "log_every_n_steps": args.log_every, "test_at_end": False},
        "optim": {"name": "AdamW", "lr": args.lr, "weight_decay": 0.0},
        "scheduler": {"name": "constant", "warmup_steps": 0},
        "sample": {"num_val_samples": 0},
        "logger": {"name": args.logger},
    }, source="bench/overhead.py")


class Interleave(L.Callback):
    """Times framework blocks between ``on_train_batch_start`` calls and runs the hand-written blocks in between."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.k = args.steps_per_block
        self.blocks = args.blocks
        self.lr = args.lr
        self.clock = time.process_time if args.clock == "cpu" else time.perf_counter
        self.framework_ms: list[float] = []
        self.hand_ms: list[float] = []
        self.framework_losses: list[torch.Tensor] = []
        self.hand_losses: list[torch.Tensor] = []
        self._mark: float | None = None

    def _now(self, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return self.clock()

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Setup of the hand-written side (excluded from timing): the same initial weights, the same batch order.
        self.device = pl_module.device
        objective = pl_module.objective  # the mle plugin inside the core's RunModule
        self.net = copy.deepcopy(objective.network).train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        datamodule = trainer.datamodule
        self.batches = iter(datamodule.loader("train", datamodule.global_batch_size, train=True))
        self.bos_id = objective.bos_id

    def _hand_block(self) -> None:
        net, opt = self.net, self.opt
        with torch.enable_grad():
            for _ in range(self.k):
                tokens = next(self.batches)["tokens"].to(self.device, non_blocking=True)
                bos = torch.full((tokens.shape[0], 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
                logits = net(torch.cat([bos, tokens[:, :-1]], dim=1))
                loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                self.hand_losses.append(loss.detach())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.k:
            return
        now = self._now(self.device)
        if self._mark is not None:
            self.framework_ms.append(1000 * (now - self._mark) / self.k)
            self._progress()
        if step // self.k > self.blocks:
            self._mark = None  # the last step only closes the last framework block
            return
        start = self._now(self.device)
        self._hand_block()
        end = self._now(self.device)
        self.hand_ms.append(1000 * (end - start) / self.k)
        self._mark = self._now(self.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.framework_losses.append(loss.detach())

    def _progress(self) -> None:
        j = len(self.framework_ms) - 1
        tag = " (warm-up, discarded)" if j == 0 else ""
        print(f"[overhead] block {j}/{self.blocks}{tag}: hand {self.hand_ms[j]:.1f} ms/step, "
              f"framework {self.framework_ms[j]:.1f} ms/step", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.blocks < 1 or args.steps_per_block < 1:
        raise SystemExit("--blocks and --steps-per-block must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cfg = run_config(args)
    if args.clock == "cpu" and (args.accelerator in ("gpu", "cuda") or
                                (args.accelerator == "auto" and torch.cuda.is_available())):
        raise SystemExit("--clock cpu measures CPU runs only; on a GPU use --clock wall")
    L.seed_everything(args.seed, verbose=False)
    timer = Interleave(args)
    with tempfile.TemporaryDirectory(prefix="anyorder-overhead-") as tmp:
        logger = CSVLogger(save_dir=tmp, name="logs", version="") if args.logger == "csv" else False
        datamodule = build_datamodule(cfg)
        model = build_module(cfg)
        trainer = build_trainer(
            cfg, logger=logger, callbacks=[timer], max_steps=int(cfg.train.max_steps), max_epochs=-1,
            limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=args.progress_bar,
            log_every_n_steps=int(cfg.train.log_every_n_steps), default_root_dir=tmp, devices=1,
            accelerator=args.accelerator,
        )
        print(f"[overhead] {args.layers} layers, width {args.width}, {args.heads} heads, batch {args.batch} x "
              f"{args.seq} tokens; {args.blocks} timed blocks of {args.steps_per_block} steps per method after one "
              f"warm-up block", file=sys.stderr, flush=True)
        trainer.fit(model, datamodule=datamodule)

    hand, framework = timer.hand_ms[1:], timer.framework_ms[1:]
    if len(framework) != args.blocks or len(hand) != args.blocks:
        raise SystemExit(f"expected {args.blocks} timed blocks, got {len(framework)} framework and {len(hand)} hand")
    ratios = [f / h for f, h in zip(framework, hand, strict=True)]
    n = min(len(timer.framework_losses), len(timer.hand_losses))
    diff = max(abs(float(a) - float(b)) for a, b in zip(timer.framework_losses[:n], timer.hand_losses[:n], strict=True))
    first = abs(float(timer.framework_losses[0]) - float(timer.hand_losses[0]))
    params = model.objective.network.num_parameters()
    device = str(model.device)
    if model.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(model.device)})"
    print(f"setup: torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}, {platform.processor() or platform.machine()}")
    print(f"model: {args.layers} layers, width {args.width}, {args.heads} heads, {params / 1e6:.2f} M parameters; "
          f"batch {args.batch} x {args.seq} tokens; AdamW lr {args.lr} constant, grad clip 1.0, EMA off; "
          f"framework logger {args.logger}, progress bar {'on' if args.progress_bar else 'off'}")
    print(f"blocks: {args.blocks} x {args.steps_per_block} steps per method (plus one warm-up block each); "
          f"clock: {'process CPU time' if args.clock == 'cpu' else 'wall time'}")
    print(f"hand-written  median {statistics.median(hand):9.2f} ms/step   blocks: "
          + " ".join(f"{x:.1f}" for x in hand))
    print(f"framework     median {statistics.median(framework):9.2f} ms/step   blocks: "
          + " ".join(f"{x:.1f}" for x in framework))
    overhead = [f - h for f, h in zip(framework, hand, strict=True)]
    print(f"overhead      median {statistics.median(overhead):9.2f} ms/step")
    ratio = statistics.median(ratios)
    print(f"ratio framework/hand: median {ratio:.4f} (per block pair: {' '.join(f'{r:.3f}' for r in ratios)}); "
          f"target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}")
    print(f"same training: |loss difference| step 0 {first:.2e}, max over {n} steps {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
