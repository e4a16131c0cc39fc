"""Base class of networks, and :class:`NetworkIO`: what a network reads and what it returns.

A network plugin subclasses :class:`Network` (or a capability base that a family owns, such as the causal or the
any-order network) and is built from its options and a :class:`NetworkIO`, which the objective derives from the data
space: an objective adds its own special values (BOS/EOS, MASK, BKSP) to the data vocabulary before it asks for a
network. A network declares which conditioning inputs and which outputs it supports; asking it for another is a
configuration error at build time, not a shape error at the first step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from anyorder.errors import ConfigError


class Conditioning(enum.Enum):
    """An input beside the tokens that a network is conditioned on."""

    NONE = "none"
    VECTOR = "vector"
    """One vector per sequence, ``condition`` [B, condition_dim] (e.g. a latent code z)."""
    PREFIX = "prefix"
    """A prefix of ``condition_len`` embeddings per sequence, ``condition`` [B, condition_len, condition_dim], seen by
    every position as if it came before the first token."""


class Output(enum.Enum):
    """What a network returns."""

    LOGITS = "logits"
    """Per-token logits [B, T, output_vocab_size]."""
    POOLED = "pooled"
    """One summary vector per sequence [B, output_dim] (e.g. an encoder's input to a posterior)."""


@dataclass(frozen=True)
class NetworkIO:
    """What a network reads and predicts.

    ``input_vocab_sizes``/``output_vocab_sizes`` have one entry per variable for fixed-size data, or a single
    entry for sequences over a shared vocabulary. ``max_len`` bounds the positions a sequence network sees.
    ``structure`` and ``shape`` repeat the data space's, for networks that exploit them (grids, graphs).
    ``conditioning`` (with ``condition_dim`` and, for a prefix, ``condition_len``) is the input beside the tokens,
    passed to ``forward`` as the keyword ``condition``; ``output`` says what the network returns (``output_dim`` is
    the size of a pooled summary).
    """

    input_vocab_sizes: tuple[int, ...]
    output_vocab_sizes: tuple[int, ...]
    max_len: int
    structure: str = "sequence"
    shape: tuple[int, ...] = ()
    conditioning: Conditioning = Conditioning.NONE
    condition_dim: int = 0
    condition_len: int = 0
    output: Output = Output.LOGITS
    output_dim: int = 0

    def __post_init__(self) -> None:
        if (self.conditioning is Conditioning.NONE) != (self.condition_dim == 0):
            raise ValueError("NetworkIO: condition_dim must be positive exactly when there is a conditioning input")
        if (self.conditioning is Conditioning.PREFIX) != (self.condition_len > 0):
            raise ValueError("NetworkIO: condition_len must be positive exactly for a prefix conditioning")
        if (self.output is Output.POOLED) != (self.output_dim > 0):
            raise ValueError("NetworkIO: output_dim must be positive exactly for a pooled output")

    @property
    def input_vocab_size(self) -> int:
        return max(self.input_vocab_sizes)

    @property
    def output_vocab_size(self) -> int:
        return max(self.output_vocab_sizes)


class Network(nn.Module):
    """Base of every network plugin: built as ``cls(config, io)``.

    ``conditionings`` and ``outputs`` are what the network supports (default: no conditioning, per-token logits);
    the base refuses an ``io`` that asks for anything else with a :class:`~anyorder.errors.ConfigError`.
    """

    Config: ClassVar[type]
    conditionings: ClassVar[frozenset[Conditioning]] = frozenset({Conditioning.NONE})
    outputs: ClassVar[frozenset[Output]] = frozenset({Output.LOGITS})

    def __init__(self, config: Any, io: NetworkIO) -> None:
        super().__init__()
        name = type(self).__qualname__
        if io.conditioning not in self.conditionings:
            can = ", ".join(sorted(c.value for c in self.conditionings))
            raise ConfigError(f"network {name} cannot be conditioned on a {io.conditioning.value} (it supports: "
                              f"{can}); choose a network that can, or an objective that does not condition it")
        if io.output not in self.outputs:
            can = ", ".join(sorted(o.value for o in self.outputs))
            raise ConfigError(f"network {name} cannot return {io.output.value} outputs (it returns: {can}); choose "
                              f"a network that can")
        self.config = config
        self.io = io

    def num_parameters(self, *, trainable_only: bool = True) -> int:
        """Parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at ``seq_len``; used for MFU. Default 6 x parameters."""
        return 6.0 * self.num_parameters()

