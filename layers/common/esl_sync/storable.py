"""What Postgres and Hipoink can take, and how a value is made to fit.

Postgres refuses a whole statement for one bad value: a NUL character in text or JSON, a
lone surrogate (it cannot be encoded as UTF-8), ``NaN`` or ``Infinity`` in jsonb, a number
past a ``numeric(14,2)`` or ``bigint`` column. The poll writes a page of items in one
statement, so one such value would refuse the page, and every later poll of the store with
it. Hence two kinds of rule here:

* **cleaning** (text and JSON): what no store can hold is dropped, the rest is kept as is;
  it never changes what a label means, so it never refuses an item;
* **limits** (money, times, product codes, label text): a value past them is refused by
  name by the transform (:mod:`esl_sync.clover.transform`), never stored.

:class:`esl_sync.products.Product` applies the cleaning to every field and the storage
limits as field constraints, so no product that can be built can refuse a statement.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MONEY_MAX_CENTS = 10**14 - 1
"""The largest amount ``numeric(14, 2)`` holds, in cents: $999,999,999,999.99."""
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
"""The range of a ``bigint`` column (``source_modified_time``)."""

PC_MAX_LENGTH = 64
"""Hipoink's product code (``pc``): at most this many characters, every one printable.
Hipoink documents no limit; 64 is what our simulator enforces and what every barcode
(EAN-13, UPC-A, GS1-128 up to 48) and a Clover item id fit in."""
NAME_MAX_LENGTH = 127
"""A label's product name (``pn``): Clover's own limit for item names."""
UNIT_MAX_LENGTH = 64
"""A label's unit (``pu``): Clover's limit for ``unitName``."""
SKU_MAX_LENGTH = 100
"""Clover's limit for ``sku`` and ``code``; the stored ``sku`` is cut to it."""

RAW_TEXT_MAX_CHARS = 4096
"""A string in the stored ``raw`` item is cut to this many characters: ``raw`` is for
reading what Clover sent, and a megabyte string would only make the page's statement big."""
RAW_MAX_DEPTH = 32
"""JSON nested deeper in ``raw`` is replaced by a note (Postgres and Python both have
recursion limits; Clover's items are three levels deep)."""
_HUGE_INT_BITS = 14_000
"""Integers longer than about 4,200 digits are stored as a note: Python refuses to turn
an integer of more than 4,300 digits into JSON text. Every integer that fits in
:data:`RAW_TEXT_MAX_CHARS` characters of JSON is shorter, so what :func:`json_text` finds
storable as it is, the walk of :func:`clean_json` leaves as it is too."""

_NONCHARACTERS = "\\ufdd0-\\ufdef" + "".join(
    f"\\U{plane + 0xFFFE:08x}\\U{plane + 0xFFFF:08x}" for plane in range(0, 0x110000, 0x10000)
)
_UNSTORABLE = re.compile(f"[\\x00\\ud800-\\udfff{_NONCHARACTERS}]")
"""NUL (Postgres text and jsonb refuse it), lone surrogates (not UTF-8) and Unicode's 66
noncharacters (not for interchange; SQS refuses U+FFFE and U+FFFF in a message)."""
_LABEL_BREAKS = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]+")
"""Control characters and line or paragraph separators: a label shows one line."""
_CODE_EDGES = " \t\r\n\f\v"


def clean_text(text: str) -> str:
    """``text`` without NUL, lone surrogates and noncharacters; everything else is kept."""
    if text.isascii() and "\x00" not in text:  # the common case, without the regex
        return text
    return _UNSTORABLE.sub("", text)


def label_text(text: str, max_length: int) -> str:
    """Text a label can show: cleaned, each run of control characters one space, trimmed,
    cut to ``max_length`` characters. Empty when nothing printable is left."""
    # Printable text (Python's rule: no Cc, Cf, Cs, Co, Cn, Z* but " ") holds nothing that
    # cleaning drops or the breaks replace: only trimmed and cut (most names; no regex).
    shown = text.strip() if text.isprintable() else _LABEL_BREAKS.sub(" ", clean_text(text)).strip()
    return shown[:max_length].rstrip()


def product_code(text: str) -> tuple[str, str | None]:
    """(the code, None) for a usable Hipoink ``pc``, or (the code, why it is not).

    Spaces, tabs and line breaks at either end are trimmed (a pasted barcode); anything
    else is kept exactly, since the code is the label's identity: a code that holds a
    control character, an invisible format character or an invalid code point, or is
    longer than :data:`PC_MAX_LENGTH`, is refused rather than changed (a cleaned code
    could name another product's label).
    """
    code = text.strip(_CODE_EDGES)
    if len(code) > PC_MAX_LENGTH:
        return code, f"longer than {PC_MAX_LENGTH} characters ({len(code)})"
    if not code.isprintable():  # the standard library's rule: no Cc, Cf, Cs, Co, Cn, Z* but " "
        return code, "holds control characters, invisible characters or invalid code points"
    return code, None


