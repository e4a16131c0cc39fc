"""The SequenceMatch objective (Cundy & Ermon 2024): imitation learning of sequences with a backspace action.

Token layout: data values 0..V-1; EOS = V for variable-length data (fixed-length data ends after D tokens);
BKSP is the last action id. The network reads BOS = V (also the padding and dummy input) and the data values, and
outputs one logit per action. See :mod:`.actions` for folding, augmentation and the one-pass layout, and
:class:`~.config.SequenceMatchConfig` for the loss.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyorder.errors import ConfigError, RunError
from anyorder.generate import filter_logits
from anyorder.network import NetworkIO
from anyorder.objective import (
    BuildContext,
    EvalContext,
    Likelihood,
    LogLikelihood,
    LossOutput,
    Objective,
    SampleContext,
    Samples,
    StepContext,
    mix_seed,
)
from anyorder_plugins.causal.network import CausalNetwork
from anyorder_plugins.sequence_match.actions import augment, fold, one_pass_inputs
from anyorder_plugins.sequence_match.config import SequenceMatchConfig
from anyorder_plugins.sequence_match.divergence import Divergence

NEG_INF = float("-inf")


class SequenceMatch(Objective):
    """A causal policy over tokens, EOS and BKSP; BC, then the convex combination of BC and the divergence loss."""

    Config = SequenceMatchConfig
    config: SequenceMatchConfig
    # log pi of the data typed straight through: one of the action sequences that fold to x, so a lower bound.
    likelihood = Likelihood.LOWER_BOUND
    network: CausalNetwork

    def __init__(self, config: SequenceMatchConfig, build: BuildContext) -> None:
        super().__init__(config, build)
        space = build.space
        if space.structure != "sequence" or not space.shared_vocab:
            raise ConfigError("sequence_match needs sequences over one shared vocabulary")
        vocab = space.vocab_size
        self.vocab_size = vocab
        self.bos_id = vocab
        self.eos_id: int | None = vocab if space.variable_length else None
        self.bksp_id = vocab + (1 if space.variable_length else 0)
        self.max_len = space.num_variables
        # Positions: BOS, D tokens, and one more for a noise token typed (and deleted) past the longest datapoint.
        io = NetworkIO(input_vocab_sizes=(vocab + 1,), output_vocab_sizes=(self.bksp_id + 1,),
                       max_len=space.num_variables + 2, structure=space.structure, shape=space.shape)
        network = build.network(io, require=CausalNetwork)
        assert isinstance(network, CausalNetwork)
        self.network = network
        divergence = build.plugin("divergence", self.config.divergence)
        if not isinstance(divergence, Divergence):
            raise ConfigError(f"divergence plugin {self.config.divergence['name']!r} is not a "
                              f"{Divergence.__module__}.Divergence")
        self.divergence = divergence
        # (prompt, actions) of the model's own generations; conditional data prompts them with training questions.
        self.replay: deque[tuple[list[int], list[int]]] = deque(maxlen=max(1, self.config.replay_size))

    # -- episodes ----------------------------------------------------------------------------------------------------

    def _prompts_and_targets(self, batch: dict[str, Tensor]) -> tuple[list[list[int]], list[list[int]]]:
        """Per datapoint: the prompt (BOS and the given tokens of conditional data) and the tokens to generate."""
        tokens, lengths = batch["tokens"].cpu().tolist(), batch["lengths"].cpu().tolist()
        given = batch["prompt_lengths"].cpu().tolist() if "prompt_lengths" in batch else [0] * len(tokens)
        prompts = [[self.bos_id] + row[:p] for row, p in zip(tokens, given, strict=True)]
        targets = [row[p:n] for row, p, n in zip(tokens, given, lengths, strict=True)]
        return prompts, targets

    def _episodes(self, batch: dict[str, Tensor], rng: np.random.Generator) -> tuple[list[list[int]], list[list[int]],
                                                                                       list[list[bool]]]:
        """Prompts, augmented action lists and noise flags of a data batch."""
        prompts, targets = self._prompts_and_targets(batch)
        episodes, noise = [], []
        for prompt, target in zip(prompts, targets, strict=True):
            room = self.max_len + 1 - len(prompt) - len(target)  # positions left after the datapoint (+1 spare)
            aug = augment(target, rate=self.config.noise_rate, vocab_size=self.vocab_size, bksp=self.bksp_id,
                          eos=self.eos_id, rng=rng, backspace=self.config.noise_backspace, room=room)
            episodes.append(aug.actions)
            noise.append([False] * len(aug.noise) if self.config.imitate_noise else aug.noise)
        return prompts, episodes, noise

    def action_terms(self, prompts: list[list[int]], episodes: list[list[int]], noise: list[list[bool]] | None,
                     num_data: int) -> dict[str, Tensor]:
        """One forward pass over the episodes (the first ``num_data`` are data, the rest replay): the per-action
        quantities [B, T] the losses are made of."""
        layout = one_pass_inputs(prompts, episodes, bksp=self.bksp_id, eos=self.eos_id, pad_id=self.bos_id,
                                 max_tokens=None if self.eos_id is not None else self.max_len, noise=noise,
                                 device=self.device)
        logits = self.network(layout.inputs, positions=layout.positions, attn_mask=layout.attn_mask).float()
        actions = logits.shape[-1]

        def at(rows: Tensor, can_delete: Tensor) -> Tensor:
            picked = logits.gather(1, rows[..., None].expand(-1, -1, actions))
            return picked.masked_fill((~can_delete)[..., None] & (torch.arange(actions, device=rows.device)
                                                                   == self.bksp_id), NEG_INF)

        here = at(layout.state_row, layout.can_delete)
        after = at(layout.next_row, layout.next_can_delete)
        value = here.logsumexp(-1)
        # After EOS nothing follows: V := 0. The end of a fixed-length window is a cut, not an end: its V is kept.
        ended = layout.terminal if (self.eos_id is not None or self.config.truncation == "terminal") \
            else torch.zeros_like(layout.terminal)
        next_value = after.logsumexp(-1).masked_fill(ended | ~layout.valid, 0.0)
        q = here.gather(-1, layout.actions[..., None]).squeeze(-1)
        is_data = torch.zeros_like(layout.valid)
        is_data[:num_data] = True
        with torch.no_grad():  # diagnostics only
            log_probs = (here - value[..., None]).clamp(min=-1e4)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            p_bksp = log_probs[..., self.bksp_id].exp()
        return {"q": q, "value": value, "next_value": next_value, "valid": layout.valid, "noise": layout.noise,
                "step": layout.step, "is_data": is_data, "actions": layout.actions, "entropy": entropy,
                "p_bksp": p_bksp, "can_delete": layout.can_delete}

    def losses(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """BC and the three L_SM terms from :meth:`action_terms`, each divided by the actions it covers."""
        gamma = self.config.gamma
        valid, data = terms["valid"], terms["valid"] & terms["is_data"]
        imitated = data & ~terms["noise"]
        mix = valid if self.config.noise_in_mixture else valid & ~terms["noise"]
        w = gamma ** terms["step"].double()
        r = terms["q"] - gamma * terms["next_value"]
        log_pi = terms["q"] - terms["value"]
        n_imitated = imitated.sum().clamp(min=1)
        mean_mix = self._mixture_mean(mix, terms["is_data"])
        out = {"bc": -(log_pi * imitated).sum() / n_imitated,
               "expert": -(w * self.divergence.expert(r) * imitated).sum().float() / n_imitated,
               "value": mean_mix(w * (terms["value"] - gamma * terms["next_value"])).float()}
        penalty = self.divergence.mixture_penalty(r)
        out["penalty"] = mean_mix(w * penalty).float() if penalty is not None else r.new_zeros(())
        out["sm"] = out["expert"] + out["penalty"] + out["value"]
        out["mean_v"] = mean_mix(terms["value"])
        out["mean_r"] = mean_mix(r)
        # Diagnostics: the policy's entropy and P(BKSP) at the clean data states (something to delete, not after a
        # noise token), and the log-likelihood per action of the replayed generations under the current policy.
        after_noise = torch.zeros_like(terms["noise"])
        after_noise[:, 1:] = terms["noise"][:, :-1]
        clean = imitated & terms["can_delete"] & ~after_noise
        out["entropy_data"] = (terms["entropy"] * imitated).sum() / n_imitated
        out["bksp_prob_clean"] = (terms["p_bksp"] * clean).sum() / clean.sum()
        replayed = valid & ~terms["is_data"]
        out["loglik_replay"] = (log_pi.detach() * replayed).sum() / replayed.sum()
        # Diagnostics: the implicit reward on the three kinds of action.
        for name, where in (("r_data", imitated), ("r_replay", valid & ~terms["is_data"]),
                            ("r_noise", data & terms["noise"])):
            out[name] = ((r * where).sum() / where.sum()).detach()  # NaN when there is none (no host sync)
        return out

    def _mixture_mean(self, mix: Tensor, is_data: Tensor) -> Any:
        """The mean over the mixture's actions: half data, half replay (``mixture=equal``; data alone when there is
        no replay), or one mean over all of them (``per_action``)."""
        data, replay = mix & is_data, mix & ~is_data
        if self.config.mixture == "per_action" or not bool(replay.any()):
            return lambda x: (x * mix).sum() / mix.sum().clamp(min=1)
        return lambda x: 0.5 * (x * data).sum() / data.sum().clamp(min=1) + 0.5 * (x * replay).sum() / replay.sum()

    # -- training ----------------------------------------------------------------------------------------------------

    def warm(self, ctx: StepContext) -> bool:
        """Whether the step is in the behaviour-cloning warm-up (the first ``bc_warmup`` of ``train.max_steps``)."""
        return ctx.step < self.config.bc_warmup * ctx.max_steps

    def loss(self, batch: dict[str, Tensor], ctx: StepContext) -> LossOutput:
        # The rank is part of every seed: under DDP each rank corrupts its own data and fills its own replay buffer.
        rng = np.random.default_rng(mix_seed(ctx.seed, ctx.step, ctx.rank, 0xB5))
        prompts, episodes, noise = self._episodes(batch, rng)
        num_data = len(episodes)
        warm = self.warm(ctx)
        if not warm and self.config.replay_every and self.training:
            if ctx.step % self.config.replay_every == 0 or not self.replay:
                self._refresh_replay(prompts, rng, ctx)
            picks = rng.choice(len(self.replay), size=min(self.config.replay_rows, len(self.replay)), replace=False)
            for i in picks:
                prompt, actions = self.replay[int(i)]
                prompts.append(prompt)
                episodes.append(actions)
                noise.append([False] * len(actions))
        parts = self.losses(self.action_terms(prompts, episodes, noise, num_data))
        lam = 0.0 if warm else self.config.lam
        loss = (1.0 - lam) * parts["bc"] + lam * parts["sm"]
        terms = {k: v.detach() for k, v in parts.items()}
        terms["lam"] = torch.tensor(lam)
        return LossOutput(loss=loss, terms=terms)

    @torch.no_grad()
    def _refresh_replay(self, prompts: list[list[int]], rng: np.random.Generator, ctx: StepContext) -> None:
        """Generate ``replay_batch`` action sequences with the current model into the buffer (this rank's own), from
        prompts of the current batch (BOS alone for unconditional data)."""
        picks = rng.integers(0, len(prompts), size=self.config.replay_batch)
        chosen = [prompts[int(i)] for i in picks]
        generator = torch.Generator(device=self.device).manual_seed(mix_seed(ctx.seed, ctx.step, ctx.rank, 0xEE))
        episodes, _ = self.generate(len(chosen), generator=generator, temperature=1.0, prompts=chosen)
        self.replay.extend(zip(chosen, episodes, strict=True))

    # -- fine-tuning from a language model -------------------------------------------------------------------------

    def init_from_state(self, state: dict[str, Tensor]) -> None:
        """Start from another run's weights, typically an MLE run on the same data (the paper fine-tunes a trained
        model). Tensors that match are copied. A tensor that is larger here along its first dimension only (the
        output head, which has one more action, BKSP; learned positions, one more for a noise token past the
        longest datapoint) takes the source's rows, and its extra rows are zero: BKSP starts with logit 0."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise RunError(f"the source run's weights lack {missing[:5]}; train.init_from needs the same network")
        grown = {}
        for name, value in own.items():
            source = state[name]
            if source.shape == value.shape:
                continue
            if source.dim() != value.dim() or source.shape[1:] != value.shape[1:] or source.shape[0] > value.shape[0]:
                raise RunError(f"the source run's {name!r} has shape {tuple(source.shape)}, this objective's "
                               f"{tuple(value.shape)}; train.init_from needs the same network")
            grown[name] = torch.cat([source.to(value.dtype), value.new_zeros(value.shape[0] - source.shape[0],
                                                                           *value.shape[1:])])
        merged = {**{k: state[k] for k in own}, **grown}
        shared: dict[int, list[str]] = {}  # tied parameters (one tensor under two names) must get one value
        for name, param in self.named_parameters(remove_duplicate=False):
            shared.setdefault(param.data_ptr(), []).append(name)
        for names in shared.values():
            if any(not torch.equal(merged[names[0]], merged[n]) for n in names[1:]):
                raise RunError(f"this network ties {' and '.join(names)} but the source run's differ; set "
                               f"network.tie_embeddings=false")
        self.load_state_dict(merged)

    # -- checkpoints: the replay buffers travel with the weights, so a resumed run continues exactly ---------------

    def checkpoint_state(self) -> Any:
        # This rank's buffer as plain int lists (the core gathers every rank's): loading stays weights-only.
        return [[list(prompt), list(actions)] for prompt, actions in self.replay]

    def load_checkpoint_state(self, states: list[Any], rank: int, world_size: int) -> None:
        # Same number of ranks: each takes its own buffer back. Otherwise the sequences are dealt out round-robin.
        entries = states[rank] if len(states) == world_size else [e for b in states for e in (b or [])][rank::world_size]
        self.replay.clear()
        self.replay.extend((list(prompt), list(actions)) for prompt, actions in (entries or []))

    # -- likelihood: the policy's probability of the folded data, written without backspaces ------------------------

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, Tensor], ctx: EvalContext) -> LogLikelihood:
        """log pi(x) of the datapoint typed straight through (no BKSP): a lower bound on the probability of producing
        x, which sums over every action sequence that folds to x."""
        prompts, targets = self._prompts_and_targets(batch)
        episodes = [t + ([self.eos_id] if self.eos_id is not None else []) for t in targets]
        terms = self.action_terms(prompts, episodes, None, len(episodes))
        log_pi = ((terms["q"] - terms["value"]) * terms["valid"]).double().sum(1)
        counts = terms["valid"].sum(1).to(torch.float64)
        return LogLikelihood(log_prob=log_pi, num_tokens=counts)

    # -- generation with backspace -----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, num: int, *, generator: torch.Generator, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, max_len: int | None = None,
                 prompts: list[list[int]] | None = None) -> tuple[list[list[int]], Tensor]:
        """``num`` episodes (action lists after their prompts; default: BOS alone) from the policy, with the KV cache
        cropped row by row on BKSP; returns them and the number of BKSP actions per episode. ``temperature`` 0 takes
        the most likely action; ``top_k`` and ``top_p`` filter the actions (BKSP among them) as in MLE sampling."""
        network, device = self.network, self.device
        prompts = prompts if prompts is not None else [[self.bos_id]] * num
        if len(prompts) != num or any(not p for p in prompts):
            raise ValueError("give one non-empty prompt (starting with BOS) per episode")
        max_len = min(int(max_len or self.max_len), self.max_len)
        # A row may generate until its folded sequence reaches max_len or the network's last position.
        limits = torch.tensor([min(max_len, self.max_len + 1 - len(p)) for p in prompts], device=device)
        cap = max(max_len + 1, int(self.config.action_cap * max_len))
        width = max(len(p) for p in prompts)
        was = network.training
        network.eval()
        try:
            cache = network.new_cache(num, width + cap, device=device)
            slot_token = torch.full((num, width + cap), self.bos_id, dtype=torch.long, device=device)
            slot_pos = torch.zeros(num, width + cap, dtype=torch.long, device=device)
            block_mask = torch.eye(width, dtype=torch.bool, device=device).repeat(num, 1, 1)
            for b, prompt in enumerate(prompts):  # prompts of different lengths, fed as one masked block
                slot_token[b, : len(prompt)] = torch.tensor(prompt, device=device)
                slot_pos[b, : len(prompt)] = torch.arange(len(prompt), device=device)
                block_mask[b, : len(prompt), : len(prompt)] = torch.ones(len(prompt), len(prompt), device=device,
                                                                         dtype=torch.bool).tril()
            out = network.step(slot_token[:, :width], cache, positions=slot_pos[:, :width], attn_mask=block_mask)
            logits = out[torch.arange(num, device=device), torch.tensor([len(p) - 1 for p in prompts], device=device)]
            slots: list[list[int]] = [list(range(len(p))) for p in prompts]  # cache slots of each row's state
            episodes: list[list[int]] = [[] for _ in range(num)]
            done = [False] * num
            for t in range(cap):
                generated = torch.tensor([len(s) - len(p) for s, p in zip(slots, prompts, strict=True)],
                                         device=device)
                logits = logits.float().clone()
                logits[:, self.bksp_id] = logits[:, self.bksp_id].masked_fill(generated == 0, NEG_INF)
                # At full length only EOS or BKSP remain (fixed-length rows are done once full).
                full = generated >= limits
                logits[:, : self.vocab_size] = logits[:, : self.vocab_size].masked_fill(full[:, None], NEG_INF)
                if temperature <= 0:
                    chosen = logits.argmax(dim=-1).tolist()
                else:
                    probs = torch.softmax(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p),
                                          dim=-1)
                    chosen = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
                slot = width + t
                for b, a in enumerate(chosen):
                    if done[b]:
                        slots[b] = [slot]  # a finished row feeds a dummy that sees itself only
                        continue
                    episodes[b].append(a)
                    if self.eos_id is not None and a == self.eos_id:
                        done[b] = True
                        slots[b] = [slot]
                    elif a == self.bksp_id:
                        slots[b].pop()
                        last = slots[b].pop()
                        slot_token[b, slot], slot_pos[b, slot] = slot_token[b, last], slot_pos[b, last]
                        slots[b].append(slot)
                    else:
                        slot_token[b, slot], slot_pos[b, slot] = a, len(slots[b])
                        slots[b].append(slot)
                        if self.eos_id is None and len(slots[b]) - len(prompts[b]) >= int(limits[b]):
                            done[b] = True
                if all(done):
                    break
                mask = torch.zeros(num, 1, slot + 1, dtype=torch.bool, device=device)
                for b, s in enumerate(slots):
                    mask[b, 0, s] = True
                logits = network.step(slot_token[:, slot:slot + 1], cache, positions=slot_pos[:, slot:slot + 1],
                                      attn_mask=mask)[:, -1]
            backspaces = torch.tensor([sum(a == self.bksp_id for a in e) for e in episodes], dtype=torch.float64)
            return episodes, backspaces
        finally:
            network.train(was)

    def complete(self, prompts: list[list[int]], *, generator: torch.Generator, temperature: float = 0.0
                 ) -> tuple[list[list[int]], float]:
        """The folded continuations of data prompts (token lists, without BOS) and the backspace rate."""
        episodes, backspaces = self.generate(len(prompts), generator=generator, temperature=temperature,
                                             prompts=[[self.bos_id, *p] for p in prompts])
        actions = sum(len(e) for e in episodes)
        return [fold(e, bksp=self.bksp_id, eos=self.eos_id) for e in episodes], float(backspaces.sum()) / max(1, actions)

    def sample(self, num: int, ctx: SampleContext) -> Samples:
        """``num`` folded sequences; ``stats["backspace_rate"]`` is the share of actions that were BKSP."""
        settings = ctx.settings
        episodes, backspaces = self.generate(num, generator=ctx.generator, temperature=float(settings.temperature),
                                             top_k=int(settings.top_k), top_p=float(settings.top_p),
                                             max_len=ctx.max_len or None)
        folded = [fold(e, bksp=self.bksp_id, eos=self.eos_id) for e in episodes]
        width = max(1, max(len(f) for f in folded))
        tokens = torch.zeros(num, width, dtype=torch.long)
        for i, f in enumerate(folded):
            tokens[i, : len(f)] = torch.tensor(f, dtype=torch.long)
        actions = sum(len(e) for e in episodes)
        return Samples(tokens.to(self.device), torch.tensor([len(f) for f in folded], device=self.device),
                       stats={"backspace_rate": float(backspaces.sum()) / max(1, actions),
                              "actions_per_sample": actions / max(1, num)})
