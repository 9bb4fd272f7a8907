"""The deploy's migration step through the real handler on the local stack: it reads the
database secret as deployed, applies what is missing, and answers CloudFormation (a PUT to
the presigned URL) with SUCCESS or a FAILED that says why, never quoting the secret."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import psycopg
import pytest

from devkit.lambda_runner import LambdaContext
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.store.schema import migration_files

ALL_VERSIONS = ",".join(version for version, _ in migration_files())


def _event(request_type: str, url: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "migrator.json").read_text())
    event.update(RequestType=request_type, ResponseURL=url)
    if request_type != "Create":
        event["PhysicalResourceId"] = "esl-sync-schema"
    return event


def _point_database_secret_at(stack: LocalStack, value: str) -> None:
    """What an operator does with `aws secretsmanager put-secret-value`."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"], SecretString=value
    )
    runtime.forget_secret_state()


def _clock(seconds: float) -> Callable[[str], LambdaContext]:
    """Contexts whose remaining time runs down with the real clock from ``seconds``."""

    def context(function: str) -> LambdaContext:
        deadline = time.monotonic() + seconds
        return LambdaContext(function, remaining=lambda: int((deadline - time.monotonic()) * 1000))

    return context


def test_create_on_a_new_database_applies_every_migration(
    stack: LocalStack, cloudformation: Any, make_database: Callable[[], str]
) -> None:
    fresh = make_database()
    _point_database_secret_at(stack, fresh)
    answer = stack.invoke("migrator", _event("Create", cloudformation.url))
    assert answer["Status"] == "SUCCESS", answer
    assert answer["Data"] == {"Applied": ALL_VERSIONS}
    assert answer["PhysicalResourceId"] == "esl-sync-schema"
    assert cloudformation.answers == [answer]
    with psycopg.connect(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migration_files()),
        )


def test_update_applies_nothing_twice_and_delete_keeps_the_data(
    stack: LocalStack, cloudformation: Any
) -> None:
    update = stack.invoke("migrator", _event("Update", cloudformation.url))
    assert (update["Status"], update["Data"]) == ("SUCCESS", {"Applied": ""})
    delete = stack.invoke("migrator", _event("Delete", cloudformation.url))
    assert delete["Status"] == "SUCCESS"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('products') IS NOT NULL").fetchone() == (True,)
    assert [a["Status"] for a in cloudformation.answers] == ["SUCCESS", "SUCCESS"]


def test_an_rds_json_secret_works_like_a_url(
    stack: LocalStack, cloudformation: Any, make_database: Callable[[], str]
) -> None:
    params = psycopg.conninfo.conninfo_to_dict(make_database())
    secret = {
        "engine": "postgres",
        "username": params.get("user", "postgres"),
        "password": "unused-by-trust-auth",
        "host": params["host"],
        "port": int(params.get("port") or 5432),
        "dbname": params["dbname"],
    }
    _point_database_secret_at(stack, json.dumps(secret))
    answer = stack.invoke("migrator", _event("Create", cloudformation.url))
    assert (answer["Status"], answer["Data"]) == ("SUCCESS", {"Applied": ALL_VERSIONS})


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ('{"username": "app", "password": "hunter2-secret"}', "needs a non-empty 'host'"),
        ("postgresql://app:hunter2-secret@db.example/x?sslmode=bogus", "sslmode"),
        ("not a url hunter2-secret", "not a Postgres URL"),
        ('{"engine": "mysql", "username": "a", "password": "hunter2-secret"}', "not Postgres"),
    ],
)
def test_a_bad_secret_answers_failed_without_quoting_it(
    stack: LocalStack, cloudformation: Any, secret: str, reason: str
) -> None:
    _point_database_secret_at(stack, secret)
    answer = stack.invoke("migrator", _event("Create", cloudformation.url))
    assert answer["Status"] == "FAILED"
    assert reason in answer["Reason"]
    assert "hunter2" not in json.dumps(cloudformation.answers)
    assert not any("hunter2" in line for line in stack.logs)


def test_a_postgres_that_never_answers_is_answered_failed_before_the_deadline(
    stack: LocalStack, cloudformation: Any, silent_server: int
) -> None:
    _point_database_secret_at(stack, f"postgresql://app:pw@127.0.0.1:{silent_server}/esl")
    started = time.monotonic()
    answer = stack.invoke("migrator", _event("Create", cloudformation.url), context=_clock(6))
    assert time.monotonic() - started < 6, "answered after the function's timeout"
    assert answer["Status"] == "FAILED"
    assert "timeout" in answer["Reason"].lower() or "did not finish" in answer["Reason"]
    assert cloudformation.answers == [answer]
