"""Decoding latents into sentences: greedy, sampling and beam search with a causal decoder conditioned on z.

Every function takes the decoder (a :class:`~anyorder_plugins.causal.network.CausalNetwork`) and its ``condition``,
one row per sentence, in the form the network was built for (:func:`decoder_condition` makes it from z for a
Sentence-VAE: [B, m] for vector conditioning, [B, 1, m] for a prefix). Token layout as in the Sentence-VAE objective:
the decoder reads BOS, then words; it predicts words and EOS.

Length: a sentence has at most ``max_len`` words (the data's longest, by default). Greedy decoding and beam search
let the decoder read BOS and up to ``max_len`` words and then force EOS, so every result is a complete sentence whose
log-probability ``log p(x|z)`` (EOS included) is the quantity they maximise. Sampling reuses the causal family's
:func:`~anyorder_plugins.causal.generate.sample_causal`, which instead stops a sentence without EOS after
``max_len`` words (its ``log_prob`` is then that of the words drawn).

A ``prefix`` (imputation) is fed after BOS; the decoder then continues it, and the result's words are the prefix's
followed by the continuation (the log-probability counts the continuation and its EOS only). Rows whose prefixes
differ in length are decoded in groups of equal length, since an LSTM cannot skip padding.

Beam search keeps the W best unfinished hypotheses of each row by log-probability. Of the candidates of a step
(every live hypothesis extended by every token), an EOS ranked among the W best finishes its hypothesis, which then
competes by its score: the log-probability divided by ``(tokens)^alpha`` (``length_norm`` = alpha; 0: the
log-probability itself; 1: per token), tokens counting the words generated and EOS. Without normalisation a row
stops when no live hypothesis can still beat its best finished one (log-probabilities only fall); with it, once W
hypotheses have finished (a live one could still have risen: the usual heuristic). Beam search of width 1 is greedy
decoding. It is not guaranteed to find a sentence more likely than greedy decoding's (the greedy path can fall out
of the beam and the W kept paths end worse), only usually does.
Caches are reordered between steps by :func:`reorder_cache`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anyorder_plugins.causal.generate import sample_causal
from anyorder_plugins.causal.network import CausalNetwork, KVCache
from anyorder_plugins.lstm.network import LSTMState

DECODE_METHODS = ("greedy", "sample", "beam")


@dataclass
class Decoded:
    """Decoded sentences: ``tokens`` [N, max_len] (words, then zeros), ``lengths`` [N] (words, EOS excluded; a
    prefix included), ``log_prob`` [N] float64 (log p of the generated tokens given z and the prefix, EOS included
    when emitted) and ``score`` [N] (what the decoder ranked by: the log-probability, or beam search's
    length-normalised score)."""

    tokens: Tensor
    lengths: Tensor
    log_prob: Tensor
    score: Tensor

    def rows(self) -> list[list[int]]:
        """Each sentence's word ids."""
        return [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths, strict=True)]


# -- caches -------------------------------------------------------------------------------------------------------

def reorder_cache(cache: KVCache, index: Tensor) -> KVCache:
    """Make row i of ``cache`` the old row ``index[i]`` (rows may repeat or be dropped: the batch becomes
    ``len(index)`` rows), in place; returns the cache.

    An :class:`~anyorder_plugins.lstm.network.LSTMState` has its h and c [n_layers, B, H] reindexed along the batch;
    a transformer's :class:`~anyorder_plugins.causal.network.KVCache` its keys and values [B, heads, capacity,
    head_dim] of every layer. Other cache types are refused with a ValueError (their layout is not known here).
    """
    if index.dim() != 1:
        raise ValueError(f"reorder_cache: index must be 1-D, got shape {tuple(index.shape)}")
    if isinstance(cache, LSTMState):  # before KVCache: an LSTMState is a KVCache subclass without keys
        if cache.h is not None and cache.c is not None:
            idx = index.to(cache.h.device)
            cache.h = cache.h.index_select(1, idx)
            cache.c = cache.c.index_select(1, idx)
        cache.batch_size = int(index.shape[0])
        return cache
    if type(cache) is KVCache:
        if cache.keys:
            idx = index.to(cache.keys[0].device)
            cache.keys = [k.index_select(0, idx) for k in cache.keys]
            cache.values = [v.index_select(0, idx) for v in cache.values]
        return cache
    raise ValueError(f"reorder_cache: cannot reorder a cache of type {type(cache).__name__}; known types: LSTMState "
                     f"(h and c rows) and KVCache (keys and values rows); add a branch for it here")


