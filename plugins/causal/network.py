"""The causal family's network contract: :class:`CausalNetwork`, a left-to-right network stepping with a KV cache."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from anyorder.network import Network


def check_where(tokens: Tensor, where: Tensor) -> None:
    """A clear error unless the position selection ``where`` has the shape of ``tokens`` [B, T]."""
    if where.shape != tokens.shape:
        raise ValueError(f"where must have the shape of tokens {tuple(tokens.shape)}, got {tuple(where.shape)}")


class KVCache:
    """Key/value tensors of every layer, filled up to ``length``; ``crop(n)`` drops everything after position n."""

    def __init__(self, keys: list[Tensor], values: list[Tensor]) -> None:
        self.keys, self.values, self.length = keys, values, 0

    def crop(self, length: int) -> None:
        """Forget positions ``length`` and later (e.g. after a backspace)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.length = length

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0


class CausalNetwork(Network):
    """A left-to-right network: position t sees positions <= t, and it can step with a KV cache.

    ``forward(tokens, positions=None, attn_mask=None, condition=None)`` returns logits [B, T, V_out]. ``positions``
    [B, T] overrides the position ids (default 0..T-1); ``attn_mask`` [B, T, T] (bool, True = may attend) replaces
    the causal mask; ``condition`` is the conditioning input of ``io.conditioning`` (None without one).
    ``step(tokens, cache, positions=None, attn_mask=None, condition=None)`` appends [B, T_new] tokens to the cache and
    returns their logits; ``attn_mask`` [B, T_new, cache.length + T_new] replaces the causal mask over the cache.
    ``logits_at(tokens, where, condition=None)`` returns only the logits [N, V_out] of the N positions that
    ``where`` [B, T] selects; ``token_nll`` scores targets through it, so that padding never reaches the output
    layer.
    """

    def logits_at(self, tokens: Tensor, where: Tensor, *, condition: Tensor | None = None) -> Tensor:
        """``self(tokens, condition=condition)[where]``: the logits [N, V_out] of the positions where the bool
        ``where`` [B, T] is True, in row-major order.

        This default runs the whole forward; a network overrides it to apply its output layer at the selected
        positions only (the layer over a large vocabulary is most of a step's cost when batches are padded). An
        override returns the same values, and draws the same random numbers in training mode.
        """
        check_where(tokens, where)
        return self(tokens, condition=condition)[where]

    def token_nll(self, tokens: Tensor, targets: Tensor, where: Tensor, *, condition: Tensor | None = None) -> Tensor:
        """Teacher forcing: -log p(targets[b, t] | tokens[b, :t+1]) [B, T] in nats (float32), at the positions
        ``where`` selects and 0 elsewhere; the logits come from :meth:`logits_at`."""
        logits = self.logits_at(tokens, where, condition=condition)
        nll = F.cross_entropy(logits.float(), targets[where], reduction="none")
        return torch.zeros(where.shape, dtype=nll.dtype, device=nll.device).masked_scatter(where, nll)

    def new_cache(self, batch_size: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVCache:
        raise NotImplementedError

    def step(self, tokens: Tensor, cache: KVCache, positions: Tensor | None = None,
             attn_mask: Tensor | None = None, condition: Tensor | None = None) -> Tensor:
        raise NotImplementedError
