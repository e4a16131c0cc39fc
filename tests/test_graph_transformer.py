"""The graph_transformer network: shapes and gradients, node-permutation equivariance (and the slot embedding that
breaks it), what the outputs depend on (edges, t), its checks, the registry, and OA-ARDM on graph data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import MARKOV_CONFIG

from anyorder.build import build_objective
from anyorder.config import load_config
from anyorder.data import DataSpace
from anyorder.errors import ConfigError
from anyorder.network import NetworkIO
from anyorder.objective import StepContext
from anyorder_plugins.graph_transformer.config import GraphTransformerConfig
from anyorder_plugins.graph_transformer.network import GraphTransformer

N = 5
E = N * (N - 1) // 2
D = N + E
NODE_VALUES, EDGE_VALUES = 4, 3  # plus one MASK value each
IN_VOCABS = (NODE_VALUES + 1,) * N + (EDGE_VALUES + 1,) * E
OUT_VOCABS = (NODE_VALUES,) * N + (EDGE_VALUES,) * E


def _io(**changes: object) -> NetworkIO:
    fields: dict[str, object] = dict(input_vocab_sizes=IN_VOCABS, output_vocab_sizes=OUT_VOCABS, max_len=D,
                                     structure="graph", shape=(N,))
    fields.update(changes)
    return NetworkIO(**fields)  # type: ignore[arg-type]


def _net(*, sharpen: float = 1.0, **options: object) -> GraphTransformer:
    """A tiny network in double precision, eval mode (no dropout); ``sharpen`` scales every parameter."""
    cfg = GraphTransformerConfig(**{"n_layers": 2, "d_model": 16, "n_heads": 2, "d_edge": 8, **options})  # type: ignore[arg-type]
    torch.manual_seed(0)
    net = GraphTransformer(cfg, _io())
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(sharpen)
    return net.double().eval()


def _random_graphs(batch: int, *, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [B, D] with some MASKed variables, and t [B]."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.randint(0, NODE_VALUES + 1, (batch, N), generator=g)  # the last value is MASK
    edges = torch.randint(0, EDGE_VALUES + 1, (batch, E), generator=g)
    t = torch.randint(0, D, (batch,), generator=g)
    return torch.cat([nodes, edges], dim=1), t


def _permute(tokens: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """The same graphs with node k being node perm[k] of the input (edges remapped); dim 1 indexes the variables."""
    rows, cols = np.triu_indices(N, k=1)
    edge_of = np.zeros((N, N), dtype=np.int64)
    edge_of[rows, cols] = np.arange(E)
    edge_of[cols, rows] = np.arange(E)
    index = np.concatenate([perm, N + edge_of[perm[rows], perm[cols]]])  # result variable -> input variable
    return tokens[:, torch.from_numpy(index)]


PERM = np.array([3, 0, 4, 1, 2])


def test_output_shape_finite_and_gradients_reach_every_parameter() -> None:
    cfg = GraphTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_edge=8, dropout=0.1)
    net = GraphTransformer(cfg, _io()).train()
    tokens, t = _random_graphs(6)
    logits = net(tokens, t)
    assert logits.shape == (6, D, NODE_VALUES)
    assert torch.isfinite(logits).all()
    assert logits.abs().max() < 1.0  # small at init
    logits.square().sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert net.flops_per_token(D) > 6.0 * net.num_parameters() / D


def test_wrong_token_shape_raises() -> None:
    net = _net()
    with pytest.raises(ValueError, match=rf"\[batch, {D}\]"):
        net(torch.zeros(2, D - 1, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_without_slot_embedding_permuting_nodes_permutes_logits() -> None:
    net = _net(sharpen=4.0, node_index_embedding=False)
    tokens, t = _random_graphs(4)
    with torch.no_grad():
        out = net(tokens, t)
        out_perm = net(_permute(tokens, PERM), t)
    # The result's variables are the input's variables in the permuted order: the logits must follow.
    expected = _permute(out, PERM)  # the logits [B, D, V] permuted along the variable axis
    assert (out_perm - expected).abs().max() < 1e-10
    assert (out_perm - out).abs().max() > 1e-3  # the permutation is not trivial for these graphs


def test_with_slot_embedding_permuting_nodes_changes_logits() -> None:
    net = _net(sharpen=4.0, node_index_embedding=True)
    tokens, t = _random_graphs(4)
    with torch.no_grad():
        out = net(tokens, t)
        out_perm = net(_permute(tokens, PERM), t)
    expected = _permute(out, PERM)
    assert (out_perm - expected).abs().max() > 1e-3


def test_outputs_depend_on_one_edge_token() -> None:
    net = _net(sharpen=4.0, node_index_embedding=False)
    tokens, t = _random_graphs(3)
    changed = tokens.clone()
    k = N + 4  # the 5th upper-triangle pair, (1, 2) for N = 5
    changed[:, k] = (changed[:, k] + 1) % (EDGE_VALUES + 1)
    with torch.no_grad():
        diff = (net(changed, t) - net(tokens, t)).abs()
    assert diff[:, k].max() > 1e-3  # the edge's own prediction
    assert diff[:, :N].max() > 1e-3  # the nodes see the edge through the attention bias


def test_edge_order_is_upper_triangle_row_major() -> None:
    """Only edge variable 4 known: in row-major order it is pair (1, 2), so nodes 1 and 2 are its interchangeable ends
    (equivariant net, every node MASK); column-major order would make it (1, 3)."""
    rows, cols = np.triu_indices(N, k=1)
    assert (rows[4], cols[4]) == (1, 2)
    net = _net(sharpen=4.0, node_index_embedding=False)
    tokens = torch.tensor([[NODE_VALUES] * N + [EDGE_VALUES] * E])  # everything MASK
    tokens[0, N + 4] = 1
    with torch.no_grad():
        nodes = net(tokens, torch.tensor([1]))[0, :N]
    assert (nodes[1] - nodes[2]).abs().max() < 1e-10  # the two ends are interchangeable
    assert (nodes[0] - nodes[3]).abs().max() < 1e-10  # so are the nodes off the edge
    assert (nodes[1] - nodes[3]).abs().max() > 1e-3  # an end differs from a node off the edge


@pytest.mark.parametrize("time_conditioning", [True, False])
def test_time_conditioning(time_conditioning: bool) -> None:
    net = _net(sharpen=4.0, time_conditioning=time_conditioning)
    tokens, t = _random_graphs(3)
    with torch.no_grad():
        diff = (net(tokens, t) - net(tokens, (t + 3) % D)).abs().max()
    if time_conditioning:
        assert diff > 1e-3
    else:
        assert diff == 0


def test_non_graph_io_and_wrong_sizes_raise() -> None:
    cfg = GraphTransformerConfig(n_layers=1, d_model=16, n_heads=2)
    with pytest.raises(ValueError, match="bidirectional_transformer"):
        GraphTransformer(cfg, _io(structure="sequence", shape=(D,)))
    with pytest.raises(ValueError, match=rf"= {N + 1 + (N + 1) * N // 2} variables, but the network got {D} input"):
        GraphTransformer(cfg, _io(shape=(N + 1,)))  # the sizes are those of N nodes


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match=r"network\.d_edge"):
        GraphTransformerConfig(d_edge=-1)
    with pytest.raises(ConfigError, match=r"network\.d_model .* divisible"):
        GraphTransformerConfig(d_model=30, n_heads=4)
    assert GraphTransformerConfig(d_model=64).edge_width == 32
    assert GraphTransformerConfig(d_model=64, d_edge=24).edge_width == 24


def test_registry_finds_it() -> None:
    from anyorder.registry import REGISTRY

    assert REGISTRY.implementation("network", "graph_transformer") is GraphTransformer
    assert REGISTRY.get("network", "graph_transformer").config_class is GraphTransformerConfig


def test_ardm_on_graph_data() -> None:
    cfg = load_config(MARKOV_CONFIG, ["objective.name=ardm", "network.name=graph_transformer", "network.n_layers=1",
                                      "network.d_model=16", "network.n_heads=2", "network.d_edge=8"])
    vocabs = OUT_VOCABS  # nodes 4 values, edges 3: ardm adds one shared MASK (value 4)
    space = DataSpace("graph", D, vocabs, shape=(N,))
    torch.manual_seed(0)
    model = build_objective(cfg, space)
    assert isinstance(model.network, GraphTransformer)  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randint(0, NODE_VALUES, (4, N), generator=g),
                   torch.randint(0, EDGE_VALUES, (4, E), generator=g)], dim=1)
    known = torch.rand(4, D, generator=g) < 0.5
    logp = model.log_probs(x, known, known.sum(1))  # type: ignore[attr-defined]
    assert logp.shape == (4, D, NODE_VALUES)
    assert torch.isneginf(logp[:, N:, EDGE_VALUES:]).all()  # edges have 3 values
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(4, D))
    model.eval()
    out = model.loss({"tokens": x}, StepContext.standalone())  # type: ignore[attr-defined]
    assert torch.isfinite(out.loss)
    assert 0 < float(out.loss.detach()) < 2 * math.log2(NODE_VALUES)  # bits per variable, near uniform at init
    out.loss.backward()
