"""Shared sampling machinery: logit filtering (temperature, top-k, nucleus) for every plugin that samples."""

from __future__ import annotations

import torch
from torch import Tensor


def filter_logits(logits: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits [..., V] divided by ``temperature``, with tokens outside the top-k and the nucleus set to ``-inf``.

    ``top_k`` (0 disables) keeps exactly the ``k`` highest logits. ``top_p`` (1.0 disables) then keeps the smallest
    set of most likely tokens whose probability (renormalised after top-k) reaches ``top_p``. The most likely token
    is always kept; ties are broken towards the lower token id, as ``argmax`` does. Half-precision input is computed
    in float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive (got {temperature})")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {top_p}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # cumulative sums of probabilities need more than 8-11 bits of mantissa
    if temperature != 1.0:
        logits = logits / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        # Indices rather than a threshold on the k-th value: ties at the threshold would keep more than k tokens.
        # A stable sort breaks ties towards the lower token id, as argmax does, so the argmax is always among them.
        top = logits.sort(dim=-1, descending=True, stable=True).indices[..., :top_k]
        kept = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
        logits = logits.masked_fill(~kept, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(dim=-1)
        # A token stays if the tokens ranked above it hold less than top_p: the smallest set reaching top_p.
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False  # the argmax, whatever rounding does
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits
