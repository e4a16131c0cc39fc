"""Lossless compression with an OA-ARDM: rANS coding of discrete data under a fixed order and a budgeted policy.

An order-agnostic ARDM over ``D`` discrete variables (variable ``d`` takes values ``0 .. K_d - 1``) is a family of
conditionals: given the values of any set of known variables, one network call gives a categorical distribution for
every unknown one. To compress, fix one permutation ``sigma`` (``sigma[d]`` is the generation step of variable ``d``)
and a policy, the strictly increasing start steps ``0 = p[0] < ... < p[B-1] <= D-1`` of ``B`` network calls
(``p[B] = D``). Interval ``[l, r)`` makes one call on "``x`` where ``sigma < l``, else unknown" and codes the variables
with ``l <= sigma < r`` with the distributions it returns. There is no bits-back: one datapoint costs the same per
variable as a whole dataset.

rANS is a stack. The decoder runs the intervals forward, making the same network calls on the partially decoded data,
so the encoder pushes the symbols in the reverse of that order. Encoder and decoder must see bitwise-identical
probabilities: a network's float results can depend on the batch it runs in, so both process the data in the same
batches of ``batch_size`` datapoints (the last one smaller) and call the model with exactly the same inputs, one call
per interval and batch.

Stream layout (the words of one :class:`constriction.stream.stack.AnsCoder`), in decoding order: batch 0, batch 1,
..., then a 32-bit end marker. Within a batch, interval by interval; within an interval, one chunk per distinct
vocabulary size ``K`` (ascending), holding the variables of that size in the interval (ascending ``d``) for every
datapoint of the batch, datapoint-major. The end marker (two uniform 16-bit symbols pushed first, so decoded last)
lets the decoder tell a complete stream from an exhausted or damaged one, which rANS alone cannot: decoding from an
empty coder silently yields zeros.

The container file (:func:`write_container`, :func:`read_container`) is, in order::

    b"ANYORDER-ARDM\\n"                 magic, 14 bytes
    uint32 little-endian               format version (FORMAT_VERSION)
    uint64 little-endian, bytes        length of the header, then the header as UTF-8 JSON
    uint64 little-endian, uint32 LE    number of rANS words, then the words
    32 bytes                           SHA-256 of everything above
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import constriction
import numpy as np
import torch
from torch import Tensor

from anyorder.atomic import write_with
from anyorder.errors import AnyorderError

__all__ = [
    "DEFAULT_EPS",
    "FORMAT_VERSION",
    "MAGIC",
    "CompressedFileError",
    "LogProbFn",
    "check_model",
    "compress",
    "data_digest",
    "decode",
    "decompress",
    "encode",
    "ideal_bits",
    "make_header",
    "read_container",
    "write_container",
]

LogProbFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""The model: ``fn(x, known, t)`` with ``x`` a LongTensor ``[B, D]`` (unknown entries hold the placeholder 0),
``known`` a BoolTensor ``[B, D]`` and ``t`` a LongTensor ``[B]`` (number of known variables), returning
log-probabilities ``[B, D, Kmax]`` (float32 or float64). Entries ``>= K_d`` of variable ``d`` are ignored and the first
``K_d`` are renormalised. Called under ``torch.no_grad()``."""

MAGIC = b"ANYORDER-ARDM\n"
"""First bytes of every container file."""

FORMAT_VERSION = 1
"""Version of the container layout and of the stream layout described in the module docstring."""

DEFAULT_EPS = 2e-5
"""Probability floor added to every symbol, so that no symbol is unencodable and quantisation stays exact."""

_MARKER = np.array([0xA5A5, 0x5A5A], dtype=np.int32)
"""End marker: pushed first, decoded last; a wrong value means the stream was exhausted, damaged or mis-modelled."""

_MARKER_MODEL = constriction.stream.model.Uniform(1 << 16)
"""Model of each marker symbol: uniform over 16 bits, so the marker costs 32 bits."""

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
"""Categorical model family: each symbol is coded with its own probability row (``perfect=False``: fast, and the
quantisation depends only on the row, which encoder and decoder compute identically)."""

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIGEST_BYTES = hashlib.sha256().digest_size

_HEADER_FIELDS = (
    "format_version",
    "model_hash",
    "sigma_seed",
    "sigma",
    "policy",
    "num",
    "num_variables",
    "vocab_sizes",
    "batch_size",
    "eps",
    "data_sha256",
    "extra",
)
"""Fields every header written by :func:`make_header` carries (``sigma_seed`` may be null, ``extra`` a dict)."""


