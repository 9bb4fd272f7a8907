"""The stored tokens and the app's credentials without pydantic, against the pydantic models
they replace (kept here as the oracle): the same JSON accepted with the same values, the same
JSON refused naming the same fields, the same stored text byte for byte."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from esl_sync import lax
from esl_sync.credentials import AppCredentials, CloverTokens
from esl_sync.secret import Secret


class OldCloverTokens(BaseModel):
    """``esl_sync.credentials.CloverTokens`` as it was (pydantic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    access_token: SecretStr = Field(min_length=1)
    access_token_expiration: int | None = Field(None, ge=0)
    refresh_token: SecretStr | None = Field(None, min_length=1)
    refresh_token_expiration: int | None = Field(None, ge=0)


class OldAppCredentials(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = Field(None, min_length=1)


TOKEN_FIELDS = (
    "access_token",
    "access_token_expiration",
    "refresh_token",
    "refresh_token_expiration",
)

# Text as the field sends it: NUL, controls, lone surrogates, astral characters, white space.
hostile_text = st.text(
    alphabet=st.sampled_from(
        [
            "a",
            "Z",
            "0",
            " ",
            "\x00",
            "\x1c",
            "\t",
            "\u00a0",
            "\u2028",
            "\ud800",
            "\udfff",
            "\U0001f600",
            "\ufeff",
            "é",
            '"',
            "\\",
        ]
    ),
    max_size=6,
) | st.text(max_size=4)
# The text of numbers, near what pydantic parses as an integer and what it does not; but
# for the corner decided otherwise (underscores after leading zeros: the test below).
UNDERSCORES_AFTER_ZEROS = re.compile(r"[+-]?0[0_]*__")
number_text = st.text(
    alphabet=st.sampled_from([*list("0123456789+-_.eE "), "\t", "\x1c", "\xa0", "\u3000", "١"]),
    max_size=8,
).filter(lambda text: not UNDERSCORES_AFTER_ZEROS.match(text.strip(lax.WHITESPACE)))
numbers = (
    st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 1.0, 1e3, 1e20, 1e300, 1.5, 2**63, -(2**63) - 1])
)
scalars = st.none() | st.booleans() | numbers | hostile_text | number_text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)


def _documents(fields: tuple[str, ...]) -> st.SearchStrategy[object]:
    named = st.dictionaries(st.sampled_from([*fields, "extra", "ACCESS_TOKEN"]), values)
    return named | values


def _text_of(document: object, how: int) -> str | bytes:
    """The document as JSON, sent as text or UTF-8 (a lone surrogate: invalid UTF-8)."""
    if how == 0:
        return json.dumps(document)  # lone surrogates as escapes
    text = json.dumps(document, ensure_ascii=False)
    return text if how == 1 else text.encode("utf-8", "surrogatepass")


def _faulty_fields(error: Exception) -> set[str]:
    """The fields a refusal names (``body`` for the document as a whole)."""
    if isinstance(error, ValidationError):
        return {str(e["loc"][0]) if e["loc"] else "body" for e in error.errors()}
    message = str(error).split(": ", 1)[1]
    return set(re.findall(r"(?:^|; )(\w+): ", message))


def _outcome(parse: Any, text: str | bytes) -> tuple[bool, Any]:
    try:
        return True, parse(text)
    except ValueError as error:
        return False, _faulty_fields(error)


def _secret_text(value: SecretStr | Secret | None) -> str | None:
    return None if value is None else value.get_secret_value()


@settings(max_examples=600, deadline=None)
@given(_documents(TOKEN_FIELDS), st.integers(0, 2))
def test_tokens_accept_and_refuse_what_the_pydantic_model_did(document: object, how: int) -> None:
    text = _text_of(document, how)
    old_ok, old = _outcome(OldCloverTokens.model_validate_json, text)
    new_ok, new = _outcome(lambda t: CloverTokens.parse(t, "pair"), text)

    assert new_ok == old_ok, (old, new)
    if not old_ok:
        assert new == old
        return
    stored: dict[str, object] = {}  # what the old model's secret_json wrote
    for name in TOKEN_FIELDS:
        old_value, new_value = getattr(old, name), getattr(new, name)
        if name.endswith("_token"):
            assert _secret_text(new_value) == _secret_text(old_value)
            stored[name] = _secret_text(old_value)
        else:
            assert new_value == old_value
            assert type(new_value) is type(old_value)
            stored[name] = old_value
    assert new.secret_json() == json.dumps(stored)  # byte for byte: tokens stored long ago


