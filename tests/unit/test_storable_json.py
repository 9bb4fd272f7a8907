"""The raw item's one serialization (``json_text``) and the shortcut it allows: an item
it finds storable is stored as it came, unwalked, and that shortcut never stores anything
the walk of ``clean_json`` would have changed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from esl_sync import storable
from esl_sync.products import Product
from esl_sync.storable import clean_json, json_text


def _nested(depth: int, kind: str = "[") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "[" else {"k": value}
    return value


@pytest.mark.parametrize(
    ("value", "text", "as_is"),
    [
        ({"a": [1, "é"], "b": None, "c": True}, '{"a":[1,"é"],"b":null,"c":true}', True),
        ({"p": 1.5}, '{"p":1.5}', True),
        ({"p": float("nan")}, '{"p":NaN}', False),  # not JSON: the walk writes "nan"
        ({"p": float("-inf")}, '{"p":-Infinity}', False),
        ({"d": Decimal("1.50"), "n": "é"}, '{"d":"1.50","n":"é"}', False),  # not JSON's type
        ({"i": 10**5000}, None, False),  # too long for Python to print
        ({"a": "x\x00y"}, '{"a":"x\\u0000y"}', False),
        ({"a\x00": 1}, '{"a\\u0000":1}', False),
        ({"a": "\ufffe"}, '{"a":"\ufffe"}', False),
        ({"\ud800": 1}, '{"\ud800":1}', False),
        ({"a": "\U0010ffff"}, '{"a":"\U0010ffff"}', False),
        ({"a": "\U0010fffd"}, '{"a":"\U0010fffd"}', True),
    ],
)
def test_the_text_is_compact_json_and_says_whether_it_can_be_stored_as_it_is(
    value: Any, text: str | None, as_is: bool
) -> None:
    assert json_text(value) == (text, as_is)


def test_text_up_to_4096_characters_can_be_stored_as_it_is() -> None:
    at_most = {"a": "x" * (4096 - len('{"a":""}'))}
    assert len(json_text(at_most)[0] or "") == 4096
    assert json_text(at_most)[1] is True
    longer = {"a": "x" * (4097 - len('{"a":""}'))}
    assert json_text(longer)[1] is False


@pytest.mark.parametrize("kind", ["[", "{"])
def test_up_to_32_brackets_can_be_stored_as_they_are(kind: str) -> None:
    assert json_text({"k": _nested(31, kind)})[1] is True  # 32 with the item's own
    assert json_text({"k": _nested(32, kind)})[1] is False


def test_objects_and_arrays_count_together() -> None:
    mixed = {"k": [{"k": _nested(30)}]}  # 2 objects and 31 arrays
    assert json_text(mixed)[1] is False
    assert json_text({"k": [{"k": _nested(29)}]})[1] is True


def test_an_item_stored_as_it_is_is_the_very_same_object() -> None:
    item = {"id": "I1", "name": "Café", "price": 199, "tags": [{"n": 1}]}
    assert clean_json(item) is item
    flat = {"unit_cost": "1.25", "available": True, "modified_time": 5, "group": None}
    assert clean_json(flat) is flat


def test_a_flat_ascii_dict_is_stored_without_being_written_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``extra_data`` is stored on every row: telling it plain costs no serialization."""
    written: list[object] = []

    def counted(value: Any) -> tuple[str | None, bool]:
        written.append(value)
        return json_text(value)

    monkeypatch.setattr(storable, "json_text", counted)
    plain = {"a": "text", "b": 2**13_999, "c": True, "d": None, "e": "x" * 4096, "f": 2**64}
    assert clean_json(plain) is plain
    assert written == []
    for other in (
        {"a": "é"},
        {"é": 1},
        {"a": 1.5},
        {"a": [1]},
        {"a": "x" * 4097},
        {"a": 2**14_001},
        {1: "a"},
    ):
        clean_json(other)
    assert len(written) == 7


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ({"a\x00b": "c\x00d"}, {"ab": "cd"}),
        ({"k\x00": 1}, {"k": 1}),
        ({"a": "x" * 4097}, {"a": "x" * 4096 + "…(1 more characters)"}),
        ({"a": 2**14_000}, {"a": "(an integer of about 4214 digits)"}),
        ({1: "a", "b": "\x00"}, {"1": "a", "b": ""}),
        ({"a": float("inf")}, {"a": "inf"}),
        ({"a": Decimal("1.5")}, {"a": "1.5"}),
        ({"a": ("x", 1), "b": "\x00"}, {"a": ["x", 1], "b": ""}),
    ],
)
def test_a_flat_dict_the_store_cannot_take_as_it_is_is_cleaned(
    value: dict[Any, Any], cleaned: dict[str, Any]
) -> None:
    assert clean_json(value) == cleaned


_TEXT = st.text(
    st.characters(codec=None, categories=None) | st.sampled_from("\x00\ufffe\ud800{[é"),
    max_size=12,
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _TEXT
    | st.sampled_from([10**4000, 2**13_999, 2**14_000, "y" * 4100, 2**64])
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=40,
)
"""What a raw item holds: JSON's types (string keys, lists), whatever is in them."""


def _walked(item: dict[str, Any]) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storable, "json_text", lambda value: (None, False))
        patch.setattr(storable, "_plain", lambda value: False)
        return clean_json(item)


