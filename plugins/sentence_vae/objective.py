"""The Sentence-VAE objective (Bowman et al. 2016): a text VAE trained on the ELBO, evaluated at beta = 1.

Token layout: the data vocabulary is 0..V-1. The decoder reads BOS = V and the sentence; word dropout replaces
decoder inputs by the data's ``<unk>`` word (as Bowman et al. do), or by a symbol of its own, V + 1, for data without
one. It predicts each next word and EOS = V after the last one, so a sentence of L words covers L + 1 tokens. The
encoder reads the sentence and returns the latent family's parameters.

Per sentence x, with one z ~ q(z|x) (reparameterised):

    -ELBO(x) = -log p(x|z) + KL(q(z|x) || p(z))          (the reconstruction term and the KL, in nats)

and the importance-weighted bound with K samples z_k ~ q(z|x)

    log p(x) >= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)

is the IW-NLL reported at evaluation (``eval_iw_samples``), computed in chunks of decoder passes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from anyorder.errors import ConfigError
from anyorder.network import Conditioning, NetworkIO, Output
from anyorder.objective import (
    BuildContext,
    EvalContext,
    EvaluationStatistic,
    Likelihood,
    LogLikelihood,
    LossOutput,
    Objective,
    SampleContext,
    Samples,
    StepContext,
)
from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.causal.network import CausalNetwork
from anyorder_plugins.sentence_vae.config import SentenceVAEConfig
from anyorder_plugins.sentence_vae.estimators import importance_weighted
from anyorder_plugins.sentence_vae.latent import LatentFamily, Posterior
from anyorder_plugins.sentence_vae.statistics import ActiveUnits, KLPerDimension, MutualInformation


def beta_at(config: SentenceVAEConfig, step: int, max_steps: int) -> float:
    """The KL weight at optimizer step ``step`` of ``max_steps``."""
    top, start = float(config.beta_max), float(config.beta_start)
    if config.beta_schedule == "constant":
        return top
    if config.beta_schedule == "linear":
        return start + (top - start) * min(1.0, step / config.warmup_steps)
    if config.beta_schedule == "logistic":
        return top / (1.0 + math.exp(-config.logistic_k * (step - config.logistic_x0)))
    period = max_steps / config.cycles
    phase = (step % period) / period if period > 0 else 1.0
    return start + (top - start) * min(1.0, phase / config.cycle_rise)


def free_bits_kl(kl: Tensor, lam: float, mode: str) -> Tensor:
    """The KL term of the loss per sentence [B] from the per-dimension KL [B, m] with free bits ``lam`` (nats):
    KL below the allowance costs nothing (and so gets no gradient)."""
    if lam <= 0:
        return kl.sum(-1)
    m = kl.shape[-1]
    if mode == "example":
        return kl.sum(-1).clamp(min=lam)
    if mode == "dimension":
        return kl.clamp(min=lam / m).sum(-1)
    # batch: the allowance applies to the batch mean of each dimension; spread back over the batch's sentences.
    mean = kl.mean(0)
    kept = (mean > lam / m).to(kl.dtype)
    return (kl * kept).sum(-1) + ((1 - kept) * lam / m).sum()


class SentenceVAE(Objective):
    """Encoder, latent family and a causal decoder conditioned on z; the ELBO with annealing, word dropout, free bits
    and an optional batch-normalised posterior mean."""

    Config = SentenceVAEConfig
    config: SentenceVAEConfig
    likelihood = Likelihood.LOWER_BOUND  # the ELBO at beta = 1, with one z ~ q per sentence

    def __init__(self, config: SentenceVAEConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        space = build.space
        if space.structure != "sequence" or not space.shared_vocab or not space.variable_length:
            raise ConfigError("sentence_vae needs variable-length sequences over one vocabulary (sentences)")
        vocab, m = space.vocab_size, config.latent_dim
        self.bos_id = self.eos_id = vocab
        names = space.token_names or ()
        self.dropped_id = names.index("<unk>") if "<unk>" in names else vocab + 1
        self.max_len = space.num_variables
        family = build.plugin("latent", config.latent, m)
        if not isinstance(family, LatentFamily):
            raise ConfigError(f"latent plugin {config.latent['name']!r} is not a LatentFamily")
        self.family = family
        enc_io = NetworkIO(input_vocab_sizes=(vocab,), output_vocab_sizes=(vocab,), max_len=space.num_variables,
                           output=Output.POOLED, output_dim=family.param_size)
        self.encoder = build.network(enc_io, section=config.encoder)
        prefix = config.conditioning == "prefix"
        dec_io = NetworkIO(
            input_vocab_sizes=(vocab + 2,), output_vocab_sizes=(vocab + 1,),
            max_len=space.num_variables + 1 + (1 if prefix else 0), structure=space.structure, shape=space.shape,
            conditioning=Conditioning.PREFIX if prefix else Conditioning.VECTOR, condition_dim=m,
            condition_len=1 if prefix else 0,
        )
        # A decoder that sees the words it predicts would make the likelihood meaningless: only causal networks.
        network = build.network(dec_io, require=CausalNetwork)
        assert isinstance(network, CausalNetwork)
        self.network = network
        self.bn: nn.BatchNorm1d | None = None
        if config.bn_gamma > 0:
            if not getattr(family, "supports_mean_normalisation", False):
                raise ConfigError(f"sentence_vae: bn_gamma needs a latent family with a mean parameter; "
                                  f"{config.latent['name']!r} has none")
            self.bn = nn.BatchNorm1d(m)
            self.bn.weight.requires_grad_(False)  # the fixed scale gamma bounds the KL from below
            with torch.no_grad():
                self.bn.weight.fill_(config.bn_gamma)

    # -- pieces -------------------------------------------------------------------------------------------------
    def posterior_params(self, batch: dict[str, Tensor]) -> Tensor:
        """The latent family's parameters of q(z|x) for a batch's sentences [B, param_size] (float32 at least)."""
        params = self.encoder(batch["tokens"], lengths=batch["lengths"])
        if self.bn is not None:
            m = self.config.latent_dim
            params = torch.cat([self.bn(params[:, :m]), params[:, m:]], dim=1)
        return params if params.dtype in (torch.float32, torch.float64) else params.float()

    def posterior(self, batch: dict[str, Tensor]) -> Posterior:
        """q(z|x) of a batch's sentences."""
        return self.family.posterior(self.posterior_params(batch))

    def _condition(self, z: Tensor) -> Tensor:
        return z[:, None, :] if self.config.conditioning == "prefix" else z

    def reconstruction(self, tokens: Tensor, lengths: Tensor, z: Tensor, *, word_dropout: float = 0.0,
                       generator: torch.Generator | None = None) -> Tensor:
        """-log p(x|z) per sentence [B] (nats), teacher forcing; decoder inputs dropped at rate ``word_dropout``."""
        b, d = tokens.shape
        positions = torch.arange(d + 1, device=tokens.device)
        bos = torch.full((b, 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
        inputs = torch.cat([bos, tokens], dim=1)
        if word_dropout > 0:
            u = torch.rand(inputs.shape, generator=generator, device=generator.device if generator else None)
            drop = (u.to(tokens.device) < word_dropout) & (positions[None] >= 1)
            inputs = torch.where(drop, self.dropped_id, inputs)
        padded = torch.cat([tokens, torch.zeros_like(bos)], dim=1)
        targets = torch.where(positions[None] == lengths[:, None], self.eos_id, padded)
        mask = positions[None] <= lengths[:, None]
        return self.network.token_nll(inputs, targets, mask, condition=self._condition(z.to(self.network_dtype()))).sum(1)

    def network_dtype(self) -> torch.dtype:
        for p in self.network.parameters():
            return p.dtype
        return torch.float32

    # -- training -----------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        cfg = self.config
        q = self.posterior(batch)
        draws, score = q.rsample_with_score(1, ctx.generator)
        z, score = draws[0], score[0]
        rec = self.reconstruction(batch["tokens"], batch["lengths"], z,
                                  word_dropout=cfg.word_dropout if self.training else 0.0, generator=ctx.generator)
        kl = q.kl()
        beta = beta_at(cfg, ctx.step, ctx.max_steps)
        kl_term = free_bits_kl(kl, cfg.free_bits, cfg.free_bits_mode)
        loss = rec.mean() + beta * kl_term.mean()
        if score.requires_grad and rec.shape[0] > 1:
            # A rejection sampler's acceptance depends on the parameters: the score term makes the gradient unbiased,
            # with the leave-one-out mean of the batch as its baseline.
            r = rec.detach()
            baseline = (r.sum() - r) / (r.shape[0] - 1)
            loss = loss + ((r - baseline) * (score - score.detach())).mean()
        total_kl = kl.sum(-1)
        tokens = (batch["lengths"] + 1).sum()
        terms = {"reconstruction": rec.mean().detach(), "kl": total_kl.mean().detach(), "beta": torch.tensor(beta),
                 "neg_elbo": (rec + total_kl).mean().detach(), "kl_in_loss": kl_term.mean().detach()}
        return LossOutput(loss=loss, terms=terms, nats=(rec + total_kl).sum().detach(), num_tokens=tokens)

    # -- evaluation ---------------------------------------------------------------------------------------------
    def evaluation_terms(self) -> tuple[str, ...]:
        return ("reconstruction", "kl") + (("iw_nll",) if self.config.eval_iw_samples else ())

    def evaluation_statistics(self) -> dict[str, EvaluationStatistic]:
        return {"active_units": ActiveUnits(self.config.latent_dim, self.config.active_threshold),
                "kl_per_dimension": KLPerDimension(),
                "mutual_information": MutualInformation(self.family)}

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        tokens, lengths = batch["tokens"], batch["lengths"]
        first = int(batch["index"][0]) if "index" in batch and batch["index"].numel() else 0
        generator = ctx.generator(first, device=tokens.device)
        params = self.posterior_params(batch)
        q = self.family.posterior(params)
        z = q.rsample(1, generator)[0]
        rec = self.reconstruction(tokens, lengths, z)
        kl = q.kl()
        terms = {"reconstruction": rec.double(), "kl": kl.sum(-1).double()}
        if self.config.eval_iw_samples:
            terms["iw_nll"] = -self.importance_weighted(tokens, lengths, q, self.config.eval_iw_samples, generator)
        return LogLikelihood(log_prob=-(rec + kl.sum(-1)).double(), num_tokens=lengths + 1, terms=terms,
                             outputs={"mean": q.mean(), "kl": kl, "params": params, "z": z})

    @torch.no_grad()
    def importance_weighted(self, tokens: Tensor, lengths: Tensor, q: Posterior, num: int,
                            generator: torch.Generator | None = None) -> Tensor:
        """log (1/K) sum_k p(x, z_k) / q(z_k|x) per sentence [B] (float64), K = ``num`` draws in chunks."""
        b = tokens.shape[0]

        def log_likelihood(z: Tensor) -> Tensor:
            k = z.shape[0]
            return -self.reconstruction(tokens.repeat(k, 1), lengths.repeat(k), z.reshape(k * b, -1)).view(k, b)

        return importance_weighted(log_likelihood, q, self.family.prior(), num, chunk=self.config.eval_iw_chunk,
                                   generator=generator)

    def likelihood_protocol(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {
            "likelihood": "-ELBO at beta = 1: -log p(x|z) with one z ~ q(z|x) per sentence (seeded by the sentence's "
                          "position in the split) plus the KL in closed form",
            "latent": {"name": cfg.latent["name"], "dim": cfg.latent_dim, **self.family.protocol()},
            "terms": {"reconstruction": "-log p(x|z), the same z", "kl": "KL(q(z|x) || p(z)), closed form"},
            "active_units": f"#{{j : Var_x E_q[z_j|x] >= {cfg.active_threshold}}} over the whole evaluated split "
                            "(unbiased variance, exact over ranks)",
            "mutual_information": "I_q(x; z) = mean_i [log q(z_i|x_i) - log (1/N) sum_j q(z_i|x_j)], one z_i per "
                                  "sentence, the aggregate posterior over the whole evaluated split (N sentences; "
                                  "not the minibatch estimator, which cannot exceed log of the batch size)",
            "tokens": "words + one end-of-sentence token per sentence",
            "word_dropout": {"rate": cfg.word_dropout, "replaced_by": "<unk>" if self.dropped_id < self.bos_id
                             else "a dropped-word symbol of its own (the data has no <unk>)"},
        }
        if cfg.eval_iw_samples:
            out["terms"]["iw_nll"] = (f"-log (1/K) sum_k p(x, z_k) / q(z_k|x), K = {cfg.eval_iw_samples} draws from "
                                      f"q, {cfg.eval_iw_chunk} per decoder pass")
        return out

    # -- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: Tensor, ctx: SampleContext) -> tuple[Tensor, Tensor]:
        """Sentences [N, D] and lengths [N] decoded from latents ``z`` [N, m] with the context's settings
        (temperature, top-k, top-p; ``sample.temperature`` near 0 with ``top_k=1`` is greedy)."""
        settings = ctx.settings
        max_len = min(ctx.max_len or self.max_len, self.max_len)
        return sample_causal(
            self.network, batch_size=z.shape[0], max_new_tokens=max_len, bos_id=self.bos_id, eos_id=self.eos_id,
            temperature=float(settings.temperature), top_k=int(settings.top_k), top_p=float(settings.top_p),
            generator=ctx.generator, device=self.device, condition=self._condition(z.to(self.network_dtype())),
        )

    def sample(self, num: int, ctx: SampleContext) -> Samples:
        """``num`` sentences decoded from z ~ p(z)."""
        z = self.family.prior().sample(num, ctx.generator, device=self.device)
        tokens, lengths = self.decode(z, ctx)
        return Samples(tokens=tokens, lengths=lengths)
