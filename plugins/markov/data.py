"""The ``markov`` dataset: a random order-k Markov chain, its exact stationary law and entropies, and its samples.

A context is the k most recent tokens ``(x[t-k], ..., x[t-1])``, stored as the state index
``sum_i x[t-k+i] * V**(k-1-i)`` (the oldest token is the most significant digit). Emitting token ``y`` from state
``s`` moves to ``(s % V**(k-1)) * V + y``. The chain over these V**k states is what "stationary" refers to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.errors import DataError
from anyorder_plugins.markov.config import MarkovConfig

SPLITS = ("train", "val", "test")

_DENSE_SOLVE_MAX_STATES = 2048  # up to here a dense linear solve is cheap (<= 32 MiB) and exact for any mixing time
_POWER_MAX_ITER = 20_000
_STATIONARY_TOL = 1e-12  # L1 residual ||pi T - pi|| accepted as stationary


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis``, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=axis)


class MarkovChain:
    """An order-k chain over ``V`` tokens: ``transitions[s, y] = P(y | context s)`` and its stationary law over contexts.

    Everything is float64 numpy; :meth:`sample` and :meth:`log_prob` are vectorized over sequences.
    """

    def __init__(self, transitions: np.ndarray, order: int) -> None:
        transitions = np.asarray(transitions, dtype=np.float64)
        vocab_size = transitions.shape[-1]
        if order < 1 or transitions.shape != (vocab_size**order, vocab_size):
            raise ValueError(f"transitions must be [V**order, V] with order >= 1; got {transitions.shape}, {order=}")
        if np.any(transitions < 0) or not np.allclose(transitions.sum(axis=1), 1.0, rtol=0, atol=1e-12):
            raise ValueError("every transition row must be a probability vector")
        self.order = order
        self.vocab_size = vocab_size
        self.num_states = vocab_size**order
        self.transitions = transitions
        with np.errstate(divide="ignore"):
            self.log_transitions = np.log(transitions)
        # Cumulative rows for inverse-CDF sampling; the row total (not 1.0) bounds the uniform draw, so a token of
        # probability exactly 0 can never be drawn, whatever the rounding of the cumulative sum.
        self._cdf = np.cumsum(transitions, axis=1)
        self.stationary = self._stationary()
        self._stationary_cdf = np.cumsum(self.stationary)

    @classmethod
    def random(cls, order: int, vocab_size: int, concentration: float, seed: int) -> MarkovChain:
        """A chain whose rows are i.i.d. symmetric Dirichlet(``concentration``), from ``np.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        rows = rng.dirichlet(np.full(vocab_size, float(concentration)), size=vocab_size**order)
        # Dirichlet draws sum to 1 only up to rounding; renormalise so the exact quantities use exact rows.
        return cls(rows / rows.sum(axis=1, keepdims=True), order)

    # -- the chain over contexts ----------------------------------------------------------------------------------
    def next_state(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The context after emitting ``tokens`` from ``states`` (elementwise)."""
        return (states % (self.num_states // self.vocab_size)) * self.vocab_size + tokens

    def state_of(self, contexts: np.ndarray) -> np.ndarray:
        """State indices of ``contexts`` [..., k] (oldest token first)."""
        weights = self.vocab_size ** np.arange(self.order - 1, -1, -1, dtype=np.int64)
        return (np.asarray(contexts, dtype=np.int64) * weights).sum(axis=-1)

    def step_distribution(self, p: np.ndarray) -> np.ndarray:
        """One step of the context chain applied to a distribution ``p`` over states: ``p @ T``."""
        v, m = self.vocab_size, self.num_states // self.vocab_size
        # State a*m + r (a = oldest token) emits y and moves to r*V + y, so mass flows from (a, r) to (r, y).
        return np.einsum("ar,ary->ry", p.reshape(v, m), self.transitions.reshape(v, m, v)).reshape(-1)

    def dense_step_matrix(self) -> np.ndarray:
        """The [V**k, V**k] transition matrix of the context chain (for small chains and tests)."""
        n, v = self.num_states, self.vocab_size
        states = np.arange(n)
        targets = self.next_state(states[:, None], np.arange(v)[None, :])
        matrix = np.zeros((n, n))
        matrix[np.repeat(states, v), targets.ravel()] = self.transitions.ravel()
        return matrix

    def _stationary(self) -> np.ndarray:
        n = self.num_states
        pi: np.ndarray | None = None
        if n <= _DENSE_SOLVE_MAX_STATES:
            # Solve pi (T - I) = 0 with sum(pi) = 1 replacing one (redundant) balance equation.
            a = self.dense_step_matrix().T - np.eye(n)
            a[-1, :] = 1.0
            b = np.zeros(n)
            b[-1] = 1.0
            try:
                pi = np.linalg.solve(a, b)
            except np.linalg.LinAlgError:
                pi = None  # reducible chain (rows with exact zeros); the power iteration below still finds a solution
        if pi is None:
            # The lazy chain (I + T) / 2 has the same stationary law and is aperiodic, so the iteration converges.
            pi = np.full(n, 1.0 / n)
            for _ in range(_POWER_MAX_ITER):
                stepped = self.step_distribution(pi)
                if np.abs(stepped - pi).sum() < _STATIONARY_TOL / 10:
                    break
                pi = 0.5 * (pi + stepped)
        pi = np.clip(pi, 0.0, None)  # the solve can leave entries of -1e-18 where the mass is essentially zero
        pi /= pi.sum()
        residual = float(np.abs(self.step_distribution(pi) - pi).sum())
        if not residual < _STATIONARY_TOL:
            raise DataError(
                f"markov: the stationary distribution of the {n}-state context chain did not converge (L1 residual "
                f"{residual:.3g}); the chain mixes too slowly, raise concentration or lower order"
            )
        return pi

    # -- exact quantities ------------------------------------------------------------------------------------------
    def entropy_rate(self) -> float:
        """Entropy rate in nats per token: ``sum_s pi(s) H(P(.|s))``."""
        return float(self.stationary @ _entropy(self.transitions, axis=1))

    def stationary_entropy(self) -> float:
        """Entropy in nats of the stationary law of the first k tokens (jointly)."""
        return float(_entropy(self.stationary))

    def sequence_entropy_per_token(self, length: int) -> float:
        """Exact expected ``-log p(x) / length`` of sequences of ``length`` tokens that start stationary."""
        if length < self.order:
            raise ValueError(f"length {length} is shorter than the order {self.order}")
        return (self.stationary_entropy() + (length - self.order) * self.entropy_rate()) / length

    # -- sampling and scoring ----------------------------------------------------------------------------------------
    def sample(self, num: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``num`` sequences [num, length] (int64): the first k tokens stationary, the rest from the transitions."""
        if length < self.order:
            raise ValueError(f"length {length} is shorter than the order {self.order}")
        k, v = self.order, self.vocab_size
        out = np.empty((num, length), dtype=np.int64)
        # All uniforms at once, row by row: sequence i uses row i whatever ``num`` is, so a smaller split is a
        # prefix of a larger one with the same seed. Column 0 picks the first k-gram, column t >= k token t.
        uniforms = rng.random((num, length))
        states = np.searchsorted(self._stationary_cdf, uniforms[:, 0] * self._stationary_cdf[-1], side="right")
        states = states.astype(np.int64)
        for i in range(k):
            out[:, i] = (states // v ** (k - 1 - i)) % v
        for t in range(k, length):
            cdf = self._cdf[states]
            u = uniforms[:, t] * cdf[:, -1]
            # The first index whose cumulative mass exceeds u: a token of zero mass has cdf equal to its
            # predecessor's and is skipped.
            tokens = (cdf <= u[:, None]).sum(axis=1)
            out[:, t] = tokens
            states = self.next_state(states, tokens)
        return out

    def log_prob(self, tokens: np.ndarray | Tensor) -> np.ndarray:
        """Exact log-probabilities (float64 [N]) of sequences [N, L] (L >= k) whose first k tokens are stationary."""
        if isinstance(tokens, Tensor):
            tokens = tokens.detach().cpu().numpy()
        x = np.asarray(tokens, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] < self.order:
            raise ValueError(f"tokens must be [N, L] with L >= {self.order}; got shape {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size}); got values in [{x.min()}, {x.max()}]")
        states = self.state_of(x[:, : self.order])
        with np.errstate(divide="ignore"):
            logp = np.log(self.stationary[states])
        for t in range(self.order, x.shape[1]):
            logp = logp + self.log_transitions[states, x[:, t]]
            states = self.next_state(states, x[:, t])
        return logp


class MarkovDataModule(DiscreteDataModule):
    """Fixed-length sequences from a seeded random order-k Markov chain, with exact reference entropies."""

    Config = MarkovConfig
    config: MarkovConfig

    def __init__(self, config: MarkovConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._chain: MarkovChain | None = None
        self._source_nll: dict[str, float] | None = None

    @property
    def chain(self) -> MarkovChain:
        """The true source (built on first use; it depends only on the options)."""
        if self._chain is None:
            c = self.config
            self._chain = MarkovChain.random(c.order, c.vocab_size, c.concentration, c.chain_seed)
        return self._chain

    def split_rng(self, split: str) -> np.random.Generator:
        """The generator of one split's sequences."""
        # Seed sequences [data_seed, 1..3]: one independent stream per split, none equal to the chain's
        # default_rng(chain_seed), which numpy treats as [chain_seed, 0].
        return np.random.default_rng([self.config.data_seed, SPLITS.index(split) + 1])

    def sample_split(self, split: str) -> np.ndarray:
        """The sequences of ``split`` as int64 numpy [N, length]."""
        n = {"train": self.config.num_train, "val": self.config.num_val, "test": self.config.num_test}[split]
        return self.chain.sample(n, self.config.length, self.split_rng(split))

    def build(self) -> Splits:
        c = self.config
        arrays = {split: self.sample_split(split) for split in SPLITS}
        self._source_nll = {split: self.source_nll_per_token(x) for split, x in arrays.items() if x.size}
        sets = {split: TokenSet.fixed(torch.from_numpy(x)) for split, x in arrays.items()}
        info = {"num_states": self.chain.num_states, **self.reference()}
        return Splits(sets["train"], sets["val"], sets["test"], DataSpace.sequence(c.length, c.vocab_size), info)

    def source_nll_per_token(self, tokens: np.ndarray | Tensor) -> float:
        """The true source's exact NLL per token (nats) on the sequences ``tokens`` [N, L] themselves, first tokens
        included: ``-sum_i log p(x_i) / (N L)`` from the stationary law and the transition matrix."""
        x = tokens.detach().cpu().numpy() if isinstance(tokens, Tensor) else np.asarray(tokens)
        return float(-self.chain.log_prob(x).sum() / x.size)

    def reference(self) -> dict[str, float]:
        """Exact quantities of the source (nats per token unless named otherwise).

        * ``entropy_rate_nats``: the entropy rate (the limit for long sequences).
        * ``stationary_entropy_nats``: the joint entropy of the first k tokens (nats, not per token).
        * ``sequence_entropy_nats_per_token``: the source's expected NLL per token over sequences of this length,
          first tokens included (an expectation over sequences: the best achievable expected NLL).
        * ``source_nll_nats_per_token_<split>``: the source's exact NLL per token on that split's sequences
          themselves (what a perfect model scores on exactly those sequences); for every non-empty split (this
          builds the splits when they are not built yet).
        """
        out = {
            "entropy_rate_nats": self.chain.entropy_rate(),
            "stationary_entropy_nats": self.chain.stationary_entropy(),
            "sequence_entropy_nats_per_token": self.chain.sequence_entropy_per_token(self.config.length),
        }
        if self._source_nll is None:
            self.setup()  # build() computes the values from the split tokens
        for split, value in (self._source_nll or {}).items():
            out[f"source_nll_nats_per_token_{split}"] = value
        return out

    def log_prob(self, tokens: np.ndarray | Tensor) -> np.ndarray:
        """Exact log-probabilities (float64 [N]) of sequences [N, L] under the true chain."""
        return self.chain.log_prob(tokens)

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Sequences given as whitespace-separated token ids (what :meth:`decode` writes) or as integer sequences."""
        rows = []
        for i, obj in enumerate(objs):
            try:
                ids = [int(t) for t in (obj.split() if isinstance(obj, str) else obj)]
            except (TypeError, ValueError) as exc:
                raise DataError(f"markov: sample {i} is not a sequence of token ids: {obj!r}") from exc
            if len(ids) != self.config.length or any(not 0 <= t < self.config.vocab_size for t in ids):
                raise DataError(f"markov: sample {i} must be {self.config.length} ids in [0, {self.config.vocab_size})"
                                f"; got {obj!r}")
            rows.append(ids)
        tokens = torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.config.length)
        return TokenSet.fixed(tokens)
