"""Training throughput benchmark: tokens per second and model-FLOPs utilisation (MFU) of anyorder's training step.

It trains anyorder's ``mle`` objective with a :class:`CausalTransformer` through the framework path (a validated run
config, :func:`anyorder.build.build_trainer`, ``Trainer.fit``) on uniformly random tokens, for ``--warmup`` untimed
steps (which absorb ``torch.compile``, autotuning and allocator warm-up) and then ``--steps`` timed ones. The timed
window runs from the ``on_train_batch_start`` of the first timed step to that of the step after the last one, so it
holds whole loop iterations (data, step, logging); on a GPU both ends follow ``torch.cuda.synchronize()``.
Validation, checkpoints, the logger and the progress bar are off.

* tokens/s = batch x seq x steps / seconds; every position of a sequence is a predicted token.
* model FLOPs per token = ``network.flops_per_token(seq)``: 6 x (non-embedding parameters) + 12 x layers x width x
  seq (the PaLM estimate, counting the full attention square), for forward and backward.
* MFU = model FLOPs per second / the device's peak. The peak comes from ``--peak-flops`` or, on a GPU, from a table
  of dense bf16 tensor-core peaks keyed by the device name (H100 SXM / H200: 989.4e12, H100 PCIe: 756e12,
  A100: 312e12). The table assumes bf16/fp16 precision; with other precisions the MFU is relative to that bf16 peak.
  On a CPU there is no table: pass ``--peak-flops`` or read the tokens/s only.

Example (a GPT-2-small-sized model on one GPU): ``python bench/throughput.py --batch 16 --compile``. A CPU smoke
check: ``python bench/throughput.py --layers 2 --width 64 --heads 2 --seq 64 --batch 4 --vocab 256 --steps 3
--warmup 1 --precision 32-true``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from anyorder.build import build_datamodule, build_module, build_trainer
from anyorder.config import PluginConfig, opt, validate
from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.registry import REGISTRY

DATASET = "bench_random_tokens"

PEAK_BF16_FLOPS: list[tuple[tuple[str, ...], float]] = [
    # (substrings of torch.cuda.get_device_name, all required; dense bf16 tensor-core FLOP/s). First match wins.
    (("H200",), 989.4e12),
    (("H100", "PCIE"), 756.0e12),
    (("H100",), 989.4e12),  # SXM ("NVIDIA H100 80GB HBM3")
    (("A100",), 312.0e12),
]


@dataclass
class RandomTokensConfig(PluginConfig):
    """Uniformly random tokens (for throughput measurements only)."""

    vocab_size: int = opt(50304, "vocabulary size")
    length: int = opt(1024, "tokens per sequence")
    num_train: int = opt(64, "sequences in the training split")
    seed: int = opt(0, "seed of the tokens")


class RandomTokensDataModule(DiscreteDataModule):
    """Fixed-length sequences of i.i.d. uniform tokens; tiny validation and test splits."""

    Config = RandomTokensConfig
    config: RandomTokensConfig

    def build(self) -> Splits:
        c = self.config
        g = torch.Generator().manual_seed(c.seed)
        train = TokenSet.fixed(torch.randint(0, c.vocab_size, (c.num_train, c.length), generator=g))
        held_out = TokenSet.fixed(torch.randint(0, c.vocab_size, (1, c.length), generator=g))
        return Splits(train, held_out, held_out, DataSpace.sequence(c.length, c.vocab_size))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768, help="d_model")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--vocab", type=int, default=50304, help="vocabulary size of the random tokens")
    parser.add_argument("--positions", default="learned", choices=("learned", "rotary"))
    parser.add_argument("--precision", default="bf16-mixed", help="lightning precision: bf16-mixed | 32-true | ...")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps before them")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (train.compile=true)")
    parser.add_argument("--peak-flops", type=float, default=0.0,
                        help="peak FLOP/s of the device for the MFU; 0 looks the GPU up in the table")
    parser.add_argument("--accelerator", default="auto", help="lightning accelerator: auto | cpu | gpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 keeps torch's default")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup not negative")
    return args


def peak_flops(device: torch.device, requested: float) -> tuple[float | None, str]:
    """The peak FLOP/s for the MFU and where it came from."""
    if requested > 0:
        return requested, "--peak-flops"
    if device.type != "cuda":
        return None, f"no peak known for {device.type}"
    name = torch.cuda.get_device_name(device)
    for keys, value in PEAK_BF16_FLOPS:
        if all(k in name.upper() for k in keys):
            return value, f"table: {name}, dense bf16"
    return None, f"{name} is not in the table"


class WindowTimer(L.Callback):
    """Wall time from the start of step ``warmup`` to the start of step ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start: float | None = None
        self.seconds: float | None = None
        self.losses: list[torch.Tensor] = []

    @staticmethod
    def _now(device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.warmup:
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.start = self._now(pl_module.device)
            print(f"[throughput] {self.warmup} warm-up steps done; timing {self.steps} steps", file=sys.stderr,
                  flush=True)
        elif step == self.warmup + self.steps and self.start is not None:
            self.seconds = self._now(pl_module.device) - self.start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    REGISTRY.register("dataset", DATASET, RandomTokensDataModule, replace=True)
    total = args.warmup + args.steps + 1  # the extra step closes the timed window
    cfg = validate({
        "seed": 0,
        "objective": {"name": "mle"},
        "network": {"name": "causal_transformer", "n_layers": args.layers, "d_model": args.width,
                    "n_heads": args.heads, "positions": args.positions},
        "data": {"name": DATASET, "vocab_size": args.vocab, "length": args.seq, "num_train": args.batch * total},
        "train": {"max_steps": total, "global_batch_size": args.batch, "grad_clip": 1.0, "ema_decay": 0.0,
                  "compile": bool(args.compile), "test_at_end": False},
        "optim": {"name": "AdamW", "lr": args.lr, "weight_decay": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 0},
        "sample": {"num_val_samples": 0},
        "logger": {"name": "none"},
        "trainer": {"precision": args.precision, "devices": 1},
    }, source="bench/throughput.py")
    L.seed_everything(0, verbose=False)
    timer = WindowTimer(args.warmup, args.steps)
    datamodule = build_datamodule(cfg)
    model = build_module(cfg)
    trainer = build_trainer(
        cfg, logger=False, callbacks=[timer], max_steps=total, max_epochs=-1, limit_val_batches=0,
        enable_checkpointing=False, enable_progress_bar=False, log_every_n_steps=50, accelerator=args.accelerator,
    )
    print(f"[throughput] {args.layers} layers, width {args.width}, {args.heads} heads, batch {args.batch} x {args.seq} "
          f"tokens, precision {args.precision}{', compiled' if args.compile else ''}", file=sys.stderr, flush=True)
    trainer.fit(model, datamodule=datamodule)
    if timer.seconds is None:
        raise SystemExit("the timed window did not close; did training stop early?")

    device = model.device
    network = model.objective.network
    tokens = args.batch * args.seq * args.steps
    tokens_per_s = tokens / timer.seconds
    flops_per_token = network.flops_per_token(args.seq)
    achieved = flops_per_token * tokens_per_s
    peak, peak_source = peak_flops(device, args.peak_flops)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        memory = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    else:
        device_name = platform.processor() or platform.machine()
        memory = ""
    last_loss = float(timer.losses[-1]) if timer.losses else float("nan")
    print(f"setup: torch {torch.__version__}, lightning {L.__version__}, device {device.type} ({device_name}), "
          f"precision {args.precision}, compile {args.compile}, {torch.get_num_threads()} CPU threads{memory}")
    print(f"model: {args.layers} layers, width {args.width}, {args.heads} heads, vocab {args.vocab}, "
          f"{network.num_parameters() / 1e6:.2f} M parameters; {flops_per_token / 1e9:.4f} GFLOP per token "
          f"(forward + backward at seq {args.seq})")
    print(f"timed: {args.steps} steps of {args.batch} x {args.seq} tokens after {args.warmup} warm-up steps: "
          f"{timer.seconds:.3f} s, {1000 * timer.seconds / args.steps:.2f} ms/step; final loss {last_loss:.4f}")
    print(f"throughput: {tokens_per_s:,.0f} tokens/s; model FLOP/s {achieved / 1e12:.4f} TFLOP/s")
    if peak is None:
        print(f"MFU: not meaningful without a peak ({peak_source}); pass --peak-flops FLOP/s")
    else:
        print(f"MFU: {100 * achieved / peak:.2f}% of {peak / 1e12:.1f} TFLOP/s ({peak_source})")
    if args.json:
        print(json.dumps({
            "tokens_per_s": tokens_per_s, "ms_per_step": 1000 * timer.seconds / args.steps,
            "flops_per_token": flops_per_token, "model_flops_per_s": achieved, "peak_flops": peak,
            "mfu": achieved / peak if peak else None, "device": device_name, "precision": args.precision,
            "compile": args.compile, "layers": args.layers, "width": args.width, "heads": args.heads,
            "seq": args.seq, "batch": args.batch, "vocab": args.vocab, "steps": args.steps, "warmup": args.warmup,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
