"""A third-party plugin distribution, installed the way a user would install one, works end to end.

``tests/thirdparty`` is a separate distribution (``anyorder-example-plugins``) with its own ``setup.cfg``. It is
pip-installed once per session into a temporary ``--target`` directory (offline, without build isolation, so the
test environment is never modified), and every check runs in a subprocess whose ``PYTHONPATH`` starts with that
directory: this process never sees the plugins, so its registry stays as the other tests expect it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "thirdparty"
DIST = "anyorder-example-plugins"


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["WANDB_MODE"] = "offline"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _run(args: list[str], site: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=_env(site), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example distribution pip-installed into a private directory (built offline from a copy of the source)."""
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"installing the example distribution needs {module} in the test environment")
    base = tmp_path_factory.mktemp("thirdparty")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    src = base / "src"
    shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--no-cache-dir", "--quiet", "--target", str(target), str(src)],
        check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (target / "anyorder_example" / "bag_of_tokens" / "objective.py").is_file()
    return target


def test_plugins_are_listed_with_their_distribution(site: Path) -> None:
    result = _run(["-m", "anyorder.cli", "plugins", "--json"], site)
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for key in [("objective", "bag_of_tokens"), ("dataset", "repeat_pattern")]:
        assert key in rows, f"{key} missing from `anyorder plugins --json`: {sorted(rows)}"
        row = rows[key]
        assert (row["distribution"], row["version"], row["status"]) == (DIST, "0.2.0", "ok"), row
        assert row["target"].startswith("anyorder_example.")
        assert row["summary"] and row["summary"] != "(no summary)"
    # The built-in plugins are still there, still owned by anyorder.
    assert rows[("objective", "mle")]["distribution"] == "anyorder"
    # The distribution's own plugin kind: declared by it, listed with its plugins.
    assert rows[("smoother", "label")]["distribution"] == DIST and rows[("smoother", "label")]["status"] == "ok"
    assert rows[("network", "film_mlp")]["status"] == "ok"
    listed = _run(["-m", "anyorder.cli", "plugins", "--kind", "smoother"], site)
    assert listed.returncode == 0 and "label" in listed.stdout and "none" in listed.stdout, listed.stdout


def test_a_nested_plugin_of_a_declared_kind_is_selected_by_override(site: Path) -> None:
    result = _run(["-m", "anyorder.cli", "config", "tests/thirdparty/example.yaml", "objective.smoother.name=label",
                   "objective.smoother.eps=0.2", "--explain"], site)
    assert result.returncode == 0, result.stderr
    assert "smoother:\n    name: label\n    eps: 0.2" in result.stdout, result.stdout
    assert "eps" in result.stdout.split("# options of the plugins")[1]  # --explain shows the selected smoother
    bad = _run(["-m", "anyorder.cli", "config", "tests/thirdparty/example.yaml", "objective.smoother.name=label",
                "objective.smoother.eps=2"], site)
    assert bad.returncode == 2 and "eps must be in [0, 1)" in bad.stderr and "Traceback" not in bad.stderr
    unknown = _run(["-m", "anyorder.cli", "config", "tests/thirdparty/example.yaml", "objective.smoother.name=lable"],
                   site)
    assert unknown.returncode == 2 and "Did you mean 'label'" in unknown.stderr, unknown.stderr


NETWORK_CHECKS = textwrap.dedent(
    """
    import pytest, torch
    from anyorder.errors import ConfigError
    from anyorder.module import build_network
    from anyorder.network import Conditioning, NetworkIO
    io = NetworkIO((6,), (6,), 5, conditioning=Conditioning.VECTOR, condition_dim=3)
    net = build_network({"name": "film_mlp", "width": 8}, io)
    x, c = torch.randint(0, 6, (4, 5)), torch.randn(4, 3)
    out = net(x, condition=c)
    assert out.shape == (4, 5, 6)
    assert (net(x, condition=c + 1) - out).abs().max() > 1e-4  # the vector reaches the logits
    try:
        build_network({"name": "film_mlp"}, NetworkIO((6,), (6,), 5, conditioning=Conditioning.PREFIX,
                                                       condition_dim=3, condition_len=2))
    except ConfigError as exc:
        assert "cannot be conditioned on a prefix" in str(exc)
    else:
        raise AssertionError("a prefix conditioning was accepted")
    print("ok")
    """
)


def test_a_thirdparty_network_conditioned_on_a_vector(site: Path) -> None:
    result = _run(["-c", NETWORK_CHECKS], site)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"{result.stdout}\n{result.stderr}"


