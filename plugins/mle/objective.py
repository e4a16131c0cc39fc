"""The MLE objective: -sum_t log p(x_t | x_<t) under a causal network, with teacher forcing.

Token layout: the data vocabulary is 0..V-1. The network reads BOS = V followed by the datapoint and predicts
every next token; for variable-length data it also predicts EOS = V after the last token (fixed-length data has no
EOS: its length is known). Sampling is ancestral with a KV cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anyorder.errors import ConfigError
from anyorder.network import NetworkIO
from anyorder.objective import (
    BuildContext,
    EvalContext,
    LogLikelihood,
    LossOutput,
    Objective,
    SampleContext,
    Samples,
    StepContext,
)
from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.causal.network import CausalNetwork
from anyorder_plugins.mle.config import MLEConfig


class MLE(Objective):
    """Left-to-right maximum likelihood (teacher forcing)."""

    Config = MLEConfig

    def __init__(self, config: MLEConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        space = build.space
        if space.structure != "sequence" and not space.shared_vocab:
            raise ConfigError(
                "mle needs variables over one shared vocabulary; this dataset's variables have different "
                "vocabularies (use an any-order objective, or a sequence representation of the data)"
            )
        vocab = space.vocab_size
        self.bos_id = vocab
        self.eos_id = vocab if space.variable_length else None
        out_vocab = vocab + 1 if space.variable_length else vocab
        io = NetworkIO(
            input_vocab_sizes=(vocab + 1,), output_vocab_sizes=(out_vocab,),
            max_len=space.num_variables + 1, structure=space.structure, shape=space.shape,
        )
        network = build.network(io, require=CausalNetwork)
        assert isinstance(network, CausalNetwork)
        self.network = network

    def _token_nll(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-position NLL [B, T] (zero where nothing is predicted) and the mask of predicted positions."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        b, d = tokens.shape
        bos = torch.full((b, 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
        positions = torch.arange(d + 1, device=tokens.device)
        if self.eos_id is not None:
            # Targets: x_1..x_L then EOS at index L, ignored past it.
            padded = torch.cat([tokens, torch.zeros_like(bos)], dim=1)
            targets = torch.where(positions[None] == lengths[:, None], self.eos_id, padded)
            mask = positions[None] <= lengths[:, None]
            inputs = torch.cat([bos, tokens], dim=1)
        else:
            targets = tokens
            mask = positions[None, :d] < lengths[:, None]
            inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
        # Inputs past a sequence's end are padding; causality keeps them from influencing the kept positions.
        return self.network.token_nll(inputs, targets, mask), mask

    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        nll, mask = self._token_nll(batch)
        nats, count = nll.sum(), mask.sum()
        if self.config.reduction == "token":
            loss = nats / count.clamp(min=1)
        else:
            loss = nats / nll.shape[0]
        return LossOutput(loss=loss, terms={"nll": nats / count.clamp(min=1)}, nats=nats, num_tokens=count)

    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        nll, mask = self._token_nll(batch)
        return LogLikelihood(log_prob=-nll.double().sum(1), num_tokens=mask.sum(1))

    def sample(self, num: int, ctx: SampleContext) -> Samples:
        settings = ctx.settings
        max_len = ctx.max_len or self.space.num_variables
        tokens, lengths = sample_causal(
            self.network, batch_size=num, max_new_tokens=min(max_len, self.space.num_variables),
            bos_id=self.bos_id, eos_id=self.eos_id, temperature=float(settings.temperature),
            top_k=int(settings.top_k), top_p=float(settings.top_p), generator=ctx.generator, device=self.device,
        )
        return Samples(tokens=tokens, lengths=lengths)
