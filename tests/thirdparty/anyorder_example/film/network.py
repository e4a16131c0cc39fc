"""The ``film_mlp`` network: logits of each token position from its own token, modulated by a vector condition."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from anyorder.network import Conditioning, Network, NetworkIO
from anyorder_example.film.config import FiLMConfig


class FiLMNetwork(Network):
    """h = relu(E[x_t]); logits_t = W (h * (1 + a(c)) + b(c)): each position sees only its token and the condition.

    Built for ``io.conditioning`` none or vector; ``forward(tokens, condition=None)`` returns [B, T, V_out].
    """

    Config = FiLMConfig
    conditionings = frozenset({Conditioning.NONE, Conditioning.VECTOR})

    def __init__(self, config: FiLMConfig, io: NetworkIO) -> None:
        super().__init__(config, io)
        self.embed = nn.Embedding(io.input_vocab_size, config.width)
        self.film = nn.Linear(io.condition_dim, 2 * config.width) if io.condition_dim else None
        self.head = nn.Linear(config.width, io.output_vocab_size)

    def forward(self, tokens: Tensor, condition: Tensor | None = None) -> Tensor:
        if (condition is None) != (self.film is None):
            raise ValueError("film_mlp: give a condition exactly when the network was built with one")
        h = torch.relu(self.embed(tokens))
        if self.film is not None and condition is not None:
            scale, shift = self.film(condition).chunk(2, dim=-1)
            h = h * (1 + scale[:, None]) + shift[:, None]
        return self.head(h)
