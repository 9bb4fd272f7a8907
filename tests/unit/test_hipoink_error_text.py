"""The text the Hipoink client keeps of what went wrong: Hipoink's own ``error_msg``
(:func:`said`: stored on each refused label and the store's block, so storable, one line,
bounded, the sign masked) and which transport errors come of a certificate that failed
verification (:func:`certificate_refusal`: a configuration error, the store is blocked)
and which do not (retried).

The end-to-end cases (a real handshake refused, a plain-HTTP answer to one) are in
``tests/integration/test_tls.py`` and ``test_sender.py``; these build the exception chains
httpx raises (its error from httpcore's, from the ``ssl`` one) to try what a handshake
cannot be made to give: odd reasons, cycles, implicit contexts."""

from __future__ import annotations

import ssl

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esl_sync.hipoink.client import MESSAGE_MAX_CHARS, certificate_refusal, said
from tests.strategies import JSON_VALUES, assert_one_storable_line

SIGN = "s3cret-sign"


@given(JSON_VALUES)
def test_any_error_msg_is_kept_as_one_bounded_line_postgres_can_store(error_msg: object) -> None:
    text = said(error_msg, SIGN)
    assert_one_storable_line(text)
    assert len(text) <= MESSAGE_MAX_CHARS
    assert SIGN not in text


@given(
    st.lists(
        st.sampled_from(["", "\x00", "\ud800", "\ufffe"]), min_size=len(SIGN), max_size=len(SIGN)
    )
)
def test_the_sign_is_masked_even_when_cleaning_would_join_it(gaps: list[str]) -> None:
    """A server that echoes the sign with characters Postgres cannot store between its
    letters: dropping them joins the sign, and it is masked then too."""
    echoed = "".join(letter + gap for letter, gap in zip(SIGN, gaps, strict=True))
    text = said(f"sign error: {echoed} is wrong", SIGN)
    assert SIGN not in text
    assert text == "sign error: *** is wrong"


@pytest.mark.parametrize(
    ("error_msg", "kept"),
    [
        ("product 123: missing field pp", "product 123: missing field pp"),
        (None, "no message"),
        ("", "no message"),
        (" \x00\n\ud800 ", "no message"),
        ("product 7:\nbad\x00 name\r\n\ud800here", "product 7: bad name here"),
        (0, "no message"),
        (1, "1"),
        (["sign", "error"], "['sign', 'error']"),
        (f"sign {SIGN} refused", "sign *** refused"),
    ],
)
def test_what_is_kept_of_an_error_msg(error_msg: object, kept: str) -> None:
    assert said(error_msg, SIGN) == kept


def test_a_megabyte_error_msg_is_cut_to_its_bound() -> None:
    text = said("product 1: " + "x" * 1_000_000, SIGN)
    assert text == ("product 1: " + "x" * 1_000_000)[:MESSAGE_MAX_CHARS]


def test_without_a_sign_nothing_is_masked() -> None:
    assert said("store S not found", "") == "store S not found"


def _verification(message: object, reason: object = "CERTIFICATE_VERIFY_FAILED") -> BaseException:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed")
    error.verify_message = message  # type: ignore[assignment]  # any type, to try them
    error.reason = reason  # type: ignore[assignment]
    return error


def _as_httpx_raises(cause: BaseException) -> httpx.ConnectError:
    """httpx's error from httpcore's from ``cause``, as its transport maps them."""
    try:
        try:
            raise cause
        except type(cause) as raised:
            raise httpcore.ConnectError(str(raised)) from raised
    except httpcore.ConnectError as mapped:
        try:
            raise httpx.ConnectError(str(mapped)) from mapped
        except httpx.ConnectError as outer:
            return outer


def test_a_verification_failure_is_found_under_httpx_and_httpcore() -> None:
    error = _as_httpx_raises(_verification("certificate has expired"))
    assert certificate_refusal(error) == "certificate has expired"


def test_one_raised_while_handling_it_is_found_too() -> None:
    """No explicit cause: the error it was raised while handling (``__context__``)."""
    try:
        try:
            raise _verification("Hostname mismatch, certificate is not valid for 'x'.")
        except ssl.SSLCertVerificationError:
            raise httpx.ConnectError("handshake failed")  # noqa: B904 - the implicit chain
    except httpx.ConnectError as error:
        raised = error
    assert raised.__cause__ is None
    assert certificate_refusal(raised) == "Hostname mismatch, certificate is not valid for 'x'."


@pytest.mark.parametrize(
    "cause",
    [
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
    ids=["wrong-version", "eof", "refused", "timeout"],
)
def test_any_other_transport_failure_is_not_a_refused_certificate(cause: BaseException) -> None:
    assert certificate_refusal(_as_httpx_raises(cause)) is None


def test_no_cause_at_all() -> None:
    assert certificate_refusal(httpx.ConnectError("refused")) is None


def test_a_chain_that_loops_ends() -> None:
    first, second = httpx.ConnectError("a"), httpcore.ConnectError("b")
    first.__cause__, second.__cause__ = second, first
    assert certificate_refusal(first) is None


@pytest.mark.parametrize(
    ("message", "reason", "said"),
    [
        (None, None, "no reason given"),
        ("", "CERTIFICATE_VERIFY_FAILED", "CERTIFICATE_VERIFY_FAILED"),
        (None, "CERTIFICATE_VERIFY_FAILED", "CERTIFICATE_VERIFY_FAILED"),
        (12, None, "12"),
        (" \x00\n ", "CERTIFICATE_VERIFY_FAILED", "CERTIFICATE_VERIFY_FAILED"),
        ("bad\x00 cert\ud800\nhere", None, "bad cert here"),
    ],
)
def test_a_refusal_without_openssl_words_still_names_itself(
    message: object, reason: object, said: str
) -> None:
    assert certificate_refusal(_as_httpx_raises(_verification(message, reason))) == said


def test_an_instance_the_ssl_module_did_not_fill_in_is_named_too() -> None:
    bare = ssl.SSLCertVerificationError(1, "verify failed")  # no verify_message attribute
    assert certificate_refusal(_as_httpx_raises(bare)) == "no reason given"


@given(st.text(st.characters(exclude_categories=()), max_size=5000))
def test_the_reason_is_one_short_line_of_storable_text(message: str) -> None:
    """Whatever the reason holds (NUL, lone surrogates, line breaks, thousands of
    characters), what is kept fits a log line and a Postgres text column."""
    said = certificate_refusal(_as_httpx_raises(_verification(message)))
    assert said is not None
    assert len(said) <= 200
    assert_one_storable_line(said)
    if message.isprintable() and message == message.strip() and 0 < len(message) <= 200:
        assert said == message  # a plain reason is kept as it is
