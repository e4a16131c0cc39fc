"""Base classes of networks.

A network plugin subclasses :class:`Network` (or a capability base such as :class:`CausalNetwork`) and is built
from its options and a :class:`NetworkIO`, which the objective derives from the data space: an objective adds its
own special values (BOS/EOS, MASK, BKSP) to the data vocabulary before it asks for a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class NetworkIO:
    """What a network reads and predicts.

    ``input_vocab_sizes``/``output_vocab_sizes`` have one entry per variable for fixed-size data, or a single
    entry for sequences over a shared vocabulary. ``max_len`` bounds the positions a sequence network sees.
    ``structure`` and ``shape`` repeat the data space's, for networks that exploit them (grids, graphs).
    """

    input_vocab_sizes: tuple[int, ...]
    output_vocab_sizes: tuple[int, ...]
    max_len: int
    structure: str = "sequence"
    shape: tuple[int, ...] = ()

    @property
    def input_vocab_size(self) -> int:
        return max(self.input_vocab_sizes)

    @property
    def output_vocab_size(self) -> int:
        return max(self.output_vocab_sizes)


class Network(nn.Module):
    """Base of every network plugin: built as ``cls(config, io)``."""

    Config: ClassVar[type]

    def __init__(self, config: Any, io: NetworkIO) -> None:
        super().__init__()
        self.config = config
        self.io = io

    def num_parameters(self, *, trainable_only: bool = True) -> int:
        """Parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at ``seq_len``; used for MFU. Default 6 x parameters."""
        return 6.0 * self.num_parameters()


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

    ``forward(tokens, positions=None, attn_mask=None)`` returns logits [B, T, V_out]. ``positions`` [B, T] overrides
    the position ids (default 0..T-1); ``attn_mask`` [B, T, T] (bool, True = may attend) replaces the causal mask.
    ``step(tokens, cache, positions=None, attn_mask=None)`` appends [B, T_new] tokens to the cache and returns their
    logits; ``attn_mask`` [B, T_new, cache.length + T_new] replaces the causal mask over the cache.
    """

    def new_cache(self, batch_size: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVCache:
        raise NotImplementedError

    def step(self, tokens: Tensor, cache: KVCache, positions: Tensor | None = None,
             attn_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class AnyOrderNetwork(Network):
    """A network that reads a partially known fixed-size datapoint and predicts every variable at once.

    ``forward(tokens, t)``: ``tokens`` [B, D] holds each known variable's value and the objective's MASK value
    (``io.input_vocab_sizes[d] - 1``) where it is unknown; ``t`` [B] is the number of known variables (the step of
    an any-order generation, for time conditioning). Returns logits [B, D, io.output_vocab_size]; variable d uses
    the first ``io.output_vocab_sizes[d]`` of them (the objective ignores the rest).
    """

    def forward(self, tokens: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError
