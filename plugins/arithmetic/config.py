"""Options of the ``arithmetic`` dataset (a light module: no torch or numpy import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from anyorder.config import PluginConfig, opt
from anyorder.errors import ConfigError
from anyorder_plugins.arithmetic.equations import MAX_BASE, MIN_BASE

MAX_DIGITS = 8
"""Largest ``max_digits`` accepted (16**8 still fits comfortably in int64, and sequences stay under 32 tokens)."""


@dataclass
class ArithmeticConfig(PluginConfig):
    """Addition and subtraction in a base (DeepMind mathematics ``add_or_sub_in_base``, as in SequenceMatch).

    A datapoint is the character string ``a op b=c``, e.g. ``25-143=-115`` in base 7, generated locally from a
    seed. Each question draws the operator (+ or -) uniformly, and each operand a digit count uniform in
    1..``max_digits``, then a value uniform among the numbers with exactly that many digits (0 counts as one digit),
    then, with ``negative``, a minus sign with probability 1/2 (never on 0). All questions ``(a, op, b)`` are
    distinct within and across splits: test is drawn first, then val excluding test, then train excluding both,
    so no held-out question appears in training.
    """

    implementation: ClassVar[Any] = "anyorder_plugins.arithmetic.data:ArithmeticDataModule"

    base: int = opt(7, f"the base the numbers are written in ({MIN_BASE}..{MAX_BASE}; digits 0-9a-f)")
    max_digits: int = opt(3, f"operands have 1..max_digits digits in the base (1..{MAX_DIGITS})")
    negative: bool = opt(True, "operands may be negative (as in the mathematics dataset's add_or_sub_in_base)")
    num_train: int = opt(5000, "questions in the training split")
    num_val: int = opt(200, "held-out questions in the validation split")
    num_test: int = opt(200, "held-out questions in the test split")
    seed: int = opt(0, "seed of the generator; each split draws from its own stream of this seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.base, bool) or not MIN_BASE <= self.base <= MAX_BASE:
            raise ConfigError(f"arithmetic: base must be in {MIN_BASE}..{MAX_BASE} (got {self.base})")
        if not 1 <= self.max_digits <= MAX_DIGITS:
            raise ConfigError(f"arithmetic: max_digits must be in 1..{MAX_DIGITS} (got {self.max_digits})")
        if self.num_train < 1:
            raise ConfigError(f"arithmetic: num_train must be at least 1 (got {self.num_train})")
        for key in ("num_val", "num_test"):
            if getattr(self, key) < 0:
                raise ConfigError(f"arithmetic: {key} must not be negative (got {getattr(self, key)})")
        if self.seed < 0:
            raise ConfigError(f"arithmetic: seed must not be negative (numpy seeds are >= 0; got {self.seed})")
        total = self.num_train + self.num_val + self.num_test
        # Distinct questions are drawn by rejection; capping the fill at half of all questions keeps that fast.
        if total > self.num_questions // 2:
            raise ConfigError(
                f"arithmetic: {total} distinct questions requested, but base {self.base} with max_digits "
                f"{self.max_digits} (negative={self.negative}) has only {self.num_questions} and at most half of them "
                f"({self.num_questions // 2}) can be used; raise max_digits or lower num_train/num_val/num_test"
            )

    @property
    def num_operands(self) -> int:
        """How many distinct operand values there are (magnitudes below base**max_digits, signed with ``negative``)."""
        magnitudes = self.base**self.max_digits
        return 2 * magnitudes - 1 if self.negative else magnitudes

    @property
    def num_questions(self) -> int:
        """How many distinct questions ``(a, op, b)`` there are."""
        return 2 * self.num_operands**2

    @property
    def max_length(self) -> int:
        """The longest datapoint in characters: two signed operands, the operator, ``=`` and a signed answer of up
        to ``max_digits + 1`` digits (|a +- b| <= 2 (base**m - 1) < base**(m + 1))."""
        operand = self.max_digits + (1 if self.negative else 0)
        return 2 * operand + 2 + (self.max_digits + 2)
