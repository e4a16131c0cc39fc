"""EMA: the average it keeps, swapping in and out, and its state."""

from __future__ import annotations

import torch
from torch import nn

from anyorder.ema import EMA


def test_ema_matches_direct_recursion_and_swaps_back() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.9)
    expected = {n: p.detach().clone() for n, p in net.named_parameters()}
    for step in range(20):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        d = min(0.9, (1 + step) / (10 + step))
        for n, p in net.named_parameters():
            expected[n] = d * expected[n] + (1 - d) * p.detach()
    trained = {n: p.detach().clone() for n, p in net.named_parameters()}
    with ema.swapped(net):
        for n, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), expected[n])
        assert ema.is_swapped
    assert not ema.is_swapped
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), trained[n])


def test_ema_state_round_trip() -> None:
    net = nn.Linear(2, 2)
    ema = EMA(net, 0.99)
    ema.update(net)
    other = EMA(nn.Linear(2, 2), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    for n in ema.shadow:
        assert torch.equal(other.shadow[n], ema.shadow[n])
