"""Secrets from Secrets Manager (moto): read once, kept five minutes, text or binary."""

from __future__ import annotations

import boto3
import pytest

from devkit.local_stack import LocalStack
from esl_sync.store import secrets


def test_a_secret_is_read_once_then_again_after_five_minutes(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = boto3.client("secretsmanager")
    text_arn = manager.create_secret(Name="t-text", SecretString="postgresql://a@h/db")["ARN"]
    binary_arn = manager.create_secret(Name="t-binary", SecretBinary=b"sign\xc3\xa9")["ARN"]
    secrets.forget_secrets()
    calls: list[str] = []
    secrets._client().meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **_: calls.append("get")
    )
    now = [1000.0]
    monkeypatch.setattr(secrets.time, "monotonic", lambda: now[0])

    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://a@h/db"
    assert secrets.resolve_secret("HIPOINK_SIGN", None, binary_arn) == "signé"
    manager.put_secret_value(SecretId=text_arn, SecretString="postgresql://b@h/db")
    now[0] += secrets.SECRET_MAX_AGE_SECONDS - 1
    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://a@h/db"
    assert len(calls) == 2
    now[0] += 1  # five minutes on: the rotated value
    assert secrets.resolve_secret("DATABASE_URL", None, text_arn) == "postgresql://b@h/db"
    assert len(calls) == 3
    secrets.forget_secrets()