@settings(max_examples=300, deadline=None)
@given(_documents(("client_id", "client_secret")), st.integers(0, 2))
def test_app_credentials_accept_and_refuse_what_the_pydantic_model_did(
    document: object, how: int
) -> None:
    text = _text_of(document, how)
    old_ok, old = _outcome(OldAppCredentials.model_validate_json, text)
    new_ok, new = _outcome(lambda t: AppCredentials.parse(t, "secret"), text)

    assert new_ok == old_ok, (old, new)
    if old_ok:
        assert new.client_id == old.client_id
        assert _secret_text(new.client_secret) == _secret_text(old.client_secret)
    else:
        assert new == old


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nul\x00l",
        "{",
        '{"access_token": "a"} trailing',
        "\ufeff{}",
        b"\xef\xbb\xbf{}",
        '{"access_token": "a"}'.encode("utf-16"),
        b'{"access_token": "a\xff"}',
        '{"access_token": "a", "x": ' + "[" * 201 + "]" * 201 + "}",
        '{"access_token": "a", "x": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}",
        '{"access_token": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"access_token": "a", "x": 1' + "0" * 4300 + "}",
        '{"access_token": "a", "x": "\\udc00"}',
        '{"access_token": "a", "\\ud800": 1}',
        '{"access_token": "a\x01"}',
        '{"access_token": "' + "A" * 1_000_000 + "SECRET" + '", "refresh_token": ""}',
        '{"access_token": "SECRET", "access_token_expiration": "SECRET"}',
    ],
)
def test_documents_pydantic_refused_as_a_whole_are_refused_without_a_value(
    text: str | bytes,
) -> None:
    old_ok, old = _outcome(OldCloverTokens.model_validate_json, text)
    with pytest.raises(ValueError, match=r"^pair: ") as caught:
        CloverTokens.parse(text, "pair")
    assert not old_ok
    assert _faulty_fields(caught.value) == old
    assert "SECRET" not in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", 1),
        ("false", 0),
        ("1.0", 1),
        ("1e3", 1000),
        ("-0", 0),
        ("1e-400", 0),
        ('" 5 "', 5),
        ('"\\u00a05\\u3000"', 5),
        ('"1_000"', 1000),
        ('"5.00"', 5),
        ('"+5"', 5),
        ('"-0.0"', 0),
        ("1" + "0" * 4299, 10**4299),
    ],
)
def test_lax_integers_read_as_pydantic_read_them(value: str, expected: int) -> None:
    text = f'{{"access_token": "a", "refresh_token_expiration": {value}}}'
    assert OldCloverTokens.model_validate_json(text).refresh_token_expiration == expected
    assert CloverTokens.parse(text, "pair").refresh_token_expiration == expected


@pytest.mark.parametrize(
    "value",
    [
        '"\\u001c5"',
        '"5."',
        '"1__0"',
        '"_1"',
        '"1e3"',
        '"\u0665"',
        '"0x10"',
        '"NaN"',
        "NaN",
        "-Infinity",
        "1e400",
        "1e19",
        "-9.3e18",
        "1.5",
        '""',
        '"5.10"',
        "[]",
        "{}",
        '"' + "1" * 4301 + '"',
        "-1",
    ],
)
def test_integers_pydantic_refused_are_refused_by_name(value: str) -> None:
    text = f'{{"access_token": "a", "refresh_token_expiration": {value}}}'
    with pytest.raises(ValidationError):
        OldCloverTokens.model_validate_json(text)
    with pytest.raises(ValueError, match=r"^pair: refresh_token_expiration: [^;]+$"):
        CloverTokens.parse(text, "pair")


def test_underscores_after_leading_zeros_are_refused_though_pydantic_took_them() -> None:
    """pydantic 2.13 read ``"0__5"`` as 5 (it drops leading zeros and underscores before it
    parses); refused here as Python's ``int()`` refuses it (``esl_sync.lax.integer_text``):
    Clover sends expirations as numbers, and no writer ever wrote this."""
    for value in ('"0__5"', '" 00__1 "', '"0_0__0"'):
        text = f'{{"access_token": "a", "refresh_token_expiration": {value}}}'
        assert OldCloverTokens.model_validate_json(text).refresh_token_expiration is not None
        with pytest.raises(ValueError, match=r"^pair: refresh_token_expiration: [^;]+$"):
            CloverTokens.parse(text, "pair")


def test_the_stored_json_is_the_text_stored_until_now() -> None:
    pair = CloverTokens(
        access_token=Secret("acc"),
        access_token_expiration=1_800_000_000,
        refresh_token=Secret("ref\u00e9"),
        refresh_token_expiration=0,
    )
    assert pair.secret_json() == (
        '{"access_token": "acc", "access_token_expiration": 1800000000, '
        '"refresh_token": "ref\\u00e9", "refresh_token_expiration": 0}'
    )
    assert CloverTokens.plain("t").secret_json() == (
        '{"access_token": "t", "access_token_expiration": null, '
        '"refresh_token": null, "refresh_token_expiration": null}'
    )
    assert CloverTokens.parse(pair.secret_json(), "stored") == pair


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        (lambda: CloverTokens.plain(""), "access_token"),
        (lambda: CloverTokens(access_token="raw"), "access_token"),  # type: ignore[arg-type]
        (
            lambda: CloverTokens(
                access_token=Secret("a"),
                access_token_expiration=-1,
                refresh_token=Secret(""),
                refresh_token_expiration=True,
            ),
            "access_token_expiration, refresh_token, refresh_token_expiration",
        ),
        (lambda: AppCredentials(client_id=""), "client_id"),
        (lambda: AppCredentials(client_id="i", client_secret=Secret("")), "client_secret"),
    ],
)
def test_built_by_keywords_refuses_what_the_model_refused(build: Any, fields: str) -> None:
    with pytest.raises(ValueError, match=r"^(CloverTokens|AppCredentials): ") as caught:
        build()
    assert ", ".join(sorted(re.findall(r"(\w+): ", str(caught.value))[1:])) == fields


def test_equal_hashable_frozen_and_masked() -> None:
    pair = CloverTokens.from_object({"access_token": "SECRET", "refresh_token": "SECRET-r"})
    same = CloverTokens.parse('{"access_token": "SECRET", "refresh_token": "SECRET-r"}', "p")
    assert pair == same
    assert hash(pair) == hash(same)
    assert pair != CloverTokens.plain("SECRET")
    assert "SECRET" not in repr(pair) + str(pair)
    with pytest.raises(AttributeError):
        pair.access_token = Secret("other")  # type: ignore[misc]
    credentials = AppCredentials.parse('{"client_id": "id", "client_secret": "SECRET"}', "s")
    assert "SECRET" not in repr(credentials)
    assert credentials.with_client_id("other") == AppCredentials(
        client_id="other", client_secret=Secret("SECRET")
    )
