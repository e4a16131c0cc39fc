"""Tests of the causal transformer plugin, the shared layers and the sampling machinery (tiny models, CPU)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from anyorder.errors import ConfigError
from anyorder.generate import filter_logits
from anyorder.network import NetworkIO
from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.causal_transformer.config import CausalTransformerConfig
from anyorder_plugins.causal_transformer.network import CausalTransformer
from anyorder_plugins.transformer.layers import MLP, SelfAttention

VOCAB, MAX_LEN = 11, 16
POSITIONS = ["learned", "rotary"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these tiny models on one thread: more only adds overhead, and on a busy machine OpenMP threads that
    wait for each other make each call up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_net(
    positions: str = "learned", *, vocab_out: int = VOCAB, max_len: int = MAX_LEN, **options: object
) -> CausalTransformer:
    """A tiny randomly initialised network in eval mode."""
    torch.manual_seed(0)
    options = {"n_layers": 2, "d_model": 32, "n_heads": 4, "positions": positions, **options}
    config = CausalTransformerConfig(**options)  # type: ignore[arg-type]
    return CausalTransformer(config, NetworkIO((VOCAB,), (vocab_out,), max_len)).eval()


def random_tokens(batch: int = 3, length: int = MAX_LEN, seed: int = 1) -> torch.Tensor:
    """Seeded random tokens [batch, length]."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# -- (a) causality -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
def test_changing_a_token_leaves_earlier_logits_unchanged(positions: str) -> None:
    net = make_net(positions)
    tokens = random_tokens()
    base = net(tokens)
    for t in (0, 5, MAX_LEN - 1):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        out = net(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], base[:, t])  # the change is seen from position t on


# -- (b) step() against forward() ------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("chunks", [[1] * MAX_LEN, [3, 1, 4, 1, 5, 2], [MAX_LEN]])
def test_step_matches_forward(positions: str, chunks: list[int]) -> None:
    net = make_net(positions)
    tokens = random_tokens()
    full = net(tokens)
    cache = net.new_cache(tokens.shape[0], MAX_LEN)
    outs, start = [], 0
    for size in chunks:
        outs.append(net.step(tokens[:, start : start + size], cache))
        start += size
        assert cache.length == start
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", POSITIONS)
def test_step_with_explicit_positions_matches_forward(positions: str) -> None:
    net = make_net(positions)
    tokens = random_tokens(length=8)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9, 10], [8, 7, 6, 5, 4, 3, 2, 1]])
    full = net(tokens, positions=pos)
    cache = net.new_cache(3, 8)
    stepped = torch.cat(
        [net.step(tokens[:, :5], cache, positions=pos[:, :5]), net.step(tokens[:, 5:], cache, pos[:, 5:])], 1
    )
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)


# -- (c) crop ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
def test_crop_then_step_matches_recomputation(positions: str) -> None:
    net = make_net(positions)
    tokens = random_tokens(length=10)
    replacement = random_tokens(length=6, seed=7)
    cache = net.new_cache(3, MAX_LEN)
    net.step(tokens, cache)
    cache.crop(4)  # e.g. six backspaces
    assert cache.length == 4
    stepped = torch.cat([net.step(replacement[:, :1], cache), net.step(replacement[:, 1:], cache)], dim=1)
    expected = net(torch.cat([tokens[:, :4], replacement], dim=1))[:, 4:]
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        cache.crop(cache.length + 1)


# -- (d) explicit masks and positions ---------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
def test_explicit_causal_mask_reproduces_default(positions: str) -> None:
    net = make_net(positions)
    tokens = random_tokens()
    mask = torch.ones(MAX_LEN, MAX_LEN, dtype=torch.bool).tril().expand(3, -1, -1)
    torch.testing.assert_close(net(tokens, attn_mask=mask), net(tokens), atol=1e-6, rtol=0)
    # The mask really replaces the causal one: with full attention, position 0 sees the last token.
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    full_mask = torch.ones(3, MAX_LEN, MAX_LEN, dtype=torch.bool)
    assert not torch.allclose(net(changed, attn_mask=full_mask)[:, 0], net(tokens, attn_mask=full_mask)[:, 0])
    with pytest.raises(ValueError, match="bool"):
        net(tokens, attn_mask=mask.float())


