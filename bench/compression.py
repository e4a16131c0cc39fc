"""Lossless compression of a dataset split with a trained any-order run, against gzip, bzip2 and xz.

The same datapoints are given to every coder: the run codes the token tensor with rANS under its fixed order and
step budget (``anyorder compress``); the generic coders get the tokens as raw bytes, one byte per variable (the
densest plain layout for vocabularies up to 256), at their highest compression level. Prints bits per dimension
(the whole file, header included, divided by the number of variables), the run's ideal -log2 p for comparison,
encode and decode throughput in variables per second, and checks that every coder's round trip is exact.

Usage: ``python bench/compression.py RUN [--split test] [--limit N] [--steps B] [--batch-size 256]``.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def generic(name: str, pack: Callable[[bytes], bytes], unpack: Callable[[bytes], bytes], raw: bytes,
            dims: int) -> None:
    """Compress ``raw`` with one generic coder and print its line."""
    t0 = time.perf_counter()
    packed = pack(raw)
    t1 = time.perf_counter()
    assert unpack(packed) == raw, name
    t2 = time.perf_counter()
    print(f"{name:10s} {8 * len(packed) / dims:8.4f} bits/dim  {dims / (t1 - t0):12,.0f} dims/s encode  "
          f"{dims / (t2 - t1):12,.0f} dims/s decode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--steps", type=int, default=0, help="network calls per batch (0: one per variable)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="only the first N datapoints of the split (0: all)")
    args = parser.parse_args()

    from anyorder_plugins.any_order.compress import _restore, compress_run

    restored = _restore(args.run, "last", ())
    tokens = getattr(restored.datamodule.splits, args.split).tokens
    if args.limit:
        tokens = tokens[: args.limit]
    dims = tokens.numel()
    print(f"{args.split} split: {tokens.shape[0]} datapoints x {tokens.shape[1]} variables "
          f"(vocabulary up to {int(tokens.max()) + 1})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data.ardm"
        t0 = time.perf_counter()
        summary = compress_run(args.run, None, out, split=args.split, steps=args.steps, limit=args.limit,
                               batch_size=args.batch_size)
        t1 = time.perf_counter()
        decoded = restored.module.objective.decompress_from(out)
        t2 = time.perf_counter()
        assert bool((decoded == tokens).all()), "the run's round trip is not exact"
        print(f"{'anyorder':10s} {summary['bits_per_dim']:8.4f} bits/dim  {dims / (t1 - t0):12,.0f} dims/s encode  "
              f"{dims / (t2 - t1):12,.0f} dims/s decode  ({summary['steps']} steps; payload "
              f"{summary['payload_bits_per_dim']:.4f}, ideal -log2 p {summary['ideal_bits_per_dim']:.4f} bits/dim; "
              f"encode includes choosing the order on training data)")
    raw = np.ascontiguousarray(tokens.numpy().astype(np.uint8)).tobytes()
    generic("gzip -9", lambda b: gzip.compress(b, 9), gzip.decompress, raw, dims)
    generic("bzip2 -9", lambda b: bz2.compress(b, 9), bz2.decompress, raw, dims)
    generic("xz -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress, raw, dims)


if __name__ == "__main__":
    main()
