"""Secret settings: the value itself (local runs) or a Secrets Manager ARN (deployed).

The database secret comes in either form a deployer is likely to have: a connection URL,
or the JSON secret RDS and Secrets Manager create for a database login. Errors name the
setting and what is wrong with it, never the secret's text.
"""

from __future__ import annotations

import json
import threading
import time
from functools import cache
from typing import Any

from esl_sync.secret import Secret
from esl_sync.settings import ConfigurationError
from esl_sync.store import aws_json

SECRET_MAX_AGE_SECONDS = 300  # a rotated secret is picked up within five minutes
# Secrets Manager answers in milliseconds or not at all: the defaults (botocore's: 60 s per
# attempt, retried) made an unreachable endpoint cost the deploy's migration 180 s.
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 5
ATTEMPTS = 3
_WEAK_SSLMODES = frozenset({"disable", "allow", "prefer"})
_SSLMODES = _WEAK_SSLMODES | {"require", "verify-ca", "verify-full"}
_POSTGRES_ENGINES = frozenset({"postgres", "postgresql", "aurora-postgresql"})

# Our own five-minute cache, not Powertools' SecretsProvider: importing its parameters
# package loads AppConfig, SSM and DynamoDB providers too (≈ 60 ms of every cold start);
# what we need is one call and a clock.
_cache_lock = threading.Lock()
_cached: dict[str, tuple[float, str]] = {}


@cache
def _client() -> aws_json.AwsJsonClient:
    """Secrets Manager with short timeouts."""
    return aws_json.client(
        "secretsmanager",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        attempts=ATTEMPTS,
    )


def forget_secrets() -> None:
    """Drop the client and every cached value (the local stack starts each stack afresh)."""
    _client.cache_clear()
    with _cache_lock:
        _cached.clear()


def forget_secret(secret_arn: str) -> None:
    """Drop one cached value: the next read asks Secrets Manager (a login it held was
    refused: it may have been rotated)."""
    with _cache_lock:
        _cached.pop(secret_arn, None)


def resolve_secret(name: str, value: Secret | None, secret_arn: str | None) -> str:
    """The secret's text, from the environment or Secrets Manager (cached for five minutes)."""
    if value is not None:
        return value.get_secret_value()
    if secret_arn:
        now = time.monotonic()
        with _cache_lock:
            hit = _cached.get(secret_arn)
        if hit is not None and now - hit[0] < SECRET_MAX_AGE_SECONDS:
            return hit[1]
        answer = _client().call("GetSecretValue", {"SecretId": secret_arn})
        text = answer["SecretString"] if "SecretString" in answer else answer["SecretBinary"]
        secret = text.decode() if isinstance(text, bytes) else text
        with _cache_lock:
            _cached[secret_arn] = (now, secret)
        return secret
    raise ConfigurationError(f"missing setting: {name} (or {name}_SECRET_ARN)")


def database_conninfo(text: str, *, require_tls: bool) -> str:
    """The libpq connection string held by the database secret.

    ``text`` is a URL (``postgresql://user:password@host:5432/db?sslmode=require``), a
    ``key=value`` string, or an RDS JSON secret (``username``, ``password``, ``host``,
    ``port``, ``dbname``; ``engine`` if present must be Postgres). With ``require_tls``
    (a deployed function) a login without ``sslmode`` gets ``sslmode=require`` and a weaker
    mode (``disable``, ``allow``, ``prefer``) is refused.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    stripped = text.strip()
    if not stripped:
        raise ConfigurationError("invalid setting: DATABASE_URL: the secret is empty")
    if "\x00" in stripped:  # libpq's strings end at a NUL: the rest would be misread
        raise ConfigurationError("invalid setting: DATABASE_URL: the secret holds a NUL")
    if _misread_url(stripped):
        raise ConfigurationError(
            "invalid setting: DATABASE_URL: the URL's user or password holds '@' or '/':"
            " percent-encode them (%40, %2F), or use a key=value string or JSON secret"
        )
    if stripped.startswith("{"):
        params = _rds_json_secret(stripped)
    else:
        try:
            params = conninfo_to_dict(stripped)
        except ProgrammingError:  # its message quotes the string, password included
            raise ConfigurationError(
                "invalid setting: DATABASE_URL: not a Postgres URL, key=value string or JSON secret"
            ) from None
    if any("\x00" in str(value) for value in params.values()):
        raise ConfigurationError("invalid setting: DATABASE_URL: the secret holds a NUL")
    mode = str(params.get("sslmode") or "")
    if mode and mode not in _SSLMODES:
        raise ConfigurationError(
            f"invalid setting: DATABASE_URL: sslmode must be one of {', '.join(sorted(_SSLMODES))}"
        )
    if require_tls:
        if not mode:
            params["sslmode"] = "require"
        elif mode in _WEAK_SSLMODES:
            raise ConfigurationError(
                f"invalid setting: DATABASE_URL: sslmode={mode} is refused in a deployed"
                " function; use require, verify-ca or verify-full"
            )
    return make_conninfo("", **params)


def _misread_url(text: str) -> bool:
    """Whether libpq would read pieces of a URL's password as its host, port or database:
    an '@' it does not take as the end of the user and password (a second one, or one
    after a '/' in the password). The connection's error would then quote them (``failed
    to resolve host 'Secret@db.example.com'``): in the log, on the operator's terminal and
    in CloudFormation's answer."""
    scheme, separator, rest = text.partition("://")
    if not separator or scheme not in ("postgresql", "postgres"):
        return False
    rest = rest.split("?", 1)[0]  # the query's values may hold anything
    cut = next((i for i, c in enumerate(rest) if c in "@/"), None)
    if cut is not None and rest[cut] == "@":
        rest = rest[cut + 1 :]
    return "@" in rest


def _rds_json_secret(text: str) -> dict[str, Any]:
    """libpq parameters from ``{"username", "password", "host", "port", "dbname"}``."""
    try:
        secret = json.loads(text)
    except ValueError:
        secret = None
    if not isinstance(secret, dict):
        raise ConfigurationError("invalid setting: DATABASE_URL: the secret is not a JSON object")
    engine = secret.get("engine")
    if engine is not None and engine not in _POSTGRES_ENGINES:
        raise ConfigurationError(
            "invalid setting: DATABASE_URL: the secret's engine is not Postgres"
        )
    params: dict[str, Any] = {}
    for key, param in (("username", "user"), ("password", "password"), ("host", "host")):
        value = secret.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"invalid setting: DATABASE_URL: the JSON secret needs a non-empty {key!r}"
                " (a secret RDS manages for the master user holds only username and password:"
                " use a secret with the host, or a URL)"
            )
        params[param] = value
    port = secret.get("port", 5432)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError("invalid setting: DATABASE_URL: the secret's port is not a port")
    params["port"] = port
    dbname = secret.get("dbname")
    if dbname is not None:
        if not isinstance(dbname, str) or not dbname:
            raise ConfigurationError("invalid setting: DATABASE_URL: the secret's dbname is empty")
        params["dbname"] = dbname
    return params
