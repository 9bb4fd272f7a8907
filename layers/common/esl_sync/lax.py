"""pydantic 2's lax reading rules, written once: the white space it trims, the integer it
reads from text, the integer it makes of a JSON value, and the JSON documents its parser
(``jiter``) takes.

Settings (:mod:`esl_sync.env_text`), stored tokens (:mod:`esl_sync.json_fields`) and queue
messages (:mod:`esl_sync.messages`) were pydantic models until issue 15 (the poller must
start without pydantic: its import and first model cost ≈ 110 ms of a ≈ 320 ms cold start);
each still reads exactly what its model read, through these rules. Own code rather than a
library: the semantics must be pydantic 2.13's, checked against it by each caller's
equivalence test (``tests/unit/test_settings_equivalence.py``, ``test_credentials.py``,
``test_messages.py``, the pydantic models kept there as oracles) and by
``tests/unit/test_lax.py``.

Nothing here knows its caller: a refusal is a :class:`Refused` holding a :class:`Problem`,
which each caller words its own way (pydantic's words are the problems' values, for the
callers that keep them). No refusal quotes the value.
"""

from __future__ import annotations

import json
import math
import re
from enum import Enum
from typing import Any

WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
"""What pydantic trims around a number given as text: Rust's ``char::is_whitespace``
(Unicode's White_Space). Narrower than Python's ``str.strip()``, which also takes
U+001C…U+001F."""

MAX_INT_DIGITS = 4300
"""The longest integer pydantic reads (CPython's limit for ``int(str)``). Counted as
pydantic counts: in text, the digits after leading zeros and underscores, with a minus
sign (a plus is not counted); in a JSON number, every character of its integer part, the
sign too (``-`` and 4,300 digits is out of range, in a float's integer part as well)."""

MAX_DEPTH = 200
"""The most containers (arrays, objects) a value of a JSON document may sit inside: the
document itself is inside none. pydantic's parser refused deeper documents ("recursion
limit exceeded"): 201 empty arrays nested are taken, 201 around a number are not."""

_I64 = 2**63


class Problem(Enum):
    """What is wrong with a value; the value is pydantic's words for it."""

    NOT_AN_INTEGER = "Input should be a valid integer"
    UNPARSABLE = "Input should be a valid integer, unable to parse string as an integer"
    TOO_LONG = "Unable to parse input string as an integer, exceeded maximum size"
    NOT_FINITE = "Input should be a finite number"
    FRACTION = "Input should be a valid integer, got a number with a fractional part"
    # The JSON document as a whole (pydantic: "Invalid JSON: …").
    NOT_TEXT = "not text"
    NOT_UTF8 = "not UTF-8 text"
    NOT_UNICODE = "not Unicode text"
    SYNTAX = "not JSON"
    NUMBER_TOO_LONG = "number out of range"
    TOO_DEEP = "recursion limit exceeded"
    LONE_SURROGATE = "lone surrogate in a string"


class Refused(ValueError):
    """A value the rule refuses; ``problem`` says why, ``detail`` where (a JSON syntax
    error's position), never what the value was."""

    def __init__(self, problem: Problem, detail: str = "") -> None:
        super().__init__(f"{problem.value} {detail}".strip())
        self.problem = problem
        self.detail = detail


# -- integers ---------------------------------------------------------------------------------

_INTEGER_TEXT = re.compile(r"([+-]?)([0-9]+(?:_[0-9]+)*)(?:\.0+)?")


