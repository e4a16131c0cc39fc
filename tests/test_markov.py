"""The ``markov`` dataset: its stationary law, its exact entropies against Monte Carlo, seeding and the datamodule."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import anyorder_plugins.markov.data as markov_data
from anyorder.errors import ConfigError
from anyorder_plugins.markov.config import MarkovConfig
from anyorder_plugins.markov.data import MarkovChain, MarkovDataModule

CHAINS = [(1, 5, 0.5, 0), (2, 8, 0.5, 0), (3, 4, 2.0, 7), (2, 6, 0.05, 3)]


def _module(**options: object) -> MarkovDataModule:
    return MarkovDataModule(MarkovConfig(**options), seed=0, global_batch_size=32)  # type: ignore[arg-type]


def _contexts(x: np.ndarray, t: int, order: int, vocab: int) -> np.ndarray:
    """State index of the k tokens before position t, computed digit by digit (independently of MarkovChain)."""
    state = np.zeros(len(x), dtype=np.int64)
    for i in range(order):
        state = state * vocab + x[:, t - order + i]
    return state


@pytest.mark.parametrize(("order", "vocab", "concentration", "seed"), CHAINS)
def test_stationary_distribution_is_stationary(order: int, vocab: int, concentration: float, seed: int) -> None:
    chain = MarkovChain.random(order, vocab, concentration, seed)
    pi = chain.stationary
    assert pi.shape == (vocab**order,) and pi.dtype == np.float64
    assert np.all(pi >= 0) and math.isclose(pi.sum(), 1.0, abs_tol=1e-12)
    assert np.abs(pi @ chain.dense_step_matrix() - pi).sum() < 1e-12
    assert np.allclose(chain.step_distribution(pi), pi @ chain.dense_step_matrix(), atol=1e-15)


@pytest.mark.parametrize(("order", "vocab", "concentration", "seed"), CHAINS)
def test_power_iteration_agrees_with_the_dense_solve(
    order: int, vocab: int, concentration: float, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    dense = MarkovChain.random(order, vocab, concentration, seed).stationary
    monkeypatch.setattr(markov_data, "_DENSE_SOLVE_MAX_STATES", 0)
    power = MarkovChain.random(order, vocab, concentration, seed).stationary
    assert np.abs(dense - power).max() < 1e-11


def test_exact_quantities_by_enumeration() -> None:
    # Small enough to list every sequence: the probabilities sum to 1 and the entropy is the reference exactly.
    order, vocab, length = 2, 3, 5
    chain = MarkovChain.random(order, vocab, 0.7, 11)
    seqs = np.array(list(itertools.product(range(vocab), repeat=length)))
    logp = chain.log_prob(seqs)
    p = np.exp(logp)
    assert math.isclose(p.sum(), 1.0, abs_tol=1e-12)
    assert math.isclose(-(p * logp).sum() / length, chain.sequence_entropy_per_token(length), rel_tol=1e-11)
    # The marginal of the first k tokens is the stationary law.
    first = p.reshape(vocab**order, -1).sum(axis=1)
    assert np.allclose(first, chain.stationary, atol=1e-14)
    assert math.isclose(chain.sequence_entropy_per_token(order), chain.stationary_entropy() / order)


def test_log_prob_matches_a_direct_loop() -> None:
    chain = MarkovChain.random(2, 5, 0.5, 4)
    x = chain.sample(6, 20, np.random.default_rng(0))
    for row, got in zip(x, chain.log_prob(torch.from_numpy(x)), strict=True):
        want = math.log(chain.stationary[row[0] * 5 + row[1]])
        for t in range(2, len(row)):
            want += math.log(chain.transitions[row[t - 2] * 5 + row[t - 1], row[t]])
        assert math.isclose(got, want, rel_tol=1e-12)


def test_entropy_rate_matches_monte_carlo() -> None:
    c = MarkovConfig()
    chain = MarkovChain.random(c.order, c.vocab_size, c.concentration, c.chain_seed)
    x = chain.sample(400, 500, np.random.default_rng(123))  # 200k tokens in 400 independent stationary paths
    nll = np.stack([
        -np.log(chain.transitions[_contexts(x, t, c.order, c.vocab_size), x[:, t]]) for t in range(c.order, x.shape[1])
    ], axis=1)
    # Tokens within a path are correlated; the path means are independent, so their spread gives the standard error.
    per_path = nll.mean(axis=1)
    se = per_path.std(ddof=1) / math.sqrt(len(per_path))
    assert abs(per_path.mean() - chain.entropy_rate()) < 3 * se
    assert se < 0.01  # the check is sharp enough to mean something


def test_sequence_entropy_matches_sampled_log_prob() -> None:
    dm = _module()
    x = dm.splits.train.tokens.numpy()
    per_token = -dm.log_prob(x) / x.shape[1]
    se = per_token.std(ddof=1) / math.sqrt(len(per_token))
    ref = dm.reference()
    assert abs(per_token.mean() - ref["sequence_entropy_nats_per_token"]) < 3 * se
    assert ref["sequence_entropy_nats_per_token"] == pytest.approx(
        (ref["stationary_entropy_nats"] + (64 - 2) * ref["entropy_rate_nats"]) / 64, rel=1e-14
    )
    assert 0 < ref["entropy_rate_nats"] < math.log(8)


def test_source_nll_on_the_split_sequences_is_a_direct_computation() -> None:
    """The source's exact NLL per token on the evaluated sequences themselves (not its expectation over sequences)."""
    dm = _module(num_train=7, num_val=3, num_test=5, length=6, order=2, vocab_size=3)
    chain, ref = dm.chain, dm.reference()
    for split in ("train", "val", "test"):
        x = getattr(dm.splits, split).tokens.numpy()
        # Directly: log pi(first k tokens) + sum of log T(context, next token), context by digits, in a plain loop.
        total = 0.0
        for row in x:
            total += math.log(chain.stationary[row[0] * 3 + row[1]])
            for t in range(2, len(row)):
                total += math.log(chain.transitions[row[t - 2] * 3 + row[t - 1], row[t]])
        direct = -total / x.size
        assert ref[f"source_nll_nats_per_token_{split}"] == pytest.approx(direct, rel=1e-12)
        assert dm.source_nll_per_token(x) == pytest.approx(direct, rel=1e-12)
        assert dm.source_nll_per_token(torch.from_numpy(x)) == pytest.approx(direct, rel=1e-12)
    # On so few sequences the exact value differs from the expectation over sequences.
    assert ref["source_nll_nats_per_token_test"] != pytest.approx(ref["sequence_entropy_nats_per_token"], rel=1e-3)
    assert "source_nll_nats_per_token_val" not in _module(num_val=0).reference()  # an empty split has no value


