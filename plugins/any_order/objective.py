"""The base of any-order objectives: a network that fills in MASKed variables of fixed-size data, in any order.

An any-order objective (OA-ARDM, LO-ARM, or a plugin of yours) sees a datapoint of D variables, some known and the
others set to one shared MASK value, and one network call predicts every variable. This module holds what they
share: building that network from the data space (per-variable vocabularies, the MASK value, extra output channels
for per-variable scores such as an order-policy), the masked log-probabilities, and the random orders and steps.

Orders are stored as ``sigma`` [B, D]: entry d is the generation step of variable d (a permutation of 0..D-1), so
the variables known before step t are ``sigma < t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from anyorder.errors import ConfigError
from anyorder.network import NetworkIO
from anyorder.objective import BuildContext, Objective
from anyorder_plugins.any_order.network import AnyOrderNetwork


def random_orders(batch: int, num_variables: int, *, generator: torch.Generator | None = None,
                  device: torch.device | None = None) -> Tensor:
    """Uniform random orders [B, D]: entry d is the generation step of variable d (a permutation of 0..D-1)."""
    scores = torch.rand(batch, num_variables, generator=generator, device=device)
    return scores.argsort(dim=1).argsort(dim=1)


def draw_steps(batch: int, num_variables: int, mode: str, *, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> Tensor:
    """Steps t [B] in 0..D-1: independent uniform draws, or an antithetic grid (evenly spaced, one random offset,
    shuffled), whose marginal per datapoint is still uniform."""
    if mode == "uniform":
        return torch.randint(0, num_variables, (batch,), generator=generator, device=device)
    offset = torch.rand((), generator=generator, device=device)
    grid = ((torch.arange(batch, device=device) + offset) / batch * num_variables).floor().long()
    return grid[torch.randperm(batch, generator=generator, device=device)].clamp(max=num_variables - 1)


class AnyOrderObjective(Objective):
    """An objective over fixed-size data whose network reads known values and MASK and predicts every variable.

    Subclasses call :meth:`build_network` from ``build``. ``extra_outputs`` > 0 asks the network for that many
    further channels per variable after the K_max value channels (e.g. an order-policy score);
    :meth:`network_outputs` returns them apart from the log-probabilities.
    """

    network: AnyOrderNetwork
    value_mask: Tensor
    num_variables: int
    mask_id: int
    extra_outputs: int

    def build_network(self, build: BuildContext, *, extra_outputs: int = 0) -> None:
        """Build ``self.network`` for the data space: inputs are the values plus MASK (= K_max), outputs K_max values
        (variable d uses its first ``space.vocab_sizes[d]``) and ``extra_outputs`` further channels."""
        space, name = build.space, build.objective_name
        if space.variable_length:
            raise ConfigError(f"{name} needs fixed-size datapoints (every datapoint has all D variables); this "
                              f"dataset has variable-length sequences: use fixed-length chunks or a left-to-right "
                              f"objective")
        self.num_variables = d = space.num_variables
        k_max = space.vocab_size
        self.mask_id, self.extra_outputs = k_max, int(extra_outputs)
        outputs = tuple(space.vocab_sizes) if not extra_outputs else tuple([k_max + extra_outputs] * d)
        io = NetworkIO(input_vocab_sizes=tuple([k_max + 1] * d), output_vocab_sizes=outputs, max_len=d,
                       structure=space.structure, shape=space.shape)
        network = build.network(io, require=AnyOrderNetwork)
        assert isinstance(network, AnyOrderNetwork)
        self.network = network
        # value_mask[d, k]: value k exists for variable d (variables may have different vocabularies).
        sizes = torch.tensor(space.vocab_sizes)
        self.register_buffer("value_mask", torch.arange(k_max)[None, :] < sizes[:, None], persistent=False)

    def network_outputs(self, tokens: Tensor, known: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities [B, D, K_max] of every variable given the known ones (MASK elsewhere) and t, and the
        extra channels [B, D, extra_outputs] (float32 at least)."""
        inputs = torch.where(known, tokens, torch.full_like(tokens, self.mask_id))
        out = self.network(inputs, t)
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()  # the softmax in at least float32 under mixed precision
        k_max = self.mask_id
        logits = out[..., :k_max].masked_fill(~self.value_mask, float("-inf"))
        return F.log_softmax(logits, dim=-1), out[..., k_max:k_max + self.extra_outputs]

    def log_probs(self, tokens: Tensor, known: Tensor, t: Tensor) -> Tensor:
        """Log-probabilities [B, D, K_max] of every variable given the known ones (MASK elsewhere) and t."""
        return self.network_outputs(tokens, known, t)[0]
