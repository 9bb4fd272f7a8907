"""The database's password is a secret the local stack's leak check knows.

The embedded Postgres has a password, as a deployed database always does; the leak check
finds it, and the password of whatever the database secret holds now (rotated, or pointed
at a login Postgres refuses), in a log line, what Lambda's runtime logs of an error, a
page, what `esl-sync` printed, a Postgres row and a state table item.
"""

from __future__ import annotations

import boto3
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.embedded_postgres import EmbeddedPostgres
from devkit.local_stack import LocalStack
from esl_sync import runtime


def password_of(conninfo: str) -> str:
    return str(conninfo_to_dict(conninfo).get("password") or "")


def test_the_embedded_postgres_refuses_a_login_without_its_password() -> None:
    with EmbeddedPostgres() as server:
        assert len(server.password) >= 20
        assert password_of(server.url) == server.password
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        for password in ("", "not-the-password"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(make_conninfo(server.url, password=password), connect_timeout=5)


def test_the_leak_check_finds_the_database_password_wherever_it_lands(
    stack: LocalStack,
) -> None:
    password = password_of(stack.env["DATABASE_URL"])
    assert password, "the stack's Postgres has a password"
    rotated = "rotated-db-password-0001"
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"],
        SecretString=make_conninfo(stack.env["DATABASE_URL"], password=rotated),
    )
    runtime.forget_secret_state()
    assert stack.runner is not None
    assert stack.leaked_secrets() == 0
    for secret in (password, rotated):
        for where in (
            stack.runner.logs,
            stack.runner.runtime_errors,
            stack.pages,
            stack.cli_output,
        ):
            where.append(f"connection failed: password={secret}")
            assert stack.leaked_secrets() == 1, (secret, where)
            where.pop()
        with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE leak_probe (said text)")
            conn.execute("INSERT INTO leak_probe VALUES (%s)", (f"dsn {secret} here",))
            assert stack.leaked_secrets() == 1, secret
            conn.execute("DROP TABLE leak_probe")
        table, key = stack.env["STATE_TABLE_NAME"], {"merchant_id": {"S": "MLEAKPROBE01"}}
        dynamodb = boto3.client("dynamodb")
        dynamodb.put_item(TableName=table, Item=key | {"last_error": {"S": f"FATAL {secret}"}})
        assert stack.leaked_secrets() == 1, secret
        dynamodb.delete_item(TableName=table, Key=key)
    assert stack.leaked_secrets() == 0
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"], SecretString=stack.env["DATABASE_URL"]
    )
    runtime.forget_secret_state()
