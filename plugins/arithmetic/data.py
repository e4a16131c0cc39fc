"""The ``arithmetic`` dataset: seeded questions ``a op b=`` in a base and their answers, as character sequences.

Token layout (vocabulary of ``base + 3`` tokens): ids ``0..base-1`` are the digits (id = digit value), then
``+`` = base, ``-`` = base + 1, ``=`` = base + 2. A datapoint is the string ``a op b=c`` (e.g. ``25-143=-115``),
one token per character, variable length, padded with 0 past its length (padding is never read: every batch has
``lengths``). The *prompt* is the question, everything up to and including ``=``; the *answer* follows.

Every split is a conditional :class:`~anyorder.data.TokenSet`: its ``prompt_lengths`` (the position after the
first ``=``, whose id is :attr:`ArithmeticDataModule.equals_id`) reach objectives as the batch's
``prompt_lengths``, so a conditional objective generates only the answer. :func:`prompt_lengths` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyorder.data import DataSpace, DiscreteDataModule, Splits, TokenSet
from anyorder.errors import DataError
from anyorder_plugins.arithmetic.config import ArithmeticConfig
from anyorder_plugins.arithmetic.equations import EQUALS, digits_of, format_question, parse_equation, solve

__all__ = ["ArithmeticDataModule", "prompt_lengths", "solve"]

SPLITS = ("train", "val", "test")
DRAW_ORDER = ("test", "val", "train")
"""Held-out splits are drawn first, so the test questions do not depend on num_train or num_val."""
_CHUNK = 4096  # candidate questions drawn per vectorised batch
_ATTEMPTS_PER_QUESTION = 200  # rejection budget; check() keeps the fill at most half, so this is never near reached

Question = tuple[int, str, int]


def prompt_lengths(tokens: Tensor, lengths: Tensor, equals_id: int) -> Tensor:
    """Prompt lengths [B] (int64) of sequences ``tokens`` [B, D] with ``lengths`` [B]: the index just after the first
    ``equals_id`` token within each sequence's length, or 0 for a sequence that has none (not a question)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    hit = (tokens == equals_id) & (positions[None, :] < lengths[:, None])
    first = torch.where(hit, positions[None, :], tokens.shape[1]).min(dim=1).values
    return torch.where(hit.any(dim=1), first + 1, torch.zeros_like(first))


def sample_questions(config: ArithmeticConfig) -> dict[str, list[Question]]:
    """The questions of every split: distinct within and across splits, drawn test, then val, then train."""
    c = config
    seen: set[Question] = set()
    out: dict[str, list[Question]] = {}
    sizes = {"train": c.num_train, "val": c.num_val, "test": c.num_test}
    # Bounds of the magnitudes with exactly k digits (k = 1..max_digits): 0 is a one-digit number.
    low = np.array([0] + [c.base ** (k - 1) for k in range(2, c.max_digits + 1)], dtype=np.int64)
    high = np.array([c.base**k for k in range(1, c.max_digits + 1)], dtype=np.int64)
    for split in DRAW_ORDER:
        # One stream per split (seed sequence [seed, split index]), so a split's draws do not depend on how many
        # candidates an earlier split consumed.
        rng = np.random.default_rng([c.seed, SPLITS.index(split)])
        want, drawn = sizes[split], 0
        questions: list[Question] = []
        while len(questions) < want:
            if drawn > _ATTEMPTS_PER_QUESTION * want + _CHUNK:
                raise DataError(f"arithmetic: could not draw {want} distinct {split} questions after {drawn} draws; "
                                f"raise max_digits or lower the split sizes")
            ops = rng.integers(0, 2, size=_CHUNK)
            operands = []
            for _ in range(2):
                k = rng.integers(0, c.max_digits, size=_CHUNK)
                magnitude = rng.integers(low[k], high[k])
                sign = np.where(rng.integers(0, 2, size=_CHUNK) == 1, -1, 1) if c.negative else 1
                operands.append((magnitude * sign).tolist())
            drawn += _CHUNK
            for a, op, b in zip(operands[0], ops.tolist(), operands[1], strict=True):
                question = (int(a), "+-"[op], int(b))
                if question not in seen:
                    seen.add(question)
                    questions.append(question)
                    if len(questions) == want:
                        break
        out[split] = questions
    return out