_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)``, its
encoder built once rather than per item."""


def json_text(value: Any) -> tuple[str | None, bool]:
    """``value`` as compact JSON, and whether :func:`clean_json` would leave it as it is.

    The poll's one serialization of a raw item: its text keys the item, goes into the
    page's statement as it is, and is checked here in C instead of walked in Python. The
    check is sufficient, never lax: text of at most :data:`RAW_TEXT_MAX_CHARS` holds no
    longer string and no integer too long to print; at most :data:`RAW_MAX_DEPTH` opening
    brackets allow no deeper nesting; ``allow_nan=False`` refuses ``NaN``/``Infinity``; NUL
    is written ``\u0000`` (JSON escapes control characters) and the pattern finds every
    other character no store can hold (keys included). Anything else (a bigger item, a
    type JSON does not know) is "not as it is", for the walk to decide. The text is None
    when even that cannot be written (an integer too long for Python to print).
    """
    try:
        text = _COMPACT_JSON.encode(value)
    except (ValueError, TypeError, RecursionError):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str), False
        except (ValueError, RecursionError):
            return None, False
    return text, _as_it_is(text)


def parsed_json_text(value: Any) -> tuple[str | None, bool]:
    """:func:`json_text` of a value as a JSON parser makes it (dicts with text keys, lists,
    text, integers, floats, booleans, None: a raw Clover item): the same text and answer.

    orjson writes such a value ≈ 8 times faster than ``json`` (≈ 0.55 µs an item here,
    against ≈ 4.5) and the same, character for character (the same escapes, text beyond
    ASCII as it is, dict order, integers), except where it refuses one (an integer past
    64 bits, a lone surrogate, nesting past 254 levels) or may write it otherwise: there
    ``json`` writes it, as before. orjson may write otherwise ``null`` (also a NaN or an
    infinity, which ``json`` refuses), a float with a negative exponent of one digit
    (``1e-9`` for ``1e-09``) or between 1e-5 and 1e-4 (``0.00001`` for ``1e-05``): their
    marks are looked for anywhere in the text (in a string too, so now and then in vain).
    Other Python types are not for this function (orjson writes a UUID, an enum or a
    dataclass, which ``json`` refuses). ``tests/unit/test_storable_json.py`` checks it
    agrees with :func:`json_text`.
    """
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json_text(value)
    # In text: faster than in bytes. "0.0000" is looked for only where a "." is (see
    # _as_it_is): ≈ 0.1 µs less for the four items in five that hold none (issue 15).
    if "null" in text or "e-" in text or ("." in text and "0.0000" in text):
        return json_text(value)
    return text, _as_it_is(text)


def _as_it_is(text: str) -> bool:
    """Whether the JSON ``text`` of a value holds only what the store takes as it is (see
    :func:`json_text`).

    A pattern of several characters is looked for only where one of them is: a search for
    one character is a ``memchr``, for several a scan about three times slower. An item
    seldom holds an array or a backslash, so its ``[`` are counted and ``\\u0000`` looked
    for only when there is one: ≈ 0.2 µs less an item (issue 15). The same answer:
    ``tests/unit/test_storable_json.py`` holds it equal to the plain expression."""
    return (
        len(text) <= RAW_TEXT_MAX_CHARS
        and text.count("{") + (text.count("[") if "[" in text else 0) <= RAW_MAX_DEPTH
        and ("\\" not in text or "\\u0000" not in text)
        and (text.isascii() or _UNSTORABLE.search(text) is None)  # the rest is not ASCII
    )


def clean_json(value: Any, depth: int = 0) -> Any:
    """JSON-able data that jsonb takes: strings (keys too) cleaned and cut to
    :data:`RAW_TEXT_MAX_CHARS`, ``NaN``/``Infinity`` as strings, giant integers and
    nesting past :data:`RAW_MAX_DEPTH` replaced by a note. Anything else becomes text.
    Data :func:`json_text` finds storable is returned as it is, unwalked."""
    if depth == 0 and isinstance(value, dict) and (_plain(value) or json_text(value)[1]):
        return value
    if isinstance(value, str):
        return _raw_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _HUGE_INT_BITS:
            return f"(an integer of about {int(value.bit_length() * math.log10(2))} digits)"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict | list | tuple) and depth >= RAW_MAX_DEPTH:
        return f"(nested deeper than {RAW_MAX_DEPTH} levels, not stored)"
    if isinstance(value, dict):
        return {_raw_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v, depth + 1) for v in value]
    return _raw_text(str(value))


def _plain(value: dict[Any, Any]) -> bool:
    """A flat dict (``extra_data``) of ASCII text without NUL, no longer than the limit, of
    integers short enough, booleans and nulls: what :func:`clean_json` leaves as it is, told
    without writing it out."""
    for key, item in value.items():
        if type(key) is not str or not key.isascii() or "\x00" in key:
            return False
        kind = type(item)
        if kind is str:
            if not item.isascii() or "\x00" in item or len(item) > RAW_TEXT_MAX_CHARS:
                return False
        elif kind is int:
            if item.bit_length() > _HUGE_INT_BITS:
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _raw_text(text: str) -> str:
    text = clean_text(text)
    if len(text) <= RAW_TEXT_MAX_CHARS:
        return text
    return f"{text[:RAW_TEXT_MAX_CHARS]}…({len(text) - RAW_TEXT_MAX_CHARS} more characters)"
