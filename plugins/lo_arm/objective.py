"""The LO-ARM objective (Wang et al. 2025): any-order generation with a learned order-policy, trained on the ELBO.

Notation (0-indexed): an order is stored as ``sigma`` [B, D], entry d the step at which variable d is generated;
before step t the variables with ``sigma < t`` are known and the rest are MASK. The joint of an order z and a
datapoint x is

    log p(z, x) = sum_t [ log p(z_t | x_known) + log p(x_{z_t} | x_known) ]

where both factors come from one network call on the partially masked x: the classifier's log-probabilities and the
order-policy's logits h over the still-masked variables. q(z | x) is Plackett-Luce on scores g(x) of the full x.
For a step t and a prefix z_<t ~ q, one call gives, exactly over the next variable k,

    F(z_<t, x) = sum_{k masked} q(k | z_<t, x) [ log p(z_t = k | .) + log p(x_k | .) - log q(k | z_<t, x) ]

and the ELBO is sum_t E_q F(z_<t, x) = E_t[D F]. Training draws one t and K prefixes per datapoint and minimises

    -(D / K) sum_k [ F_k + stopgrad(F_k - mean_{j != k} F_j) log q(z^k_<t | x) ]

(REINFORCE leave-one-out for the prefix; F's own dependence on p and q is differentiated directly). Everything is
reported in bits per variable like ardm's loss: the bound divided by D ln 2.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from anyorder.network import NetworkIO
from anyorder.objective import (
    BuildContext,
    EvalContext,
    Likelihood,
    LogLikelihood,
    LossOutput,
    SampleContext,
    Samples,
    StepContext,
)
from anyorder_plugins.any_order.network import AnyOrderNetwork
from anyorder_plugins.any_order.objective import AnyOrderObjective, draw_steps
from anyorder_plugins.lo_arm.config import LOARMConfig

LN2 = math.log(2.0)
NEG_INF = float("-inf")


def plackett_luce_orders(scores: Tensor, num: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``num`` orders per row of ``scores`` [B, D] from Plackett-Luce(scores), by Gumbel-top-k: [num, B, D] steps."""
    u = torch.rand((num, *scores.shape), generator=generator, device=scores.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    perm = (scores.detach().double()[None] + gumbel).argsort(dim=-1, descending=True)  # perm[.., j]: variable at step j
    return perm.argsort(dim=-1)


def plackett_luce_log_prob(scores: Tensor, sigma: Tensor, t: Tensor | None = None) -> Tensor:
    """log q(z_<t | x) [B] of the first ``t`` [B] steps of the orders ``sigma`` [B, D] (all D when None)."""
    perm = sigma.argsort(dim=-1)
    ordered = scores.gather(-1, perm)
    step_logp = ordered - torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)
    if t is None:
        return step_logp.sum(-1)
    steps = torch.arange(sigma.shape[-1], device=sigma.device)
    return (step_logp * (steps[None] < t[:, None])).sum(-1)


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32 at least (half-precision logits are widened before a softmax; float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class LOARM(AnyOrderObjective):
    """LO-ARM-{p_policy}-{q_policy}: classifier + order-policy p (st: a head on the same network), variational q."""

    Config = LOARMConfig
    config: LOARMConfig
    q_net: AnyOrderNetwork | None

    # -- construction -------------------------------------------------------------------------------------------------

    def __init__(self, config: LOARMConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        space, cfg = build.space, config
        # chain and step: the ELBO E_q[log p(z, x) - log q(z|x)] <= log p(x), estimated by Monte Carlo; iw: tighter.
        self.likelihood = Likelihood.IMPORTANCE_WEIGHTED if cfg.eval_estimator == "iw" else Likelihood.LOWER_BOUND
        channels = 0
        self.p_channel = self.q_channel = -1
        if cfg.p_policy == "st":
            self.p_channel, channels = channels, channels + 1
        if cfg.q_policy == "st":
            self.q_channel, channels = channels, channels + 1
        self.build_network(build, extra_outputs=channels)
        self.q_net = None
        if cfg.q_policy == "sep":
            d = self.num_variables
            io = NetworkIO(input_vocab_sizes=tuple([self.mask_id + 1] * d), output_vocab_sizes=tuple([1] * d),
                           max_len=d, structure=space.structure, shape=space.shape)
            q_net = build.network(io, section=dict(cfg.q_network) if cfg.q_network else None, require=AnyOrderNetwork)
            assert isinstance(q_net, AnyOrderNetwork)
            self.q_net = q_net

    @property
    def variant(self) -> str:
        """The variant's name, LO-ARM-{p_policy}-{q_policy}."""
        return f"LO-ARM-{self.config.p_policy}-{self.config.q_policy}"

    # -- the two order-policies -------------------------------------------------------------------------------------

    def q_scores(self, tokens: Tensor) -> Tensor:
        """Plackett-Luce scores g(x) [B, D] of q(z | x), from the full datapoint (float32 at least)."""
        b, d = tokens.shape
        if self.config.q_policy == "uniform":
            dtype = next(self.network.parameters()).dtype
            return torch.zeros(b, d, device=tokens.device, dtype=_wide(torch.empty(0, dtype=dtype)).dtype)
        everything = torch.full((b,), d, device=tokens.device, dtype=torch.long)
        if self.q_net is not None:
            return _wide(self.q_net(tokens, everything)[..., 0])
        _, extra = self.network_outputs(tokens, torch.ones_like(tokens, dtype=torch.bool), everything)
        return extra[..., self.q_channel]

    def policy_logits(self, logp: Tensor, extra: Tensor) -> Tensor:
        """Order-policy logits h [B, D] from one network call's log-probabilities and extra channels."""
        if self.config.p_policy == "st":
            return extra[..., self.p_channel]
        if self.config.p_policy == "entropy":
            return -self.config.entropy_beta * torch.special.entr(logp.exp()).sum(-1)
        return torch.zeros(logp.shape[:2], device=logp.device, dtype=logp.dtype)

    # -- the per-step terms -------------------------------------------------------------------------------------------

    def step_terms(self, tokens: Tensor, sigma: Tensor, t: Tensor, scores: Tensor) -> dict[str, Tensor]:
        """One network call at step ``t`` [B] of the orders ``sigma`` [B, D]: F and its parts, each [B].

        ``F`` is the exact expectation over the next variable k ~ q(. | z_<t, x) of log p(z_t = k) + log p(x_k) -
        log q(z_t = k); ``log_px``, ``log_pz`` and ``entropy_q`` are its three parts, ``entropy_p`` the entropy of
        the order-policy at this step, ``ll`` the summed log-likelihood of every masked variable (the CE term).
        """
        known = sigma < t[:, None]
        logp, extra = self.network_outputs(tokens, known, t)
        terms = self._terms_from(tokens, known, logp, extra, scores)
        del terms["lpz"]
        return terms

    def _terms_from(self, tokens: Tensor, known: Tensor, logp: Tensor, extra: Tensor, scores: Tensor
                    ) -> dict[str, Tensor]:
        """:meth:`step_terms` from one network call's outputs; also ``lpz`` [B, D], the order-policy's log-probs."""
        masked = ~known
        lpx = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        lpz_full = F.log_softmax(_wide(self.policy_logits(logp, extra)).masked_fill(known, NEG_INF), dim=-1)
        lqz = F.log_softmax(_wide(scores).masked_fill(known, NEG_INF), dim=-1)
        # Known positions hold -inf log-probabilities; zero them so 0 * -inf never enters the sums or gradients.
        lpz, lqz, lpx_masked = lpz_full.masked_fill(known, 0.0), lqz.masked_fill(known, 0.0), lpx.masked_fill(known, 0.0)
        qz, pz = lqz.exp() * masked, lpz.exp() * masked
        log_px, log_pz, entropy_q = (qz * lpx_masked).sum(-1), (qz * lpz).sum(-1), -(qz * lqz).sum(-1)
        return {"F": log_px + log_pz + entropy_q, "log_px": log_px, "log_pz": log_pz, "entropy_q": entropy_q,
                "entropy_p": -(pz * lpz).sum(-1), "ll": lpx_masked.sum(-1), "lpz": lpz_full}

    # -- training -----------------------------------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        tokens = batch["tokens"]
        b, d = tokens.shape
        t = draw_steps(b, d, self.config.t_sampling, device=tokens.device)
        scores = self.q_scores(tokens)
        sigmas = plackett_luce_orders(scores, self.config.num_samples)
        want_variance = self.training and ctx.logs
        return self.loss_given(tokens, t, sigmas, scores=scores, gradient_variance=want_variance)

    def loss_given(self, tokens: Tensor, t: Tensor, sigmas: Tensor, *, scores: Tensor | None = None,
                   gradient_variance: bool = False) -> LossOutput:
        """The loss for given draws: steps ``t`` [B] and K orders ``sigmas`` [K, B, D] (their first t steps are the
        prefixes). ``scores`` are q's (computed when None)."""
        k, b, d = sigmas.shape
        if scores is None:
            scores = self.q_scores(tokens)
        # The K prefixes go through the network as one batch of K * B.
        terms = self.step_terms(tokens.repeat(k, 1), sigmas.reshape(k * b, d), t.repeat(k), scores.repeat(k, 1))
        per = {name: value.view(k, b) for name, value in terms.items()}
        f = per["F"]
        log_q_prefix = torch.stack([plackett_luce_log_prob(scores, sigmas[i], t) for i in range(k)])  # [K, B]
        baseline = (f.sum(0, keepdim=True) - f) / (k - 1)
        advantage = (f - baseline).detach()
        surrogate = f.mean(0) + (advantage * log_q_prefix).mean(0)  # [B]; its gradient is the RLOO estimate / D
        objective = d * surrogate + self.config.ce_weight * per["ll"].mean(0)
        if self.config.q_entropy_weight:
            objective = objective + self.config.q_entropy_weight * d * per["entropy_q"].mean(0)
        loss = -objective.mean() / (d * LN2)
        bound = d * f.mean(0)  # the ELBO estimate (nats per datapoint)
        logged = {
            "elbo_bpd": -bound.mean() / (d * LN2),
            "log_px_bpd": -(d * per["log_px"]).mean() / (d * LN2),
            "log_pz_bpd": -(d * per["log_pz"]).mean() / (d * LN2),
            "log_qz_bpd": (d * per["entropy_q"]).mean() / (d * LN2),
            "entropy_q": per["entropy_q"].mean(),
            "entropy_p": per["entropy_p"].mean(),
            "rloo_advantage_std": advantage.std(),
        }
        if gradient_variance and scores.requires_grad:
            logged["rloo_grad_var"] = self._gradient_variance(d * surrogate, scores)
        return LossOutput(loss=loss, terms={n: v.detach() for n, v in logged.items()}, nats=-bound.sum().detach(),
                          num_tokens=torch.tensor(float(b * d), device=tokens.device))

    @staticmethod
    def _gradient_variance(estimate: Tensor, scores: Tensor) -> Tensor:
        """Variance over the batch of each datapoint's RLOO gradient with respect to q's scores g(x) [B, D] (each
        datapoint's estimate depends only on its own row), summed over the D scores."""
        (grad,) = torch.autograd.grad(estimate.sum(), scores, retain_graph=True)
        return grad.float().var(dim=0, unbiased=True).sum() if grad.shape[0] > 1 else grad.new_zeros(())

    # -- likelihood ---------------------------------------------------------------------------------------------------

    def order_log_probs(self, tokens: Tensor, sigma: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For full orders ``sigma`` [B, D]: log p(z, x), log q(z | x) and the ELBO sum_t F(z_<t, x) [B] (D calls)."""
        b, d = tokens.shape
        perm = sigma.argsort(dim=-1)
        log_joint = torch.zeros(b, dtype=torch.float64, device=tokens.device)
        elbo = torch.zeros_like(log_joint)
        rows = torch.arange(b, device=tokens.device)
        for step in range(d):
            t = torch.full((b,), step, dtype=torch.long, device=tokens.device)
            known = sigma < step
            logp, extra = self.network_outputs(tokens, known, t)
            terms = self._terms_from(tokens, known, logp, extra, scores)
            var = perm[:, step]
            log_joint += (terms["lpz"][rows, var] + logp[rows, var, tokens[rows, var]]).double()
            elbo += terms["F"].double()
        return log_joint, plackett_luce_log_prob(scores, sigma).double(), elbo

    def likelihood_protocol(self) -> dict[str, Any]:
        est = self.config.eval_estimator
        text = {
            "chain": "the ELBO: per pass one order z ~ q(z|x) (seeded Gumbel-top-k) and the exact expectation over "
                     "the next variable at each of its D steps, sum_t F(z_<t, x); averaged over passes",
            "step": "the training estimator D F(z_<t, x) at one uniform step t and one prefix z_<t ~ q per pass",
            "iw": "the importance-weighted bound log mean_k p(z_k, x) / q(z_k|x) over the passes' orders z_k ~ q "
                  "(>= the ELBO, <= log p(x))",
        }[est]
        return {"variant": self.variant, "estimator": text, "passes": int(self.config.eval_passes),
                "seeding": "pass p of a batch whose first datapoint is i draws from mix_seed(seed, i, p)"}

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        tokens = batch["tokens"]
        b, d = tokens.shape
        batch_index = int(batch["index"][0]) if "index" in batch and batch["index"].numel() else 0
        scores = self.q_scores(tokens)
        passes, est = int(self.config.eval_passes), self.config.eval_estimator
        values = []
        for p in range(passes):
            generator = ctx.generator(batch_index, p, device=tokens.device)
            sigma = plackett_luce_orders(scores, 1, generator=generator)[0]
            if est == "step":
                t = torch.randint(0, d, (b,), generator=generator, device=tokens.device)
                values.append(d * self.step_terms(tokens, sigma, t, scores)["F"].double())
                continue
            log_joint, log_q, elbo = self.order_log_probs(tokens, sigma, scores)
            values.append(elbo if est == "chain" else log_joint - log_q)
        stacked = torch.stack(values)
        if est == "iw":
            value = torch.logsumexp(stacked, dim=0) - math.log(passes)
        else:
            value = stacked.mean(0)
        return LogLikelihood(log_prob=value, num_tokens=torch.full((b,), float(d), device=tokens.device))

    # -- sampling -----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num: int, ctx: SampleContext) -> Samples:
        """``num`` datapoints in D network calls: each call, the order-policy picks one masked variable and the
        classifier fills it. ``extras["order"]`` holds each variable's generation step."""
        d, device, generator = self.num_variables, self.device, ctx.generator
        temperature = float(ctx.settings.temperature)
        order_temperature = float(self.config.order_temperature)
        tokens = torch.zeros(num, d, dtype=torch.long, device=device)
        sigma = torch.full((num, d), d, dtype=torch.long, device=device)  # d = not generated yet
        rows = torch.arange(num, device=device)
        for step in range(d):
            known = sigma < step
            logp, extra = self.network_outputs(tokens, known, torch.full((num,), step, dtype=torch.long, device=device))
            logits = _wide(self.policy_logits(logp, extra)).masked_fill(known, NEG_INF)
            if order_temperature == 0:
                var = logits.argmax(dim=-1)
            else:
                var = torch.multinomial(F.softmax(logits / order_temperature, dim=-1), 1, generator=generator)[:, 0]
            value_logp = logp[rows, var]
            if temperature != 1.0:
                value_logp = F.log_softmax(value_logp / max(temperature, 1e-6), dim=-1)
            tokens[rows, var] = torch.multinomial(value_logp.exp(), 1, generator=generator)[:, 0]
            sigma[rows, var] = step
        return Samples(tokens, torch.full((num,), d, dtype=torch.long, device=device), extras={"order": sigma},
                       stats={"network_calls": float(d)})
