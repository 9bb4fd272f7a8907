"""Secret settings: the value itself (local runs) or a Secrets Manager ARN (deployed)."""

from __future__ import annotations

from pydantic import SecretStr

from esl_sync.settings import ConfigurationError

SECRET_MAX_AGE_SECONDS = 300  # a rotated secret is picked up within five minutes


def resolve_secret(name: str, value: SecretStr | None, secret_arn: str | None) -> str:
    """The secret's text, from the environment or Secrets Manager (cached by Powertools)."""
    if value is not None:
        return value.get_secret_value()
    if secret_arn:
        from aws_lambda_powertools.utilities.parameters import get_secret

        secret = get_secret(secret_arn, max_age=SECRET_MAX_AGE_SECONDS)
        return secret if isinstance(secret, str) else secret.decode()
    raise ConfigurationError(f"missing setting: {name} (or {name}_SECRET_ARN)")
