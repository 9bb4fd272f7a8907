"""Postgres refuses, under every function and every `esl-sync` command that reads it, and
the database's password shows nowhere: not in a log line or EMF metric, not in what Lambda's
runtime logs of an error let out, not in a page or CloudFormation's answer, not in the
command's one line on stderr (exit status 1, never a traceback), not in a Postgres row.

The refusals are real: a wrong password, a database nobody listens for, a password rotated
on the server before the secret, a statement timeout (the tables locked by another
session), and a connection ended by ``pg_terminate_backend`` while its statement waits.
The functions reach Postgres as a login of the test's own, with a password, through the
database secret (Secrets Manager), as deployed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devkit.catalog import gas_station_catalog
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.messages import PollRequest

MID = "MREFUSED0001"
STORE = "STORE-REFUSED"
NEWCOMER = "MREFUSED0002"


@dataclass
class Login:
    name: str
    password: str
    url: str
    admin_url: str  # the stack's own login, for the test's side of things

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)


def point_database_secret_at(stack: LocalStack, value: str) -> None:
    """What an operator does with `aws secretsmanager put-secret-value`; every function
    and command reads it again (a new Lambda process)."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["DATABASE_URL_SECRET_ARN"], SecretString=value
    )
    runtime.forget_secret_state()


def end_sessions(login: Login) -> None:
    with login.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (login.name,),
        )


@pytest.fixture
def login(stack: LocalStack) -> Iterator[Login]:
    """A login of this test's own (with a password), which the database secret holds; a
    merchant with labels delivered through it."""
    name = f"esl_refused_{uuid.uuid4().hex[:10]}"
    password = f"login-password-{uuid.uuid4().hex}"
    admin_url = stack.env["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    made = Login(name, password, make_conninfo(admin_url, user=name, password=password), admin_url)
    point_database_secret_at(stack, made.url)
    stack.add_merchant(MID, "refused-token", STORE, items=gas_station_catalog(20))
    assert stack.run_cycle().labels.failures == 0
    yield made
    point_database_secret_at(stack, admin_url)
    runtime.reset()
    end_sessions(made)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


@contextmanager
def refusing(stack: LocalStack, login: Login, how: str) -> Iterator[list[str]]:
    """Postgres refusing the functions' login ``how``; yields the passwords at stake."""
    passwords = [login.password]
    if how == "wrong password":
        wrong = f"wrong-password-{uuid.uuid4().hex}"
        passwords.append(wrong)
        point_database_secret_at(stack, make_conninfo(login.url, password=wrong))
        yield passwords
        point_database_secret_at(stack, login.url)
    elif how == "database down":
        point_database_secret_at(
            stack, make_conninfo(login.url, host="127.0.0.1", port=closed_port())
        )
        yield passwords
        point_database_secret_at(stack, login.url)
    elif how == "password not percent-encoded":
        # A generated password with an '@', pasted into a URL as it is: libpq would read
        # "word…@127.0.0.1" as the host, and the error would quote it.
        tail = f"word{uuid.uuid4().hex}"
        passwords += [f"Pass@{tail}", tail]
        port = closed_port()
        point_database_secret_at(stack, f"postgresql://{login.name}:Pass@{tail}@127.0.0.1:{port}/x")
        yield passwords
        point_database_secret_at(stack, login.url)
    elif how == "rotated on the server first":
        rotated = f"rotated-password-{uuid.uuid4().hex}"
        passwords.append(rotated)
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(login.name), sql.Literal(rotated)
                )
            )
        runtime.forget_secret_state()
        end_sessions(login)
        yield passwords
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(login.name), sql.Literal(login.password)
                )
            )
        runtime.forget_secret_state()
    elif how == "too many clients":
        # The server's connection slots taken (a burst of webhook environments, each keeping
        # its connection: README, "the connection budget"): every new connection refused
        # with SQLSTATE 53300. The login's own limit of 0 stands in for a full server
        # (max_connections is the session server's, shared by every test), as superusers
        # are exempt from it only.
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} NOSUPERUSER CONNECTION LIMIT 0").format(
                    sql.Identifier(login.name)
                )
            )
        runtime.forget_secret_state()
        end_sessions(login)
        yield passwords
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} SUPERUSER CONNECTION LIMIT -1").format(
                    sql.Identifier(login.name)
                )
            )
        runtime.forget_secret_state()
    elif how == "statement timeout":
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} SET statement_timeout = '200ms'").format(
                    sql.Identifier(login.name)
                )
            )
        runtime.forget_secret_state()
        end_sessions(login)
        with psycopg.connect(login.admin_url) as holder:  # one transaction, until the end
            tables = holder.execute(
                "SELECT format('%I', tablename) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migrations'"  # `migrate` finds nothing to do
            ).fetchall()
            holder.execute(
                "LOCK TABLE " + ", ".join(t for (t,) in tables) + " IN ACCESS EXCLUSIVE MODE"
            )
            yield passwords
            holder.rollback()
        with login.admin() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} RESET statement_timeout").format(sql.Identifier(login.name))
            )
        runtime.forget_secret_state()
        end_sessions(login)
    else:
        raise AssertionError(how)


