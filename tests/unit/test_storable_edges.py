"""The edges of what Postgres and Hipoink can take (esl_sync.storable), written out."""

from __future__ import annotations

from decimal import Decimal

import pytest

from esl_sync.storable import clean_json, product_code


@pytest.mark.parametrize(
    ("text", "code", "problem"),
    [
        (" \t\r\n\f\vBEV-1 \r\n", "BEV-1", None),  # a pasted code: spaces and breaks trimmed
        ("\u00a0BEV-1", "\u00a0BEV-1", "holds control characters"),  # not a space to trim
        ("\x1cBEV-1", "\x1cBEV-1", "holds control characters"),
        ("XBEV-1X", "XBEV-1X", None),
    ],
)
def test_only_spaces_tabs_and_line_breaks_are_trimmed_from_a_code(
    text: str, code: str, problem: str | None
) -> None:
    got, why = product_code(text)
    assert got == code
    assert (why or "")[: len(problem or "")] == (problem or "")
    assert (why is None) == (problem is None)


def test_an_integer_of_14000_bits_is_kept_and_a_longer_one_is_a_note() -> None:
    """Any integer short enough to print is kept up to 14,000 bits (4,215 digits), more
    than 4,096 characters of JSON can hold, so the walk keeps what json_text keeps."""
    assert clean_json(2**13_999) == 2**13_999
    assert clean_json(2**14_000) == "(an integer of about 4214 digits)"


def test_a_text_of_4096_characters_is_kept_whole() -> None:
    assert clean_json("t" * 4096) == "t" * 4096
    assert clean_json("t" * 4097) == "t" * 4096 + "…(1 more characters)"


def test_anything_else_is_kept_as_its_text() -> None:
    assert clean_json({"cost": Decimal("1.50"), "id": b"x"}) == {"cost": "1.50", "id": "b'x'"}
