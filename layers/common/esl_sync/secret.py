"""Text that never shows itself: tokens, signs, passwords and keys held in memory.

The same contract as pydantic's ``SecretStr`` (``get_secret_value()`` for the one place
that sends it; ``str``, ``repr`` and a log line's JSON show ``**********``), written here
because the poller must start without pydantic (issue 15: pydantic's import and its first
model cost ≈ 110 ms of a ≈ 320 ms cold start), and the settings, the stored tokens and the
secrets store all hold secrets. A model that still uses pydantic may hold a :class:`Secret`
as a field: it validates from text or a :class:`Secret` and dumps as the mask.
"""

from __future__ import annotations

import hmac
from typing import Any

MASK = "**********"


class Secret:
    """A secret text. Equal to another :class:`Secret` of the same text (compared in
    constant time), never to a plain string; hashed by its text like ``SecretStr``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a secret is text, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        """The text itself: only for the request, header or connection that needs it."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        mine, theirs = (s._value.encode("utf-8", "surrogatepass") for s in (self, other))
        return hmac.compare_digest(mine, theirs)

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return MASK if self._value else ""

    def __repr__(self) -> str:
        return f"Secret('{MASK if self._value else ''}')"

    def __reduce__(self) -> Any:
        # Pickling would write the text itself; nothing here pickles a secret.
        raise TypeError("a Secret is not pickled")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """For a pydantic model off the poller's path: text or a Secret in, the mask out.
        pydantic_core is imported here, only when such a model is built."""
        from pydantic_core import core_schema

        def validate(value: object) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, str):
                return cls(value)
            raise ValueError("must be text")

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )
