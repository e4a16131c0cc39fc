"""MLE's likelihood against exact enumeration, and its sampler against that likelihood, on a tiny problem."""

from __future__ import annotations

import itertools
import math

import torch
from helpers import MARKOV_CONFIG

from anyorder.build import build_objective
from anyorder.config import load_config
from anyorder.data import DataSpace
from anyorder.objective import EvalContext, SampleContext


def _tiny_model(variable_length: bool) -> object:
    cfg = load_config(MARKOV_CONFIG, ["network.n_layers=1", "network.d_model=16", "network.n_heads=2",
                                      "sample.batch_size=4096"])
    space = DataSpace.sequence(3, 3, variable_length=variable_length)
    torch.manual_seed(0)
    model = build_objective(cfg, space)
    with torch.no_grad():  # sharpen the random model so the distribution is far from uniform
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def _all_sequences(length: int, vocab: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)))


def test_fixed_length_probabilities_sum_to_one_and_match_chain_rule() -> None:
    model = _tiny_model(variable_length=False)
    xs = _all_sequences(3, 3)
    batch = {"tokens": xs, "lengths": torch.full((len(xs),), 3)}
    with torch.no_grad():
        ll = model.log_likelihood(batch, EvalContext()).log_prob
        total = torch.logsumexp(ll, 0)
        # Independent chain rule: one forward pass per prefix, no teacher-forcing shortcut.
        bos = torch.full((len(xs), 1), model.bos_id)
        manual = torch.zeros(len(xs), dtype=torch.float64)
        for t in range(3):
            logits = model.network(torch.cat([bos, xs[:, :t]], 1))[:, -1].double()
            manual += logits.log_softmax(-1).gather(1, xs[:, t:t + 1]).squeeze(1)
    assert abs(float(total)) < 1e-5
    torch.testing.assert_close(ll, manual, atol=1e-5, rtol=0)
    assert model.log_likelihood(batch, EvalContext()).num_tokens.eq(3).all()


def test_variable_length_probabilities_with_eos() -> None:
    model = _tiny_model(variable_length=True)
    seqs = [(), *[s for n in (1, 2, 3) for s in itertools.product(range(3), repeat=n)]]
    tokens = torch.zeros(len(seqs), 3, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        out = model.log_likelihood({"tokens": tokens, "lengths": lengths}, EvalContext())
        # Mass that continues past the maximum length is p(x_1..x_3) * (1 - p(EOS | x_1..x_3)).
        full = tokens[lengths == 3]
        inputs = torch.cat([torch.full((len(full), 1), model.bos_id), full], 1)
        p_eos = model.network(inputs)[:, -1].double().softmax(-1)[:, model.eos_id]
        beyond = (out.log_prob[lengths == 3].exp() / p_eos * (1 - p_eos)).sum()
    assert torch.equal(out.num_tokens, lengths + 1)  # EOS is predicted too
    assert abs(float(out.log_prob.exp().sum() + beyond) - 1.0) < 1e-5


def test_sampler_follows_the_likelihood() -> None:
    model = _tiny_model(variable_length=False)
    xs = _all_sequences(3, 3)
    with torch.no_grad():
        p = model.log_likelihood({"tokens": xs, "lengths": torch.full((27,), 3)}, EvalContext()).log_prob.exp()
        samples = model.sample(40_000, SampleContext.standalone(1))
    codes = (samples.tokens * torch.tensor([9, 3, 1])).sum(1)
    freq = torch.bincount(codes, minlength=27).double() / len(codes)
    # Pearson chi-square with 26 degrees of freedom: the 99.9% quantile is 54.05.
    chi2 = float(((freq - p) ** 2 / p).sum() * len(codes))
    assert chi2 < 54.05, chi2
    assert math.isclose(float(p.sum()), 1.0, abs_tol=1e-5)
