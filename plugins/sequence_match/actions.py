"""Action sequences with a backspace: folding, noise augmentation, and the one-pass inputs that train on them.

An episode starts from a prompt (BOS, optionally followed by a task prompt) and takes actions: a token appends it,
``BKSP`` deletes the last generated token (never the prompt), ``EOS`` ends the episode. The *folded* sequence is
what remains: :func:`fold` computes it with a stack.

Training runs the causal network once over an action sequence. :func:`one_pass_inputs` lays it out so that the
logits at input row ``P - 1 + t`` are exactly the network's output on state s_t (the folded prefix before action t),
as if that state had been fed on its own: a token action is fed at the next position id; a ``BKSP`` action is fed
as a copy of the token that becomes last, with that token's position id; every row attends exactly to the rows
that make up its state. An ``EOS`` action leads to a terminal state, which is fed as a dummy row that attends only
to itself and is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def fold(actions: Sequence[int], *, bksp: int, eos: int | None = None) -> list[int]:
    """The generated tokens left after ``actions`` (BKSP pops the last one, or does nothing when there is none;
    everything after EOS is ignored)."""
    stack: list[int] = []
    for a in actions:
        if eos is not None and a == eos:
            break
        if a == bksp:
            if stack:
                stack.pop()
        else:
            stack.append(int(a))
    return stack


@dataclass
class Augmented:
    """A datapoint turned into actions: ``actions`` and, per action, whether it emits an injected noise token."""

    actions: list[int]
    noise: list[bool]


def augment(tokens: Sequence[int], *, rate: float, vocab_size: int, bksp: int, eos: int | None,
            rng: np.random.Generator, backspace: bool = True, room: int | None = None) -> Augmented:
    """Before each token (and before EOS) insert, with probability ``rate``, a noise token drawn uniformly from the
    vocabulary other than the token due there, followed by ``BKSP``. The noise emission is flagged: it is not
    expert behaviour, while the BKSP after it is. ``backspace=False`` leaves the noise token in place (corrupted
    data, for baselines); then at most ``room`` tokens are inserted, so the corrupted sequence still fits."""
    due = [int(t) for t in tokens] + ([eos] if eos is not None else [])
    actions: list[int] = []
    noise: list[bool] = []
    left = room if (room is not None and not backspace) else None
    for target in due:
        if rate > 0 and rng.random() < rate and (left is None or left > 0):
            if left is not None:
                left -= 1
            wrong = int(rng.integers(0, vocab_size - 1))
            if target < vocab_size and wrong >= target:
                wrong += 1  # uniform over the vocabulary minus the token due here
            actions += [wrong, bksp] if backspace else [wrong]
            noise += [True, False] if backspace else [True]
        actions.append(target)
        noise.append(False)
    return Augmented(actions, noise)


@dataclass
class OnePass:
    """A batch of action sequences laid out for one forward pass of a causal network.

    ``inputs``, ``positions`` [B, R] and ``attn_mask`` [B, R, R] go to the network (R rows: each prompt, then one
    row per action; shorter rows are padded at the end). For action t of row b, the state before it is read at row
    ``state_row[b, t]`` and the state after it at ``next_row[b, t]``. Per action [B, T]: ``actions`` (0 where
    padded), ``valid`` (a real action), ``terminal`` (the state after it is terminal: V := 0), ``noise`` (an injected
    noise emission), ``step`` (the action index t, for the discount), ``can_delete`` / ``next_can_delete`` (the
    state before / after it has generated tokens, so BKSP is allowed there).
    """

    inputs: Tensor
    positions: Tensor
    attn_mask: Tensor
    state_row: Tensor
    next_row: Tensor
    actions: Tensor
    valid: Tensor
    terminal: Tensor
    noise: Tensor
    step: Tensor
    can_delete: Tensor
    next_can_delete: Tensor


def one_pass_inputs(prompts: Sequence[Sequence[int]], episodes: Sequence[Sequence[int]], *, bksp: int,
                    eos: int | None, pad_id: int, max_tokens: int | None = None,
                    noise: Sequence[Sequence[bool]] | None = None, device: torch.device | None = None) -> OnePass:
    """Lay out ``episodes`` (action lists, each after its prompt) for one pass (see :class:`OnePass`).

    ``max_tokens``: a state holding that many generated tokens is terminal (fixed-length data without EOS).
    A BKSP when nothing is generated is an error (it is masked at generation and never in augmented data).
    """
    batch = len(episodes)
    rows = max(len(p) + len(e) for p, e in zip(prompts, episodes, strict=True))
    steps = max(1, max(len(e) for e in episodes))
    inputs = np.full((batch, rows), pad_id, dtype=np.int64)
    positions = np.zeros((batch, rows), dtype=np.int64)
    allow = np.zeros((batch, rows, rows), dtype=bool)
    state_row = np.zeros((batch, steps), dtype=np.int64)
    next_row = np.zeros((batch, steps), dtype=np.int64)
    acts = np.zeros((batch, steps), dtype=np.int64)
    valid = np.zeros((batch, steps), dtype=bool)
    terminal = np.zeros((batch, steps), dtype=bool)
    noisy = np.zeros((batch, steps), dtype=bool)
    can_delete = np.zeros((batch, steps), dtype=bool)
    next_can_delete = np.zeros((batch, steps), dtype=bool)
    for b, (prompt, episode) in enumerate(zip(prompts, episodes, strict=True)):
        p = len(prompt)
        if p < 1:
            raise ValueError("every prompt needs at least one token (BOS)")
        stack = list(range(p))  # rows that make up the current state; the prompt is never deleted
        for r in range(p):
            inputs[b, r], positions[b, r] = int(prompt[r]), r
            allow[b, r, : r + 1] = True
        for t, a in enumerate(episode):
            row = p + t
            state_row[b, t], next_row[b, t] = stack[-1], row
            acts[b, t], valid[b, t] = int(a), True
            noisy[b, t] = bool(noise[b][t]) if noise is not None else False
            can_delete[b, t] = len(stack) > p
            if eos is not None and a == eos:
                terminal[b, t] = True
                inputs[b, row], positions[b, row] = pad_id, 0
                allow[b, row, row] = True  # a dummy row for the terminal state: read by nothing
                if t != len(episode) - 1:
                    raise ValueError(f"episode {b}: EOS at action {t} is not the last action")
                break
            if a == bksp:
                if len(stack) <= p:
                    raise ValueError(f"episode {b}: BKSP at action {t} with nothing generated to delete")
                stack.pop()
                last = stack.pop()
                inputs[b, row], positions[b, row] = inputs[b, last], positions[b, last]
            else:
                inputs[b, row], positions[b, row] = int(a), len(stack)
            stack.append(row)
            allow[b, row, stack] = True
            next_can_delete[b, t] = len(stack) > p
            if max_tokens is not None and len(stack) - p >= max_tokens and a != bksp:
                terminal[b, t] = True
        # Padding rows attend to themselves only, so every softmax row is well defined.
        for r in range(p + len(episode), rows):
            allow[b, r, r] = True

    def tensor(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x).to(device)

    return OnePass(tensor(inputs), tensor(positions), tensor(allow), tensor(state_row), tensor(next_row),
                   tensor(acts), tensor(valid), tensor(terminal), tensor(noisy),
                   torch.arange(steps, device=device).expand(batch, steps).clone(), tensor(can_delete),
                   tensor(next_can_delete))