def test_likelihood_report_names_both_references(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from anyorder.cli import _print_outputs
    from anyorder.evaluation import likelihood_report
    from anyorder.module import EvaluationResult
    from anyorder.objective import Likelihood

    dm = _module(num_train=7, num_val=3, num_test=5, length=6, order=2, vocab_size=3)
    ref = dm.reference()
    cfg = OmegaConf.create({"seed": 0, "eval": {"use_ema": False}, "objective": {}, "network": {}, "data": {}})
    module = SimpleNamespace(ema=None, objective=SimpleNamespace(likelihood_protocol=lambda: {}))
    for split in ("val", "test"):
        nll = 1.01 * ref[f"source_nll_nats_per_token_{split}"]
        result = EvaluationResult(split=split, likelihood=Likelihood.EXACT, nll=nll, nll_se=0.0, nll_per_sequence=6 * nll,
                                  num_sequences=3, num_tokens=18)
        report = likelihood_report(cfg, module, dm, result, checkpoint="c", step=0, world_size=1, precision="32")
        assert report["source_nll_nats_per_token"] == ref[f"source_nll_nats_per_token_{split}"]
        assert report["excess_over_source_nll"] == pytest.approx(0.01)
        assert report["excess_over_sequence_entropy"] == pytest.approx(nll / ref["sequence_entropy_nats_per_token"] - 1)
        assert report["excess_over_entropy_rate"] == pytest.approx(nll / ref["entropy_rate_nats"] - 1)
    # `anyorder train` prints both, each named for what it is (the report of the last split, test).
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "test-final.json").write_text(json.dumps(report))
    _print_outputs(tmp_path)
    out = capsys.readouterr().out
    assert "expected NLL over sequences of this length" in out and "+1.00% above it" in out
    assert f"source NLL       {ref['source_nll_nats_per_token_test']:.4f} nats/token" in out
    assert "NLL on these test sequences" in out and "true NLL" not in out


