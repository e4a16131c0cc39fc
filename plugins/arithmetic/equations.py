"""Equations ``a op b=c`` in a base, as compact strings: parsing, formatting and the exact answer (pure Python).

A number is written with the digits ``0-9a-f`` of its base, most significant first, with a leading ``-`` when it is
negative; the canonical form has no leading zeros and no ``-0``. An equation is ``<a><op><b>=<c>`` with ``op`` in
``+ -``, e.g. ``25-143=-115`` in base 7; the *question* (the prompt) is everything up to and including ``=``. Both
operands may be negative, so ``5--3=...`` (five minus minus three) is a valid question: the grammar is unambiguous
because an operand's sign, when present, comes right after the start or after the operator.

This module imports neither torch nor numpy, so configs and tests can use it cheaply.
"""

from __future__ import annotations

import re
from functools import cache

from anyorder.errors import DataError

DIGITS = "0123456789abcdef"
"""The digit characters of every base this task supports (2..16); base b uses the first b."""
MIN_BASE, MAX_BASE = 2, len(DIGITS)
OPERATORS = ("+", "-")
EQUALS = "="


def check_base(base: int) -> None:
    """Raise :class:`ValueError` unless ``base`` is an integer in 2..16."""
    if isinstance(base, bool) or not isinstance(base, int) or not MIN_BASE <= base <= MAX_BASE:
        raise ValueError(f"the base must be an integer in {MIN_BASE}..{MAX_BASE} (got {base!r})")


def digits_of(base: int) -> str:
    """The digit characters of ``base``, in value order (``digits_of(7) == "0123456"``)."""
    check_base(base)
    return DIGITS[:base]


def to_base(value: int, base: int) -> str:
    """The canonical string of the integer ``value`` in ``base``: no leading zeros, ``-`` for negatives, ``"0"``."""
    check_base(base)
    if value == 0:
        return "0"
    magnitude, out = abs(value), []
    while magnitude:
        magnitude, digit = divmod(magnitude, base)
        out.append(DIGITS[digit])
    return ("-" if value < 0 else "") + "".join(reversed(out))


@cache
def _patterns(base: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Compiled (question, equation) patterns of ``base``; groups: a, op, b (and c)."""
    number = f"-?[{re.escape(digits_of(base))}]+"
    question = f"({number})([+-])({number})="
    return re.compile(question), re.compile(f"{question}({number})")


def parse_question(question: str, base: int) -> tuple[int, str, int]:
    """``(a, op, b)`` of a question ``"a op b="`` in ``base`` (the trailing ``=`` is required)."""
    match = _patterns(base)[0].fullmatch(question)
    if match is None:
        raise DataError(f"arithmetic: {question!r} is not a question 'a+b=' or 'a-b=' in base {base} "
                        f"(digits {digits_of(base)!r}, optional '-' signs)")
    a, op, b = match.groups()
    return int(a, base), op, int(b, base)


def parse_equation(text: str, base: int) -> tuple[int, str, int, str] | None:
    """``(a, op, b, c)`` of an equation ``"a op b=c"`` in ``base``, with the answer ``c`` as written; None when the
    text does not have that form (wrong characters, no ``=``, a missing operand or answer, ...)."""
    match = _patterns(base)[1].fullmatch(text)
    if match is None:
        return None
    a, op, b, c = match.groups()
    return int(a, base), op, int(b, base), c


def evaluate(a: int, op: str, b: int) -> int:
    """``a + b`` or ``a - b``."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def format_question(a: int, op: str, b: int, base: int) -> str:
    """The question ``"a op b="`` with both operands in canonical form."""
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")
    return f"{to_base(a, base)}{op}{to_base(b, base)}{EQUALS}"


def solve(question: str, base: int) -> str:
    """The canonical answer to the question ``"a op b="`` in ``base`` (``solve("25-143=", 7) == "-115"``)."""
    a, op, b = parse_question(question, base)
    return to_base(evaluate(a, op, b), base)


def is_correct(text: str, base: int) -> tuple[bool, bool]:
    """``(well_formed, correct)`` of an equation string: it parses as ``"a op b=c"`` in ``base``, and ``c`` is
    exactly the canonical answer (an answer with leading zeros or ``-0`` is well formed but not correct)."""
    parsed = parse_equation(text, base)
    if parsed is None:
        return False, False
    a, op, b, c = parsed
    return True, c == to_base(evaluate(a, op, b), base)