REFUSALS = [
    "wrong password",
    "database down",
    "password not percent-encoded",
    "rotated on the server first",
    "statement timeout",
    "too many clients",
]


def texts(stack: LocalStack) -> list[str]:
    assert stack.runner is not None
    return [*stack.logs, *stack.runner.runtime_errors, *stack.pages, *stack.cli_output]


def migrator_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "migrator.json").read_text())
    event.update(RequestType="Update", PhysicalResourceId="esl-sync-schema")
    return event


def queue_label_job(stack: LocalStack) -> None:
    """A label job waiting for the sender: a price changed, polled while Postgres works."""
    assert stack.clover is not None
    item = stack.clover.items(MID)[0]
    stack.clover.update_item(MID, item["id"], price=int(item["price"]) + 1)
    stack.cli("poll", MID)
    assert stack.drain("PollQueue", "poller").failures == 0


def run_functions(stack: LocalStack, cloudformation: Any) -> dict[str, object]:
    """Each function once under the refusal: what it made of it."""
    done: dict[str, object] = {}
    try:
        stack.invoke("dispatcher", {"reason": "schedule"})
        done["dispatcher"] = "answered"
    except Exception as error:  # Lambda logs it: the runner keeps that in runtime_errors
        done["dispatcher"] = f"raised {type(error).__name__}"
    stack.sqs.send_message(
        QueueUrl=stack.urls["PollQueue"],
        MessageBody=PollRequest(merchant_id=MID, reason="manual").to_json(),
    )
    polls = stack.drain("PollQueue", "poller")
    done["poller"] = (polls.records, polls.failures)
    labels = stack.drain("LabelQueue", "hipoink_sender")
    done["hipoink_sender"] = (labels.records, labels.failures)
    hint = {"objectId": "I:X", "type": "UPDATE", "ts": int(time.time() * 1000)}
    body = {"appId": "A", "merchants": {MID: [hint]}}
    done["webhook"] = stack.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False).status
    install = stack.install_app(NEWCOMER, deliver=False)
    done["onboarding"] = (install.install.status, install.callback and install.callback.status)
    event = migrator_event() | {"ResponseURL": cloudformation.url}
    done["migrator"] = stack.invoke("migrator", event)["Status"]
    stack.pages.extend(json.dumps(a) for a in cloudformation.answers)
    return done


COMMANDS: list[list[str]] = [
    ["migrate"],
    ["status"],
    ["status", "--json"],
    ["status", "--labels", MID],
    ["merchants", "list"],
    ["merchants", "add", NEWCOMER, "--store-code", "STORE-NEW"],
    ["merchants", "set", MID, "--poll-interval-seconds", "600"],
    ["merchants", "set-store", NEWCOMER, "STORE-NEW"],
    ["merchants", "disable", MID],
    ["merchants", "enable", MID],
    ["poll", MID],
    ["resync", MID],
    ["heal", MID, "--older-than", "0"],
    ["heal"],
    ["labels", "verify", MID],
    ["stores", "unblock", MID],
]


def leaks(stack: LocalStack, passwords: list[str]) -> list[str]:
    """Each text holding one of ``passwords``, cut down to say where."""
    return [text[:300] for text in texts(stack) if any(p in text for p in passwords)]


# A function that fails before its work (the dispatcher cannot read the merchants) publishes
# no metric of ours, and Powertools warns so: Lambda's own Errors metric counts it (the alarm).
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
@pytest.mark.parametrize("how", REFUSALS)
def test_a_refusing_postgres_never_shows_the_password(
    stack: LocalStack, login: Login, cloudformation: Any, how: str
) -> None:
    queue_label_job(stack)
    assert stack.clover is not None
    stack.clover.add_merchant(NEWCOMER, "unused-newcomer-token", gas_station_catalog(5))
    with refusing(stack, login, how) as passwords:
        done = run_functions(stack, cloudformation)
        answers = {" ".join(argv): stack.run_cli(*argv) for argv in COMMANDS}
    # Each function met the refusal, and failed by name (or, for the schema, had nothing to
    # do: the statement timeout's locks leave schema_migrations alone).
    misread = how == "password not percent-encoded"  # refused by name before connecting
    errors = ("raised ConfigurationError",) if misread else ("raised OperationalError",)
    assert done["dispatcher"] in (*errors, "raised QueryCanceled"), done
    polls, labels = done["poller"], done["hipoink_sender"]
    assert isinstance(polls, tuple), done
    assert polls[0] == polls[1] > 0, done
    assert isinstance(labels, tuple), done
    assert labels[0] == labels[1] > 0, done
    assert done["webhook"] == 503, done
    assert done["onboarding"] == (302, 503), done
    assert done["migrator"] == ("SUCCESS" if how == "statement timeout" else "FAILED"), done
    # Each command: one line on stderr, exit status 1 (2 for a secret refused as it is read,
    # like any bad setting), never a traceback.
    for command, (code, out, err) in answers.items():
        if command == "migrate" and how == "statement timeout":
            assert (code, out, err) == (0, "schema is up to date\n", ""), command
            continue
        assert (code, out) == (2 if misread else 1, ""), (command, err)
        assert err.startswith("esl-sync: "), (command, err)
        assert err.count("\n") == 1, (command, err)
        assert "Traceback" not in err, command
    # ... and no password anywhere: logs, EMF, Lambda's error lines, pages, CloudFormation's
    # answer, the commands' output, Postgres rows.
    assert leaks(stack, passwords) == []
    assert stack.leaked_secrets() == 0


