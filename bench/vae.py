"""The cost of a Sentence-VAE training step against the LSTM language model's step on the same decoder, and the
throughput of the importance-weighted NLL.

(a) Both models are built from their PTB configs (``--vae-config``, default ``configs/ptb/sentence_vae.yaml``, and
``--lm-config``, default ``configs/ptb/mle.yaml``: the same LSTM decoder, without z) with the same ``--set``
overrides (``objective.*`` ones for the VAE only). Each timed block runs ``--steps`` optimizer steps (forward,
backward, Adam) on real training batches of ``train.global_batch_size`` sentences (the same batches for both);
blocks alternate between the two models after one warm-up block each, and the median block time per step is
compared. The VAE step includes the encoder, the reparameterised draw, word dropout and the KL.

A third model, ``sentence_vae_full_head``, is the same VAE whose decoder applies its output layer at every position
of the padded batch (:meth:`CausalNetwork.logits_at`'s default, the whole forward, then a selection) instead of at
the real positions only (the LSTM decoder's override): the saving that the override buys, from the same run.

(b) The IW-NLL of ``--iw-batch`` validation sentences with K = ``--k`` posterior draws, ``--chunk`` draws per
decoder pass (the objective's ``eval_iw_samples`` / ``eval_iw_chunk``), timed ``--iw-repeats`` times after one warm-up;
throughput in sentences x K per second (the median repeat), for the VAE and for its full-head variant given the
VAE's weights (the two report the same mean IW-NLL, up to rounding).

Run from the repository root::

    python bench/vae.py [--steps 10] [--blocks 5] [--k 500] [--chunk 50] [--iw-batch 32] \\
        [--set network.d_hidden=64 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import types
from typing import Any

import numpy as np
import torch
from common import build

from anyorder.objective import StepContext
from anyorder_plugins.causal.network import CausalNetwork


def step_ratio(args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any]:
    """Part (a); also returns the VAE and its DataModule for part (b)."""
    vae, data, cfg = build(args.vae_config, overrides=args.set)
    full, _, _ = build(args.vae_config, overrides=args.set)
    # The base class's default: the whole forward (head at every padded position), then the selection.
    full.network.logits_at = types.MethodType(CausalNetwork.logits_at, full.network)
    lm, _, lm_cfg = build(args.lm_config, overrides=[o for o in args.set if not o.startswith("objective.")])
    if cfg.network != lm_cfg.network:
        raise SystemExit(f"the two configs' decoders differ: {dict(cfg.network)} vs {dict(lm_cfg.network)}")
    train = data.splits.train
    batch_size = int(cfg.train.global_batch_size)
    total = (args.blocks + 1) * args.steps
    rng = np.random.default_rng(0)
    batches = [train.batch(torch.from_numpy(rng.integers(0, len(train), size=batch_size))) for _ in range(total)]
    lr = float(cfg.optim.lr)
    models = {"sentence_vae": vae, "lstm_lm": lm, "sentence_vae_full_head": full}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=lr) for name, m in models.items()}
    per_step: dict[str, list[float]] = {name: [] for name in models}
    for block in range(args.blocks + 1):
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            for i in range(args.steps):
                step = block * args.steps + i
                ctx = StepContext.standalone(step=step, max_steps=total, seed=int(cfg.seed), logs=False)
                optimizers[name].zero_grad(set_to_none=True)
                model.loss(batches[step], ctx).loss.backward()
                optimizers[name].step()
            if block > 0:  # the first block warms up
                per_step[name].append((time.perf_counter() - start) / args.steps)
    median = {name: statistics.median(v) for name, v in per_step.items()}
    words = float(sum(int(b["lengths"].sum()) for b in batches)) / len(batches)
    return {"batch": batch_size, "mean_words_per_batch": words, "seconds_per_step": median,
            "ratio_vae_over_lm": median["sentence_vae"] / median["lstm_lm"],
            "ratio_full_head_over_vae": median["sentence_vae_full_head"] / median["sentence_vae"],
            "real_fraction_of_positions": _real_fraction(batches),
            "protocol": f"{args.blocks} alternating blocks of {args.steps} Adam steps after one warm-up block each; "
                        f"the same batches for all; median block"}, vae, full, data


def _real_fraction(batches: list[dict[str, torch.Tensor]]) -> float:
    """Predicted positions (words + end token) over the decoder's padded positions, over all batches."""
    real = sum(int((b["lengths"] + 1).sum()) for b in batches)
    padded = sum(b["tokens"].shape[0] * (b["tokens"].shape[1] + 1) for b in batches)
    return real / padded