def test_first_tokens_are_stationary() -> None:
    chain = MarkovChain.random(2, 4, 0.5, 2)
    x = chain.sample(200_000, 2, np.random.default_rng(5))
    counts = np.bincount(x[:, 0] * 4 + x[:, 1], minlength=16)
    expected = 200_000 * chain.stationary
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 15 degrees of freedom: P(chi2 > 45) < 1e-4


def test_zero_probability_tokens_are_never_drawn() -> None:
    transitions = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    chain = MarkovChain(transitions, 1)
    x = chain.sample(2000, 30, np.random.default_rng(0))
    assert np.isfinite(chain.log_prob(x)).all()


def test_same_seed_same_data_and_independent_splits() -> None:
    a, b = _module(num_train=500, num_val=300, num_test=300), _module(num_train=500, num_val=300, num_test=300)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a.splits, split).tokens, getattr(b.splits, split).tokens)
    rows = {split: {tuple(r) for r in getattr(a.splits, split).tokens.tolist()} for split in ("train", "val", "test")}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    # A split does not depend on the other splits' sizes, and a smaller one is a prefix of a larger one.
    c = _module(num_train=100, num_val=300, num_test=10)
    assert torch.equal(c.splits.val.tokens, a.splits.val.tokens)
    assert torch.equal(c.splits.train.tokens, a.splits.train.tokens[:100])
    other_data = _module(num_train=500, data_seed=2)
    assert not torch.equal(other_data.splits.train.tokens, a.splits.train.tokens)
    # The source's quantities depend on the chain only; its exact NLL on each split, on the split's sequences too.
    source_keys = ("entropy_rate_nats", "stationary_entropy_nats", "sequence_entropy_nats_per_token")
    assert {k: other_data.reference()[k] for k in source_keys} == {k: a.reference()[k] for k in source_keys}
    assert other_data.reference()["source_nll_nats_per_token_train"] != a.reference()["source_nll_nats_per_token_train"]
    assert _module(chain_seed=1).reference() != a.reference()
    # The run seed orders the batches; it does not change the data.
    d = MarkovDataModule(MarkovConfig(num_train=500, num_val=300, num_test=300), seed=9)
    assert torch.equal(d.splits.train.tokens, a.splits.train.tokens)


def test_datamodule_space_and_batches() -> None:
    dm = _module(num_train=256, num_val=40, num_test=50, length=16, order=3, vocab_size=5)
    space = dm.space
    assert space.structure == "sequence" and space.num_variables == 16 and space.vocab_sizes == (5,) * 16
    assert not space.variable_length
    for split, n in (("train", 256), ("val", 40), ("test", 50)):
        ts = getattr(dm.splits, split)
        assert ts.tokens.shape == (n, 16) and ts.tokens.dtype == torch.int64
        assert bool((ts.lengths == 16).all()) and int(ts.tokens.min()) >= 0 and int(ts.tokens.max()) < 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["tokens"].shape == (32, 16)
    assert set(dm.splits.info) >= {"entropy_rate_nats", "sequence_entropy_nats_per_token"}
    texts = [dm.decode(dm.splits.test.tokens[i], 16) for i in range(3)]
    assert torch.equal(dm.encode(texts).tokens, dm.splits.test.tokens[:3])


def test_generation_is_fast() -> None:
    dm = _module()
    dm.chain  # noqa: B018 - build the chain outside the timed part
    start = time.perf_counter()
    x = dm.sample_split("train")
    elapsed = time.perf_counter() - start
    assert x.shape == (20000, 64)
    assert elapsed < 3.0, f"sampling 20000 x 64 took {elapsed:.2f} s"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"order": 0}, "order"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"concentration": 0.0}, "concentration"),
        ({"length": 1, "order": 2}, "length"),
        ({"num_train": 0}, "num_train"),
        ({"num_val": -1}, "num_val"),
        ({"chain_seed": -1}, "chain_seed"),
        ({"vocab_size": 64, "order": 4}, "lower order or vocab_size"),
    ],
)
def test_invalid_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _module(**options)


def test_defaults() -> None:
    c = MarkovConfig()
    assert dataclasses.asdict(c) == {
        "order": 2, "vocab_size": 8, "concentration": 0.5, "length": 64, "num_train": 20000, "num_val": 1000,
        "num_test": 2000, "chain_seed": 0, "data_seed": 1,
    }


def test_config_module_is_light() -> None:
    code = ("import sys, anyorder_plugins.markov.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
