"""Reusable transformer layers: rotary embeddings, self-attention with a KV cache, MLP, pre-norm block, init.

These are the pieces network plugins assemble. :class:`SelfAttention` goes through
``torch.nn.functional.scaled_dot_product_attention`` (SDPA) and picks the cheapest mask for each call:

* no explicit mask and no cache: ``is_causal=True`` (or no mask at all for a bidirectional layer);
* an explicit bool mask ``[B, T_q, T_k]`` (True = may attend): used as given;
* a cache: the new keys/values are written into preallocated buffers and the queries attend to the filled prefix;
  a single new token needs no mask, a chunk of several needs the causal mask shifted by the cache length.

Position information enters either as a learned table (added by the network) or as rotary embeddings, which
:class:`RotaryEmbedding` computes once per forward and every attention layer applies to its queries and keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Rope = tuple[Tensor, Tensor]
"""Rotary ``(cos, sin)`` tables, each ``[B or 1, 1, T, head_dim / 2]``."""


def causal_mask(n_queries: int, n_keys: int, *, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """Bool causal mask ``[n_queries, n_keys]``: query ``i`` (position ``offset + i``) sees keys ``j <= offset + i``."""
    queries = torch.arange(n_queries, device=device).unsqueeze(1) + offset
    keys = torch.arange(n_keys, device=device).unsqueeze(0)
    return keys <= queries


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) tables for positions ``0 .. max_len - 1``.

    Channel ``i`` of a head is rotated together with channel ``i + head_dim / 2`` (the "rotate half" layout) by the
    angle ``position * base ** (-2i / head_dim)``. The tables are non-persistent buffers: they follow the module
    across devices but are not saved in checkpoints (they are recomputed from the options).
    """

    cos: Tensor
    sin: Tensor

    def __init__(self, head_dim: int, max_len: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"rotary embeddings need an even head size (got {head_dim})")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float64).unsqueeze(1) * inv_freq  # [max_len, head_dim / 2]
        # Computed in float64 then stored in float32, so long positions keep accurate angles.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.max_len = max_len

    def forward(self, positions: Tensor | None = None, *, length: int = 0, offset: int = 0) -> Rope:
        """The ``(cos, sin)`` tables for ``positions`` [B, T], or for ``offset .. offset + length - 1`` if None."""
        if positions is None:
            cos, sin = self.cos[offset : offset + length], self.sin[offset : offset + length]
            return cos[None, None], sin[None, None]
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate ``x`` [B, H, T, head_dim] by the ``(cos, sin)`` tables of :class:`RotaryEmbedding`."""
    cos, sin = rope[0].to(x.dtype), rope[1].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention through SDPA, with optional rotary embeddings, explicit masks and a KV cache.

    ``causal=True`` makes the default (no mask given) causal; ``causal=False`` makes it bidirectional. The output
    projection is ``out_proj``; :func:`init_transformer_weights` scales its init as a residual projection.
    """

    def __init__(
        self, d_model: int, n_heads: int, *, dropout: float = 0.0, bias: bool = False, causal: bool = True
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.dropout = causal, dropout
        # One fused projection for q, k and v: one matmul instead of three.
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        *,
        rope: Rope | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: tuple[Tensor, Tensor] | None = None,
        cache_start: int = 0,
    ) -> Tensor:
        """Attend ``x`` [B, T, D] to itself (and to the cached prefix); returns [B, T, D].

        ``attn_mask``: bool [B, T, T_k] (or broadcastable to it), True = may attend; ``T_k`` is ``T`` without a
        cache and ``cache_start + T`` with one. ``kv_cache``: preallocated ``(keys, values)`` buffers
        [B, H, capacity, head_dim]; this call writes its keys/values at ``cache_start .. cache_start + T - 1``.
        """
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        is_causal = False
        if kv_cache is not None:
            end = cache_start + length
            cache_k, cache_v = kv_cache
            if end > cache_k.shape[2]:
                raise ValueError(f"KV cache overflow: capacity {cache_k.shape[2]}, needed {end}")
            # Write in place, then attend to a view of the filled prefix: no concatenation, no copy of the cache.
            cache_k[:, :, cache_start:end] = k
            cache_v[:, :, cache_start:end] = v
            k, v = cache_k[:, :, :end], cache_v[:, :, :end]
            if attn_mask is None and self.causal and length > 1:
                if cache_start == 0:
                    is_causal = True  # a prefill: keys and queries are aligned, the fused causal path applies
                else:
                    # SDPA's is_causal aligns the mask top-left; a chunk after a prefix needs it shifted.
                    attn_mask = causal_mask(length, end, offset=cache_start, device=x.device)
            # A single new token may see the whole prefix: no mask at all.
        elif attn_mask is None:
            is_causal = self.causal
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool:
                raise ValueError(f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}")
            if attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(1)  # broadcast over heads
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        return self.resid_dropout(self.out_proj(out))


class MLP(nn.Module):
    """Position-wise feed-forward block: Linear, GELU, Linear (``out_proj``, a residual projection), dropout."""

    def __init__(self, d_model: int, d_ff: int, *, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.out_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.out_proj(F.gelu(self.in_proj(x))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        bias: bool = False,
        norm_eps: float = 1e-5,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, dropout=dropout, bias=bias, causal=causal)
        self.mlp_norm = nn.LayerNorm(d_model, eps=norm_eps, bias=bias)
        self.mlp = MLP(d_model, d_ff, dropout=dropout, bias=bias)

    def forward(
        self,
        x: Tensor,
        *,
        rope: Rope | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: tuple[Tensor, Tensor] | None = None,
        cache_start: int = 0,
    ) -> Tensor:
        """``x`` [B, T, D] -> [B, T, D]; the keyword arguments go to :meth:`SelfAttention.forward`."""
        x = x + self.attn(self.attn_norm(x), rope=rope, attn_mask=attn_mask, kv_cache=kv_cache, cache_start=cache_start)
        return x + self.mlp(self.mlp_norm(x))


def init_transformer_weights(root: nn.Module, n_layers: int, *, std: float = 0.02) -> None:
    """GPT-2 style init: Linear and Embedding weights ~ N(0, std), biases 0, LayerNorms (1, 0).

    The residual projections (``out_proj`` of :class:`SelfAttention` and :class:`MLP`) get ``std / sqrt(2 n_layers)``:
    each block adds two of them to the residual stream, so this keeps its variance roughly independent of depth.
    """
    for module in root.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in root.modules():
        if isinstance(module, (SelfAttention, MLP)):
            nn.init.normal_(module.out_proj.weight, mean=0.0, std=std / math.sqrt(2 * n_layers))
