"""The fields of a small JSON object (token pairs, the app's credentials secret), read the
way pydantic's JSON mode read them, without pydantic (the poller must start without it:
issue 15).

Written here rather than taken from a library because the exact semantics matter: the
tokens are stored, sent by Clover and typed in by operators, and what pydantic accepted is
still accepted, what it refused is still refused, by the same field
(``tests/unit/test_credentials.py`` checks both against the pydantic models they replace):

* the document: what pydantic's parser took (:func:`esl_sync.lax.json_document`: UTF-8,
  no lone surrogate, nesting and numbers within its limits), one JSON object, unknown
  fields ignored;
* text fields: a JSON string of at least one character, nothing else (no number, no null
  where one is required);
* count fields (``int`` with ``ge=0``): pydantic's lax integer
  (:func:`esl_sync.lax.json_integer`: ``true`` as 1, ``1e3``, ``" 1_000 "``, not ``1e19``;
  ``"0__5"``, which pydantic read as 5, refused), then at least 0. Null is "not set".

A refusal names the fields at fault and what is wrong (pydantic's wording), never a value.
"""

from __future__ import annotations

from typing import Any

from esl_sync import lax
from esl_sync.lax import Problem
from esl_sync.secret import Secret

REQUIRED = "Field required"
NOT_TEXT = "Input should be a valid string"
EMPTY = "String should have at least 1 character"
NEGATIVE = "Input should be greater than or equal to 0"
NOT_OBJECT = "Input should be an object"


def loads(text: str | bytes, what: str) -> object:
    """The JSON document ``text`` (:func:`esl_sync.lax.json_document`: what pydantic's
    parser took); a ValueError naming ``what`` when it is not one."""
    try:
        return lax.json_document(text)
    except lax.Refused as refused:
        problem = refused.problem
        said = refused.detail if problem is Problem.SYNTAX else problem.value
        if problem is Problem.NOT_UNICODE:  # text that no UTF-8 can carry
            said = Problem.NOT_UTF8.value
        raise ValueError(f"{what}: body: Invalid JSON: {said}") from None


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
        try:
            number = lax.json_integer(value)
        except lax.Refused as refused:
            self._problems.append(f"{name}: {refused.problem.value}")
            return None
        if number < 0:
            self._problems.append(f"{name}: {NEGATIVE}")
            return None
        return number

    def check(self) -> None:
        """Raise the refusal if any field read was at fault."""
        if self._problems:
            raise ValueError(f"{self._what}: {'; '.join(self._problems)}")


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
            problems.append(f"{name}: {Problem.NOT_AN_INTEGER.value}")
        elif value < 0:
            problems.append(f"{name}: {NEGATIVE}")
    if problems:
        raise ValueError(f"{owner}: {'; '.join(problems)}")
