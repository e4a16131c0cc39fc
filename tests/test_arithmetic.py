"""The ``arithmetic`` dataset (add-or-sub in a base) and its ``arithmetic_accuracy`` metric."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from anyorder.errors import ConfigError, DataError
from anyorder_plugins.arithmetic.config import ArithmeticConfig
from anyorder_plugins.arithmetic.data import ArithmeticDataModule, prompt_lengths
from anyorder_plugins.arithmetic.equations import DIGITS, is_correct, parse_equation, solve, to_base
from anyorder_plugins.arithmetic.metric import ArithmeticAccuracy
from anyorder_plugins.arithmetic.metric_config import ArithmeticAccuracyConfig

SMALL = {"base": 5, "max_digits": 2, "num_train": 300, "num_val": 40, "num_test": 50, "seed": 3}


def _digits(value: int, base: int) -> str:
    """Independent formatting for the checks: repeated division, written with a list and a sign prefix."""
    if value == 0:
        return "0"
    out = ""
    n = abs(value)
    while n > 0:
        out = DIGITS[n % base] + out
        n //= base
    return "-" + out if value < 0 else out


def _dm(**options: object) -> ArithmeticDataModule:
    dm = ArithmeticDataModule(ArithmeticConfig(**{**SMALL, **options}))  # type: ignore[arg-type]
    dm.setup()
    return dm


def _triples(dm: ArithmeticDataModule, split: str) -> list[tuple[int, str, int]]:
    """(a, op, b) parsed back from the split's tokens (not from the generator's own list)."""
    data = getattr(dm.splits, split)
    out = []
    for row, length in zip(data.tokens, data.lengths.tolist(), strict=True):
        parsed = parse_equation(dm.decode(row, length), dm.config.base)
        assert parsed is not None
        out.append(parsed[:3])
    return out


# -- solve --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", [2, 3, 7, 10, 16])
def test_solve_matches_python_ints(base: int) -> None:
    rng = random.Random(base)
    for _ in range(400):
        a, b = rng.randint(-5000, 5000), rng.randint(-5000, 5000)
        op = rng.choice("+-")
        question = f"{_digits(a, base)}{op}{_digits(b, base)}="
        expected = a + b if op == "+" else a - b
        answer = solve(question, base)
        assert answer == _digits(expected, base)
        assert int(answer, base) == expected
        assert answer == to_base(expected, base)
        assert not answer.lstrip("-").startswith("0") or answer == "0"


def test_solve_examples_and_errors() -> None:
    assert solve("25-143=", 7) == "-115"
    assert solve("0-0=", 2) == "0"
    assert solve("-1--1=", 3) == "0"
    assert solve("f+1=", 16) == "10"
    assert solve("-a+-5=", 11) == "-14"
    for bad in ("25-143", "25*3=", "28+1=", "+3=", "3+=", "", "1+2=3"):
        with pytest.raises(DataError):
            solve(bad, 7)
    with pytest.raises(ValueError):
        solve("1+1=", 17)


# -- the dataset --------------------------------------------------------------------------------------------------------
def test_splits_sizes_and_determinism() -> None:
    dm, again = _dm(), _dm()
    for split, n in (("train", 300), ("val", 40), ("test", 50)):
        a, b = getattr(dm.splits, split), getattr(again.splits, split)
        assert len(a) == n
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    other = _dm(seed=4)
    assert not torch.equal(other.splits.train.tokens, dm.splits.train.tokens)
    # The test questions come first, so they do not change with the training split's size.
    bigger = _dm(num_train=500)
    assert torch.equal(bigger.splits.test.tokens, dm.splits.test.tokens)


def test_held_out_and_distinct() -> None:
    dm = _dm()
    train, val, test = (set(_triples(dm, s)) for s in ("train", "val", "test"))
    assert len(train) == 300 and len(val) == 40 and len(test) == 50  # distinct within each split
    assert not train & val and not train & test and not val & test


def test_every_answer_is_correct_and_in_range() -> None:
    dm = _dm(base=7, max_digits=3, num_train=1000)
    base, m = 7, 3
    for split in ("train", "val", "test"):
        data = getattr(dm.splits, split)
        for row, length in zip(data.tokens, data.lengths.tolist(), strict=True):
            text = dm.decode(row, length)
            assert len(text) == length <= dm.space.num_variables
            assert torch.all(row[length:] == 0)  # padding
            a, op, b, c = parse_equation(text, base)  # type: ignore[misc]
            assert int(c, base) == (a + b if op == "+" else a - b) and c == _digits(int(c, base), base)
            assert max(abs(a), abs(b)) < base**m
            assert is_correct(text, base) == (True, True)
    lengths = dm.splits.train.lengths
    assert lengths.min() >= 4 and lengths.max() <= dm.space.num_variables
    assert len(set(lengths.tolist())) > 3  # really variable length
    # Both signs, both operators and every digit count show up.
    triples = _triples(dm, "train")
    assert {op for _, op, _ in triples} == {"+", "-"}
    assert any(a < 0 for a, _, _ in triples) and any(a > 0 for a, _, _ in triples)
    assert {len(_digits(abs(a), base)) for a, _, _ in triples} == {1, 2, 3}


def test_non_negative_operands() -> None:
    dm = _dm(negative=False)
    assert all(a >= 0 and b >= 0 for a, _, b in _triples(dm, "train"))
    assert dm.space.num_variables == 3 * 2 + 4


def test_space_and_vocab() -> None:
    dm = _dm(base=7, max_digits=3)
    space = dm.space
    assert space.structure == "sequence" and space.variable_length
    assert space.token_names == tuple("0123456") + ("+", "-", "=")
    assert space.vocab_size == 10 and dm.equals_id == 9
    assert space.num_variables == 3 * 3 + 6  # -ddd-ddd=-dddd
    # The longest possible datapoint fits exactly.
    longest = "-666--666=" + solve("-666--666=", 7)
    assert len(longest) < space.num_variables
    longest = "-666+-666=" + solve("-666+-666=", 7)
    assert len(longest) == space.num_variables
    assert dm.encode([longest]).lengths.tolist() == [space.num_variables]
    assert dm.default_metrics() == [{"name": "arithmetic_accuracy", "base": 7}]
    protocol = dm.protocol()
    assert protocol["base"] == 7 and protocol["operand_digits"] == [1, 3] and protocol["seed"] == 3
    assert protocol["split_sizes"] == {"train": 300, "val": 40, "test": 50}
    json.dumps(protocol)
    json.dumps(dm.splits.info)


def test_encode_decode_round_trip() -> None:
    dm = _dm()
    data = dm.splits.val
    texts = [dm.decode(row, n) for row, n in zip(data.tokens, data.lengths.tolist(), strict=True)]
    assert [dm.to_text(t) for t in texts] == texts
    again = dm.encode(texts)
    assert torch.equal(again.tokens, data.tokens) and torch.equal(again.lengths, data.lengths)
    # A wrong answer still encodes (it is a well-formed datapoint).
    assert dm.decode(dm.encode(["1+1=3"]).tokens[0], 5) == "1+1=3"


@pytest.mark.parametrize("bad", ["1+7=3", "1*1=2", "1+1", "12", "1+1=2=2", "1+=2", "=2", "1+1=", "1 + 1 = 2",
                                 "-44+-44=-1433333333"])
def test_encode_rejects_bad_strings(bad: str) -> None:
    dm = _dm()
    with pytest.raises(DataError):
        dm.encode([bad])


def test_prompts() -> None:
    dm = _dm()
    data = dm.splits.test
    pairs = dm.prompts_and_answers("test")
    lengths = dm.split_prompt_lengths("test")
    assert torch.equal(lengths, dm.prompt_lengths(data.tokens, data.lengths, dm.equals_id))
    for i, (prompt, answer) in enumerate(pairs):
        assert prompt.endswith("=") and prompt.count("=") == 1
        assert solve(prompt, dm.config.base) == answer
        assert dm.prompt_length(data.tokens[i], int(data.lengths[i])) == len(prompt) == int(lengths[i])
        assert dm.decode(data.tokens[i], int(data.lengths[i])) == prompt + answer
    # No '=' within the length: prompt length 0 (and a '=' in the padding does not count).
    tokens = torch.tensor([[1, dm.equals_id + 0, 2], [1, 2, dm.equals_id]])
    assert prompt_lengths(tokens, torch.tensor([3, 2]), dm.equals_id).tolist() == [2, 0]
    with pytest.raises(DataError):
        dm.prompt_length(tokens[1], 2)


@pytest.mark.parametrize("options", [
    {"base": 1}, {"base": 17}, {"max_digits": 0}, {"max_digits": 9}, {"num_train": 0}, {"num_val": -1},
    {"num_test": -1}, {"seed": -1}, {"base": 2, "max_digits": 1, "num_train": 10, "num_val": 0, "num_test": 0},
])
def test_bad_options(options: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        ArithmeticDataModule(ArithmeticConfig(**{**SMALL, **options}))  # type: ignore[arg-type]


def test_smallest_space_fills() -> None:
    # base 2, one digit, signed: operands {-1, 0, 1}, 18 questions; half of them can be drawn.
    dm = _dm(base=2, max_digits=1, num_train=5, num_val=2, num_test=2)
    assert len({*_triples(dm, "train"), *_triples(dm, "val"), *_triples(dm, "test")}) == 9


# -- the metric ---------------------------------------------------------------------------------------------------------
SAMPLES = ["25-143=-115", "25-143=-114", "1+1=2", "6+1=10", "6+1=7", "-0+0=0", "0+0=-0", "3+4=007", "3+4=10",
           "", "=", "1+1=", "1+1", "1+8=2", "1++1=2", "1+-1=0", "abc", "2-3=-1"]


def _direct(samples: list[str], base: int) -> tuple[float, float]:
    well = correct = 0
    for s in samples:
        m = re.fullmatch(r"(-?[0-6]+)([+-])(-?[0-6]+)=(-?[0-6]+)", s)
        if m is None:
            continue
        well += 1
        a, op, b, c = m.groups()
        value = int(a, base) + int(b, base) if op == "+" else int(a, base) - int(b, base)
        correct += c == _digits(value, base)
    return correct / len(samples), well / len(samples)


def test_metric_matches_direct_count() -> None:
    metric = ArithmeticAccuracy(ArithmeticAccuracyConfig(base=7))
    metric.update(SAMPLES)
    out = metric.compute()
    accuracy, well = _direct(SAMPLES, 7)
    assert accuracy == pytest.approx(7 / 18)  # hand count: the correct ones
    assert float(out["accuracy"]) == pytest.approx(accuracy)
    assert float(out["well_formed"]) == pytest.approx(well)
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = ArithmeticAccuracy(ArithmeticAccuracyConfig(base=7)).compute()
    assert float(empty["accuracy"]) == 0.0 and float(empty["well_formed"]) == 0.0


def test_metric_on_dataset_is_perfect() -> None:
    dm = _dm()
    options = {k: v for k, v in dm.default_metrics()[0].items() if k != "name"}
    metric = ArithmeticAccuracy(ArithmeticAccuracyConfig(**options), dm)
    data = dm.splits.train
    metric.update([dm.decode(r, n) for r, n in zip(data.tokens, data.lengths.tolist(), strict=True)])
    assert float(metric.compute()["accuracy"]) == 1.0


def test_metric_merges_like_ddp() -> None:
    whole = ArithmeticAccuracy(ArithmeticAccuracyConfig(base=7))
    whole.update(SAMPLES)
    first, second = (ArithmeticAccuracy(ArithmeticAccuracyConfig(base=7)) for _ in range(2))
    first.update(SAMPLES[:7])
    second.update(SAMPLES[7:])
    # The sum reduction DDP applies, done by hand ...
    summed = {k: getattr(first, k) + getattr(second, k) for k in ("total", "well_formed", "correct")}
    assert all(torch.equal(summed[k], getattr(whole, k)) for k in summed)
    # ... and through torchmetrics' own merge.
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)


def test_metric_bad_base() -> None:
    with pytest.raises(ConfigError):
        ArithmeticAccuracy(ArithmeticAccuracyConfig(base=20))


# -- end to end ---------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_trains_with_mle(tmp_path: Path) -> None:
    from anyorder.train import train

    config = tmp_path / "arithmetic-mle.yaml"
    config.write_text(
        "seed: 0\n"
        "objective: {name: mle}\n"
        "network: {name: causal_transformer, n_layers: 1, d_model: 16, n_heads: 2}\n"
        "data: {name: arithmetic, base: 7, max_digits: 2, num_train: 64, num_val: 8, num_test: 8}\n"
        "metrics:\n  - {name: arithmetic_accuracy, base: 7}\n"
    )
    run = train(str(config), [
        f"output_dir={tmp_path / 'runs'}", "logger.name=csv", "train.max_steps=2", "train.global_batch_size=4",
        "train.val_batch_size=4", "train.val_every_n_steps=2", "train.limit_val_batches=2",
        "sample.num_val_samples=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.limit_test_batches=2", "trainer.precision=32-true", "train.compile=false",
    ])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((run / "eval" / "test-final.json").read_text())
    assert report["protocol"]["data"]["name"] == "arithmetic" and report["num_sequences"] == 8
    # The accuracy metric scored the validation samples (random ones after 2 steps).
    header = next(iter(sorted((run / "logs").rglob("metrics.csv")))).read_text().splitlines()[0].split(",")
    assert {"val/accuracy", "val/well_formed", "val/nll"} <= set(header)