def iw_throughput(args: argparse.Namespace, vae: Any, data: Any) -> dict[str, Any]:
    """Part (b), for one model."""
    val = data.splits.val
    n = min(args.iw_batch, len(val))
    batch = val.batch(torch.arange(n))
    tokens, lengths = batch["tokens"], batch["lengths"]
    vae.eval()
    vae.config.eval_iw_chunk = args.chunk
    times = []
    with torch.no_grad():
        q = vae.posterior({"tokens": tokens, "lengths": lengths})
        for r in range(args.iw_repeats + 1):
            start = time.perf_counter()
            nll = -vae.importance_weighted(tokens, lengths, q, args.k, torch.Generator().manual_seed(r))
            if r > 0:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"sentences": n, "k": args.k, "chunk": args.chunk, "seconds": seconds,
            "sentences_x_k_per_second": n * args.k / seconds,
            "decoder_rows_per_pass": n * args.chunk, "mean_iw_nll_nats": float(nll.mean()),
            "protocol": f"{args.iw_repeats} timed repeats after one warm-up; median"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-config", default="configs/ptb/sentence_vae.yaml")
    parser.add_argument("--lm-config", default="configs/ptb/mle.yaml")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--k", type=int, default=500, help="importance samples K (the literature's 500)")
    parser.add_argument("--chunk", type=int, help="draws per decoder pass (default: the config's eval_iw_chunk)")
    parser.add_argument("--iw-batch", type=int, default=32, help="validation sentences in the IW-NLL batch")
    parser.add_argument("--iw-repeats", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for both models, objective.* for the VAE only (e.g. network.d_hidden=16 "
                             "data.num_train=512 objective.latent_dim=8)")
    args = parser.parse_args()

    steps, vae, full, data = step_ratio(args)
    if args.chunk is None:
        args.chunk = int(vae.config.eval_iw_chunk)
    iw = iw_throughput(args, vae, data)
    full.load_state_dict(vae.state_dict())  # part (a) trained the two apart; (b) compares one function's cost
    iw_full = iw_throughput(args, full, data)
    result = {"vae_config": args.vae_config, "lm_config": args.lm_config, "overrides": args.set,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "step": steps, "iw_nll": iw,
              "iw_nll_full_head": iw_full}
    ms = steps["seconds_per_step"]
    print(f"Sentence-VAE vs LSTM-LM training step ({args.vae_config} vs {args.lm_config}; batch {steps['batch']}, "
          f"{torch.get_num_threads()} threads)")
    print(f"  per step   sentence_vae {ms['sentence_vae'] * 1e3:8.1f} ms   lstm_lm {ms['lstm_lm'] * 1e3:8.1f} ms   "
          f"ratio {steps['ratio_vae_over_lm']:.2f}")
    print(f"  head at every padded position: {ms['sentence_vae_full_head'] * 1e3:8.1f} ms, "
          f"{steps['ratio_full_head_over_vae']:.2f} x the VAE step "
          f"({steps['real_fraction_of_positions']:.0%} of the positions are real)")
    for name, r in (("IW-NLL", iw), ("IW-NLL, head at every padded position", iw_full)):
        print(f"{name}: {r['sentences']} sentences x K = {r['k']} in chunks of {r['chunk']}: {r['seconds']:.3f} s, "
              f"{r['sentences_x_k_per_second']:.0f} sentences x K / s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