# -- helpers ------------------------------------------------------------------------------------------------------

def decoder_condition(vae: Any, z: Tensor) -> Tensor:
    """The decoder's condition for latents ``z`` [B, m] of a Sentence-VAE ``vae``: z in the decoder's dtype, with a
    prefix axis for prefix conditioning ([B, 1, m])."""
    z = z.to(device=vae.device, dtype=vae.network_dtype())
    return z[:, None, :] if vae.config.conditioning == "prefix" else z


@contextmanager
def _evaluating(network: CausalNetwork) -> Iterator[None]:
    """Eval mode and inference mode for the block; the training flag is restored afterwards."""
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        network.train(was_training)


def _check(network: CausalNetwork, condition: Tensor, max_len: int, prefixes: Sequence[Sequence[int]] | None) -> None:
    if max_len < 1:
        raise ValueError(f"max_len must be positive (got {max_len})")
    room = int(network.io.max_len) - 1 - network.io.condition_len
    if max_len > room:
        raise ValueError(f"max_len {max_len}: this decoder reads at most {room} words after BOS")
    if prefixes is not None:
        if len(prefixes) != condition.shape[0]:
            raise ValueError(f"{len(prefixes)} prefixes for {condition.shape[0]} latents")
        long = [i for i, p in enumerate(prefixes) if len(p) > max_len]
        if long:
            raise ValueError(f"prefix {long[0]} has {len(prefixes[long[0]])} words, more than max_len = {max_len}")


def _by_prefix_length(prefixes: Sequence[Sequence[int]] | None, n: int) -> list[list[int]]:
    """Row indices grouped by prefix length (one group of all rows without prefixes)."""
    if prefixes is None:
        return [list(range(n))]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        groups.setdefault(len(p), []).append(i)
    return [groups[k] for k in sorted(groups)]


