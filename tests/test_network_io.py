"""NetworkIO's conditioning inputs and outputs: the causal transformer conditioned on a vector or a prefix (full pass
equals cached steps, the condition matters, causality holds), and a network refusing what it does not support."""

from __future__ import annotations

import pytest
import torch

from anyorder.config import plugin_options
from anyorder.errors import ConfigError
from anyorder.module import build_network
from anyorder.network import Conditioning, NetworkIO, Output
from anyorder_plugins.causal_transformer.network import CausalTransformer


def _network(conditioning: Conditioning, positions: str) -> CausalTransformer:
    options = plugin_options("network", {"name": "causal_transformer", "n_layers": 2, "d_model": 16, "n_heads": 2,
                                         "positions": positions})
    io = NetworkIO((7,), (7,), 12, conditioning=conditioning,
                   condition_dim=0 if conditioning is Conditioning.NONE else 5,
                   condition_len=3 if conditioning is Conditioning.PREFIX else 0)
    torch.manual_seed(0)
    return CausalTransformer(options, io).eval()


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("conditioning", [Conditioning.VECTOR, Conditioning.PREFIX])
def test_conditioned_causal_transformer(conditioning: Conditioning, positions: str) -> None:
    net = _network(conditioning, positions)
    x = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(1))
    c = torch.randn(2, 5) if conditioning is Conditioning.VECTOR else torch.randn(2, 3, 5)
    with torch.no_grad():
        full = net(x, condition=c)
        cache = net.new_cache(2, 12)
        steps = [net.step(x[:, :2], cache, condition=c)] + [net.step(x[:, i:i + 1], cache, condition=c)
                                                             for i in range(2, 6)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
        assert float((net(x, condition=2 * c) - full).abs().max()) > 1e-4  # the condition reaches the logits
        later = x.clone()
        later[:, 4] = (later[:, 4] + 1) % 7
        torch.testing.assert_close(net(later, condition=c)[:, :4], full[:, :4], atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="condition must have shape"):
            net(x)


@pytest.mark.parametrize("conditioning", [Conditioning.NONE, Conditioning.VECTOR, Conditioning.PREFIX])
def test_transformer_logits_at_selected_positions(conditioning: Conditioning) -> None:
    """The head applied at the selected positions only gives the whole forward's logits there."""
    net = _network(conditioning, "rotary")
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 7, (3, 6), generator=g)
    c = {Conditioning.NONE: None, Conditioning.VECTOR: torch.randn(3, 5, generator=g),
         Conditioning.PREFIX: torch.randn(3, 3, 5, generator=g)}[conditioning]
    where = torch.arange(6)[None] <= torch.tensor([5, 0, 3])[:, None]
    with torch.no_grad():
        got = net.logits_at(x, where, condition=c)
        assert got.shape == (int(where.sum()), 7)
        torch.testing.assert_close(got, net(x, condition=c)[where], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="where must have the shape of tokens"):
        net.logits_at(x, where[:, :5], condition=c)


def test_a_network_refuses_what_it_does_not_support() -> None:
    section = {"name": "bidirectional_transformer", "n_layers": 1, "d_model": 16, "n_heads": 2}
    with pytest.raises(ConfigError, match="cannot be conditioned on a vector"):
        build_network(section, NetworkIO((5,) * 4, (4,) * 4, 4, conditioning=Conditioning.VECTOR, condition_dim=3))
    with pytest.raises(ConfigError, match="cannot return pooled"):
        build_network(section, NetworkIO((5,) * 4, (4,) * 4, 4, output=Output.POOLED, output_dim=8))
    with pytest.raises(ValueError, match="condition_dim"):
        NetworkIO((5,), (5,), 4, conditioning=Conditioning.VECTOR)