class CompressedFileError(AnyorderError, ValueError):
    """A compressed file or stream is not one, is damaged or truncated, or does not fit this model."""


@dataclass(frozen=True)
class _Plan:
    """What every interval codes, independent of the data.

    Attributes:
        starts: the policy's start steps ``p[0] .. p[B-1]``.
        chunks: for each interval, ``(K, variables)`` for each distinct vocabulary size ``K`` among the interval's
            variables (ascending ``K``), ``variables`` the ascending indices ``d`` with that size.
        known: for each interval ``[l, r)``, a BoolTensor ``[D]`` that is True where ``sigma < l``.
        num_variables: ``D``.
    """

    starts: tuple[int, ...]
    chunks: tuple[tuple[tuple[int, Tensor], ...], ...]
    known: tuple[Tensor, ...]
    num_variables: int


def _make_plan(vocab_sizes: Sequence[int], sigma: Tensor, policy: Sequence[int], eps: float) -> _Plan:
    """Check the arguments and group each interval's variables by vocabulary size."""
    sizes = [int(k) for k in vocab_sizes]
    num_variables = len(sizes)
    if num_variables == 0:
        raise ValueError("vocab_sizes is empty: there must be at least one variable")
    if min(sizes) < 1 or max(sizes) > 1 << 16:
        raise ValueError(f"every vocabulary size must be in 1 .. 65536, got {sizes}")
    if not (eps > 0 and eps * max(sizes) < 1):
        raise ValueError(f"eps must be > 0 and eps * max(vocab_sizes) < 1, got eps={eps}")
    sigma = torch.as_tensor(sigma, dtype=torch.long).cpu()
    if sigma.shape != (num_variables,) or not torch.equal(torch.sort(sigma).values, torch.arange(num_variables)):
        raise ValueError(f"sigma must be a permutation of 0 .. {num_variables - 1}, got {sigma.tolist()}")
    starts = tuple(int(p) for p in policy)
    if not starts or starts[0] != 0 or starts[-1] > num_variables - 1 or any(a >= b for a, b in itertools.pairwise(starts)):
        raise ValueError(
            f"policy must be strictly increasing start steps 0 = p[0] < ... <= {num_variables - 1}, got {list(starts)}"
        )
    size_tensor = torch.tensor(sizes)
    chunks: list[tuple[tuple[int, Tensor], ...]] = []
    known: list[Tensor] = []
    for left, right in itertools.pairwise((*starts, num_variables)):
        in_interval = (sigma >= left) & (sigma < right)
        groups = []
        for k in sorted({sizes[d] for d in torch.nonzero(in_interval).flatten().tolist()}):
            groups.append((k, torch.nonzero(in_interval & (size_tensor == k)).flatten()))
        chunks.append(tuple(groups))
        known.append(sigma < left)
    return _Plan(starts, tuple(chunks), tuple(known), num_variables)


