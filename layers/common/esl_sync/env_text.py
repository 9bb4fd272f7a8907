"""How the text of an environment variable becomes a setting's value.

The rules are pydantic 2's lax mode, which validated :class:`esl_sync.settings.Settings`
until issue 15, written out here (those the tokens and the queue messages share with the
settings, the white space trimmed and the integer read from text, in :mod:`esl_sync.lax`)
because the poller must start without pydantic (its import
and first model cost ≈ 110 ms of a ≈ 320 ms cold start): the same texts are accepted, give
the same values and are refused with the same words (``tests/unit/test_settings_equivalence.py``
holds the old model as its oracle). Own code rather than a library: the semantics must be
exactly those pydantic had. Two corners where pydantic 2.13 was odd are decided
instead (:func:`esl_sync.lax.integer_text`); both are texts nobody writes, and neither changes which
configured value a service runs with.

Each reader takes the text (or, for settings built in code, a value of the field's type) and
returns the value or raises :class:`Invalid` with what is wrong, never the value itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from esl_sync import lax
from esl_sync.lax import WHITESPACE

# Rust's f64 grammar (what pydantic parses a float with); Python's float() reads the same
# texts to the same values (both round correctly).
_FLOAT = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)", re.IGNORECASE
)
_TRUE = frozenset({"1", "t", "y", "on", "yes", "true"})
_FALSE = frozenset({"0", "f", "n", "no", "off", "false"})

NOT_TEXT = "Input should be a valid string"
NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"


class Invalid(ValueError):
    """A value a setting cannot take; the message says what is wrong (pydantic's words)."""


Reader = Callable[[Any], Any]


def unicode_text(value: object) -> str:
    """Text without lone surrogates (an undecodable byte in the environment arrives as one):
    pydantic refused those wherever it looked at the characters (numbers, flags, choices,
    length limits) and took them as they were in plain text."""
    if not isinstance(value, str):
        raise Invalid(NOT_TEXT)
    if lax.has_lone_surrogate(value):
        raise Invalid(NOT_UNICODE)
    return value


def text(value: object) -> str:
    """Any text, as it is."""
    if not isinstance(value, str):
        raise Invalid(NOT_TEXT)
    return value


@dataclass(frozen=True)
class ShortText:
    """Text of at most ``limit`` characters."""

    limit: int

    def __call__(self, value: object) -> str:
        checked = unicode_text(value)
        if len(checked) > self.limit:
            raise Invalid(f"String should have at most {self.limit} characters")
        return checked


def integer(value: object) -> int:
    """An integer: ``300``, `` 300 ``, ``+300``, ``3_00``, ``300.0``, leading zeros; from
    text by :func:`esl_sync.lax.integer_text` (which says where pydantic 2.13 was odd, and
    this reader is not: ``0-5``, ``0__300``; every integer setting has a lower bound of 0
    or more, so the first was refused either way)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(lax.Problem.NOT_AN_INTEGER.value)
    if isinstance(value, int):
        return value
    try:
        return lax.integer_text(unicode_text(value))
    except lax.Refused as refused:
        raise Invalid(refused.problem.value) from None


def number(value: object) -> float:
    """A float: what Rust's parser reads after trimming (``inf`` and ``nan`` too), or the
    text with single underscores between digits removed (not trimmed then, as pydantic)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid("Input should be a valid number")
    if not isinstance(value, str):
        try:
            return float(value)
        except OverflowError:  # an int past a float's range, given in code
            raise Invalid("Input should be a valid number") from None
    checked = unicode_text(value)
    if _FLOAT.fullmatch(stripped := checked.strip(WHITESPACE)):
        return float(stripped)
    joined = checked.replace("_", "")
    underscores_between = not checked.startswith("_") and not checked.endswith("_")
    if underscores_between and "__" not in checked and _FLOAT.fullmatch(joined):
        return float(joined)
    raise Invalid("Input should be a valid number, unable to parse string as a number")


def decimal(value: object) -> Decimal:
    """A finite decimal: Python's ``Decimal(text)``, as pydantic called it."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise Invalid("Input should be a valid decimal") from None
    else:
        raise Invalid("Decimal input should be an integer, float, string or Decimal object")
    if not result.is_finite():
        raise Invalid("Input should be a finite number")
    return result


def boolean(value: object) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``, ``t``/``f``,
    ``y``/``n``, in any case (ASCII only, untrimmed)."""
    if isinstance(value, bool):
        return value
    word = unicode_text(value) if isinstance(value, str) else ""
    if word.isascii() and word.lower() in _TRUE:
        return True
    if word.isascii() and word.lower() in _FALSE:
        return False
    raise Invalid("Input should be a valid boolean, unable to interpret input")


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``, exactly (case and spaces count)."""

    choices: tuple[str, ...]

    def __call__(self, value: object) -> str:
        if isinstance(value, str) and unicode_text(value) in self.choices:
            return value
        *first, last = (f"'{choice}'" for choice in self.choices)
        raise Invalid(f"Input should be {', '.join(first)} or {last}")


@dataclass(frozen=True)
class Bounded:
    """``read``, then the bounds (in pydantic's order and words)."""

    read: Reader
    ge: int | None = None
    le: int | None = None
    gt: int | None = None

    def __call__(self, value: object) -> Any:
        result = self.read(value)
        # pydantic's order: the upper bound first (NaN fails both, and names that one).
        if self.le is not None and not result <= self.le:
            raise Invalid(f"Input should be less than or equal to {self.le}")
        if self.ge is not None and not result >= self.ge:
            raise Invalid(f"Input should be greater than or equal to {self.ge}")
        if self.gt is not None and not result > self.gt:
            raise Invalid(f"Input should be greater than {self.gt}")
        return result


@dataclass(frozen=True)
class OrNone:
    """None (not configured; only settings built in code pass it), or what ``read`` takes."""

    read: Reader

    def __call__(self, value: object) -> Any:
        return None if value is None else self.read(value)


@dataclass(frozen=True)
class Then:
    """``read``, then a rule of the setting's own whose ValueError reads as pydantic's
    ``Value error, …``."""

    read: Reader
    rule: Callable[[Any], Any]

    def __call__(self, value: object) -> Any:
        result = self.read(value)
        try:
            return self.rule(result)
        except Invalid:
            raise
        except ValueError as error:
            raise Invalid(f"Value error, {error}") from None
