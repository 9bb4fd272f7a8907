"""A Clover body read by ``json_body.loads`` is what ``json.loads`` reads, or refuses, for
every text: orjson reads it only where the two agree, and an ordinary page is read by orjson."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from esl_sync.clover import json_body

_JSON_LOADS = json.loads  # the standard library's, kept from the spy below


def _outcome(read: Any, body: bytes) -> tuple[str, str]:
    """What reading ``body`` gives, comparable exactly: the value's ``repr`` (types, float
    bits and signs, key order, lone surrogates all show), or the kind of refusal."""
    try:
        value = read(body)
    except RecursionError:
        return ("too deep", "")
    except ValueError:
        return ("refused", "")
    return ("read", repr(value))


def _same_as_json(body: bytes) -> None:
    assert _outcome(json_body.loads, body) == _outcome(_JSON_LOADS, body)


@pytest.fixture
def json_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies that reached ``json.loads`` (the slow path), read as ever."""
    seen: list[bytes] = []

    def counting(content: bytes) -> Any:
        seen.append(content)
        return _JSON_LOADS(content)

    monkeypatch.setattr(json, "loads", counting)  # what json_body calls
    return seen


def test_an_ordinary_page_is_read_by_orjson(json_reads: list[bytes]) -> None:
    item = {
        "id": "6D9QWSC1OR3LF",
        "name": 'Regular Unleaded 87 "E10" 1.5e-05 ☕',
        "code": "060501321998",
        "price": 349,
        "cost": -0.0,
        "priceType": "PER_UNIT",
        "hidden": False,
        "itemGroup": None,
        "modifiedTime": 999_999_999_999_999_999,  # 18 digits: within 64 bits
        "tags": [{"elements": []}],
    }
    body = json.dumps({"elements": [item] * 3, "href": "x"}).encode()
    assert repr(json_body.loads(body)) == repr(_JSON_LOADS(body))
    assert json_reads == []


@pytest.mark.parametrize(
    "body",
    [
        b"1234567890123456789",  # 19 digits at the very start
        b"-9999999999999999999",  # 19 digits below -2**63
        b'{"price":18446744073709551616}',  # 2**64
        b'{"price":-9223372036854775809}',  # -2**63 - 1
        b'{"price":100000000000000000000000000000}',
        b'{"code":"12345678901234567890"}',  # a long digit run in a string: json, same value
        b'{"x":0.12345678901234567890123}',
        b'{"price":NaN}',
        b'{"price":Infinity}',
        b'{"price":-Infinity}',
        b'{"price":1e400}',
        b'{"price":-1e400}',
        b'{"name":"\\ud800"}',  # a lone surrogate, escaped
        b'{"name":"\\udc00x"}',
        b'{"name":"\\ud800\\u0041"}',
        b'{"name":"\xed\xa0\x80"}',  # a lone surrogate's bytes: json reads them (surrogatepass)
        b'\xef\xbb\xbf{"a":1}',  # a byte order mark
        '{"a":"é"}'.encode("utf-16"),
        '{"a":"é"}'.encode("utf-32-le"),
        pytest.param(b"[" * 1025 + b"]" * 1025, id="1,025 levels: past orjson's 1,024"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100,000 levels: past Python's"),
        b'{"a":1,}',
        b'{"a":"\xff"}',
        b'{"a":"\x00"}',
        b"",
        b"not json",
        b"[1] x",
        pytest.param(b"[" + b"9" * 5000 + b"]", id="5,000 digits: too long for Python's int"),
    ],
)
def test_what_orjson_reads_otherwise_or_refuses_is_read_by_json(
    body: bytes, json_reads: list[bytes]
) -> None:
    _same_as_json(body)
    assert json_reads, "json.loads was not asked"


@pytest.mark.parametrize(
    "body",
    [
        b"123456789012345678",  # 18 digits
        b"[-999999999999999999,999999999999999999]",
        b"[18446744073709551615,-9223372036854775808]",  # 64 bits' ends, 20 and 19 digits
        b'{"a":1,"b":2,"a":3}',  # the last value, at the first one's place
        b"[-0,-0.0,0.0,1E2,1e-400,2.2250738585072011e-308,4.9406564584124654e-324]",
        b"[1.7976931348623157e308,0.1,1.0000000000000002,9007199254740993.0]",
        b'["\\u0000","\\ud83d\\ude00","\\/","\\"","\xef\xbf\xbe","\x7f"]',
        b" \t\r\n[1] \n",
        pytest.param(b"[" * 1024 + b"]" * 1024, id="1,024 levels: orjson's deepest"),
    ],
)
def test_what_orjson_reads_it_reads_as_json_does(body: bytes) -> None:
    _same_as_json(body)


# JSON (orjson must read it as json does: big and odd numbers, escapes, duplicate keys),
# and JSON with hostile parts (the two must then agree on refusing it, or json must read it
# as before): a text of each kind is built from the same pieces, the hostile ones added.
_SPACE = ["", " ", "\n\t\r "]
_BAD_SPACE = ["\x0c", "\xa0", "\x00"]
_INTEGERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})", fullmatch=True),
    st.sampled_from(["-0", "18446744073709551616", "-9223372036854775809", "1" * 19]),
)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
)
_BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1.", ".5", "+1", "00", "nul"]
_TEXT = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters='"\\'), max_size=8
)
_ESCAPES = ["\\ud83d\\ude00", "\\u0000", "\\u00e9", "\\uFFFE", "\\n", "\\/", '\\"']
_ESCAPES += ["\x7f", "\u2028", "\U0010ffff"]
_BAD_ESCAPES = ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\x", "\\u12", "\x00", "\x1f"]