def test_unknown_option_names_the_plugin_and_its_distribution(site: Path) -> None:
    result = _run(["-m", "anyorder.cli", "config", "tests/thirdparty/example.yaml", "objective.bogus=1"], site)
    assert result.returncode == 2, (result.stdout, result.stderr)
    for word in ("bogus", "bag_of_tokens", DIST):
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_train_with_thirdparty_plugins(site: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = _run(["-m", "anyorder.cli", "train", "tests/thirdparty/example.yaml", f"output_dir={runs}",
                   "name=example", "logger.name=csv", "train.max_steps=40", "train.val_every_n_steps=20",
                   "train.ckpt_every_n_steps=20", "objective.smoother.name=label", "objective.smoother.eps=0.01"],
                  site, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    run = runs / "example"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((run / "eval" / "test-final.json").read_text())
    assert report["protocol"]["step"] == 40
    assert report["protocol"]["likelihood"] == "exact"
    # 40 Adam steps fit 8 logits: the test NLL is the best any unigram model can do, up to sampling noise.
    best = report["reference"]["best_unigram_nll_nats"]
    assert abs(report["nll_nats"] - best) < 5 * report["nll_nats_se"] + 0.03, (report["nll_nats"], best)
    # The evaluation terms and statistics are in the report: the terms add up to the likelihood.
    terms = report["terms"]
    total = terms["token_nats"]["per_token"] + terms["stop_nats"]["per_token"]
    assert abs(total - report["nll_nats"]) < 1e-9
    assert report["statistics"]["distinct_datapoints"] <= report["num_sequences"] == 64
    assert "test stop_nats" not in result.stdout and "stop_nats" in result.stdout  # printed beside the NLL
    manifest = json.loads((run / "manifest.json").read_text())
    plugins = {(p["kind"], p["name"]): p for p in manifest["plugins"]}
    assert plugins[("smoother", "label")]["distribution"] == DIST  # the nested plugin is recorded
    assert plugins[("objective", "bag_of_tokens")]["distribution"] == DIST
    assert plugins[("dataset", "repeat_pattern")]["distribution"] == DIST
    assert plugins[("objective", "bag_of_tokens")]["version"] == "0.2.0"
    assert manifest["packages"][DIST] == "0.2.0"
    samples = sorted((run / "samples").glob("val-step*.txt"))
    assert samples and samples[-1].read_text().strip()


CHECKS = textwrap.dedent(
    """
    import itertools, math
    import numpy as np
    import torch
    from anyorder.data import DataSpace
    from anyorder.objective import BuildContext, EvalContext, SampleContext, StepContext
    from anyorder_example.bag_of_tokens.config import BagOfTokensConfig
    from anyorder_example.bag_of_tokens.objective import BagOfTokens
    from anyorder_example.repeat_pattern.config import RepeatPatternConfig
    from anyorder_example.repeat_pattern.data import RepeatPatternDataModule

    D, V = 3, 3
    for variable in (False, True):
        space = DataSpace.sequence(D, V, variable_length=variable)
        torch.manual_seed(0)
        model = BagOfTokens(BagOfTokensConfig(init_std=1.0), BuildContext.standalone(space))
        # Every datapoint of the space: all token strings of every allowed length, padded with 0.
        rows, lengths = [], []
        for n in (range(D + 1) if variable else [D]):
            for s in itertools.product(range(V), repeat=n):
                rows.append(list(s) + [0] * (D - n))
                lengths.append(n)
        batch = {"tokens": torch.tensor(rows), "lengths": torch.tensor(lengths)}
        ll = model.log_likelihood(batch, EvalContext())
        # The evaluation terms split the likelihood exactly.
        assert torch.allclose(ll.terms["token_nats"] + ll.terms["stop_nats"], -ll.log_prob)
        stats = model.evaluation_statistics()
        for stat in stats.values():
            stat.update(ll.outputs)
        values = {k: float(v) for stat in stats.values() for k, v in stat.compute().items()}
        assert values["distinct_datapoints"] == len(rows)
        assert math.isclose(values["length_variance"], float(np.var(lengths)), abs_tol=1e-12)
        total = float(torch.logsumexp(ll.log_prob, 0).exp())
        assert abs(total - 1.0) < 1e-12, (variable, total)
        out = model.loss(batch, StepContext.standalone())
        assert torch.allclose(out.nats.double(), -ll.log_prob.sum(), rtol=1e-5), (out.nats, ll.log_prob.sum())
        assert int(out.num_tokens) == int(ll.num_tokens.sum())
        # Samples follow the model: the empirical law of whole datapoints matches p(x).
        draws = model.sample(60000, SampleContext.standalone(1))
        assert draws.tokens.shape == (60000, D)
        index = {tuple(r) + (n,): i for i, (r, n) in enumerate(zip(rows, lengths))}
        counts = np.zeros(len(rows))
        for r, n in zip(draws.tokens.tolist(), draws.lengths.tolist()):
            counts[index[tuple(r) + (n,)]] += 1
        p = ll.log_prob.detach().exp().numpy()
        z = np.abs(counts / 60000 - p) / np.sqrt(p * (1 - p) / 60000)
        assert z.max() < 5, (variable, z.max())

    c = RepeatPatternConfig(vocab_size=5, length=12, period=4, noise=0.3, num_train=40000, num_val=10, num_test=10)
    data = RepeatPatternDataModule(c, seed=0, global_batch_size=8)
    splits = data.splits
    again = RepeatPatternDataModule(c, seed=0, global_batch_size=8).splits
    assert torch.equal(splits.train.tokens, again.train.tokens)
    assert not torch.equal(splits.val.tokens, splits.test.tokens)
    x = splits.train.tokens.numpy()
    empirical = np.stack([np.bincount(x[:, t], minlength=5) for t in range(12)]) / len(x)
    assert np.abs(empirical - data.marginals()).max() < 0.02
    avg = data.marginals().mean(0)
    assert math.isclose(data.reference()["best_unigram_nll_nats"], float(-(avg * np.log(avg)).sum()))
    clean = RepeatPatternDataModule(RepeatPatternConfig(noise=0.0, random_phase=False))
    assert (clean.splits.train.tokens == torch.from_numpy(np.resize(clean.pattern, 32))).all()
    print("ok")
    """
)


def test_objective_and_dataset_are_exact(site: Path) -> None:
    """bag_of_tokens: p(x) sums to 1 (fixed and variable length), loss nats = -log p, samples follow p;
    repeat_pattern: seeded splits and exact marginals."""
    result = _run(["-c", CHECKS], site)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"{result.stdout}\n{result.stderr}"


@pytest.mark.e2e
def test_evaluation_terms_and_statistics_are_exact_over_two_ranks(site: Path, tmp_path: Path) -> None:
    """`anyorder evaluate` on 2 DDP ranks (gloo, CPU) reports the same likelihood, terms and set-level statistics as
    on one process: sums are reduced, and the gathered statistic sees every datapoint once."""
    runs = tmp_path / "runs"
    train = _run(["-m", "anyorder.cli", "train", "tests/thirdparty/example.yaml", f"output_dir={runs}", "name=ddp",
                  "logger.name=none", "train.max_steps=4", "train.test_at_end=false", "sample.num_val_samples=0",
                  "data.num_test=37"], site, timeout=300)
    assert train.returncode == 0, train.stderr
    reports = []
    for devices in (1, 2):
        out = tmp_path / f"eval{devices}.json"
        extra = ["trainer.strategy=ddp"] if devices == 2 else []
        result = _run(["-m", "anyorder.cli", "evaluate", str(runs / "ddp"), "--out", str(out), "eval.batch_size=8",
                       "trainer.accelerator=cpu", f"trainer.devices={devices}", *extra], site, timeout=300)
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
        reports.append(json.loads(out.read_text()))
    one, two = reports
    assert two["protocol"]["world_size"] == 2 and one["num_sequences"] == two["num_sequences"] == 37
    assert one["num_tokens"] == two["num_tokens"]
    assert abs(one["nll_nats"] - two["nll_nats"]) < 1e-12
    for name, term in one["terms"].items():
        for key, value in term.items():
            assert abs(value - two["terms"][name][key]) < 1e-9, (name, key)
    assert one["statistics"] == pytest.approx(two["statistics"], abs=1e-12)


LAPLACE_CHECKS = textwrap.dedent(
    """
    import math, torch
    from anyorder.module import build_plugin
    family = build_plugin("latent", {"name": "laplace"}, 3)
    params = torch.tensor([[0.3, -1.2, 0.0, 0.5, -0.4, 1.1]], dtype=torch.float64)
    q = family.posterior(params)
    z = q.rsample(400000, torch.Generator().manual_seed(0))
    log_ratio = q.log_prob(z) - family.prior().log_prob(z)
    mc, se = float(log_ratio.mean()), float(log_ratio.std()) / math.sqrt(z.shape[0])
    assert abs(mc - float(q.kl().sum())) < 4 * se, (mc, float(q.kl().sum()), se)
    assert torch.allclose(z.mean(0), q.mean(), atol=0.02)
    pairs = q.log_prob_pairs(z[:5, 0])
    assert torch.allclose(pairs[:, 0], q.log_prob(z[:5]).squeeze(-1))
    print("ok")
    """
)


def test_a_thirdparty_latent_family_of_a_kind_another_distribution_declares(site: Path, tmp_path: Path) -> None:
    checks = _run(["-c", LAPLACE_CHECKS], site)
    assert checks.returncode == 0 and checks.stdout.strip().endswith("ok"), f"{checks.stdout}\n{checks.stderr}"
    runs = tmp_path / "runs"
    result = _run(["-m", "anyorder.cli", "train", "configs/ptb/sentence_vae.yaml", "objective.latent.name=laplace",
                   f"output_dir={runs}", "name=laplace", "logger.name=none", "data.num_train=64", "train.max_steps=2",
                   "train.val_every_n_steps=2", "train.limit_val_batches=1", "train.global_batch_size=8",
                   "trainer.limit_test_batches=2", "objective.latent_dim=4", "network.d_hidden=16",
                   "network.d_embed=8", "objective.encoder.d_hidden=16", "objective.encoder.d_embed=8",
                   "sample.num_val_samples=2", "sample.num_final_samples=0"], site, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    report = json.loads((runs / "laplace" / "eval" / "test-final.json").read_text())
    assert report["protocol"]["estimator"]["latent"]["name"] == "laplace"
    assert report["terms"]["kl"]["per_sequence"] > 0
    manifest = json.loads((runs / "laplace" / "manifest.json").read_text())
    assert {(p["kind"], p["name"], p["distribution"]) for p in manifest["plugins"]} >= {("latent", "laplace", DIST)}