def _batches(num: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` datapoint ranges of the batches, in decoding order (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(start, min(start + batch_size, num)) for start in range(0, num, batch_size)]


def _interval_probs(fn: LogProbFn, x: Tensor, plan: _Plan, interval: int, eps: float) -> list[np.ndarray]:
    """Call the model once for one interval of one batch and return each chunk's smoothed probability rows.

    ``x`` holds the batch's values of every variable known before the interval (the others are ignored: they are
    masked to 0 here, so encoder and decoder give the model identical inputs). Returns, per chunk of
    ``plan.chunks[interval]``, a float64 array ``[batch * len(variables), K]``, datapoint-major.
    """
    known_row = plan.known[interval]
    batch = x.shape[0]
    known = known_row.unsqueeze(0).expand(batch, -1).contiguous()
    masked = torch.where(known, x, torch.zeros((), dtype=torch.long))
    steps = torch.full((batch,), plan.starts[interval], dtype=torch.long)
    with torch.no_grad():
        logp = fn(masked, known, steps)
    if logp.ndim != 3 or logp.shape[:2] != (batch, plan.num_variables):
        raise ValueError(f"the model returned shape {tuple(logp.shape)}, expected [{batch}, {plan.num_variables}, Kmax]")
    logp = logp.detach().to(device="cpu", dtype=torch.float64)
    rows = []
    for k, variables in plan.chunks[interval]:
        if logp.shape[2] < k:
            raise ValueError(f"the model returned {logp.shape[2]} log-probabilities per variable, need at least {k}")
        chunk = logp[:, variables, :k]
        if torch.isnan(chunk).any() or torch.isposinf(chunk).any():
            raise ValueError("the model returned NaN or +inf log-probabilities")
        probs = (1.0 - eps * k) * torch.softmax(chunk, dim=-1) + eps
        rows.append(np.ascontiguousarray(probs.reshape(-1, k).numpy()))
    return rows


def _chunk_symbols(x: Tensor, variables: Tensor) -> np.ndarray:
    """The values of ``variables`` for every datapoint of the batch, datapoint-major, as int32 symbols."""
    return np.ascontiguousarray(x[:, variables].reshape(-1).numpy().astype(np.int32))


def _batch_chunks(fn: LogProbFn, x: Tensor, plan: _Plan, eps: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(symbols, probability rows)`` of every chunk of one batch of known data, in decoding order."""
    for interval, chunks in enumerate(plan.chunks):
        probs = _interval_probs(fn, x, plan, interval, eps)
        for (_, variables), rows in zip(chunks, probs, strict=True):
            yield _chunk_symbols(x, variables), rows


def _checked_data(data: Tensor, plan: _Plan, vocab_sizes: Sequence[int]) -> Tensor:
    """``data`` as a CPU LongTensor ``[N, D]`` with every value inside its variable's vocabulary."""
    data = torch.as_tensor(data).cpu()
    if data.ndim != 2 or data.shape[1] != plan.num_variables or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ValueError(f"data must be an integer tensor [N, {plan.num_variables}], got {data.dtype} {tuple(data.shape)}")
    data = data.to(torch.long)
    sizes = torch.tensor([int(k) for k in vocab_sizes])
    if data.numel() and ((data < 0) | (data >= sizes)).any():
        raise ValueError("data has values outside their variable's vocabulary 0 .. K_d - 1")
    return data


def encode(
    fn: LogProbFn,
    data: Tensor,
    vocab_sizes: Sequence[int],
    sigma: Tensor,
    policy: Sequence[int],
    *,
    batch_size: int,
    eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """Compress ``data`` (LongTensor ``[N, D]``) into the uint32 words of one rANS stream.

    Makes ``len(policy)`` model calls per batch of ``batch_size`` datapoints, with exactly the inputs :func:`decode`
    will make them with.
    """
    plan = _make_plan(vocab_sizes, sigma, policy, eps)
    data = _checked_data(data, plan, vocab_sizes)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(_MARKER, _MARKER_MODEL)
    # The stack is decoded batch 0 first, so push the batches last to first; each batch is self-contained, so its
    # probabilities can be computed (forward, as the decoder will) just before it is pushed: memory stays one batch.
    for start, stop in reversed(_batches(data.shape[0], batch_size)):
        chunks = list(_batch_chunks(fn, data[start:stop], plan, eps))
        for symbols, rows in reversed(chunks):
            coder.encode_reverse(symbols, _CATEGORICAL, rows)
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def decode(
    fn: LogProbFn,
    words: np.ndarray,
    num: int,
    vocab_sizes: Sequence[int],
    sigma: Tensor,
    policy: Sequence[int],
    *,
    batch_size: int,
    eps: float = DEFAULT_EPS,
    expected_digest: str | None = None,
) -> Tensor:
    """Decompress ``num`` datapoints from the words written by :func:`encode` with the same arguments.

    Returns a LongTensor ``[num, D]``. Raises :class:`CompressedFileError` if the stream does not end exactly where it
    should (exhausted, damaged, leftover words) or, given ``expected_digest``, if the decoded data's
    :func:`data_digest` differs from it (e.g. a different model or different numerics).
    """
    plan = _make_plan(vocab_sizes, sigma, policy, eps)
    words = np.ascontiguousarray(np.asarray(words), dtype=np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except ValueError as error:
        raise CompressedFileError(f"the rANS stream is damaged ({error}); recompress the data") from error
    out = torch.zeros((num, plan.num_variables), dtype=torch.long)
    # Every loop below is bounded by num, the budget and D: a bad stream decodes to wrong symbols, never loops.
    for start, stop in _batches(num, batch_size):
        x = torch.zeros((stop - start, plan.num_variables), dtype=torch.long)
        for interval, chunks in enumerate(plan.chunks):
            probs = _interval_probs(fn, x, plan, interval, eps)
            for (_, variables), rows in zip(chunks, probs, strict=True):
                symbols = coder.decode(_CATEGORICAL, rows)
                x[:, variables] = torch.from_numpy(symbols.astype(np.int64)).reshape(stop - start, -1)
        out[start:stop] = x
    marker = coder.decode(_MARKER_MODEL, len(_MARKER))
    if expected_digest is not None and data_digest(out) != expected_digest:
        raise CompressedFileError(
            "the decompressed data do not match the SHA-256 digest of the original data: this model (or its numerics: "
            "device, dtype, library versions) gives different probabilities from the one that compressed it; "
            "decompress with the same model on the same kind of machine"
        )
    if not np.array_equal(marker, _MARKER) or not coder.is_empty():
        problem = "has leftover words" if np.array_equal(marker, _MARKER) else "is exhausted or damaged"
        raise CompressedFileError(
            f"the rANS stream {problem}: it does not end where {num} datapoints of this shape end; check that "
            "num, vocab_sizes, sigma, policy, batch_size, eps and the model are those that compressed it"
        )
    return out


def ideal_bits(
    fn: LogProbFn,
    data: Tensor,
    vocab_sizes: Sequence[int],
    sigma: Tensor,
    policy: Sequence[int],
    *,
    batch_size: int,
    eps: float = DEFAULT_EPS,
) -> float:
    """``-log2`` of the smoothed probability the coder assigns to ``data``, summed over all of it, in bits.

    The compressed size approaches it up to the coder's quantisation of probabilities and a constant overhead.
    """
    plan = _make_plan(vocab_sizes, sigma, policy, eps)
    data = _checked_data(data, plan, vocab_sizes)
    total = 0.0
    for start, stop in _batches(data.shape[0], batch_size):
        for symbols, rows in _batch_chunks(fn, data[start:stop], plan, eps):
            total -= float(np.log2(rows[np.arange(len(symbols)), symbols]).sum())
    return total


def data_digest(data: Tensor) -> str:
    """Hex SHA-256 of ``data`` as little-endian int64 values, row-major (its shape is recorded in the header)."""
    array = torch.as_tensor(data).detach().cpu().to(torch.long).contiguous().numpy()
    return hashlib.sha256(array.astype("<i8", copy=False).tobytes()).hexdigest()


def make_header(
    *,
    model_hash: str,
    sigma: Tensor,
    policy: Sequence[int],
    num: int,
    vocab_sizes: Sequence[int],
    batch_size: int,
    eps: float,
    data_sha256: str,
    sigma_seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable header of a container: everything :func:`decompress` needs besides the model."""
    return {
        "format_version": FORMAT_VERSION,
        "model_hash": str(model_hash),
        "sigma_seed": None if sigma_seed is None else int(sigma_seed),
        "sigma": [int(s) for s in torch.as_tensor(sigma).tolist()],
        "policy": [int(p) for p in policy],
        "num": int(num),
        "num_variables": len(vocab_sizes),
        "vocab_sizes": [int(k) for k in vocab_sizes],
        "batch_size": int(batch_size),
        "eps": float(eps),
        "data_sha256": data_sha256,
        "extra": dict(extra or {}),
    }


def compress(
    fn: LogProbFn,
    data: Tensor,
    vocab_sizes: Sequence[int],
    sigma: Tensor,
    policy: Sequence[int],
    *,
    batch_size: int,
    model_hash: str,
    eps: float = DEFAULT_EPS,
    sigma_seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """:func:`encode` ``data`` and return ``(header, words)``, ready for :func:`write_container`."""
    words = encode(fn, data, vocab_sizes, sigma, policy, batch_size=batch_size, eps=eps)
    header = make_header(
        model_hash=model_hash,
        sigma=sigma,
        policy=policy,
        num=int(data.shape[0]),
        vocab_sizes=vocab_sizes,
        batch_size=batch_size,
        eps=eps,
        data_sha256=data_digest(data),
        sigma_seed=sigma_seed,
        extra=extra,
    )
    return header, words


def check_model(header: Mapping[str, Any], model_hash: str, *, source: str = "this file") -> None:
    """Raise :class:`CompressedFileError` unless ``header`` was written with the model whose hash is ``model_hash``."""
    compressed_with = header.get("model_hash")
    if compressed_with != model_hash:
        raise CompressedFileError(
            f"{source} was compressed with model {compressed_with}, this model is {model_hash}; "
            "decompress with the run that compressed it"
        )


def decompress(
    fn: LogProbFn, header: Mapping[str, Any], words: np.ndarray, *, model_hash: str, source: str = "this file"
) -> Tensor:
    """Check the model, decode ``words`` with the header's settings and verify the data's digest; return the data."""
    missing = [field for field in _HEADER_FIELDS if field not in header]
    if missing:
        raise CompressedFileError(f"{source} has a header without {missing}; it was not written by anyorder's compress")
    check_model(header, model_hash, source=source)
    try:
        sigma = torch.tensor(header["sigma"], dtype=torch.long)
        num = int(header["num"])
        vocab_sizes = [int(k) for k in header["vocab_sizes"]]
        policy = [int(p) for p in header["policy"]]
        batch_size = int(header["batch_size"])
        eps = float(header["eps"])
        # Validate the settings here, so that a bad header is reported as such and not as a model error.
        _make_plan(vocab_sizes, sigma, policy, eps)
        _batches(num, batch_size)
    except (TypeError, ValueError) as error:
        raise CompressedFileError(f"{source} has an invalid header ({error}); it was not written by compress") from error
    try:
        return decode(
            fn,
            words,
            num,
            vocab_sizes,
            sigma,
            policy,
            batch_size=batch_size,
            eps=eps,
            expected_digest=str(header["data_sha256"]),
        )
    except CompressedFileError as error:
        raise CompressedFileError(f"{source}: {error}") from error


def write_container(path: str | Path, header: Mapping[str, Any], words: np.ndarray) -> None:
    """Write ``header`` and ``words`` to ``path`` in the container layout, atomically (temp file, then rename)."""
    header_bytes = json.dumps(dict(header), sort_keys=True).encode("utf-8")
    word_bytes = np.ascontiguousarray(np.asarray(words), dtype="<u4").tobytes()
    body = b"".join(
        [
            MAGIC,
            _U32.pack(FORMAT_VERSION),
            _U64.pack(len(header_bytes)),
            header_bytes,
            _U64.pack(len(word_bytes) // 4),
            word_bytes,
        ]
    )
    payload = body + hashlib.sha256(body).digest()

    def writer(f: IO[bytes]) -> None:
        f.write(payload)

    write_with(path, writer)


def read_container(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """Read a file written by :func:`write_container`; return ``(header, words)`` (words as uint32).

    Raises :class:`CompressedFileError` if it is not a container, has an unsupported format version, is truncated or
    damaged (checksum mismatch).
    """
    raw = Path(path).read_bytes()
    truncated = (
        f"{path} is truncated ({len(raw)} bytes, shorter than its layout says); the copy is incomplete: "
        "copy it again from the original"
    )
    if not raw.startswith(MAGIC):
        if len(raw) < len(MAGIC) and raw and MAGIC.startswith(raw):
            raise CompressedFileError(truncated)
        raise CompressedFileError(
            f"{path} is not an anyorder compressed file (wrong magic: it does not start with {MAGIC!r}); "
            "pass a file written by anyorder's compress"
        )
    offset = len(MAGIC)

    def take(size: int) -> bytes:
        nonlocal offset
        if len(raw) - offset < size:
            raise CompressedFileError(truncated)
        chunk = raw[offset : offset + size]
        offset += size
        return chunk

    version = _U32.unpack(take(_U32.size))[0]
    if version != FORMAT_VERSION:
        raise CompressedFileError(
            f"{path} has compressed-file format version {version}, this anyorder reads version {FORMAT_VERSION}; "
            "decompress it with the anyorder version that wrote it"
        )
    header_bytes = take(_U64.unpack(take(_U64.size))[0])
    num_words = _U64.unpack(take(_U64.size))[0]
    word_bytes = take(4 * num_words)
    body_end = offset
    digest = take(_DIGEST_BYTES)
    if offset != len(raw):
        raise CompressedFileError(
            f"{path} is damaged ({len(raw) - offset} unexpected bytes after the checksum); copy it again from the original"
        )
    if hashlib.sha256(raw[:body_end]).digest() != digest:
        raise CompressedFileError(
            f"{path} is damaged (SHA-256 checksum mismatch); copy it again from an intact original or recompress the data"
        )
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompressedFileError(f"{path} has an unreadable header ({error}); it was not written by compress") from error
    if not isinstance(header, dict) or header.get("format_version") != version:
        raise CompressedFileError(f"{path} has a header that does not match its format version {version}")
    words = np.frombuffer(word_bytes, dtype="<u4").astype(np.uint32)
    return header, words