def _json_texts(hostile: bool) -> st.SearchStrategy[str]:
    space = st.sampled_from(_SPACE + _BAD_SPACE if hostile else _SPACE)
    pieces = [_TEXT, st.sampled_from(_ESCAPES)]
    if hostile:  # a raw surrogate is written as its surrogatepass bytes, below
        surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        pieces += [st.sampled_from(_BAD_ESCAPES), surrogates]
    strings = st.lists(st.one_of(pieces), max_size=4).map(lambda ps: '"' + "".join(ps) + '"')
    keys = st.one_of(st.sampled_from(['"id"', '"price"', '"a"']), strings)  # duplicates, often
    leaves = [_INTEGERS, _FLOATS, strings, st.sampled_from(["true", "false", "null"])]
    if hostile:
        leaves.append(st.sampled_from(_BAD_NUMBERS))

    def wrap(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        items = st.lists(st.tuples(space, inner), max_size=5)
        members = st.lists(st.tuples(keys, space, inner), max_size=5)
        return st.one_of(
            items.map(lambda xs: "[" + ",".join(w + v for w, v in xs) + "]"),
            members.map(lambda xs: "{" + ",".join(f"{k}{w}:{v}" for k, w, v in xs) + "}"),
        )

    values = st.recursive(st.one_of(leaves), wrap, max_leaves=12)
    return st.tuples(space, values, space).map("".join)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    hostile = draw(st.integers(0, 3)) == 0
    body = draw(_json_texts(hostile)).encode("utf-8", "surrogatepass")
    if hostile and draw(st.booleans()):
        if body and draw(st.booleans()):  # a stray byte: not UTF-8, or a cut character
            at = draw(st.integers(0, len(body) - 1))
            stray = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
            body = body[:at] + stray + body[at:]
        else:  # another encoding json.loads detects
            text = body.decode("utf-8", "surrogatepass")
            utf16 = text.encode("utf-16", "surrogatepass")
            body = draw(st.sampled_from([b"\xef\xbb\xbf" + body, utf16]))
    return body


@settings(max_examples=300)
@given(_bodies())
def test_any_body_reads_as_json_reads_it(body: bytes) -> None:
    event("orjson reads it" if _outcome(orjson.loads, body)[0] == "read" else "orjson refuses")
    _same_as_json(body)
