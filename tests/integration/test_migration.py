"""The deploy's migration step through the real handler on the local stack: it reads the
database secret as deployed, applies what is missing, and answers CloudFormation (a PUT to
the presigned URL) with SUCCESS or a FAILED that says why, never quoting the secret."""

from __future__ import annotations

import json
import threading
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
from esl_sync.store import schema
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
        "password": params.get("password") or "unused-by-trust-auth",
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


def test_a_migration_waiting_for_a_busy_table_never_stalls_the_fleet_behind_it(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy's migration that alters a table while a poll's transaction reads it (a poll
    holds one from its first page to its last): Postgres queues every later query on that
    table behind the waiting ``ALTER``, so every poll and label job stalled for as long as
    the migration waited (its whole budget, minutes). Each try now waits at most
    ``LOCK_WAIT_MS`` and gives way, and tries again until the budget is spent."""
    url = make_database()
    schema.apply_migrations(url)
    extra = ("9999_probe", "ALTER TABLE products ADD COLUMN probe integer")
    monkeypatch.setattr(schema, "migration_files", lambda: [*migration_files(), extra])
    outcome: dict[str, Any] = {}
    with psycopg.connect(url) as poll, psycopg.connect(url, autocommit=True) as fleet:
        poll.execute("SELECT count(*) FROM products")  # its transaction stays open
        migrating = threading.Thread(
            target=lambda: outcome.update(
                applied=schema.apply_migrations(url, statement_timeout_ms=120_000)
            )
        )
        migrating.start()
        _wait_until_waiting_for_a_lock(fleet)
        # Another poll's query on the table: behind the waiting ALTER it would wait for the
        # first poll to end (never, here); it must get through within a try's wait.
        fleet.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(10 * schema.LOCK_WAIT_MS),)
        )
        assert fleet.execute("SELECT count(*) FROM products").fetchone() == (0,)
        poll.commit()
        migrating.join(timeout=60)
    assert outcome["applied"] == ["9999_probe"]


def _wait_until_waiting_for_a_lock(conn: psycopg.Connection[Any]) -> None:
    for _ in range(200):
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.05)
    raise AssertionError("the migration never waited for the table's lock")


def test_a_table_busy_for_the_whole_budget_fails_the_migration_by_name_and_applies_nothing(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_database()
    schema.apply_migrations(url)
    extra = ("9999_probe", "ALTER TABLE products ADD COLUMN probe integer")
    monkeypatch.setattr(schema, "migration_files", lambda: [*migration_files(), extra])
    pauses: list[float] = []
    with psycopg.connect(url) as poll:
        poll.execute("SELECT count(*) FROM products")
        with pytest.raises(schema.MigrationLocked, match="stayed locked through 2 tries"):
            schema.apply_migrations(url, statement_timeout_ms=5_500, sleep=pauses.append)
    assert pauses == [schema.RETRY_PAUSE_SECONDS]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migration_files()),
        )
