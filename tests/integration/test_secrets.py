"""Secrets from Secrets Manager (moto): read once, kept five minutes, text or binary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
import pytest

from devkit.local_stack import LocalStack
from esl_sync import aws_observers
from esl_sync.store import secrets


def test_a_secret_is_read_once_then_again_after_five_minutes(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    manager = boto3.client("secretsmanager")
    text_arn = manager.create_secret(Name="t-text", SecretString="postgresql://a@h/db")["ARN"]
    binary_arn = manager.create_secret(Name="t-binary", SecretBinary=b"sign\xc3\xa9")["ARN"]
    secrets.forget_secrets()
    calls: list[str] = []

    def seen(service: str, operation: str, params: Mapping[str, Any]) -> None:
        calls.append(f"{service}:{operation}")

    aws_observers.observe(seen)
    request.addfinalizer(lambda: aws_observers.unobserve(seen))
    now = [1000.0]
    monkeypatch.setattr(secrets.time, "monotonic", lambda: now[0])

    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://a@h/db"
    assert secrets.resolve_secret("HIPOINK_SIGN", None, binary_arn) == "signé"
    manager.put_secret_value(SecretId=text_arn, SecretString="postgresql://b@h/db")
    now[0] += secrets.SECRET_MAX_AGE_SECONDS - 1
    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://a@h/db"
    assert calls == ["secretsmanager:GetSecretValue"] * 2
    now[0] += 1  # five minutes on: the rotated value
    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://b@h/db"
    assert len(calls) == 3
    assert secrets._client().call("GetSecretValue", {"SecretId": binary_arn})["SecretBinary"] == (
        b"sign\xc3\xa9"  # a blob: base64 on the wire, bytes here
    )
    secrets.forget_secrets()