@given(
    st.dictionaries(_TEXT, _JSON, max_size=4)
    | st.builds(lambda depth: {"k": _nested(depth)}, st.integers(28, 34))
)
def test_what_is_stored_as_it_is_is_what_the_walk_would_store(item: dict[str, Any]) -> None:
    """The shortcut only skips work: whenever it applies, the walk changes nothing."""
    if json_text(item)[1] or storable._plain(item):
        assert clean_json(item) is item
        assert _walked(item) == item


def test_a_time_is_any_bigint() -> None:
    """``source_modified_time`` is a ``bigint`` column: its whole range, nothing past it."""
    row = {"merchant_id": "M", "source_id": "I1", "name": "Cola", "extra_data": {"k": 1}}
    for fits in (-(2**63), 2**63 - 1):
        assert Product(**row, source_modified_time=fits).source_modified_time == fits
    for past in (-(2**63) - 1, 2**63):
        with pytest.raises(ValidationError, match="source_modified_time"):
            Product(**row, source_modified_time=past)


# -- parsed_json_text: json_text of a parsed item, written by orjson where it writes the same


@pytest.mark.parametrize(
    "value",
    [
        {"id": "I1", "name": 'Café "Ünïcode" \u2028 \x7f \U0010ffff', "price": 349},
        {"a": [1, -0, True, False, {}, []], "b": "\x00\x1f\n\t\\/"},
        {"i": [2**63 - 1, -(2**63), 2**64 - 1]},  # 64 bits: orjson writes them
        {"i": 2**64},  # past 64 bits: orjson refuses, json writes it
        {"i": -(2**63) - 1},
        {"i": 10**5000},  # too long for Python to print: no text
        {"f": [0.1, -0.0, 1e15, 1e16, 1.5e300, 5e-324, 1e-4, 1e-10, 1.7976931348623157e308]},
        {"f": 1e-5},  # orjson 0.00001, json 1e-05
        {"f": -3.5e-5},
        {"f": 1.25e-9},  # orjson 1.25e-9, json 1.25e-09
        {"f": 7e-6},
        {"f": float("nan")},  # orjson null, json refuses: NaN, not as it is
        {"f": float("inf")},
        {"f": [float("-inf")]},
        {"n": None, "s": "null e- 0.0000"},  # the marks, in vain
        {"\ud800": 1},  # a lone surrogate: orjson refuses it
        {"s": "a\udfffb"},
        {"k": _nested(253)},  # orjson's deepest
        {"k": _nested(254)},  # past it: json writes it
        {"k": _nested(31)},
        {"k": _nested(32)},
        {"a": "x" * 4088},
        {"a": "x" * 4089},
        {"a": "\ufffe"},
    ],
)
def test_a_parsed_item_is_written_as_json_text_writes_it(value: Any) -> None:
    assert storable.parsed_json_text(value) == json_text(value)


@given(
    st.dictionaries(_TEXT, _JSON, max_size=4)
    | st.dictionaries(_TEXT, st.floats() | st.integers(-(2**65), 2**65), max_size=4)
)
def test_any_parsed_item_is_written_as_json_text_writes_it(item: dict[str, Any]) -> None:
    assert storable.parsed_json_text(item) == json_text(item)


def test_an_ordinary_item_is_written_by_orjson_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poll's cost: the standard library's encoder is not asked for a plain item."""
    monkeypatch.setattr(storable, "json_text", lambda value: pytest.fail("json_text asked"))
    item = {"id": "I1", "name": "Cola 1.5L", "code": "0123", "price": 199, "hidden": False}
    assert storable.parsed_json_text(item) == (
        '{"id":"I1","name":"Cola 1.5L","code":"0123","price":199,"hidden":false}',
        True,
    )


def _as_it_is_reference(text: str) -> bool:
    """``storable._as_it_is`` before its searches looked for one character first."""
    return (
        len(text) <= storable.RAW_TEXT_MAX_CHARS
        and text.count("{") + text.count("[") <= storable.RAW_MAX_DEPTH
        and "\\u0000" not in text
        and (text.isascii() or storable._UNSTORABLE.search(text) is None)
    )


_MARKS = st.text(st.sampled_from(list('{}[]\\u0.e-nl"x\x00\ufffeé')), max_size=80)


@given(
    _MARKS
    | st.builds(
        lambda objects, arrays, tail: "{" * objects + "[" * arrays + tail,
        st.integers(0, 40),
        st.integers(0, 40),
        _MARKS,
    )
    | st.builds(lambda value: json_text(value)[0] or "", st.dictionaries(_TEXT, _JSON, max_size=4))
)
@example("[" * 32)
@example("{" * 32)
@example("[" * 33)
@example("{" * 16 + "[" * 17)
@example('"\\u0000"')
@example('"\\\\u0000"')
def test_as_it_is_answers_as_the_plain_expression(text: str) -> None:
    """The searches that look for a rare character first answer as the plain ones
    (brackets around the limit, backslashes with and without the NUL escape, dots)."""
    assert storable._as_it_is(text) == _as_it_is_reference(text)


@given(st.dictionaries(_TEXT, st.floats(allow_nan=False) | _TEXT | st.integers(), max_size=6))
def test_a_small_float_is_found_with_or_without_other_dots(item: dict[str, Any]) -> None:
    """orjson writes 1e-05 as 0.00001, so "0.0000" is looked for where there is a "."."""
    assert storable.parsed_json_text(item) == json_text(item)