@pytest.mark.parametrize("positions", POSITIONS)
def test_custom_positions(positions: str) -> None:
    net = make_net(positions)
    tokens = random_tokens()
    default_pos = torch.arange(MAX_LEN).expand(3, -1)
    torch.testing.assert_close(net(tokens, positions=default_pos), net(tokens), atol=1e-6, rtol=0)
    # Per-row positions: each row is computed with its own, independently of the others.
    pos = torch.stack([torch.randperm(MAX_LEN, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    out = net(tokens, positions=pos)
    assert not torch.allclose(out, net(tokens))
    for row in range(3):
        torch.testing.assert_close(out[row : row + 1], net(tokens[row : row + 1], positions=pos[row : row + 1]))
    if positions == "rotary":  # rotary attention depends on relative positions only: a shift changes nothing
        short = tokens[:, :8]
        torch.testing.assert_close(
            net(short, positions=torch.arange(5, 13).expand(3, -1)), net(short), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("positions", POSITIONS)
def test_positions_beyond_max_len_raise(positions: str) -> None:
    net = make_net(positions)
    with pytest.raises(ValueError, match="max_len"):
        net(random_tokens(length=MAX_LEN + 1))
    with pytest.raises(ValueError, match="max_len"):
        net(random_tokens(length=4), positions=torch.full((3, 4), MAX_LEN))
    cache = net.new_cache(3, MAX_LEN + 4)
    net.step(random_tokens(length=MAX_LEN), cache)
    with pytest.raises(ValueError, match="max_len"):
        net.step(random_tokens(length=1), cache)
    small = net.new_cache(3, 4)
    with pytest.raises(ValueError, match="capacity"):
        net.step(random_tokens(length=5), small)


# -- the network's construction ---------------------------------------------------------------------------------


def test_new_cache_shapes_and_flops() -> None:
    net = make_net(n_layers=2)
    cache = net.new_cache(5, 12, dtype=torch.float64)
    assert len(cache.keys) == len(cache.values) == 2
    assert cache.keys[0].shape == (5, 4, 12, 8) and cache.keys[0].dtype == torch.float64
    assert cache.capacity == 12 and cache.length == 0
    # Non-embedding parameters: 2 blocks of (qkv 3d^2 + out d^2 + mlp 8d^2 + 2 norms 2d) + final norm d + tied head.
    d, n_layers = 32, 2
    n_params = n_layers * (12 * d * d + 2 * d) + d + VOCAB * d
    assert net.flops_per_token(MAX_LEN) == 6 * n_params + 12 * n_layers * d * MAX_LEN


def test_tying_and_init() -> None:
    tied, untied = make_net(), make_net(vocab_out=VOCAB + 2)
    assert tied.tied and tied.head.weight is tied.tok_emb.weight
    assert not untied.tied and untied.head.weight.shape == (VOCAB + 2, 32)
    assert not make_net(tie_embeddings=False).tied
    torch.manual_seed(0)
    big = CausalTransformer(CausalTransformerConfig(n_layers=8, d_model=128, n_heads=4), NetworkIO((50,), (50,), 8))
    for module in big.modules():
        if isinstance(module, (SelfAttention, MLP)):
            assert module.out_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert big.blocks[0].mlp.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"positions": "rotory"}, "Did you mean 'rotary'"),
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"n_layers": 0}, "n_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"d_ff": -1}, "d_ff"),
        ({"d_model": 12, "n_heads": 4, "positions": "rotary"}, "even head size"),
        ({"norm_eps": 0.0}, "norm_eps"),
    ],
)
def test_config_validation(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CausalTransformerConfig(**options)  # type: ignore[arg-type]


def test_config_summary_and_defaults() -> None:
    config = CausalTransformerConfig()
    assert (CausalTransformerConfig.__doc__ or "").splitlines()[0] == (
        "Causal (left-to-right) transformer: pre-norm, SDPA attention, KV-cache sampling."
    )
    assert (config.n_layers, config.d_model, config.n_heads, config.ff_width) == (4, 256, 4, 1024)
    assert CausalTransformerConfig.implementation == "anyorder_plugins.causal_transformer.network:CausalTransformer"


# -- (e) sampling -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("eos_id", [None, 3])
def test_sampling_with_and_without_cache_agree(positions: str, eos_id: int | None) -> None:
    net = make_net(positions).train()
    results = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(123)
        results.append(
            sample_causal(
                net,
                batch_size=6,
                max_new_tokens=MAX_LEN,
                bos_id=VOCAB - 1,
                eos_id=eos_id,
                generator=generator,
                top_k=8,
                top_p=0.95,
                temperature=1.3,
                use_cache=use_cache,
            )
        )
        assert net.training  # the training flag is restored
    (tokens, lengths), (tokens_ref, lengths_ref) = results
    assert torch.equal(tokens, tokens_ref) and torch.equal(lengths, lengths_ref)
    assert tokens.shape == (6, MAX_LEN) and tokens.dtype == lengths.dtype == torch.long
    if eos_id is None:
        assert (lengths == MAX_LEN).all()
    else:
        assert (lengths < MAX_LEN).any()  # this model emits EOS early for this seed; the test needs it to
        for row, length in zip(tokens, lengths.tolist(), strict=True):
            assert eos_id not in row[:length].tolist()
            assert (row[length:] == 0).all()


def test_sampling_is_seeded_and_checks_length() -> None:
    net = make_net()

    def draw(seed: int) -> torch.Tensor:
        return sample_causal(
            net, batch_size=4, max_new_tokens=10, bos_id=0, generator=torch.Generator().manual_seed(seed)
        )[0]

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    with pytest.raises(ValueError, match="positions"):
        sample_causal(net, batch_size=1, max_new_tokens=MAX_LEN + 1, bos_id=0)


# -- (f) filter_logits ------------------------------------------------------------------------------------------


def test_top_k_keeps_exactly_k() -> None:
    logits = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    logits[0, :6] = 2.0  # ties at the threshold must not keep more than k
    for k in (1, 3, 7, 20, 25):
        out = filter_logits(logits, top_k=k)
        kept = torch.isfinite(out)
        assert (kept.sum(-1) == min(k, 20)).all()
        assert kept.gather(-1, logits.argmax(-1, keepdim=True)).all()
        # the kept ones are the largest: every kept logit >= every dropped one
        assert (
            logits.masked_fill(~kept, float("inf")).amin(-1) >= logits.masked_fill(kept, -float("inf")).amax(-1)
        ).all()
    assert torch.equal(filter_logits(logits, top_k=0), logits)


def brute_force_nucleus(probs: list[float], p: float) -> set[int]:
    """The smallest set of indices whose probability reaches p (a unique answer for distinct probabilities)."""
    for size in range(1, len(probs) + 1):
        best = max(itertools.combinations(range(len(probs)), size), key=lambda s: sum(probs[i] for i in s))
        if sum(probs[i] for i in best) >= p:
            return set(best)
    raise AssertionError("unreachable")


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.randn(30, 7, generator=torch.Generator().manual_seed(0)) * 2  # a batch of float32 rows
    for p in (0.05, 0.3, 0.5, 0.8, 0.9, 0.99):
        kept = torch.isfinite(filter_logits(logits, top_p=p))
        for row in range(logits.shape[0]):
            probs = logits[row].double().softmax(-1).tolist()
            prefix_sums = itertools.accumulate(sorted(probs, reverse=True))
            if any(abs(total - p) < 1e-5 for total in prefix_sums):
                continue  # p within float32 rounding of a boundary: either answer is acceptable
            assert set(kept[row].nonzero().flatten().tolist()) == brute_force_nucleus(probs, p), (row, p)
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)
    # top-k first, then the nucleus of the renormalised remainder
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    probs_top3 = logits[:3].softmax(-1)
    p = float(probs_top3[0] + probs_top3[1] / 2)  # needs exactly the top two of the three
    assert torch.isfinite(filter_logits(logits, top_k=3, top_p=p)).tolist() == [True, True, False, False, False]


def test_argmax_always_kept_and_temperature() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, -2.0]])
    out = filter_logits(logits, top_p=1e-6, top_k=1)
    assert torch.isfinite(out).tolist() == [[False, True, False, False]]
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2.0)
    assert filter_logits(logits.bfloat16()).dtype == torch.float32
    for bad in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            filter_logits(logits, **bad)  # type: ignore[arg-type]


# -- (g) light options module -----------------------------------------------------------------------------------


def test_config_module_does_not_import_torch() -> None:
    code = "import anyorder_plugins.causal_transformer.config, sys; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