def integer_text(text: str) -> int:
    """An integer from text as pydantic reads one: trimmed of :data:`WHITESPACE`, an
    optional sign, ASCII digits with single ``_`` between them, leading zeros, an optional
    ``.0…`` (``" +1_000.00 "`` is 1000). :class:`Refused`: UNPARSABLE or TOO_LONG.

    Two corners where pydantic 2.13 was odd, and this rule is not: it read ``0-5`` (a sign
    after leading zeros) as -5 and took any run of underscores among leading zeros
    (``0__300``); both are refused as not an integer here, as Python's ``int()`` refuses
    them (decided with issue 15: texts no writer produces)."""
    match = _INTEGER_TEXT.fullmatch(text.strip(WHITESPACE))
    if match is None:
        raise Refused(Problem.UNPARSABLE)
    sign, digits = match[1], match[2].replace("_", "").lstrip("0")
    if len(digits) + (sign == "-") > MAX_INT_DIGITS:
        raise Refused(Problem.TOO_LONG)
    return int(sign + (digits or "0"))


def json_integer(value: object) -> int:
    """An integer as pydantic's lax mode makes one of a JSON value: an integer; ``true`` /
    ``false`` as 1 / 0; a float without a fraction strictly inside ±2⁶³ (it went through
    an i64: ``1e3``, not ``1e19``); text as :func:`integer_text` reads it.
    :class:`Refused` otherwise (NOT_AN_INTEGER for a null, list or object)."""
    if isinstance(value, int):  # bool too: True is 1
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused(Problem.NOT_FINITE)
        if not value.is_integer():
            raise Refused(Problem.FRACTION)
        if not -_I64 < value < _I64:
            raise Refused(Problem.TOO_LONG)
        return int(value)
    if isinstance(value, str):
        return integer_text(value)
    raise Refused(Problem.NOT_AN_INTEGER)


# -- text -------------------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (an undecodable byte of the environment, an
    escape no UTF-8 can carry): text pydantic refused wherever it read characters."""
    return not text.isascii() and _SURROGATE.search(text) is not None


# -- JSON documents ---------------------------------------------------------------------------


class _NumberTooLong(Exception):
    """Raised from inside ``json.loads`` by the number hooks."""


def json_document(text: str | bytes | bytearray) -> object:
    """The JSON document ``text`` (UTF-8 bytes or text), as Python's ``json`` reads it,
    refused (:class:`Refused`) wherever pydantic's parser refused what Python's takes:
    bytes that are not UTF-8, text with a lone surrogate raw (NOT_UNICODE) or escaped
    (LONE_SURROGATE), a value nested deeper than :data:`MAX_DEPTH`, a number longer than
    :data:`MAX_INT_DIGITS`. Like it, ``NaN`` and ``Infinity`` are taken, duplicate keys keep
    the last value, a byte-order mark is refused."""
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(Problem.NOT_UTF8) from None
    if not isinstance(text, str):
        raise Refused(Problem.NOT_TEXT)
    if has_lone_surrogate(text):
        raise Refused(Problem.NOT_UNICODE)
    try:
        if len(text) > MAX_INT_DIGITS:  # a number past the limit needs that many characters
            document = json.loads(text, parse_int=_json_int, parse_float=_json_float)
        else:
            document = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{error.msg} at line {error.lineno} column {error.colno}"
        raise Refused(Problem.SYNTAX, where) from None
    except _NumberTooLong:
        raise Refused(Problem.NUMBER_TOO_LONG) from None
    except RecursionError:  # Python's parser nests until the interpreter's limit
        raise Refused(Problem.TOO_DEEP) from None
    # Python's parser takes escaped lone surrogates and nests deeper than pydantic's: only
    # a text with such an escape, or with enough brackets, needs the walk.
    if _SURROGATE_ESCAPE.search(text) or text.count("[") + text.count("{") > MAX_DEPTH:
        _check_tree(document)
    return document


def _json_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:  # its sign counted, as pydantic's parser counts it
        raise _NumberTooLong
    return int(digits)


def _json_float(number: str) -> float:
    if len(number) - len(number.lstrip("-0123456789")) > MAX_INT_DIGITS:  # its integer part
        raise _NumberTooLong
    return float(number)


def _check_tree(document: object) -> None:
    """A walk without recursion (Python's parser nests deeper than Python code recurses)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused(Problem.TOO_DEEP)
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise Refused(Problem.LONE_SURROGATE)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise Refused(Problem.LONE_SURROGATE)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
