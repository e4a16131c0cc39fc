"""The ``bag_of_tokens`` objective: a unigram model p(x) = prod_t q[x_t], q = softmax(w), fitted by maximum likelihood.

Categories: the data vocabulary 0..V-1, plus EOS = V when the data has variable length. A datapoint of length L
over D positions has log p(x) = sum_{t<L} log q[x_t] + (log q[EOS] if L < D else 0): at each position the model
stops with probability q[EOS], and a sequence that reaches D positions stops for sure. These probabilities sum to
one over every length and every token string, so the likelihood is exact.

At evaluation the log-likelihood is reported as two terms, the tokens' part and the stopping part (EOS), and two
set-level statistics: the variance of the length over the split, and how many distinct datapoints it holds.

Because the model ignores positions, the loss of a batch depends only on its token counts: the gradient is
``softmax(w) * n - counts`` (divided by the number of predicted variables), whatever the sequence order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyorder.errors import ConfigError
from anyorder.generate import filter_logits
from anyorder.objective import (
    BuildContext,
    EvalContext,
    EvaluationStatistic,
    LogLikelihood,
    LossOutput,
    Objective,
    SampleContext,
    Samples,
    StepContext,
)
from anyorder_example.bag_of_tokens.config import BagOfTokensConfig
from anyorder_example.smoothing.base import Smoother


class LengthVariance(EvaluationStatistic):
    """Variance over the evaluated split of the datapoints' lengths (exact over ranks: the states are sums)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("n", "s", "ss"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        length = outputs["length"].double()
        self.n += length.numel()
        self.s += length.sum()
        self.ss += (length * length).sum()

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        mean = self.s / self.n
        return {"length_variance": self.ss / self.n - mean * mean}


class DistinctDatapoints(EvaluationStatistic):
    """How many distinct datapoints the evaluated split holds (every rank's hashes gathered: not a sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hashes", default=[], dist_reduce_fx="cat")

    def update(self, outputs: dict[str, Tensor]) -> None:  # type: ignore[override]
        self.hashes.append(outputs["hash"].long())

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        hashes = self.hashes if isinstance(self.hashes, Tensor) else torch.cat(self.hashes)
        return {"distinct_datapoints": torch.tensor(float(hashes.unique().numel()))}


class BagOfTokens(Objective):
    """Position-independent unigram model with a learned logit vector (no network)."""

    Config = BagOfTokensConfig
    config: BagOfTokensConfig

    def __init__(self, config: BagOfTokensConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        space = build.space
        if not space.shared_vocab:
            raise ConfigError(
                "bag_of_tokens needs variables over one shared vocabulary; this dataset's variables have "
                f"vocabularies of sizes {sorted(set(space.vocab_sizes))}"
            )
        self.vocab_size = space.vocab_size
        self.eos_id = space.vocab_size if space.variable_length else None
        num_categories = space.vocab_size + (1 if space.variable_length else 0)
        self.logits = nn.Parameter(torch.randn(num_categories) * self.config.init_std)
        smoother = build.plugin("smoother", config.smoother)
        if not isinstance(smoother, Smoother):
            raise ConfigError(f"smoother {config.smoother['name']!r} is not an anyorder_example Smoother")
        self.smoother = smoother

    # -- counting ----------------------------------------------------------------------------------------------------
    def _counts(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per datapoint: how often each category is predicted [B, K] (EOS included) and how many variables [B]."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        b, d = tokens.shape
        k = self.logits.shape[0]
        positions = torch.arange(d, device=tokens.device)
        mask = positions[None] < lengths[:, None]
        rows = torch.arange(b, device=tokens.device)[:, None].expand(b, d)
        flat = (rows * k + tokens.clamp(0, k - 1))[mask]
        counts = torch.bincount(flat, minlength=b * k).reshape(b, k).to(self.logits.dtype)
        if self.eos_id is not None:
            counts[:, self.eos_id] += (lengths < d).to(counts.dtype)
        return counts, counts.sum(1)

    def _check_tokens(self, batch: dict[str, Tensor]) -> None:
        tokens = batch["tokens"]
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"bag_of_tokens: tokens must lie in [0, {self.vocab_size})")

    # -- hooks -------------------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        counts, num = self._counts(batch)
        total_counts, total = counts.sum(0), num.sum()
        log_q = F.log_softmax(self.logits.float(), dim=0)
        nats = -(total_counts * log_q).sum()
        nll = nats / total.clamp(min=1)
        loss = self.smoother.loss(log_q, total_counts, total)
        terms = {"nll": nll, "entropy": -(log_q.exp() * log_q).sum()}
        return LossOutput(loss=loss, terms=terms, nats=nats, num_tokens=total)

    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        self._check_tokens(batch)
        counts, num = self._counts(batch)
        log_q = F.log_softmax(self.logits.double(), dim=0)
        per_category = counts.double() * log_q
        stop = per_category[:, self.eos_id] if self.eos_id is not None else per_category.new_zeros(len(counts))
        tokens, lengths = batch["tokens"], batch["lengths"]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        kept = torch.where(positions[None] < lengths[:, None], tokens + 1, 0)
        # A hash of (length, tokens) per datapoint: equal datapoints collide, different ones almost never.
        weights = torch.randint(1, 2**31 - 1, (tokens.shape[1] + 1,), generator=torch.Generator().manual_seed(7))
        digest = (torch.cat([lengths[:, None], kept], 1).long().cpu() * weights).sum(1)
        return LogLikelihood(log_prob=per_category.sum(1), num_tokens=num.long(),
                             terms={"token_nats": -(per_category.sum(1) - stop), "stop_nats": -stop},
                             outputs={"length": lengths, "hash": digest.to(tokens.device)})

    def evaluation_terms(self) -> tuple[str, ...]:
        return ("token_nats", "stop_nats")

    def evaluation_statistics(self) -> dict[str, EvaluationStatistic]:
        return {"length_variance": LengthVariance(), "distinct": DistinctDatapoints()}

    def sample(self, num: int, ctx: SampleContext) -> Samples:
        d, settings, generator = self.space.num_variables, ctx.settings, ctx.generator
        max_len = min(ctx.max_len or d, d)
        logits = filter_logits(self.logits.detach().float(), temperature=settings.temperature,
                               top_k=settings.top_k, top_p=settings.top_p)
        probs = logits.softmax(0).to(generator.device)
        draws = torch.multinomial(probs, num * max_len, replacement=True, generator=generator).reshape(num, max_len)
        draws = draws.to(self.logits.device)
        if self.eos_id is None:
            lengths = torch.full((num,), max_len, dtype=torch.long, device=draws.device)
        else:
            is_eos = draws == self.eos_id
            # The first EOS ends a sequence; one without EOS fills all max_len positions.
            lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1), max_len).long()
        positions = torch.arange(max_len, device=draws.device)
        tokens = torch.where(positions[None] < lengths[:, None], draws, 0)
        return Samples(tokens=tokens, lengths=lengths)
