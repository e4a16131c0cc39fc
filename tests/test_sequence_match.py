"""SequenceMatch: folding against a reference stack (property test), augmentation, the one-pass layout against
per-state recomputation, the KL reduction to position-weighted MLE, generation with backspace, and a tiny run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import MARKOV_CONFIG, tiny_markov
from hypothesis import given, settings
from hypothesis import strategies as st

from anyorder.build import build_objective
from anyorder.cli import main
from anyorder.config import load_config
from anyorder.data import DataSpace
from anyorder.objective import SampleContext
from anyorder_plugins.sequence_match.actions import augment, fold, one_pass_inputs

BKSP, EOS = 9, 8


def _reference_fold(actions: list[int]) -> list[int]:
    """Fold by rewriting: repeatedly delete the first BKSP and the token before it (or the BKSP alone at the start)."""
    seq = list(actions)
    if EOS in seq:
        seq = seq[: seq.index(EOS)]
    while BKSP in seq:
        i = seq.index(BKSP)
        seq = seq[: max(0, i - 1)] + seq[i + 1:]
    return seq


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), max_size=40))
def test_fold_matches_a_reference_implementation(actions: list[int]) -> None:
    assert fold(actions, bksp=BKSP, eos=EOS) == _reference_fold(actions)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=7), max_size=30), st.floats(0.0, 0.9), st.integers(0, 2**31))
def test_augmented_data_folds_back_to_the_data(tokens: list[int], rate: float, seed: int) -> None:
    aug = augment(tokens, rate=rate, vocab_size=8, bksp=BKSP, eos=EOS, rng=np.random.default_rng(seed))
    assert fold(aug.actions, bksp=BKSP, eos=EOS) == tokens and aug.actions[-1] == EOS
    for i, flagged in enumerate(aug.noise):  # each noise emission is a wrong token, followed by BKSP
        if flagged:
            assert aug.actions[i + 1] == BKSP and aug.actions[i] != aug.actions[i + 2]
    assert sum(aug.noise) == aug.actions.count(BKSP)


def _model(*extra: str, length: int = 10, variable: bool = True) -> Any:
    cfg = load_config(MARKOV_CONFIG, ["objective.name=sequence_match", "network.n_layers=2", "network.d_model=32",
                                      "network.n_heads=4", *extra])
    space = DataSpace("sequence", length, (8,) * length, variable_length=variable)
    torch.manual_seed(0)
    model = build_objective(cfg, space)
    return model.eval()


def _random_episode(rng: np.random.Generator, model: Any, length: int) -> list[int]:
    actions, generated = [], 0
    while len(actions) < length:
        if generated and (rng.random() < 0.3 or generated == model.max_len):
            actions.append(model.bksp_id)
            generated -= 1
        else:
            actions.append(int(rng.integers(0, 8)))
            generated += 1
    return actions


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_one_pass_logits_equal_per_state_recomputation(positions: str) -> None:
    model = _model(f"network.positions={positions}")
    rng = np.random.default_rng(0)
    episodes = [_random_episode(rng, model, n) for n in (12, 7, 15, 1)]
    episodes[1].append(model.eos_id)
    layout = one_pass_inputs([[model.bos_id]] * 4, episodes, bksp=model.bksp_id, eos=model.eos_id,
                             pad_id=model.bos_id)
    with torch.no_grad():
        logits = model.network(layout.inputs, positions=layout.positions, attn_mask=layout.attn_mask)
        worst = 0.0
        for b, episode in enumerate(episodes):
            for t in range(len(episode)):
                state = [model.bos_id] + fold(episode[:t], bksp=model.bksp_id, eos=model.eos_id)
                alone = model.network(torch.tensor([state]))[0, -1]
                worst = max(worst, float((logits[b, layout.state_row[b, t]] - alone).abs().max()))
    assert worst <= 1e-5, worst


def test_kl_without_replay_is_position_weighted_mle() -> None:
    model = _model("objective.divergence={name: kl}", "objective.noise_rate=0.0", "objective.gamma=0.9")
    rng = np.random.default_rng(1)
    data = [list(rng.integers(0, 8, size=n)) for n in (10, 4, 7)]
    episodes = [[int(v) for v in row] + [model.eos_id] for row in data]
    with torch.no_grad():
        parts = model.losses(model.action_terms([[model.bos_id]] * 3, episodes, None, 3))
        total, count = 0.0, 0
        for row in episodes:  # teacher forcing, one sequence at a time, BKSP masked while nothing is generated
            logits = model.network(torch.tensor([[model.bos_id] + row[:-1]]))[0].double()
            logits[0, model.bksp_id] = float("-inf")
            logp = torch.log_softmax(logits, -1)
            for t, a in enumerate(row):
                total += -(0.9 ** t) * float(logp[t, a])
                count += 1
    assert float(parts["sm"]) == pytest.approx(total / count, abs=1e-5)
    assert float(parts["penalty"]) == 0.0
    chi2 = _model("objective.noise_rate=0.0", "objective.gamma=0.9")
    chi2.network.load_state_dict(model.network.state_dict())
    with torch.no_grad():
        parts2 = chi2.losses(chi2.action_terms([[model.bos_id]] * 3, episodes, None, 3))
    assert float(parts2["penalty"]) > 0 and float(parts2["sm"]) != pytest.approx(float(parts["sm"]))


def test_noise_emissions_are_not_imitated() -> None:
    model = _model("objective.noise_rate=0.0")
    episode = [3, 5, model.bksp_id, 4, model.eos_id]
    with torch.no_grad():
        flagged = model.losses(model.action_terms([[model.bos_id]], [episode], [[False, True, False, False, False]],
                                                  1))
        clean = model.action_terms([[model.bos_id]], [[3, 4, model.eos_id]], None, 1)
        plain = model.losses(clean)
        terms = model.action_terms([[model.bos_id]], [episode], None, 1)
        log_pi = (terms["q"] - terms["value"])[0]
    # BC over the flagged episode: the actions 3, BKSP, 4, EOS (not the noise token 5).
    expected = -float(log_pi[[0, 2, 3, 4]].mean())
    assert float(flagged["bc"]) == pytest.approx(expected, abs=1e-6)
    assert float(flagged["bc"]) != pytest.approx(float(plain["bc"]))


def test_generation_with_backspace_folds_and_respects_the_rules() -> None:
    model = _model("objective.action_cap=2.0")
    with torch.no_grad():  # make BKSP likely so that the paths are exercised
        model.network.head.weight[model.bksp_id] *= 0
        model.network.head.weight[model.bksp_id, 0] = 0.0
    episodes, backspaces = model.generate(64, generator=torch.Generator().manual_seed(0))
    assert len(episodes) == 64 and float(backspaces.sum()) > 0
    for episode in episodes:
        assert len(episode) <= 2 * model.max_len
        generated = 0
        for a in episode:  # BKSP never hits an empty state
            if a == model.bksp_id:
                assert generated > 0
                generated -= 1
            elif a != model.eos_id:
                generated += 1
        assert len(fold(episode, bksp=model.bksp_id, eos=model.eos_id)) <= model.max_len
    # The generated episodes are valid training input: the one-pass layout accepts every one of them.
    terms = model.action_terms([[model.bos_id]] * 64, episodes, None, 0)
    assert bool(torch.isfinite(terms["q"][terms["valid"]]).all())
    samples = model.sample(16, SampleContext.standalone(1))
    assert 0.0 <= samples.stats["backspace_rate"] <= 1.0 and int(samples.lengths.max()) <= model.max_len


@pytest.mark.e2e
def test_tiny_run_with_warm_up_and_replay(tmp_path: Path) -> None:
    overrides = [*tiny_markov(tmp_path, steps=8), "objective.name=sequence_match", "objective.bc_warmup=0.25",
                 "objective.replay_every=2", "objective.replay_batch=4", "objective.replay_rows=2",
                 "objective.noise_rate=0.2", "data.length=8"]
    assert main(["train", str(MARKOV_CONFIG), *overrides]) == 0
    run = next((tmp_path / "runs").iterdir())
    header = next(run.rglob("metrics.csv")).read_text().splitlines()[0]
    for term in ("bc", "expert", "penalty", "value", "sm", "mean_v", "mean_r", "lam"):
        assert f"train/{term}" in header, term


def test_top_k_and_top_p_filter_the_actions() -> None:
    model = _model()
    greedy, _ = model.generate(8, generator=torch.Generator().manual_seed(0), temperature=0.0)
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        filtered, _ = model.generate(8, generator=torch.Generator().manual_seed(5), temperature=1.0, **options)
        assert filtered == greedy
    sampled, _ = model.generate(8, generator=torch.Generator().manual_seed(5), temperature=1.0)
    assert sampled != greedy  # without a filter the same seed samples other actions
    samples = model.sample(8, SampleContext.standalone(5, top_k=1))
    lengths = samples.lengths.tolist()
    assert [samples.tokens[i, :n].tolist() for i, n in enumerate(lengths)] == [
        fold(e, bksp=model.bksp_id, eos=model.eos_id) for e in greedy]


# -- the corrected loss (issue: SequenceMatch second pass); each change is a switch whose default is the fix ---------
def _mixture_parts(model: Any, noise: bool) -> dict[str, Any]:
    """Losses of one data episode with a flagged noise emission (3, [5], BKSP, 4, EOS) and two replay episodes."""
    data = [3, 5, model.bksp_id, 4, model.eos_id]
    replay = [[1, 2, model.eos_id], [6, model.bksp_id, 7, 0, model.eos_id]]
    flags = [[False, noise, False, False, False], [False] * 3, [False] * 5]
    with torch.no_grad():
        terms = model.action_terms([[model.bos_id]] * 3, [data, *replay], flags, 1)
        return {"terms": terms, **model.losses(terms)}


def _mean(x: torch.Tensor, where: torch.Tensor) -> float:
    return float((x * where).sum() / where.sum())


def test_noise_emissions_are_out_of_the_mixture_terms_unless_switched_on() -> None:
    fixed = _model("objective.noise_rate=0.0", "objective.mixture=per_action", "objective.gamma=0.9")
    old = _model("objective.noise_rate=0.0", "objective.mixture=per_action", "objective.gamma=0.9",
                 "objective.noise_in_mixture=true")
    old.network.load_state_dict(fixed.network.state_dict())
    new, was = _mixture_parts(fixed, noise=True), _mixture_parts(old, noise=True)
    t = new["terms"]
    r = t["q"] - 0.9 * t["next_value"]
    w = 0.9 ** t["step"].double()
    penalty = r ** 2 / 4  # chi2 with alpha = 1
    clean = t["valid"] & ~t["noise"]
    assert float(new["penalty"]) == pytest.approx(_mean(w * penalty, clean), rel=1e-5)
    assert float(was["penalty"]) == pytest.approx(_mean(w * penalty, t["valid"]), rel=1e-5)
    assert float(new["penalty"]) != pytest.approx(float(was["penalty"]))
    assert float(new["value"]) == pytest.approx(_mean(w * (t["value"] - 0.9 * t["next_value"]), clean), rel=1e-5)
    assert float(new["r_noise"]) == pytest.approx(float(r[0, 1]), rel=1e-5)  # the one noise emission


def test_the_mixture_weighs_data_and_replay_equally() -> None:
    equal = _model("objective.noise_rate=0.0", "objective.gamma=0.9")
    per_action = _model("objective.noise_rate=0.0", "objective.gamma=0.9", "objective.mixture=per_action")
    per_action.network.load_state_dict(equal.network.state_dict())
    a, b = _mixture_parts(equal, noise=False), _mixture_parts(per_action, noise=False)
    t = a["terms"]
    r = t["q"] - 0.9 * t["next_value"]
    w = 0.9 ** t["step"].double()
    penalty = w * r ** 2 / 4
    data, replay = t["valid"] & t["is_data"], t["valid"] & ~t["is_data"]
    assert float(a["penalty"]) == pytest.approx(0.5 * _mean(penalty, data) + 0.5 * _mean(penalty, replay), rel=1e-5)
    assert float(b["penalty"]) == pytest.approx(_mean(penalty, t["valid"]), rel=1e-5)
    assert float(a["r_replay"]) == pytest.approx(_mean(r, replay), rel=1e-5)


def test_a_cut_window_bootstraps_its_last_value() -> None:
    boot = _model("objective.noise_rate=0.0", length=4, variable=False)
    cut = _model("objective.noise_rate=0.0", "objective.truncation=terminal", length=4, variable=False)
    cut.network.load_state_dict(boot.network.state_dict())
    episode = [[1, 2, 3, 4]]
    with torch.no_grad():
        a = boot.action_terms([[boot.bos_id]], episode, None, 1)
        b = cut.action_terms([[cut.bos_id]], episode, None, 1)
        after = boot.network(torch.tensor([[boot.bos_id, 1, 2, 3, 4]]))[0, -1]
    assert float(b["next_value"][0, 3]) == 0.0
    assert float(a["next_value"][0, 3]) == pytest.approx(float(after.logsumexp(-1)), rel=1e-5)
    assert torch.equal(a["next_value"][0, :3], b["next_value"][0, :3])


def test_diagnostics_are_the_quantities_they_name() -> None:
    model = _model("objective.noise_rate=0.0", "objective.gamma=0.9")
    parts = _mixture_parts(model, noise=True)
    t = parts["terms"]
    with torch.no_grad():
        logits = model.network(torch.tensor([[model.bos_id, 3]]))[0, -1].double()  # the clean state "3"
    probs = torch.softmax(logits, -1)
    # Data episode 3, [5], BKSP, 4, EOS: the clean states with something to delete are "3" (before the noise token,
    # whose action is not imitated) and "3 4" (before EOS); the state "3 5" (before BKSP) follows noise.
    clean = torch.tensor([[False, False, False, True, True]])
    assert float(parts["bksp_prob_clean"]) == pytest.approx(_mean(t["p_bksp"][:1], clean), rel=1e-6)
    assert float(t["p_bksp"][0, 1]) == pytest.approx(float(probs[model.bksp_id]), rel=1e-4)
    assert float(t["entropy"][0, 1]) == pytest.approx(float(-(probs * probs.log()).sum()), rel=1e-4)
    replay = t["valid"] & ~t["is_data"]
    assert float(parts["loglik_replay"]) == pytest.approx(_mean(t["q"] - t["value"], replay), rel=1e-5)
