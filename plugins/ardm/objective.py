"""The OA-ARDM objective (Hoogeboom et al. 2022): order-agnostic autoregressive diffusion.

Notation (0-indexed, as in the paper's code): a datapoint has D variables; an order sigma assigns each variable
its generation step sigma[d] in 0..D-1; at step t the variables with sigma < t are known. The network sees the
known values and MASK elsewhere (``io.input_vocab_sizes[d] - 1 = K_max``, one shared MASK value) plus t, and
predicts every variable. The per-datapoint training estimate is

    ll(t, sigma) = sum_{d: sigma[d] >= t} log p(x_d | x_{sigma < t}, t)
    elbo = D / (D - t) * ll

whose mean over t ~ U{0..D-1} and sigma equals E_sigma log p(x | sigma) <= log p(x). The per-step loss
L_t = -ll / (D - t) (nats per unknown variable) is tracked as an EMA per t (a buffer, so it is saved in
checkpoints); the step-budget plan of :mod:`.budget` is computed from it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from anyorder.errors import ConfigError
from anyorder.objective import (
    BuildContext,
    EvalContext,
    Likelihood,
    LogLikelihood,
    LossOutput,
    SampleContext,
    Samples,
    StepContext,
    mix_seed,
)
from anyorder_plugins.any_order.objective import AnyOrderObjective, draw_steps, random_orders
from anyorder_plugins.ardm.budget import BudgetPlan, optimal_plan
from anyorder_plugins.ardm.config import ARDMConfig

LN2 = math.log(2.0)


class ARDM(AnyOrderObjective):
    """Order-agnostic ARDM with an absorbing MASK value, D/(D-t) weighting and a step-budget plan."""

    Config = ARDMConfig
    config: ARDMConfig
    likelihood = Likelihood.LOWER_BOUND  # E_sigma log p(x|sigma) <= log p(x), estimated by Monte Carlo
    supports_step_budget = True
    step_loss: Tensor
    step_seen: Tensor

    def __init__(self, config: ARDMConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        self.eval_steps = int(build.eval.steps)
        self.build_network(build)
        d = self.num_variables
        # The per-step loss EMA (nats per unknown variable) and which steps have been seen: saved in checkpoints.
        self.register_buffer("step_loss", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("step_seen", torch.zeros(d, dtype=torch.bool))

    # -- the model ---------------------------------------------------------------------------------------------------

    def _unknown_ll(self, tokens: Tensor, sigma: Tensor, t: Tensor) -> Tensor:
        """ll(t, sigma) [B]: the summed log-likelihood of the variables with sigma >= t."""
        known = sigma < t[:, None]
        logp = self.log_probs(tokens, known, t).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return (logp * (~known)).sum(dim=1)

    # -- training ----------------------------------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        tokens = batch["tokens"]
        b, d = tokens.shape
        t = draw_steps(b, d, self.config.t_sampling, device=tokens.device)
        return self.loss_given(tokens, t, random_orders(b, d, device=tokens.device))

    def loss_given(self, tokens: Tensor, t: Tensor, sigma: Tensor) -> LossOutput:
        """The loss for given draws: steps ``t`` [B] and orders ``sigma`` [B, D]."""
        b, d = tokens.shape
        ll = self._unknown_ll(tokens, sigma, t)
        remaining = (d - t).to(ll.dtype)
        elbo = d * ll / remaining
        loss = -(elbo + self.config.ce_weight * ll).mean() / (d * LN2)  # bits per variable, as in the paper
        if self.training:
            self._track_step_loss(t, (-ll / remaining).detach())
        return LossOutput(loss=loss, terms={"elbo_bpd": (-elbo.mean() / (d * LN2)).detach(),
                                            "ce_bpd": (-ll.mean() / (d * LN2)).detach()},
                          nats=-elbo.sum().detach(), num_tokens=torch.tensor(float(b * d), device=tokens.device))

    @torch.no_grad()
    def _track_step_loss(self, t: Tensor, per_variable: Tensor) -> None:
        """EMA update of L_t for the steps of this batch (a step seen for the first time takes the value)."""
        momentum = self.config.loss_ema
        for step, value in zip(t.tolist(), per_variable.double().tolist(), strict=True):
            if self.step_seen[step]:
                self.step_loss[step] = momentum * self.step_loss[step] + (1 - momentum) * value
            else:
                self.step_loss[step] = value
                self.step_seen[step] = True

    def step_losses(self) -> np.ndarray:
        """L_t for t = 0..D-1 (nats per unknown variable); steps never seen are interpolated from their neighbours.

        Raises ConfigError when no step has been seen (an untrained model has no plan).
        """
        seen = self.step_seen.cpu().numpy()
        if not seen.any():
            raise ConfigError("ardm: no per-step losses tracked yet (the checkpoint has not trained); a step budget "
                              "needs a trained model: set steps=0 for one variable per network call")
        values = self.step_loss.cpu().numpy()
        steps = np.arange(self.num_variables)
        return np.interp(steps, steps[seen], values[seen])

    def plan(self, budget: int) -> BudgetPlan:
        """The optimal step-budget plan for ``budget`` network calls (from the sorted per-step losses)."""
        return optimal_plan(self.step_losses(), budget)

    def _intervals(self, budget: int) -> list[tuple[int, int]]:
        d = self.num_variables
        if budget == 0 or budget >= d:
            return [(s, s + 1) for s in range(d)]
        return list(self.plan(budget).intervals())

    # -- likelihood --------------------------------------------------------------------------------------------------

    def likelihood_protocol(self) -> dict[str, Any]:
        steps = self.eval_steps
        out: dict[str, Any] = {"passes": int(self.config.eval_passes),
                               "seeding": "pass p of a batch whose first datapoint is i draws from mix_seed(seed, i, p)"}
        if steps >= self.num_variables:
            out["estimator"] = ("log p(x|sigma) by the whole chain: for one uniform order per pass, D network calls, "
                                "one per variable given the variables before it")
            out["steps"] = self.num_variables
        elif steps:
            out["estimator"] = ("NLL of generation with the optimal plan for the step budget: for one uniform "
                                "order per pass, the sum over the plan's intervals of the log-likelihood of the "
                                "interval's variables given the variables before it")
            out["steps"] = steps
            out["plan"] = list(self.plan(steps).steps)
        else:
            out["estimator"] = "D/(D-t) ll(t, sigma) for one uniform (t, sigma) per pass: unbiased for E_sigma log " \
                               "p(x|sigma)"
            out["steps"] = self.num_variables
        return out

    def _plan_ll(self, tokens: Tensor, sigma: Tensor, intervals: list[tuple[int, int]]) -> Tensor:
        """log p(x | sigma, plan) [B]: each interval's variables scored from one call on the variables before."""
        total = torch.zeros(tokens.shape[0], device=tokens.device, dtype=torch.float64)
        for left, right in intervals:
            t = torch.full((tokens.shape[0],), left, device=tokens.device, dtype=torch.long)
            logp = self.log_probs(tokens, sigma < left, t).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            total = total + (logp * ((sigma >= left) & (sigma < right))).sum(dim=1)
        return total

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        tokens = batch["tokens"]
        b, d = tokens.shape
        steps = ctx.steps
        batch_index = int(batch["index"][0]) if "index" in batch and batch["index"].numel() else 0
        total = torch.zeros(b, dtype=torch.float64, device=tokens.device)
        for p in range(int(self.config.eval_passes)):
            generator = ctx.generator(batch_index, p, device=tokens.device)
            sigma = random_orders(b, d, generator=generator, device=tokens.device)
            if steps:  # a budget (D or more: the whole chain, one variable per call)
                ll = self._plan_ll(tokens, sigma, self._intervals(steps))
            else:
                t = torch.randint(0, d, (b,), generator=generator, device=tokens.device)
                ll = d * self._unknown_ll(tokens, sigma, t) / (d - t).float()
            total += ll.double()
        return LogLikelihood(log_prob=total / int(self.config.eval_passes),
                             num_tokens=torch.full((b,), float(d), device=tokens.device))

    # -- sampling ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num: int, ctx: SampleContext) -> Samples:
        """``num`` datapoints in ``sample.steps`` network calls (0: D calls, one variable each). ``extras["order"]``
        holds each variable's generation step."""
        d, device, generator = self.num_variables, self.device, ctx.generator
        temperature = float(ctx.settings.temperature)
        intervals = self._intervals(ctx.steps)
        sigma = random_orders(num, d, generator=generator, device=device)
        tokens = torch.zeros(num, d, dtype=torch.long, device=device)
        calls = 0
        for left, right in intervals:
            t = torch.full((num,), left, dtype=torch.long, device=device)
            logp = self.log_probs(tokens, sigma < left, t)
            calls += 1
            if temperature != 1.0:
                logp = F.log_softmax(logp / max(temperature, 1e-6), dim=-1)
            probs = logp.exp().reshape(num * d, -1)
            drawn = torch.multinomial(probs, 1, generator=generator).reshape(num, d)
            now = (sigma >= left) & (sigma < right)
            tokens = torch.where(now, drawn, tokens)
        return Samples(tokens, torch.full((num,), d, dtype=torch.long, device=device),
                       extras={"order": sigma}, stats={"network_calls": float(calls)})

    # -- lossless compression ----------------------------------------------------------------------------------------

    def model_hash(self) -> str:
        """SHA-256 of the weights in use (names, dtypes, shapes and bytes, in name order) and the tracked losses."""
        digest = hashlib.sha256()
        for name, value in sorted(self.state_dict().items()):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
        return digest.hexdigest()

    def _coding_fn(self) -> Any:
        def fn(x: Tensor, known: Tensor, t: Tensor) -> Tensor:
            return self.log_probs(x.to(self.device), known.to(self.device), t.to(self.device)).cpu()
        return fn

    @torch.no_grad()
    def compress_to(self, path: Path, tokens: Tensor, *, fit_tokens: Tensor, steps: int, batch_size: int,
                    sigma_tries: int, seed: int) -> dict[str, Any]:
        """Compress ``tokens`` [N, D] into the container ``path`` with rANS; returns a summary.

        One order sigma for all datapoints: the best (fewest ideal bits) of ``sigma_tries`` seeded draws, scored on
        ``fit_tokens`` (training data). The step-budget plan is the optimal one for ``steps`` network calls (0: D).
        """
        from anyorder_plugins.ardm import compression

        d = self.num_variables
        budget = steps if 0 < steps < d else d
        starts = list(self.plan(budget).steps) if budget < d else list(range(d))
        vocab = list(self.space.vocab_sizes) if self.space is not None else [self.mask_id] * d
        fn = self._coding_fn()
        best: tuple[float, int, Tensor] | None = None
        for k in range(max(1, sigma_tries)):
            sigma_seed = mix_seed(seed, 9173, k)
            sigma = random_orders(1, d, generator=torch.Generator().manual_seed(sigma_seed))[0]
            bits = compression.ideal_bits(fn, fit_tokens, vocab, sigma, starts, batch_size=batch_size) \
                if len(fit_tokens) else 0.0
            if best is None or bits < best[0]:
                best = (bits, sigma_seed, sigma)
        assert best is not None
        _, sigma_seed, sigma = best
        ideal = compression.ideal_bits(fn, tokens, vocab, sigma, starts, batch_size=batch_size)
        header, words = compression.compress(fn, tokens, vocab, sigma, starts, batch_size=batch_size,
                                             model_hash=self.model_hash(), sigma_seed=sigma_seed)
        compression.write_container(path, header, words)
        size_bits = 8 * path.stat().st_size
        return {"num": int(tokens.shape[0]), "num_variables": d, "steps": budget, "sigma_seed": sigma_seed,
                "ideal_bits": ideal, "payload_bits": 32 * len(words), "file_bits": size_bits,
                "bits_per_dim": size_bits / max(1, tokens.numel()),
                "payload_bits_per_dim": 32 * len(words) / max(1, tokens.numel()),
                "ideal_bits_per_dim": ideal / max(1, tokens.numel())}

    @torch.no_grad()
    def decompress_from(self, path: Path) -> Tensor:
        """The datapoints [N, D] stored in the container ``path`` (checked against this model and the file's
        checksums; a mismatch raises a clear error)."""
        from anyorder_plugins.ardm import compression

        header, words = compression.read_container(path)
        return compression.decompress(self._coding_fn(), header, words, model_hash=self.model_hash(),
                                      source=str(path))
