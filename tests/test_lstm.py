"""The LSTM networks: the encoder pools real tokens only; the decoder is causal, steps exactly like its forward pass,
is conditioned on a vector, samples with the causal sampler, and refuses what an LSTM cannot do."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from anyorder.errors import ConfigError
from anyorder.module import build_network
from anyorder.network import Conditioning, NetworkIO, Output
from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.lstm.network import LSTMDecoder, LSTMEncoder, LSTMState

V, T, B, Z = 11, 9, 4, 5
SMALL = {"d_embed": 12, "d_hidden": 16}


def _decoder(condition: bool = False, **options: object) -> LSTMDecoder:
    torch.manual_seed(0)
    io = NetworkIO(input_vocab_sizes=(V + 1,), output_vocab_sizes=(V + 1,), max_len=T,
                   conditioning=Conditioning.VECTOR if condition else Conditioning.NONE, condition_dim=Z if condition else 0)
    net = build_network({"name": "lstm_decoder", **SMALL, **options}, io)
    assert isinstance(net, LSTMDecoder)
    return net.eval().double()


def _encoder(**options: object) -> LSTMEncoder:
    torch.manual_seed(0)
    io = NetworkIO(input_vocab_sizes=(V,), output_vocab_sizes=(V,), max_len=T, output=Output.POOLED, output_dim=7)
    net = build_network({"name": "lstm_encoder", **SMALL, **options}, io)
    assert isinstance(net, LSTMEncoder)
    return net.eval().double()


@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "n_layers": 2}])
def test_encoder_reads_only_the_real_tokens(options: dict[str, object]) -> None:
    enc = _encoder(**options)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.tensor([T, 3, 1, 6])
    out = enc(tokens, lengths=lengths)
    assert out.shape == (B, 7)
    other = torch.randint(0, V, (B, T), generator=g)
    pad = torch.arange(T)[None] >= lengths[:, None]
    assert torch.allclose(enc(torch.where(pad, other, tokens), lengths=lengths), out, atol=1e-12)
    # Each row alone, cut to its length, gives the same summary: no padding, no batch interaction.
    for b in range(B):
        alone = enc(tokens[b:b + 1, :int(lengths[b])], lengths=lengths[b:b + 1])
        assert torch.allclose(alone, out[b:b + 1], atol=1e-10)
    # A real token does change it.
    changed = tokens.clone()
    changed[1, 2] = (changed[1, 2] + 1) % V
    assert not torch.allclose(enc(changed, lengths=lengths)[1], out[1])
    assert enc(tokens).shape == (B, 7)  # lengths default to the full width
    # An empty sequence has the initial (zero) state as its final state.
    empty = enc(tokens, lengths=torch.tensor([0, 3, 1, 6]))
    assert torch.allclose(empty[0], enc.proj.bias) and torch.allclose(empty[1:], out[1:], atol=1e-10)


@pytest.mark.parametrize("condition, options", [
    (False, {}),
    (True, {}),
    (True, {"condition_inputs": True, "n_layers": 2}),
    (False, {"tie_embeddings": True, "d_hidden": 12}),
])
def test_decoder_steps_like_its_forward(condition: bool, options: dict[str, object]) -> None:
    net = _decoder(condition, **options)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, V + 1, (B, T), generator=g)
    z = torch.randn(B, Z, generator=g, dtype=torch.float64) if condition else None
    full = net(tokens, condition=z)
    assert full.shape == (B, T, V + 1)
    cache = net.new_cache(B, T)
    assert isinstance(cache, LSTMState) and cache.length == 0 and cache.capacity == T
    pieces = [net.step(tokens[:, :1], cache, condition=z), net.step(tokens[:, 1:4], cache, condition=z)]
    pieces += [net.step(tokens[:, t:t + 1], cache, condition=z) for t in range(4, T)]
    assert cache.length == T
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)
    if options.get("tie_embeddings"):
        assert net.tied and net.head.weight is net.tok_emb.weight


@pytest.mark.parametrize("condition", [False, True])
def test_decoder_logits_at_selected_positions(condition: bool) -> None:
    """logits_at runs the head at the selected positions only and returns the whole forward's logits there; in
    training mode it draws the same dropout masks, so a seeded step gives the same values."""
    net = _decoder(condition, condition_inputs=condition, output_dropout=0.5)
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, V + 1, (B, T), generator=g)
    z = torch.randn(B, Z, generator=g, dtype=torch.float64) if condition else None
    where = torch.arange(T)[None] <= torch.tensor([T - 1, 0, 4, 2])[:, None]
    got = net.logits_at(tokens, where, condition=z)
    assert got.shape == (int(where.sum()), V + 1)
    assert torch.allclose(got, net(tokens, condition=z)[where], atol=1e-12)
    net.train()
    torch.manual_seed(9)
    dropped = net.logits_at(tokens, where, condition=z)
    torch.manual_seed(9)
    assert torch.allclose(dropped, net(tokens, condition=z)[where], atol=1e-12)
    assert not torch.allclose(dropped, got)  # dropout was on
    with pytest.raises(ValueError, match="where must have the shape of tokens"):
        net.logits_at(tokens, where[:2], condition=z)
    # token_nll: the cross-entropy of the whole forward's logits at the selected positions, 0 elsewhere.
    net.eval()
    targets = torch.randint(0, V + 1, (B, T), generator=g)
    expected = torch.nn.functional.cross_entropy(net(tokens, condition=z).transpose(1, 2), targets, reduction="none")
    nll = net.token_nll(tokens, targets, where, condition=z)
    assert torch.allclose(nll.double(), expected * where, atol=1e-5) and bool((nll[~where] == 0).all())


def test_decoder_is_causal_and_uses_the_condition() -> None:
    net = _decoder(True, condition_inputs=True)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, V + 1, (B, T), generator=g)
    z = torch.randn(B, Z, generator=g, dtype=torch.float64)
    logits = net(tokens, condition=z)
    for t in (0, 4, T - 1):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % (V + 1)
        out = net(changed, condition=z)
        assert torch.equal(out[:, :t], logits[:, :t])
        assert not torch.allclose(out[:, t], logits[:, t])
    other = net(tokens, condition=z + 1.0)
    assert not torch.allclose(other[:, 0], logits[:, 0])  # through the initial state
    # positions are ignored (an LSTM has no position ids).
    assert torch.equal(net(tokens, positions=torch.zeros_like(tokens), condition=z), logits)


def test_decoder_refuses_masks_and_wrong_conditions() -> None:
    net = _decoder(True)
    tokens = torch.zeros(B, T, dtype=torch.long)
    z = torch.zeros(B, Z, dtype=torch.float64)
    with pytest.raises(ValueError, match="attention mask"):
        net(tokens, attn_mask=torch.ones(B, T, T, dtype=torch.bool), condition=z)
    with pytest.raises(ValueError, match="condition must have shape"):
        net(tokens)
    with pytest.raises(ValueError, match="without a conditioning"):
        _decoder(False)(tokens, condition=z)
    cache = net.new_cache(B, T)
    net.step(tokens[:, :2], cache, condition=z)
    cache.crop(2)  # keeping the whole state is fine
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(1)
    with pytest.raises(ValueError, match="capacity"):
        net.step(tokens, cache, condition=z)


def test_prefix_conditioning_is_refused() -> None:
    io = NetworkIO(input_vocab_sizes=(V,), output_vocab_sizes=(V,), max_len=T, conditioning=Conditioning.PREFIX,
                   condition_dim=Z, condition_len=2)
    with pytest.raises(ConfigError, match="cannot be conditioned on a prefix"):
        build_network({"name": "lstm_decoder", **SMALL}, io)
    with pytest.raises(ConfigError, match="cannot return pooled"):
        build_network({"name": "lstm_decoder", **SMALL}, NetworkIO(
            input_vocab_sizes=(V,), output_vocab_sizes=(V,), max_len=T, output=Output.POOLED, output_dim=3))
    with pytest.raises(ConfigError, match="cannot be conditioned on a vector"):
        build_network({"name": "lstm_encoder", **SMALL}, NetworkIO(
            input_vocab_sizes=(V,), output_vocab_sizes=(V,), max_len=T, conditioning=Conditioning.VECTOR,
            condition_dim=Z, output=Output.POOLED, output_dim=3))
    with pytest.raises(ConfigError, match="tie_embeddings needs d_embed == d_hidden"):
        build_network({"name": "lstm_decoder", "d_embed": 8, "d_hidden": 16, "tie_embeddings": True}, NetworkIO(
            input_vocab_sizes=(V,), output_vocab_sizes=(V,), max_len=T))


@pytest.mark.parametrize("condition_inputs", [False, True])
def test_sample_causal_with_a_condition(condition_inputs: bool) -> None:
    net = _decoder(True, condition_inputs=condition_inputs).float()
    z = torch.randn(6, Z, generator=torch.Generator().manual_seed(4))
    draws = []
    for use_cache in (True, False):
        tokens, lengths = sample_causal(net, batch_size=6, max_new_tokens=T - 1, bos_id=V, eos_id=V,
                                        generator=torch.Generator().manual_seed(5), use_cache=use_cache, condition=z)
        assert tokens.shape == (6, T - 1) and lengths.shape == (6,)
        assert bool((tokens < V).all()) and bool((lengths <= T - 1).all())
        draws.append((tokens, lengths))
    # The cached and the recomputing paths draw the same samples.
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    with pytest.raises(ValueError, match="condition must have shape"):
        sample_causal(net, batch_size=6, max_new_tokens=T - 1, bos_id=V, eos_id=V)


def test_options_modules_import_no_torch() -> None:
    code = "import sys\nimport anyorder_plugins.lstm.config\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
