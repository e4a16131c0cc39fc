"""Sampling benchmark: KV-cache stepping vs full recomputation for the causal transformer.

Builds a randomly initialised :class:`CausalTransformer` and times
:func:`anyorder_plugins.causal.generate.sample_causal` at one sequence length, once with ``use_cache=True`` (BOS
prefill, then one token per step through the preallocated KV cache) and once with ``use_cache=False`` (the full
forward over the whole prefix at every step). There is no EOS, so every run generates exactly ``--length`` tokens
per sequence. The two methods alternate within each repeat so
that drifts of the machine (thermal, other load) affect both alike. It prints generated tokens per second (batch x
length / wall time) for each method, the median speedup of the cache over recomputation, and the setup (torch
version, threads, device). Both methods use the same seed and, as a check, must return the same tokens.

This is a measurement, not a test: run it by hand, e.g. ``python bench/sampling.py --repeats 3``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from anyorder.network import NetworkIO
from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.causal_transformer.config import CausalTransformerConfig
from anyorder_plugins.causal_transformer.network import CausalTransformer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512, help="tokens generated per sequence")
    parser.add_argument("--batch", type=int, default=8, help="sequences sampled in parallel")
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=64, help="vocabulary size (the last id serves as BOS)")
    parser.add_argument("--positions", default="learned", choices=("learned", "rotary"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 keeps torch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def time_sampling(net: CausalTransformer, args: argparse.Namespace, *, use_cache: bool) -> tuple[float, torch.Tensor]:
    """Wall time of one ``sample_causal`` call, and its tokens."""
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens, _ = sample_causal(
        net,
        batch_size=args.batch,
        max_new_tokens=args.length,
        bos_id=args.vocab - 1,
        eos_id=None,
        generator=generator,
        device=args.device,
        use_cache=use_cache,
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its results."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = CausalTransformerConfig(
        n_layers=args.n_layers, d_model=args.d_model, n_heads=args.n_heads, positions=args.positions
    )
    io = NetworkIO(input_vocab_sizes=(args.vocab,), output_vocab_sizes=(args.vocab,), max_len=args.length)
    net = CausalTransformer(config, io).to(args.device)

    print(
        f"torch {torch.__version__}, python {platform.python_version()}, device {args.device}, "
        f"threads {torch.get_num_threads()}, cpu {platform.processor() or platform.machine()}"
    )
    print(
        f"model: n_layers={args.n_layers} d_model={args.d_model} n_heads={args.n_heads} positions={args.positions} "
        f"vocab={args.vocab} params={net.num_parameters():,}"
    )
    print(f"sampling: batch={args.batch} length={args.length} repeats={args.repeats}")

    # Warm-up on a short length: first calls pay for allocator growth and kernel selection.
    warm = argparse.Namespace(**{**vars(args), "length": min(args.length, 16)})
    for use_cache in (True, False):
        time_sampling(net, warm, use_cache=use_cache)

    generated = args.batch * args.length
    times: dict[str, list[float]] = {"cache": [], "recompute": []}
    ratios = []
    for repeat in range(args.repeats):
        t_cache, tokens_cache = time_sampling(net, args, use_cache=True)
        t_full, tokens_full = time_sampling(net, args, use_cache=False)
        times["cache"].append(t_cache)
        times["recompute"].append(t_full)
        ratios.append(t_full / t_cache)
        same = torch.equal(tokens_cache, tokens_full)
        print(
            f"repeat {repeat + 1}: cache {t_cache:.3f} s ({generated / t_cache:,.0f} tok/s), "
            f"recompute {t_full:.3f} s ({generated / t_full:,.0f} tok/s), speedup {t_full / t_cache:.1f}x, "
            f"same tokens: {same}"
        )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>9}: median {median:.3f} s, {generated / median:,.0f} tokens/s")
    print(f"median speedup (recompute time / cache time): {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
