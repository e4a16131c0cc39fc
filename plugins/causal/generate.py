"""Left-to-right sampling of the causal family.

:func:`sample_causal` draws sequences from any :class:`~anyorder_plugins.causal.network.CausalNetwork`, either
stepping with its KV cache (fast: each step processes one new token) or recomputing the full forward over the prefix
at every step (slow, but it needs nothing beyond ``forward``; the reference that tests and the sampling benchmark
compare with). Both paths draw from the generator in the same order, so the same seed gives the same samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from anyorder.generate import filter_logits
from anyorder_plugins.causal.network import CausalNetwork

# How often (in steps) sampling checks whether every sequence has ended. Each check waits for the device, so on a
# GPU checking every step would stall the queue of kernels; a few wasted steps at the end cost less.
_EOS_CHECK_EVERY = 8


def sample_causal(
    network: CausalNetwork,
    *,
    batch_size: int,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    device: Any = None,
    use_cache: bool = True,
    condition: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ``batch_size`` sequences left to right, starting from ``bos_id``.

    Returns ``(tokens, lengths)``: ``tokens`` LongTensor [B, max_new_tokens] holds each sequence's tokens before
    its EOS, then zeros (EOS itself is not included); ``lengths`` LongTensor [B] counts them. With ``eos_id=None``
    (fixed-length data) every sequence has exactly ``max_new_tokens`` tokens. Sampling stops early once every
    sequence has emitted EOS.

    ``use_cache=True`` feeds BOS into a fresh KV cache and then one token per step; ``use_cache=False`` recomputes
    ``network(prefix)`` over the whole prefix at every step. Each step draws once, for the whole batch (finished
    sequences included), with ``torch.multinomial(probs, 1, generator=generator)``, so both paths consume the
    generator identically and give the same samples for the same seed (barring a draw that falls within float
    rounding, ~1e-6, of a boundary between two tokens, since the two paths' logits agree only to that precision).

    Runs under ``torch.inference_mode`` with ``network.eval()``; the network's training flag is restored.
    ``device`` defaults to the device of the network's parameters. ``condition`` (e.g. a latent code [B, C]) is
    passed to every ``step`` (or ``forward``) call as the keyword ``condition``, for a network built with a
    conditioning input; None passes nothing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive (got {batch_size})")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0 (got {max_new_tokens})")
    max_len = network.io.max_len
    # BOS sits at position 0 and the last token fed is at position max_new_tokens - 1.
    if max_new_tokens > max_len:
        raise ValueError(
            f"cannot sample {max_new_tokens} tokens: the network sees at most {max_len} positions (BOS included)"
        )
    filter_logits(torch.zeros(1), temperature=temperature, top_k=top_k, top_p=top_p)  # validate the settings now
    if device is None:
        device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            return _sample_causal(
                network,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                bos_id=bos_id,
                eos_id=eos_id,
                filters={"temperature": temperature, "top_k": top_k, "top_p": top_p},
                generator=generator,
                device=torch.device(device),
                use_cache=use_cache,
                condition=condition,
            )
    finally:
        network.train(was_training)


def _sample_causal(
    network: CausalNetwork,
    *,
    batch_size: int,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int | None,
    filters: dict[str, Any],
    generator: torch.Generator | None,
    device: torch.device,
    use_cache: bool,
    condition: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The loop of :func:`sample_causal`, already in inference mode."""
    # Only a conditioned call passes the keyword, so networks whose step/forward lack it keep working.
    extra: dict[str, Any] = {} if condition is None else {"condition": condition.to(device)}
    tokens = torch.zeros(batch_size, max_new_tokens, dtype=torch.long, device=device)
    lengths = torch.full((batch_size,), max_new_tokens, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    last = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    # A prefix condition occupies cache positions before the tokens.
    room = max_new_tokens + network.io.condition_len
    cache = network.new_cache(batch_size, room, device=device) if use_cache else None
    for t in range(max_new_tokens):
        if cache is not None:
            logits = network.step(last, cache, **extra)[:, -1]
        else:
            prefix = torch.cat((last.new_full((batch_size, 1), bos_id), tokens[:, :t]), dim=1)
            logits = network(prefix, **extra)[:, -1]
        probs = filter_logits(logits.float(), **filters).softmax(dim=-1)
        last = torch.multinomial(probs, 1, generator=generator)
        tokens[:, t] = last[:, 0]
        if eos_id is not None:
            is_eos = last[:, 0] == eos_id
            lengths = torch.where(is_eos & ~finished, t, lengths)
            finished |= is_eos
            if (t + 1) % _EOS_CHECK_EVERY == 0 and bool(finished.all()):
                break
    # Everything from each sequence's EOS on (EOS included) becomes padding.
    after_end = torch.arange(max_new_tokens, device=device).unsqueeze(0) >= lengths.unsqueeze(1)
    return tokens.masked_fill(after_end, 0), lengths