class ArithmeticDataModule(DiscreteDataModule):
    """Addition and subtraction in a base as variable-length character sequences ``a op b=c``, generated locally."""

    Config = ArithmeticConfig
    config: ArithmeticConfig

    def __init__(self, config: ArithmeticConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.vocab: tuple[str, ...] = (*digits_of(config.base), "+", "-", EQUALS)
        """The characters, in token-id order."""
        self._index = {ch: i for i, ch in enumerate(self.vocab)}
        self._questions: dict[str, list[Question]] | None = None

    # -- token layout -------------------------------------------------------------------------------------------------
    @property
    def equals_id(self) -> int:
        """Token id of ``=`` (the last token of every prompt)."""
        return self.config.base + 2

    @property
    def max_length(self) -> int:
        """Positions of the space: the longest possible datapoint."""
        return self.config.max_length

    # -- splits -------------------------------------------------------------------------------------------------------
    @property
    def questions(self) -> dict[str, list[Question]]:
        """``(a, op, b)`` of every datapoint of every split, in dataset order."""
        if self._questions is None:
            self._questions = sample_questions(self.config)
        return self._questions

    def split_strings(self, split: str) -> list[str]:
        """The datapoints of ``split`` as strings ``a op b=c``."""
        base = self.config.base
        out = []
        for a, op, b in self.questions[split]:
            question = format_question(a, op, b, base)
            out.append(question + solve(question, base))
        return out

    def build(self) -> Splits:
        c = self.config
        sets = {split: self._encode_strings(self.split_strings(split)) for split in SPLITS}
        space = DataSpace.sequence(c.max_length, len(self.vocab), variable_length=True, token_names=self.vocab)
        info = {"vocab": "".join(self.vocab), "max_length": c.max_length,
                "num_questions_possible": c.num_questions, "sizes": {s: len(t) for s, t in sets.items()}}
        return Splits(sets["train"], sets["val"], sets["test"], space, info)

    # -- prompts ------------------------------------------------------------------------------------------------------
    prompt_lengths = staticmethod(prompt_lengths)

    def prompt_length(self, tokens: Tensor, length: int) -> int:
        """The prompt length of one datapoint: the index just after its first ``=``."""
        found = (tokens[:length] == self.equals_id).nonzero()
        if found.numel() == 0:
            raise DataError(f"arithmetic: {self.decode(tokens, length)!r} has no '=': it is not a question")
        return int(found[0, 0]) + 1

    def split_prompt_lengths(self, split: str) -> Tensor:
        """Prompt lengths [N] of every datapoint of ``split`` (index them with a batch's ``index``)."""
        data: TokenSet = getattr(self.splits, split)
        return prompt_lengths(data.tokens, data.lengths, self.equals_id)

    def prompts_and_answers(self, split: str) -> list[tuple[str, str]]:
        """``(prompt, answer)`` strings of every datapoint of ``split``: ``("25-143=", "-115")``."""
        out = []
        for text in self.split_strings(split):
            cut = text.index(EQUALS) + 1
            out.append((text[:cut], text[cut:]))
        return out

    # -- domain objects -----------------------------------------------------------------------------------------------
    def decode(self, tokens: Tensor, length: int) -> str:
        """The string of one datapoint (any token sequence decodes, well formed or not)."""
        vocab = self.vocab
        return "".join(vocab[i] for i in tokens[:length].tolist())

    def encode(self, objs: Sequence[Any]) -> TokenSet:
        """Equation strings ``a op b=c`` in the base (answers need not be correct) as a :class:`TokenSet`."""
        return self._encode_strings([str(obj) for obj in objs])

    def _encode_strings(self, texts: Sequence[str]) -> TokenSet:
        base, size = self.config.base, self.config.max_length
        tokens = torch.zeros((len(texts), size), dtype=torch.long)
        lengths = torch.empty(len(texts), dtype=torch.long)
        for i, text in enumerate(texts):
            unknown = sorted(set(text) - self._index.keys())
            if unknown:
                raise DataError(f"arithmetic: sample {i} {text!r} has characters outside the base-{base} vocabulary "
                                f"{''.join(self.vocab)!r}: {unknown!r}")
            if EQUALS not in text:
                raise DataError(f"arithmetic: sample {i} {text!r} has no '=' (a datapoint is 'a op b=c')")
            if parse_equation(text, base) is None:
                raise DataError(f"arithmetic: sample {i} {text!r} is not an equation 'a+b=c' or 'a-b=c' in base {base}")
            if len(text) > size:
                raise DataError(f"arithmetic: sample {i} {text!r} has {len(text)} characters; the space has {size}")
            tokens[i, :len(text)] = torch.tensor([self._index[ch] for ch in text], dtype=torch.long)
            lengths[i] = len(text)
        # The question (up to and including '=') is the prompt: conditional objectives generate only the answer.
        return TokenSet(tokens, lengths, prompt_lengths(tokens, lengths, self.equals_id))

    # -- reporting ----------------------------------------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """The task's definition: base, digit range, signs, split sizes, seed and the held-out convention."""
        c = self.config
        return {
            "task": "add_or_sub_in_base (DeepMind mathematics), generated locally",
            "base": c.base, "digits": digits_of(c.base), "operand_digits": [1, c.max_digits],
            "negative_operands": c.negative,
            "split_sizes": {"train": c.num_train, "val": c.num_val, "test": c.num_test}, "seed": c.seed,
            "held_out": "every question (a, op, b) is distinct within and across splits: no val or test question "
                        "appears in train, and val and test are disjoint",
            "format": "a op b=c, one token per character; prompt = up to and including '='",
        }

    def default_metrics(self) -> list[dict[str, Any]]:
        """Exact-answer accuracy in this dataset's base."""
        return [{"name": "arithmetic_accuracy", "base": self.config.base}]
