"""``Secret``: the secret text that never shows itself (the contract of pydantic's
``SecretStr``, which the poller no longer loads)."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from esl_sync.secret import MASK, Secret

texts = st.text(min_size=1)


@given(texts)
def test_a_secret_shows_only_the_mask(value: str) -> None:
    secret = Secret(value)
    assert str(secret) == f"{secret}" == MASK
    assert repr(secret) == f"Secret('{MASK}')"
    assert json.dumps({"s": secret}, default=str) == f'{{"s": "{MASK}"}}'
    assert secret.get_secret_value() == value
    assert len(secret) == len(value)
    assert secret


def test_an_empty_secret_is_empty_and_false() -> None:
    assert str(Secret("")) == ""
    assert not Secret("")
    assert repr(Secret("")) == "Secret('')"


@given(texts, texts)
def test_secrets_are_equal_by_their_text_and_never_to_plain_text(a: str, b: str) -> None:
    assert (Secret(a) == Secret(b)) is (a == b)
    assert Secret(a) != a
    assert hash(Secret(a)) == hash(Secret(a))


def test_a_lone_surrogate_is_compared_not_crashed_on() -> None:
    assert Secret("\ud800") == Secret("\ud800")
    assert Secret("\ud800") != Secret("\ud801")


@pytest.mark.parametrize("value", [None, b"token", 42, ["t"]])
def test_only_text_is_a_secret(value: object) -> None:
    with pytest.raises(TypeError, match="a secret is text"):
        Secret(value)  # type: ignore[arg-type]


def test_a_secret_is_never_pickled() -> None:
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(Secret("hunter2"))


def test_a_log_record_shows_the_mask(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("token %s %r", Secret("hunter2"), Secret("hunter2"))
    assert "hunter2" not in caplog.text
    assert MASK in caplog.text


class _Held(BaseModel):
    token: Secret


def test_a_pydantic_model_holds_a_secret_and_dumps_the_mask() -> None:
    held = _Held.model_validate({"token": "hunter2"})
    assert held.token.get_secret_value() == "hunter2"
    assert _Held(token=Secret("hunter2")).token == held.token
    assert "hunter2" not in held.model_dump_json()
    assert "hunter2" not in repr(held)
    assert held.model_dump() == {"token": MASK}
    with pytest.raises(ValidationError) as error:
        _Held.model_validate({"token": 42})
    assert "must be text" in str(error.value)
