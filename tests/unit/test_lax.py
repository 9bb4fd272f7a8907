"""pydantic's lax rules, written once (:mod:`esl_sync.lax`), against pydantic itself.

The oracle is pydantic 2.13's own reading: ``TypeAdapter(int)`` for an integer from text
(what settings, tokens and messages all read through it) and from a JSON value, and
``TypeAdapter(Any).validate_json`` for the documents its parser takes. Hostile inputs: every
character around a number, signs, leading zeros, underscores, fractions, Unicode digits,
lengths at the limit (with a sign, leading zeros, underscores, ``.0``, spaces), floats at
±2⁶³, NaN, lone surrogates raw and escaped, nesting at the limit, numbers of 4,300 digits in
any part, bytes that are not UTF-8. Where the three readers disagreed before this module
(how an integer's length is counted, a float of exactly -2⁶³, a float whose integer part
is over the limit) the cases are named below; they are pydantic's answers.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from esl_sync import lax
from esl_sync.lax import MAX_DEPTH, MAX_INT_DIGITS, Problem, Refused

INT = TypeAdapter(int)
ANY = TypeAdapter(Any)

# Integers pydantic 2.13 read oddly (a sign after leading zeros; underscore runs among them):
# refused here, on purpose (lax.integer_text's docstring).
ODD = re.compile(r"[+-]?0[0_]*(-|_(?=_))")


def _pydantic_text(text: str) -> int | str:
    try:
        return INT.validate_python(text)
    except ValidationError as error:
        return str(error.errors()[0]["msg"])


def _ours_text(text: str) -> int | str:
    try:
        return lax.integer_text(text)
    except Refused as refused:
        return refused.problem.value


def _same_integer(text: str, ours: int | str, theirs: int | str) -> None:
    if ODD.match(text.strip(lax.WHITESPACE)):
        assert ours == Problem.UNPARSABLE.value
    elif isinstance(theirs, int):
        assert ours == theirs
    elif Problem.TOO_LONG.value in (ours, theirs):
        # pydantic's words for an over-long text depended on what was around its digits
        # (spaces, underscores, leading zeros, a fraction); refused by both either way.
        assert len(text) > MAX_INT_DIGITS
        assert {ours, theirs} <= {Problem.TOO_LONG.value, Problem.UNPARSABLE.value}
    else:
        assert ours == theirs


NUMBER_CHARACTERS = [*"0123456789+-_.eE ", "\t", "\x1c", "\x85", "\xa0", "\u3000", "١", "\x00"]
integer_texts = st.one_of(
    st.text(st.sampled_from(NUMBER_CHARACTERS), max_size=10),
    st.integers().map(str),
    st.tuples(
        st.sampled_from(["", " ", "\u2003"]),
        st.sampled_from(["", "+", "-"]),
        st.sampled_from(["", "0", "00", "0_0", "0_"]),
        st.integers(MAX_INT_DIGITS - 3, MAX_INT_DIGITS + 1).map(lambda n: "7" * n),
        st.sampled_from(["", "_1", "_1_1", "_1" * 4]),
        st.sampled_from(["", ".0", ".00", ".5"]),
    ).map(lambda parts: parts[0] + "".join(parts[1:]) + parts[0]),
)


@settings(max_examples=500, deadline=None)
@given(text=integer_texts)
def test_an_integer_from_text_is_read_as_pydantic_read_it(text: str) -> None:
    _same_integer(text, _ours_text(text), _pydantic_text(text))


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("-" + "1" * MAX_INT_DIGITS, "too long"),  # the minus counts (env_text did not count it)
        ("+" + "1" * MAX_INT_DIGITS, 1),  # the plus does not
        ("-" + "1" * (MAX_INT_DIGITS - 1), 1),
        ("0" * 5000 + "1" * MAX_INT_DIGITS, 1),  # leading zeros do not (tokens, messages did)
        ("-" + "0" * 5000 + "1" * (MAX_INT_DIGITS - 1), 1),
        ("1_" * MAX_INT_DIGITS + "1", "too long"),
        ("1_" * (MAX_INT_DIGITS - 1) + "1", 1),
        ("1" * MAX_INT_DIGITS + ".000", 1),
        ("-" + "0" * 5000, 0),
        (" +0_0.0 ", 0),
        ("0-5", "odd"),
        ("00_-5", "odd"),
        ("0__300", "odd"),
        ("+00__1", "odd"),
    ],
)
def test_where_the_readers_disagreed_the_length_is_counted_as_pydantic_counted_it(
    text: str, read: object
) -> None:
    ours, theirs = _ours_text(text), _pydantic_text(text)
    _same_integer(text, ours, theirs)
    if read == "too long":
        assert ours == Problem.TOO_LONG.value
    elif read == "odd":
        assert ours == Problem.UNPARSABLE.value
    else:
        assert isinstance(ours, int)


SPACE_LIKE = {"Zs", "Zl", "Zp", "Cc", "Cf"}


def test_the_white_space_trimmed_is_exactly_pydantics() -> None:
    """Every separator, control and format character of Unicode (every White_Space is
    one of them), on both sides of a number: trimmed by both or neither."""
    candidates = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in SPACE_LIKE]
    assert len(candidates) > 200
    for space in candidates:
        code = ord(space)
        text = f"{space}7{space}"
        assert (space in lax.WHITESPACE) == (_pydantic_text(text) == 7), hex(code)
        assert (space in lax.WHITESPACE) == (_ours_text(text) == 7), hex(code)


def _pydantic_json_integer(text: str) -> int | str:
    try:
        return INT.validate_json(text)
    except ValidationError as error:
        return str(error.errors()[0]["msg"])


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from([2.0**63, -(2.0**63), 2.0**63 - 1024, -(2.0**63) + 1024, 1e19, -0.0]),
    integer_texts,
    st.lists(st.integers(), max_size=1),
    st.dictionaries(st.just("a"), st.integers(), max_size=1),
)


@settings(max_examples=500, deadline=None)
@given(value=json_values)
def test_an_integer_from_a_json_value_is_made_as_pydantic_made_it(value: object) -> None:
    theirs = _pydantic_json_integer(json.dumps(value))
    try:
        ours: int | str = lax.json_integer(value)
    except Refused as refused:
        ours = refused.problem.value
    if isinstance(value, str):
        _same_integer(value, ours, theirs)
    else:
        assert ours == theirs
        assert type(ours) is type(theirs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-(2.0**63), Problem.TOO_LONG),  # strictly inside ±2⁶³ (tokens took -2⁶³)
        (2.0**63, Problem.TOO_LONG),
        (-(2.0**63) + 1024, -(2**63) + 1024),
        (True, 1),
        (1e3, 1000),
        (1.5, Problem.FRACTION),
        (math.inf, Problem.NOT_FINITE),
        (None, Problem.NOT_AN_INTEGER),
        ([], Problem.NOT_AN_INTEGER),
    ],
)
def test_a_json_value_at_the_edges(value: object, expected: object) -> None:
    theirs = _pydantic_json_integer(json.dumps(value))
    if isinstance(expected, Problem):
        with pytest.raises(Refused) as refused:
            lax.json_integer(value)
        assert refused.value.problem is expected
        assert theirs == expected.value
    else:
        assert lax.json_integer(value) == theirs == expected


def _pydantic_document(text: str | bytes) -> object:
    try:
        return ("ok", ANY.validate_json(text))
    except ValidationError as error:
        return ("refused", error.errors()[0]["type"])


def _ours_document(text: str | bytes) -> object:
    try:
        return ("ok", lax.json_document(text))
    except Refused as refused:
        return ("refused", refused.problem)


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _same_document(text: str | bytes) -> Problem | None:
    theirs, ours = _pydantic_document(text), _ours_document(text)
    assert theirs[0] == ours[0], (theirs, ours)  # type: ignore[index]
    if theirs[0] == "ok":  # type: ignore[index]
        assert _canonical(ours[1]) == _canonical(theirs[1])  # type: ignore[index]
        return None
    assert theirs[1] in ("json_invalid", "string_unicode")  # type: ignore[index]
    problem: Problem = ours[1]  # type: ignore[index]
    return problem


def _nested(count: int, innermost: str, container: str = "[]") -> str:
    opening, closing = ("[", "]") if container == "[]" else ('{"a":', "}")
    return opening * count + innermost + closing * count


N = MAX_INT_DIGITS
DOCUMENTS = [
    ('{"a": NaN, "b": -Infinity, "c": 1e400}', None),
    ('{"a": 1, "a": 2}', None),
    (" [1] \n", None),
    ('"\\ud83d\\ude00"', None),
    ('"\\\\ud800"', None),  # an escaped backslash, then text
    ('"\\ud800"', Problem.LONE_SURROGATE),
    ('"\\uDFFF"', Problem.LONE_SURROGATE),
    ('{"\\udc00": 1}', Problem.LONE_SURROGATE),
    ('["\\ude00\\ud83d"]', Problem.LONE_SURROGATE),
    ('"\ud800"', Problem.NOT_UNICODE),
    (b'"\xed\xa0\x80"', Problem.NOT_UTF8),  # a surrogate's bytes
    (b'"\xff"', Problem.NOT_UTF8),
    ("\ufeff[]", Problem.SYNTAX),
    (b"\xef\xbb\xbf[]", Problem.SYNTAX),
    ("[1] x", Problem.SYNTAX),
    ("", Problem.SYNTAX),
    ("[01]", Problem.SYNTAX),
    ("1" * N, None),
    ("-" + "1" * (N - 1), None),
    ("1" * (N + 1), Problem.NUMBER_TOO_LONG),
    ("-" + "1" * N, Problem.NUMBER_TOO_LONG),  # the sign counts (tokens did not count it)
    ("[" + "1" * (N + 1) + "]", Problem.NUMBER_TOO_LONG),
    ("1" * N + ".5", None),
    ("1" * (N + 1) + ".5", Problem.NUMBER_TOO_LONG),  # a float's integer part (both took it)
    ("-" + "1" * N + ".0", Problem.NUMBER_TOO_LONG),
    ("1" * N + "e5", None),
    ("1" * (N + 1) + "E-5", Problem.NUMBER_TOO_LONG),
    ("-" + "1" * (N - 1) + "e5", None),
    ("0." + "1" * 10_000, None),
    ("1e" + "0" * 5000 + "1", None),
    ('"' + "1" * 10_000 + '"', None),
    (_nested(MAX_DEPTH + 1, ""), None),
    (_nested(MAX_DEPTH + 2, ""), Problem.TOO_DEEP),
    (_nested(MAX_DEPTH, "1"), None),
    (_nested(MAX_DEPTH + 1, "1"), Problem.TOO_DEEP),
    (_nested(MAX_DEPTH, '"x"', "{}"), None),
    (_nested(MAX_DEPTH + 1, '"x"', "{}"), Problem.TOO_DEEP),
    (_nested(MAX_DEPTH, "{}", "{}"), None),
    (_nested(MAX_DEPTH + 1, "{}", "{}"), Problem.TOO_DEEP),
    (_nested(100_000, ""), Problem.TOO_DEEP),
    ('["' + "[" * 300 + '"]', None),  # brackets in a string
]


@pytest.mark.parametrize(("text", "problem"), DOCUMENTS)
def test_a_document_is_taken_where_pydantics_parser_took_it(
    text: str | bytes, problem: Problem | None
) -> None:
    assert _same_document(text) is problem


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
).flatmap(
    lambda document: st.sampled_from(
        [json.dumps(document), json.dumps(document, ensure_ascii=False)]
    )
)


@settings(max_examples=300, deadline=None)
@given(text=json_texts | st.text(max_size=30) | st.binary(max_size=30))
def test_any_document_is_taken_by_both_or_neither(text: str | bytes) -> None:
    _same_document(text)


def test_a_refusal_names_the_problem_and_never_the_value() -> None:
    with pytest.raises(Refused) as refused:
        lax.json_document('{"secret": "SECRET"')
    assert refused.value.problem is Problem.SYNTAX
    assert "SECRET" not in str(refused.value)
    assert refused.value.detail == "Expecting ',' delimiter at line 1 column 20"
    assert str(refused.value) == "not JSON " + refused.value.detail
    with pytest.raises(Refused, match=r"^not text$"):
        lax.json_document(5)  # type: ignore[arg-type]
    with pytest.raises(Refused, match=r"^Input should be a valid integer, unable to parse"):
        lax.integer_text("SECRET")
    assert lax.json_document(bytearray(b"[1]")) == [1]