# A function that fails before its work (the dispatcher cannot read the merchants) publishes
# no metric of ours, and Powertools warns so: Lambda's own Errors metric counts it (the alarm).
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_a_connection_ended_mid_statement_never_shows_the_password(
    stack: LocalStack, login: Login
) -> None:
    """``pg_terminate_backend`` while the statement waits for a lock another session holds
    (a failover, an operator ending sessions): the function or command fails by name, and
    the next one works."""
    subjects: dict[str, Callable[[], object]] = {
        "dispatcher": lambda: stack.invoke("dispatcher", {"reason": "schedule"}),
        "status": lambda: stack.run_cli("status"),
        "merchants list": lambda: stack.run_cli("merchants", "list"),
        "heal": lambda: stack.run_cli("heal", MID, "--older-than", "0"),
    }
    outcomes: dict[str, object] = {}
    for name, call in subjects.items():
        with psycopg.connect(login.admin_url) as holder:
            holder.execute("LOCK TABLE merchants IN ACCESS EXCLUSIVE MODE")

            def run(name: str = name, call: Callable[[], object] = call) -> None:
                try:
                    outcomes[name] = call()
                except Exception as error:
                    outcomes[name] = f"raised {type(error).__name__}"

            worker = threading.Thread(target=run)
            worker.start()
            # Each subject's first statement is the read of the merchants, which is read once
            # more on a new connection when its own is ended under it (Database.read: a read
            # applies nothing): that retry is ended too, so the failure is what is tested.
            first = wait_and_end_waiting_sessions(login)
            retry = wait_and_end_waiting_sessions(login)
            holder.rollback()
            worker.join(60)
        assert not worker.is_alive(), name
        assert (first, retry) == (1, 1), name
    assert outcomes["dispatcher"] == "raised AdminShutdown", outcomes
    for command in ("status", "merchants list", "heal"):
        code, out, err = outcomes[command]  # type: ignore[misc]
        assert (code, out) == (1, ""), (command, err)
        assert err.startswith("esl-sync: "), (command, err)
        assert err.count("\n") == 1, (command, err)
        assert "Traceback" not in err, command
    # The next invocation opens a new connection and works.
    assert stack.invoke("dispatcher", {"reason": "schedule"})["dispatched"] == 1
    assert MID in stack.cli("merchants", "list")
    assert leaks(stack, [login.password]) == []
    assert stack.leaked_secrets() == 0


def wait_and_end_waiting_sessions(login: Login) -> int:
    """Wait (up to 10 s) for the login's sessions to wait on a lock, then end them: how
    many were ended."""
    deadline = time.monotonic() + 10
    with login.admin() as admin:
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = %s AND wait_event_type = 'Lock'",
                (login.name,),
            ).fetchone()
            if row and row[0]:
                return int(row[0])
            time.sleep(0.02)
    return 0


def test_a_full_server_fails_each_poll_by_name(stack: LocalStack, login: Login) -> None:
    """Postgres refusing new connections (SQLSTATE 53300: its slots taken): each poll fails
    as the service's fault, its line naming the refusal, never the password."""
    with refusing(stack, login, "too many clients"):
        stack.sqs.send_message(
            QueueUrl=stack.urls["PollQueue"],
            MessageBody=PollRequest(merchant_id=MID, reason="manual").to_json(),
        )
        start = len(stack.logs)
        polls = stack.drain("PollQueue", "poller")
    assert polls.records == polls.failures > 0
    finished = [json.loads(x) for x in stack.logs[start:] if '"poll finished"' in x]
    assert finished, stack.logs[start:]
    for line in finished:
        assert (line["merchant_id"], line["status"], line["fault"]) == (MID, "failed", "service")
        assert "too many connections" in line["detail"], line["detail"]
    assert leaks(stack, [login.password]) == []
