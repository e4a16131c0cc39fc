"""The any-order family's network contract: :class:`AnyOrderNetwork`, which fills in the MASKed variables of a
fixed-size datapoint in one call."""

from __future__ import annotations

from torch import Tensor

from anyorder.network import Network


class AnyOrderNetwork(Network):
    """A network that reads a partially known fixed-size datapoint and predicts every variable at once.

    ``forward(tokens, t)``: ``tokens`` [B, D] holds each known variable's value and the objective's MASK value
    (``io.input_vocab_sizes[d] - 1``) where it is unknown; ``t`` [B] is the number of known variables (the step of
    an any-order generation, for time conditioning). Returns logits [B, D, io.output_vocab_size]; variable d uses
    the first ``io.output_vocab_sizes[d]`` of them (the objective ignores the rest).
    """

    def forward(self, tokens: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError
