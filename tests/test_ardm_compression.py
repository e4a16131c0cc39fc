"""OA-ARDM rANS compression: bit-exact round trips, size against the ideal code length, call counts and the container."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from anyorder_plugins.ardm.compression import (
    MAGIC,
    CompressedFileError,
    check_model,
    compress,
    data_digest,
    decode,
    decompress,
    encode,
    ideal_bits,
    read_container,
    write_container,
)

D = 12
VOCAB = [2, 3, 5, 4, 2, 5, 3, 3, 2, 4, 5, 2]
KMAX = max(VOCAB)
EPS = 2e-5
POLICIES = [(0,), (0, 1, 5, 6, 11), (0, 3, 4, 9), tuple(range(D))]
"""Budget 1, two ragged policies and budget D."""


class TableModel:
    """A deterministic toy ARDM: fixed random logits indexed by variable and by a hash of the known values.

    The hash mixes every known variable's index and value, so the context matters; the logits are returned as they
    are (no arithmetic), so a row's output does not depend on the batch it is in. Records the batch size of each call.
    """

    def __init__(self, seed: int, *, buckets: int = 61, dtype: torch.dtype = torch.float64) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.logits = (2.0 * torch.randn(buckets, D, KMAX, generator=gen, dtype=torch.float64)).to(dtype)
        self.weights = torch.randint(1, 10_000, (D,), generator=gen)
        self.buckets = buckets
        self.calls: list[int] = []

    def bucket(self, x: Tensor, known: Tensor) -> Tensor:
        """The context hash ``[B]`` of the known values (unknown entries contribute nothing)."""
        return ((x + 1) * known * self.weights).sum(1) % self.buckets

    def __call__(self, x: Tensor, known: Tensor, t: Tensor) -> Tensor:
        assert x.dtype == torch.long and known.dtype == torch.bool and t.dtype == torch.long
        assert torch.equal(t, known.sum(1)) and not x[~known].any()
        self.calls.append(x.shape[0])
        return self.logits[self.bucket(x, known)]


def _sigma(seed: int) -> Tensor:
    return torch.randperm(D, generator=torch.Generator().manual_seed(seed))


def _data(num: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Skewed values (mostly small) so the data are not uniform noise; each column stays inside its vocabulary.
    u = torch.rand(num, D, generator=gen) ** 2
    return (u * torch.tensor(VOCAB)).long()


def _reference_bits(model: TableModel, data: Tensor, sigma: Tensor, policy: tuple[int, ...]) -> float:
    """``-log2 p(data)`` datapoint by datapoint, variable by variable, straight from the table (independent code)."""
    logits = model.logits.double().numpy()
    weights = model.weights.numpy()
    steps = sigma.numpy()
    bounds = [*policy, D]
    total = 0.0
    for row in data.numpy():
        for left, right in itertools.pairwise(bounds):
            known = steps < left
            bucket = int(((row + 1) * known * weights).sum() % model.buckets)
            for d in range(D):
                if left <= steps[d] < right:
                    k = VOCAB[d]
                    z = logits[bucket, d, :k]
                    soft = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
                    total -= math.log2((1 - EPS * k) * soft[row[d]] + EPS)
    return total


def _round_trip(model: TableModel, data: Tensor, sigma: Tensor, policy: tuple[int, ...], batch_size: int) -> np.ndarray:
    words = encode(model, data, VOCAB, sigma, policy, batch_size=batch_size, eps=EPS)
    assert words.dtype == np.uint32
    decoded = decode(model, words, data.shape[0], VOCAB, sigma, policy, batch_size=batch_size, eps=EPS)
    assert decoded.dtype == torch.long and torch.equal(decoded, data)
    return words


@pytest.mark.parametrize("policy", POLICIES)
def test_single_datapoints_round_trip(policy: tuple[int, ...]) -> None:
    model = TableModel(0)
    for seed in range(5):
        _round_trip(model, _data(1, seed), _sigma(seed), policy, batch_size=1)


@pytest.mark.parametrize("policy", POLICIES)
def test_dataset_round_trip_with_a_partial_last_batch(policy: tuple[int, ...]) -> None:
    _round_trip(TableModel(1), _data(50, 7), _sigma(3), policy, batch_size=8)


def test_float32_model_and_empty_dataset_round_trip() -> None:
    model = TableModel(2, dtype=torch.float32)
    _round_trip(model, _data(20, 1), _sigma(1), (0, 2, 7), batch_size=6)
    _round_trip(model, _data(0, 1), _sigma(1), (0, 2, 7), batch_size=6)


@pytest.mark.parametrize("policy", [(0,), (0, 3, 4, 9), tuple(range(D))])
def test_size_is_within_one_percent_of_the_ideal_code_length(policy: tuple[int, ...]) -> None:
    model, data, sigma = TableModel(4), _data(400, 11), _sigma(5)
    words = _round_trip(model, data, sigma, policy, batch_size=64)
    ideal = ideal_bits(model, data, VOCAB, sigma, policy, batch_size=64, eps=EPS)
    assert ideal == pytest.approx(_reference_bits(model, data, sigma, policy), rel=1e-9)
    assert ideal > 5000  # big enough for 1% (> 50 bits) to dominate the coder's constant overhead
    assert 32 * len(words) <= 1.01 * ideal + 64


def test_model_calls_per_batch_equal_the_budget() -> None:
    data, sigma = _data(50, 2), _sigma(2)
    for policy in POLICIES:
        model = TableModel(5)
        words = encode(model, data, VOCAB, sigma, policy, batch_size=8, eps=EPS)
        # 6 full batches of 8 and a last batch of 2, each making exactly one call per interval.
        assert Counter(model.calls) == {8: 6 * len(policy), 2: len(policy)}
        model.calls.clear()
        decode(model, words, 50, VOCAB, sigma, policy, batch_size=8, eps=EPS)
        assert Counter(model.calls) == {8: 6 * len(policy), 2: len(policy)}


def test_bad_streams_raise_instead_of_returning_data() -> None:
    model, data, sigma, policy = TableModel(6), _data(30, 3), _sigma(4), (0, 3, 4, 9)
    words = encode(model, data, VOCAB, sigma, policy, batch_size=8, eps=EPS)
    extra = np.concatenate([words, np.array([12345], dtype=np.uint32)])
    for bad in (words[:-1], words[1:], words[:2], extra, np.concatenate([np.array([7], dtype=np.uint32), words])):
        with pytest.raises(CompressedFileError, match="rANS stream"):
            decode(model, bad, 30, VOCAB, sigma, policy, batch_size=8, eps=EPS)
    with pytest.raises(CompressedFileError, match="rANS stream"):  # more datapoints than were encoded
        decode(model, words, 31, VOCAB, sigma, policy, batch_size=8, eps=EPS)


def _compressed_file(tmp_path: Path) -> tuple[Path, TableModel, Tensor]:
    model, data, sigma = TableModel(7), _data(40, 5), _sigma(6)
    header, words = compress(
        model, data, VOCAB, sigma, (0, 2, 7), batch_size=16, eps=EPS, model_hash="abc123", sigma_seed=6,
        extra={"note": "test"},
    )
    path = tmp_path / "files" / "data.ardm"  # a directory of its own: the test environment puts files in tmp_path
    write_container(path, header, words)
    return path, model, data


def test_container_round_trip_is_atomic_and_carries_the_header(tmp_path: Path) -> None:
    path, model, data = _compressed_file(tmp_path)
    path, model, data = _compressed_file(tmp_path)  # overwriting leaves no temp file either
    assert [p.name for p in path.parent.iterdir()] == ["data.ardm"]
    assert path.read_bytes().startswith(MAGIC)
    header, words = read_container(path)
    assert header["model_hash"] == "abc123" and header["sigma_seed"] == 6 and header["extra"] == {"note": "test"}
    assert header["num"] == 40 and header["num_variables"] == D and header["vocab_sizes"] == VOCAB
    assert header["policy"] == [0, 2, 7] and header["batch_size"] == 16 and header["eps"] == EPS
    assert header["sigma"] == _sigma(6).tolist() and header["data_sha256"] == data_digest(data)
    assert torch.equal(decompress(model, header, words, model_hash="abc123"), data)


def test_damaged_truncated_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    path, _, _ = _compressed_file(tmp_path)
    raw = path.read_bytes()
    cases = {
        "damaged": raw[:-40] + bytes([raw[-40] ^ 0x10]) + raw[-39:],  # one bit of the last words
        "truncated": raw[:-10],
        "not an anyorder compressed file": b"PK\x03\x04" + raw[4:],
        "format version": raw[: len(MAGIC)] + (99).to_bytes(4, "little") + raw[len(MAGIC) + 4 :],
    }
    for words, damaged in cases.items():
        bad = tmp_path / "bad.ardm"
        bad.write_bytes(damaged)
        with pytest.raises(CompressedFileError, match=words):
            read_container(bad)
    for cut in (3, len(MAGIC) + 2, len(MAGIC) + 20):
        bad.write_bytes(raw[:cut])
        with pytest.raises(CompressedFileError, match="truncated"):
            read_container(bad)


def test_another_model_is_refused(tmp_path: Path) -> None:
    path, _, _ = _compressed_file(tmp_path)
    header, words = read_container(path)
    with pytest.raises(CompressedFileError, match="compressed with model abc123, this model is def456; decompress with"):
        check_model(header, "def456")
    with pytest.raises(CompressedFileError, match="compressed with model abc123"):
        decompress(TableModel(7), header, words, model_hash="def456")
    # A model that claims the right hash but computes other probabilities: caught by the digest, not returned.
    with pytest.raises(CompressedFileError, match="digest"):
        decompress(TableModel(8), header, words, model_hash="abc123")
    assert issubclass(CompressedFileError, ValueError)
