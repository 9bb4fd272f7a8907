"""The fields of a small JSON object (token pairs, the app's credentials secret), read the
way pydantic's JSON mode read them, without pydantic (the poller must start without it:
issue 15).

Written here rather than taken from a library because the exact semantics matter: the
tokens are stored, sent by Clover and typed in by operators, and what pydantic accepted is
still accepted, what it refused is still refused, by the same field
(``tests/unit/test_credentials.py`` checks both against the pydantic models they replace):

* the document: UTF-8 text (bytes that are not are refused), one JSON object, unknown
  fields ignored; like pydantic's parser (``jiter``), a lone surrogate anywhere, a value
  nested over 200 deep or an integer of over 4,300 digits makes it invalid JSON;
* text fields: a JSON string of at least one character, nothing else (no number, no null
  where one is required);
* count fields (``int`` with ``ge=0``): an integer; ``true``/``false`` as 1/0; a float
  without a fractional part, within 64 bits (``1.0``, ``1e3``, not ``1e19``); a string of
  an integer, trimmed of white space, with ``_`` between digits and an optional ``.0…``
  (``" 5 "``, ``"1_000"``, ``"5.00"``); then at least 0. Null is "not set".

A refusal names the fields at fault and what is wrong (pydantic's wording), never a value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from esl_sync.secret import Secret

MAX_DEPTH = 200
"""Nesting pydantic's parser takes (a value deeper than this: "recursion limit exceeded")."""
MAX_DIGITS = 4300
"""Digits of an integer pydantic's parser (and Python's ``int``) takes."""

# Rust's ``char::is_whitespace`` (what pydantic trims from a number's text): Python's
# ``str.isspace`` but for the four separators U+001C..U+001F.
_WHITESPACE = "".join(
    c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f"
)
_INTEGER_TEXT = re.compile(r"([+-]?[0-9](?:_?[0-9])*)(?:\.0+)?")

REQUIRED = "Field required"
NOT_TEXT = "Input should be a valid string"
EMPTY = "String should have at least 1 character"
NOT_INTEGER = "Input should be a valid integer"
FRACTION = "Input should be a valid integer, got a number with a fractional part"
NOT_FINITE = "Input should be a finite number"
UNPARSABLE = "Input should be a valid integer, unable to parse string as an integer"
TOO_LONG = "Unable to parse input string as an integer, exceeded maximum size"
NEGATIVE = "Input should be greater than or equal to 0"
NOT_OBJECT = "Input should be an object"


def loads(text: str | bytes, what: str) -> object:
    """The JSON document ``text``; a ValueError naming ``what`` when it is not one."""
    try:
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        document = json.loads(raw.decode("utf-8"))
    except UnicodeError:
        raise ValueError(f"{what}: body: Invalid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise ValueError(f"{what}: body: Invalid JSON: {error.msg} at {where}") from None
    except ValueError:  # an integer past Python's 4,300 digits
        raise ValueError(f"{what}: body: Invalid JSON: number out of range") from None
    except RecursionError:
        raise ValueError(f"{what}: body: Invalid JSON: recursion limit exceeded") from None
    problem = _beyond_parser(document)
    if problem:
        raise ValueError(f"{what}: body: Invalid JSON: {problem}")
    return document


def _beyond_parser(document: object) -> str | None:
    """What pydantic's parser refuses and Python's reads: a lone surrogate (``"\\ud800"``),
    a value nested too deep. A walk without recursion (Python's parser nests deeper than
    Python code may recurse)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "recursion limit exceeded"
        if isinstance(value, str):
            if _has_surrogate(value):
                return "lone surrogate in a string"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    return "lone surrogate in a string"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Fields:
    """The fields of one decoded JSON object, read one by one; :meth:`check` raises the
    refusal naming every field at fault (or that ``data`` is no object), in reading order."""

    def __init__(self, data: object, what: str) -> None:
        self._what = what
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}
        self._problems: list[str] = [] if isinstance(data, dict) else [f"body: {NOT_OBJECT}"]
        self._whole = isinstance(data, dict)

    def text(self, name: str, *, required: bool = False) -> str | None:
        """A text field (at least one character); None when absent or null (if allowed)."""
        if not self._whole:
            return None
        if name not in self._data:
            if required:
                self._problems.append(f"{name}: {REQUIRED}")
            return None
        value = self._data[name]
        if value is None and not required:
            return None
        if not isinstance(value, str):
            self._problems.append(f"{name}: {NOT_TEXT}")
            return None
        if not value:
            self._problems.append(f"{name}: {EMPTY}")
            return None
        return value

    def secret(self, name: str, *, required: bool = False) -> Secret | None:
        """:meth:`text`, held as a :class:`~esl_sync.secret.Secret`."""
        value = self.text(name, required=required)
        return None if value is None else Secret(value)

    def count(self, name: str) -> int | None:
        """An optional integer of at least 0 (see the module doc for what becomes one)."""
        value = self._data.get(name) if self._whole else None
        if value is None:
            return None
        number, problem = as_integer(value)
        if number is not None and number < 0:
            problem = NEGATIVE
        if problem:
            self._problems.append(f"{name}: {problem}")
            return None
        return number

    def check(self) -> None:
        """Raise the refusal if any field read was at fault."""
        if self._problems:
            raise ValueError(f"{self._what}: {'; '.join(self._problems)}")


def as_integer(value: object) -> tuple[int | None, str | None]:
    """``value`` as pydantic's lax mode makes an integer of it, or what is wrong."""
    if isinstance(value, int):  # bool too: True is 1
        return int(value), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, NOT_FINITE
        if not value.is_integer():
            return None, FRACTION
        if not -(2**63) <= value < 2**63:  # pydantic makes an i64 of a float
            return None, TOO_LONG
        return int(value), None
    if isinstance(value, str):
        match = _INTEGER_TEXT.fullmatch(value.strip(_WHITESPACE))
        if match is None:
            return None, UNPARSABLE
        if sum(c.isdigit() for c in match[1]) > MAX_DIGITS:
            return None, TOO_LONG
        return int(match[1]), None
    return None, NOT_INTEGER


def check_built(
    owner: str,
    *,
    texts: dict[str, object] | None = None,
    secrets: dict[str, object] | None = None,
    optional_secrets: dict[str, object] | None = None,
    counts: dict[str, object] | None = None,
) -> None:
    """The checks of a class built by keywords (as a pydantic model's constructor made
    them): required text, secrets of at least one character, counts of at least 0; a
    ValueError naming the fields at fault."""
    problems: list[str] = []
    for name, value in (texts or {}).items():
        if not isinstance(value, str):
            problems.append(f"{name}: {NOT_TEXT}")
        elif not value:
            problems.append(f"{name}: {EMPTY}")
    for optional, group in ((False, secrets), (True, optional_secrets)):
        for name, value in (group or {}).items():
            if value is None and optional:
                continue
            if not isinstance(value, Secret):
                problems.append(f"{name}: Input should be a Secret")
            elif not value:
                problems.append(f"{name}: {EMPTY}")
    for name, value in (counts or {}).items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name}: {NOT_INTEGER}")
        elif value < 0:
            problems.append(f"{name}: {NEGATIVE}")
    if problems:
        raise ValueError(f"{owner}: {'; '.join(problems)}")
