"""Options of the ``lstm_encoder`` and ``lstm_decoder`` network plugins.

This module is light on purpose: it must not import torch, so that validating a config stays fast. The
implementations live in :mod:`anyorder_plugins.lstm.network`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError


def _check_sizes(options: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(options, name)
        if value < 1:
            raise ConfigError(f"network.{name} must be a positive integer (got {value})")


def _check_dropout(options: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(options, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"network.{name} must be in [0, 1) (got {value})")


@dataclass
class LSTMEncoderConfig(PluginConfig):
    """LSTM sentence encoder: token embedding, an LSTM (optionally bidirectional) over the real tokens of each
    sequence, and a linear map of its final hidden state to one summary vector (a pooled output)."""

    implementation: ClassVar[str] = "anyorder_plugins.lstm.network:LSTMEncoder"

    d_embed: int = opt(256, "width of the token embedding")
    d_hidden: int = opt(256, "hidden size of the LSTM (per direction)")
    n_layers: int = opt(1, "stacked LSTM layers")
    bidirectional: bool = opt(False, "also read each sequence right to left; the summary then maps the final "
                                     "states of both directions")
    dropout: float = opt(0.0, "dropout on the input embeddings and between stacked layers, in [0, 1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sizes(self, ("d_embed", "d_hidden", "n_layers"))
        _check_dropout(self, ("dropout",))


@dataclass
class LSTMDecoderConfig(PluginConfig):
    """LSTM language model (a causal network): token embedding, stacked LSTM, linear head; steps with its (h, c).

    Conditioned on a vector z, a linear map of z gives the initial state of every layer (h through tanh, c as is),
    and with ``condition_inputs`` z is also concatenated to every input embedding (Bowman et al. 2016 and the
    Sentence-VAE papers that follow them).
    """

    implementation: ClassVar[str] = "anyorder_plugins.lstm.network:LSTMDecoder"

    d_embed: int = opt(256, "width of the token embedding")
    d_hidden: int = opt(256, "hidden size of the LSTM")
    n_layers: int = opt(1, "stacked LSTM layers")
    input_dropout: float = opt(0.0, "dropout on the input embeddings (embedding dropout; word dropout, which replaces "
                                    "whole input tokens, is the objective's), in [0, 1)")
    output_dropout: float = opt(0.0, "dropout on the LSTM outputs before the head and between stacked layers, "
                                     "in [0, 1)")
    condition_inputs: bool = opt(False, "with a vector condition z, concatenate z to every input embedding (besides "
                                        "initialising the state from it)")
    tie_embeddings: bool = opt(False, "share the token-embedding matrix with the output head; needs d_embed == "
                                      "d_hidden, and applies only when the input and output vocabularies have the "
                                      "same size (otherwise the two stay separate without an error)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sizes(self, ("d_embed", "d_hidden", "n_layers"))
        _check_dropout(self, ("input_dropout", "output_dropout"))
        if self.tie_embeddings and self.d_embed != self.d_hidden:
            raise ConfigError(f"network.tie_embeddings needs d_embed == d_hidden (got {self.d_embed} and "
                              f"{self.d_hidden}): the head maps the LSTM output through the embedding matrix")