def _grouped(decode_group: Callable[[list[int], Tensor, Tensor], Decoded], condition: Tensor,
             prefixes: Sequence[Sequence[int]] | None, max_len: int) -> Decoded:
    """Run ``decode_group(rows, condition[rows], prefix tokens [n, P])`` per group of equal prefix length and put the
    results back in row order, each row's prefix words in front."""
    n, device = condition.shape[0], condition.device
    tokens = torch.zeros(n, max_len, dtype=torch.long, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    log_prob = torch.zeros(n, dtype=torch.float64, device=device)
    score = torch.zeros(n, dtype=torch.float64, device=device)
    for rows in _by_prefix_length(prefixes, n):
        p = len(prefixes[rows[0]]) if prefixes is not None else 0
        pre = torch.tensor([list(prefixes[i]) for i in rows] if prefixes is not None else [[] for _ in rows],
                           dtype=torch.long, device=device).view(len(rows), p)
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        out = decode_group(rows, condition.index_select(0, idx), pre)
        width = out.tokens.shape[1]
        tokens[idx, :p] = pre
        tokens[idx, p : p + width] = out.tokens[:, : max_len - p]
        lengths[idx] = out.lengths + p
        log_prob[idx] = out.log_prob
        score[idx] = out.score
    return Decoded(tokens, lengths, log_prob, score)


def _start(network: CausalNetwork, condition: Tensor, prefix: Tensor, bos_id: int, max_len: int) -> tuple[KVCache,
                                                                                                           Tensor]:
    """A fresh cache for the rows of ``condition`` with room for BOS and ``max_len`` words, fed BOS + ``prefix``;
    returns it and the log-probabilities [n, V] of the first generated token."""
    n = condition.shape[0]
    cache = network.new_cache(n, max_len + 1 + network.io.condition_len, device=condition.device)
    bos = torch.full((n, 1), bos_id, dtype=torch.long, device=condition.device)
    logits = network.step(torch.cat([bos, prefix], dim=1), cache, condition=condition)[:, -1]
    return cache, torch.log_softmax(logits.double(), dim=-1)


def _force_eos(logp: Tensor, eos_id: int) -> Tensor:
    """``logp`` with every token but EOS impossible (the sentence has reached its maximum length)."""
    forced = torch.full_like(logp, float("-inf"))
    forced[..., eos_id] = logp[..., eos_id]
    return forced


# -- greedy ---------------------------------------------------------------------------------------------------------

def greedy_decode(network: CausalNetwork, condition: Tensor, *, bos_id: int, eos_id: int, max_len: int,
                  prefixes: Sequence[Sequence[int]] | None = None) -> Decoded:
    """The most likely next token at every step until EOS, for each row of ``condition``; EOS is forced after
    ``max_len`` words (prefix included). ``prefixes``: word ids fed after BOS, per row (imputation)."""
    _check(network, condition, max_len, prefixes)

    def group(rows: list[int], cond: Tensor, prefix: Tensor) -> Decoded:
        n, p = prefix.shape
        budget = max_len - p  # words this group may still generate
        cache, logp = _start(network, cond, prefix, bos_id, max_len)
        out = torch.zeros(n, budget, dtype=torch.long, device=cond.device)
        lengths = torch.full((n,), budget, dtype=torch.long, device=cond.device)
        total = torch.zeros(n, dtype=torch.float64, device=cond.device)
        done = torch.zeros(n, dtype=torch.bool, device=cond.device)
        for t in range(budget + 1):
            if t == budget:
                logp = _force_eos(logp, eos_id)
            best, token = logp.max(dim=-1)
            total = torch.where(done, total, total + best)
            ended = (token == eos_id) & ~done
            lengths = torch.where(ended, t, lengths)
            done |= ended
            if bool(done.all()):
                break
            out[:, t] = torch.where(done, 0, token)
            logits = network.step(token[:, None], cache, condition=cond)[:, -1]
            logp = torch.log_softmax(logits.double(), dim=-1)
        return Decoded(out, lengths, total, total.clone())

    with _evaluating(network):
        return _grouped(group, condition, prefixes, max_len)


# -- sampling -----------------------------------------------------------------------------------------------------

def sample_decode(network: CausalNetwork, condition: Tensor, *, bos_id: int, eos_id: int, max_len: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> Decoded:
    """One sentence drawn per row with :func:`~anyorder_plugins.causal.generate.sample_causal` (temperature, top-k,
    top-p); a sentence without EOS stops after ``max_len`` words. ``log_prob`` is the log-probability of the drawn
    tokens under the unfiltered decoder (EOS included when drawn); ``score`` the same."""
    _check(network, condition, max_len, None)
    tokens, lengths = sample_causal(network, batch_size=condition.shape[0], max_new_tokens=max_len, bos_id=bos_id,
                                    eos_id=eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
                                    generator=generator, device=condition.device, condition=condition)
    tokens, lengths = tokens.to(condition.device), lengths.to(condition.device)
    with _evaluating(network):
        logp = sentence_log_prob(network, condition, tokens, lengths, bos_id=bos_id, eos_id=eos_id,
                                 with_eos=lengths < max_len)
    return Decoded(tokens, lengths, logp, logp.clone())


# -- beam search --------------------------------------------------------------------------------------------------

def beam_search(network: CausalNetwork, condition: Tensor, *, bos_id: int, eos_id: int, max_len: int, width: int,
                length_norm: float = 0.0, prefixes: Sequence[Sequence[int]] | None = None) -> Decoded:
    """The best finished hypothesis of a beam of ``width`` per row of ``condition`` (see the module docstring);
    ``length_norm`` alpha >= 0 divides a finished hypothesis's log-probability by (its tokens)^alpha when ranking.
    EOS is forced after ``max_len`` words (prefix included); ``prefixes`` as in :func:`greedy_decode`."""
    if width < 1:
        raise ValueError(f"beam width must be positive (got {width})")
    if length_norm < 0:
        raise ValueError(f"length_norm must be >= 0 (got {length_norm})")
    _check(network, condition, max_len, prefixes)

    def group(rows: list[int], cond: Tensor, prefix: Tensor) -> Decoded:
        return _beam_group(network, cond, prefix, bos_id=bos_id, eos_id=eos_id, max_len=max_len, width=width,
                           alpha=length_norm)

    with _evaluating(network):
        return _grouped(group, condition, prefixes, max_len)


def _beam_group(network: CausalNetwork, cond: Tensor, prefix: Tensor, *, bos_id: int, eos_id: int, max_len: int,
                width: int, alpha: float) -> Decoded:
    """Beam search for rows that share a prefix length: the beams of row b are rows b*W .. b*W+W-1 of the cache."""
    n, p = prefix.shape
    budget = max_len - p
    device = cond.device
    w = width
    # One cache row per beam from the start (the first step has one live beam per row: the others start at -inf).
    expand = torch.arange(n, device=device).repeat_interleave(w)
    cond_w = cond.index_select(0, expand)
    cache, logp = _start(network, cond_w, prefix.index_select(0, expand), bos_id, max_len)
    vocab = logp.shape[-1]
    scores = torch.full((n, w), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0
    history = torch.zeros(n, w, 0, dtype=torch.long, device=device)
    # Per row: the finished hypotheses (normalised score, log-prob, words).
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(n)]
    done = [False] * n

    def norm(logprob: float, tokens: int) -> float:
        return logprob / (tokens ** alpha) if alpha else logprob

    for t in range(budget + 1):
        if t == budget:
            logp = _force_eos(logp, eos_id)
        cand = (scores[:, :, None] + logp.view(n, w, vocab)).view(n, w * vocab)
        k = min(2 * w, w * vocab)
        top, flat = cand.topk(k, dim=-1)  # sorted best first
        top_cpu, flat_cpu = top.cpu().tolist(), flat.cpu().tolist()
        next_scores = torch.full((n, w), float("-inf"), dtype=torch.float64)
        origin = torch.zeros(n, w, dtype=torch.long)
        next_token = torch.full((n, w), eos_id, dtype=torch.long)
        for b in range(n):
            if done[b]:
                continue
            kept = 0
            for rank, (s, f) in enumerate(zip(top_cpu[b], flat_cpu[b], strict=True)):
                if s == float("-inf"):
                    break
                beam, token = divmod(f, vocab)
                if token == eos_id:
                    if rank < w:  # an EOS below the W best candidates would not have been kept as a beam either
                        finished[b].append((norm(s, t + 1), s, history[b, beam].tolist()))
                elif kept < w:
                    next_scores[b, kept], origin[b, kept], next_token[b, kept] = s, beam, token
                    kept += 1
                if kept == w:
                    break
            best_done = max((h[0] for h in finished[b]), default=float("-inf"))
            live = next_scores[b, 0].item()
            if live == float("-inf"):
                done[b] = True
            elif finished[b] and not alpha and best_done >= live:
                done[b] = True  # log-probabilities only fall: no live hypothesis can catch up
            elif alpha and len(finished[b]) >= w:
                done[b] = True  # normalised scores can rise again: stop once W hypotheses have finished
        if all(done) or t == budget:
            break
        scores = next_scores.to(device)
        for b in range(n):
            if done[b]:
                scores[b] = float("-inf")
        origin_d, token_d = origin.to(device), next_token.to(device)
        history = torch.cat([history.gather(1, origin_d[:, :, None].expand(-1, -1, history.shape[2])),
                             token_d[:, :, None]], dim=2)
        rows = (torch.arange(n, device=device)[:, None] * w + origin_d).view(-1)
        reorder_cache(cache, rows)
        logits = network.step(token_d.view(-1, 1), cache, condition=cond_w)[:, -1]
        logp = torch.log_softmax(logits.double(), dim=-1)

    tokens = torch.zeros(n, budget, dtype=torch.long, device=device)
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    log_prob = torch.zeros(n, dtype=torch.float64, device=device)
    score = torch.zeros(n, dtype=torch.float64, device=device)
    for b in range(n):
        if not finished[b]:  # every continuation impossible (-inf): an empty sentence of probability 0
            lengths[b], log_prob[b], score[b] = 0, float("-inf"), float("-inf")
            continue
        best = max(finished[b], key=lambda h: h[0])  # the first of equals: max keeps the earliest
        words = best[2]
        tokens[b, : len(words)] = torch.tensor(words, dtype=torch.long)
        lengths[b], log_prob[b], score[b] = len(words), best[1], best[0]
    return Decoded(tokens, lengths, log_prob, score)


# -- scoring ------------------------------------------------------------------------------------------------------

def sentence_log_prob(network: CausalNetwork, condition: Tensor, tokens: Tensor, lengths: Tensor, *, bos_id: int,
                      eos_id: int, with_eos: Tensor | bool = True, prefix_lengths: Tensor | None = None) -> Tensor:
    """log p(words, EOS | z) per row [N] (float64) by teacher forcing: the sum over positions from
    ``prefix_lengths`` (default 0) to ``lengths`` (EOS at ``lengths`` counted where ``with_eos``)."""
    n, d = tokens.shape
    device = tokens.device
    bos = torch.full((n, 1), bos_id, dtype=torch.long, device=device)
    logits = network(torch.cat([bos, tokens], dim=1), condition=condition)  # [n, d + 1, V]
    logp = torch.log_softmax(logits.double(), dim=-1)
    positions = torch.arange(d + 1, device=device)[None]
    targets = torch.where(positions == lengths[:, None], eos_id, torch.cat([tokens, bos * 0], dim=1))
    picked = logp.gather(-1, targets[:, :, None])[:, :, 0]
    eos = torch.as_tensor(with_eos, device=device).expand(n)
    start = prefix_lengths if prefix_lengths is not None else torch.zeros_like(lengths)
    keep = (positions >= start[:, None]) & ((positions < lengths[:, None]) |
                                            ((positions == lengths[:, None]) & eos[:, None]))
    return (picked * keep).sum(1)


# -- for a Sentence-VAE --------------------------------------------------------------------------------------------

def decode_latents(vae: Any, z: Tensor, method: str = "greedy", *, width: int = 5, length_norm: float = 0.0,
                   max_len: int | None = None, prefixes: Sequence[Sequence[int]] | None = None,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   generator: torch.Generator | None = None) -> Decoded:
    """Sentences decoded from latents ``z`` [N, m] by a Sentence-VAE objective's decoder: ``method`` greedy |
    sample | beam. ``max_len`` defaults to the data's longest sentence; ``prefixes`` (greedy and beam) continue
    given words."""
    if method not in DECODE_METHODS:
        raise ValueError(f"decoding method {method!r}: use one of {', '.join(DECODE_METHODS)}")
    limit = int(vae.max_len) if max_len is None else min(int(max_len), int(vae.max_len))
    cond = decoder_condition(vae, z)
    ids = {"bos_id": int(vae.bos_id), "eos_id": int(vae.eos_id), "max_len": limit}
    if method == "sample":
        if prefixes is not None:
            raise ValueError("sampling does not continue prefixes; use greedy or beam")
        return sample_decode(vae.network, cond, temperature=temperature, top_k=top_k, top_p=top_p,
                             generator=generator, **ids)
    if method == "greedy":
        return greedy_decode(vae.network, cond, prefixes=prefixes, **ids)
    return beam_search(vae.network, cond, width=width, length_norm=length_norm, prefixes=prefixes, **ids)
