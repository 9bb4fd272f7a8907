"""The esl-sync command line against a local stack (its environment names the endpoints)."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from devkit.aws_calls import unrecorded
from devkit.catalog import gas_station_catalog, numbered_catalog
from devkit.demo import expected_labels
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.merchant_ports import MerchantChanges, StoreWritten
from esl_sync.messages import PollRequest
from esl_sync.records import Merchant
from esl_sync.store.postgres import Database, PostgresMerchantDirectory
from esl_sync.store.schema import apply_migrations, migration_files
from esl_sync_ops.cli import main
from tests.integration.test_poll import poll

MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}


def test_merchants_add_list_disable_enable_and_status(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.clover is not None
    assert stack.hipoink is not None
    stack.clover.add_merchant("MCLI00000001", "cli-secret-token", gas_station_catalog(30))
    stack.hipoink.add_store("STORE-CLI")
    monkeypatch.setattr(sys, "stdin", io.StringIO("cli-secret-token\n"))

    assert (
        main(["merchants", "add", "MCLI00000001", "--store-code", "STORE-CLI", "--token-stdin"])
        == 0
    )
    assert "saved with its token" in capsys.readouterr().out
    assert main(["merchants", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0].pop("created_at")
    assert listed == [
        {
            "merchant_id": "MCLI00000001",
            "store_code": "STORE-CLI",
            "clover_base_url": None,
            "active": True,
            "poll_interval_seconds": None,
            "pollable_since": None,  # pollable since it was added (created_at)
            "labels_failing": 0,
        }
    ]

    assert main(["cycle"]) == 0
    assert len(stack.hipoink.labels("STORE-CLI")) > 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status[0]["merchant_id"] == "MCLI00000001"
    assert status[0]["stale_labels"] == 0
    assert status[0]["auth"] == "ok"
    assert status[0]["cursor"] is not None

    assert main(["merchants", "disable", "MCLI00000001"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main(["merchants", "enable", "NOSUCHMERCHANT"]) == 2
    assert "unknown merchant 'NOSUCHMERCHANT'" in capsys.readouterr().err
    assert all("cli-secret-token" not in line for line in stack.logs)


def test_storing_new_tokens_keeps_the_merchants_own_interval_and_clover_host(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``merchants add`` for a merchant already there (new tokens after a re-auth): what
    its options leave out stays as it was, and a disabled merchant is enabled again."""
    add = ["merchants", "add", "MREAUTH00001", "--store-code", "STORE-R"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("first-token\n"))
    eu = ["--clover-base-url", "https://api.eu.clover.com", "--poll-interval-seconds", "3600"]
    assert main([*add, "--token-stdin", *eu]) == 0
    assert main(["merchants", "disable", "MREAUTH00001"]) == 0
    pair = {
        "access_token": "acc-2",
        "access_token_expiration": 1800000000,
        "refresh_token": "ref-2",
        "refresh_token_expiration": 1900000000,
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(pair)))

    assert main([*add, "--token-pair-stdin"]) == 0

    merchant = runtime.merchants().get("MREAUTH00001")
    assert merchant is not None
    assert (merchant.poll_interval_seconds, merchant.clover_base_url) == (
        3600,
        "https://api.eu.clover.com",
    )
    assert merchant.active  # `merchants add` enables a disabled merchant (README)
    assert runtime.state_store().load("MREAUTH00001").auth_state == "ok"
    # Given, the options still change them.
    assert main([*add, "--poll-interval-seconds", "600"]) == 0
    merchant = runtime.merchants().get("MREAUTH00001")
    assert merchant is not None
    assert (merchant.poll_interval_seconds, merchant.clover_base_url) == (
        600,
        "https://api.eu.clover.com",
    )
    capsys.readouterr()


def test_merchants_set_changes_or_clears_only_the_options_it_names(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``merchants set MID`` with ``--poll-interval-seconds`` or ``--clover-base-url``:
    a value sets it, ``default`` returns it to the stack's; the store code, the tokens and
    whether the merchant is enabled stay as they are. ``merchants add`` takes ``default``
    too."""
    mid = "MSETOPTS0001"
    monkeypatch.setattr(sys, "stdin", io.StringIO("first-token\n"))
    eu = ["--clover-base-url", "https://api.eu.clover.com", "--poll-interval-seconds", "3600"]
    add = ["merchants", "add", mid, "--store-code", "STORE-O"]
    assert main([*add, "--token-stdin", *eu]) == 0
    assert main(["merchants", "disable", mid]) == 0
    tokens_before = runtime.state_store().load_tokens(mid)
    capsys.readouterr()

    def options() -> tuple[int | None, str | None, str | None, bool]:
        merchant = runtime.merchants().get(mid)
        assert merchant is not None
        return (
            merchant.poll_interval_seconds,
            merchant.clover_base_url,
            merchant.store_code,
            merchant.active,
        )

    assert main(["merchants", "set", mid, "--poll-interval-seconds", "default"]) == 0
    assert capsys.readouterr().out == (
        f"merchant {mid}: Clover host https://api.eu.clover.com, poll interval the stack's"
        " (CLOVER_SYNC_INTERVAL_SECONDS)\n"
    )
    assert options() == (None, "https://api.eu.clover.com", "STORE-O", False)

    assert main(["merchants", "set", mid, "--clover-base-url", "default"]) == 0
    assert options() == (None, None, "STORE-O", False)
    assert "Clover host the stack's (CLOVER_API_BASE_URL)" in capsys.readouterr().out

    la = ["--clover-base-url", "HTTPS://API.LA.CLOVER.COM/", "--poll-interval-seconds", "7200"]
    assert main(["merchants", "set", mid, *la]) == 0
    assert options() == (7200, "https://api.la.clover.com", "STORE-O", False)
    assert capsys.readouterr().out == (
        f"merchant {mid}: Clover host https://api.la.clover.com, poll interval 7200 s\n"
    )
    stored = runtime.state_store().load_tokens(mid)
    assert stored is not None
    assert tokens_before is not None
    assert stored.generation == tokens_before.generation  # the tokens were not touched

    # `merchants add` (new tokens, say) takes `default` as well, and enables the merchant
    both_default = ["--clover-base-url", "default", "--poll-interval-seconds", "default"]
    assert main([*add, *both_default]) == 0
    assert options() == (None, None, "STORE-O", True)

    assert main(["merchants", "set", "NOSUCHMERCHANT", "--poll-interval-seconds", "60"]) == 2
    assert capsys.readouterr().err == "esl-sync: unknown merchant 'NOSUCHMERCHANT'\n"


def test_migrations_are_applied_once(database_url: str) -> None:
    first = apply_migrations(database_url)
    assert first == [version for version, _sql in migration_files()]
    assert first[0] == "0001_initial"
    assert apply_migrations(database_url) == []


def test_a_malformed_setting_stops_the_command_naming_the_variable() -> None:
    env = {**os.environ, "CLOVER_SYNC_INTERVAL_SECONDS": "abc"}
    completed = subprocess.run(
        [sys.executable, "-m", "esl_sync_ops", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 2
    assert "CLOVER_SYNC_INTERVAL_SECONDS" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_handler_with_a_malformed_setting_fails_at_start_naming_it() -> None:
    code = "import runpy; runpy.run_path('functions/dispatcher/app.py')"
    env = {
        **os.environ,
        "CLOVER_SYNC_INTERVAL_SECONDS": "abc",
        "DATABASE_URL": "postgresql://x",
        "POLL_QUEUE_URL": "http://q",
    }
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert "invalid setting: CLOVER_SYNC_INTERVAL_SECONDS" in completed.stderr


# ------------------------------------------------ onboarding polls now; concurrent changes


def _poll_requests(stack: LocalStack) -> list[dict[str, object]]:
    """What the poll queue holds, left in it (received with no visibility timeout)."""
    answer = stack.sqs.receive_message(
        QueueUrl=stack.urls["PollQueue"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=0,
    )
    return [json.loads(message["Body"]) for message in answer.get("Messages", [])]


def test_merchants_add_queues_one_poll_that_the_poller_takes_to_the_labels(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``merchants add`` (new, a re-auth) and ``merchants enable`` queue one poll request
    each, the dispatcher's message, and the poller takes it: no schedule involved."""
    assert stack.clover is not None
    assert stack.hipoink is not None
    mid = "MNOWPOLL0001"
    stack.clover.add_merchant(mid, "now-token", gas_station_catalog(12))
    stack.hipoink.add_store("STORE-NOW")
    monkeypatch.setattr(sys, "stdin", io.StringIO("now-token\n"))

    add = ["merchants", "add", mid, "--store-code", "STORE-NOW", "--token-stdin"]
    assert main(add) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (
        f"merchant {mid} saved with its token\npoll of {mid} queued\n",
        "",
    )
    [request] = _poll_requests(stack)
    assert (request["merchant_id"], request["reason"]) == (mid, "manual")
    assert PollRequest.parse(json.dumps(request)).merchant_id == mid  # the poller's reading

    polls = stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")
    assert (polls.records, polls.failures) == (1, 0)
    labels = stack.hipoink.labels("STORE-NOW")
    assert labels == expected_labels(stack.clover.items(mid))  # every label, exactly
    assert {row["pc"] for row in stack.label_state(mid)} == set(labels)
    assert stack.queue_depths()["PollQueue"] == 0

    # A re-auth (new tokens) of the merchant queues one more, and so does `enable`.
    monkeypatch.setattr(sys, "stdin", io.StringIO("now-token\n"))
    assert main(add) == 0
    assert [r["merchant_id"] for r in _poll_requests(stack)] == [mid]
    stack.drain("PollQueue", "poller")
    assert main(["merchants", "disable", mid]) == 0
    assert _poll_requests(stack) == []
    capsys.readouterr()
    assert main(["merchants", "enable", mid]) == 0
    assert capsys.readouterr().out == f"merchant {mid} enabled\npoll of {mid} queued\n"
    assert [r["merchant_id"] for r in _poll_requests(stack)] == [mid]


@pytest.mark.parametrize("broken", ["not configured", "send refused", "long error"])
def test_a_poll_not_queued_leaves_the_merchant_saved_and_exits_3_in_one_line(
    stack: LocalStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
) -> None:
    mid = "MNOQUEUE0001"
    if broken == "not configured":
        monkeypatch.delenv("POLL_QUEUE_URL")
    elif broken == "send refused":  # a queue SQS does not have
        monkeypatch.setenv("POLL_QUEUE_URL", stack.urls["PollQueue"] + "-gone")
    runtime.reset()
    if broken == "long error":  # what the line says after it is never cut off
        monkeypatch.setattr(
            runtime, "poll_queue", functools.cache(lambda: _RefusingQueue("no\n" + "x" * 5000))
        )
    try:
        with unrecorded():  # a queue the stack does not have: not a call the operator needs
            code = main(["merchants", "add", mid, "--store-code", "STORE-NQ"])
    finally:
        runtime.reset()
    out, err = capsys.readouterr()
    assert code == 3
    assert out == f"merchant {mid} saved\n"
    assert err.count("\n") == 1
    assert err.startswith(f"esl-sync: merchant {mid} saved, but its poll was not queued (")
    assert err.endswith("): the schedule polls it within CLOVER_SYNC_INTERVAL_SECONDS\n")
    assert ("POLL_QUEUE_URL" in err) == (broken == "not configured")
    merchant = runtime.merchants().get(mid)
    assert merchant is not None
    assert merchant.store_code == "STORE-NQ"
    assert stack.queue_depths()["PollQueue"] == 0


class _RefusingQueue:
    """A poll queue whose every send fails with ``text`` (an error of any length)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def send(self, requests: object) -> None:
        raise RuntimeError(self._text)


class _Interleaved:
    """The merchants table as one writer uses it, with another writer's change made in
    the writer's window: just after it read the merchant, or, if it reads nothing first,
    just before it writes. Everything goes to the real Postgres store."""

    def __init__(self, inner: PostgresMerchantDirectory, other: Callable[[], object]) -> None:
        self._inner = inner
        self._other = other
        self.interleaved = False

    def _interleave(self) -> None:
        if not self.interleaved:
            self.interleaved = True
            self._other()

    def get(self, merchant_id: str) -> Merchant | None:
        merchant = self._inner.get(merchant_id)
        self._interleave()
        return merchant

    def save(self, merchant: Merchant, **options: Any) -> None:
        self._interleave()
        self._inner.save(merchant, **options)

    def register(self, merchant: Merchant, **options: Any) -> StoreWritten:
        self._interleave()
        return self._inner.register(merchant, **options)

    def move_store(self, merchant_id: str, store_code: str) -> StoreWritten:
        self._interleave()
        return self._inner.move_store(merchant_id, store_code)

    def change(self, merchant_id: str, changes: MerchantChanges) -> Merchant | None:
        self._interleave()
        return self._inner.change(merchant_id, changes)

    def register_install(
        self,
        merchant_id: str,
        clover_base_url: str,
        store_code: str | None,
        *,
        then: Callable[[], object],
    ) -> Merchant:
        self._interleave()
        return self._inner.register_install(merchant_id, clover_base_url, store_code, then=then)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


RACER = "MRACE0000001"
EU = "https://api.eu.clover.com"
WRITERS = {
    "reauth": ["merchants", "add", RACER, "--store-code", "STORE-B"],  # also a new merchant
    "set-interval": ["merchants", "set", RACER, "--poll-interval-seconds", "3600"],
    "set-host": ["merchants", "set", RACER, "--clover-base-url", EU],
    "set-store": ["merchants", "set-store", RACER, "STORE-B"],
    "disable": ["merchants", "disable", RACER],
    "install": [],  # the merchant installs the app (again) from Clover: the onboarding callback
}
INSTALLED = "the install's host"
"""An expected Clover host that is the one the install stores (its region's REST host)."""


def _race(
    command: str,
    other: str,
    expected: tuple[int | None, str | None, str | None, bool],
    *,
    registered: bool = True,
) -> Any:
    name = f"{command}-vs-{other}" + ("" if registered else "-unregistered")
    return pytest.param(command, other, expected, registered, id=name)


@pytest.mark.parametrize(
    ("command", "other", "expected", "registered"),
    [
        _race("set-interval", "disable", (3600, None, "STORE-A", False)),
        _race("disable", "set-interval", (3600, None, "STORE-A", False)),
        _race("set-host", "reauth", (None, EU, "STORE-B", True)),
        # A re-auth writes its store code and enables; the settings it is not given stay.
        _race("reauth", "set-interval", (3600, None, "STORE-B", True)),
        _race("reauth", "set-host", (None, EU, "STORE-B", True)),
        _race("reauth", "install", (None, INSTALLED, "STORE-B", True)),
        _race("reauth", "install", (None, INSTALLED, "STORE-B", True), registered=False),
        # An install writes its region's host, enables, and keeps a store code it finds.
        _race("install", "set-interval", (3600, INSTALLED, "STORE-A", True)),
        _race("install", "set-store", (None, INSTALLED, "STORE-B", True)),
        _race("install", "reauth", (None, INSTALLED, "STORE-B", True)),
        _race("set-interval", "install", (3600, INSTALLED, "STORE-A", True)),
        # `set-store` writes the store code only.
        _race("set-store", "set-interval", (3600, None, "STORE-B", True)),
        _race("set-store", "disable", (None, None, "STORE-B", False)),
        _race("set-store", "install", (None, INSTALLED, "STORE-B", True)),
        _race("set-interval", "set-store", (3600, None, "STORE-B", True)),
        _race("disable", "set-store", (None, None, "STORE-B", False)),
        # An install and a disable both write `active`: the one that commits last wins
        # (docs/architecture.md, *Writers of a merchant's row*).
        _race("install", "disable", (None, INSTALLED, "STORE-A", True)),
        _race("disable", "install", (None, INSTALLED, "STORE-A", False)),
    ],
)
def test_a_merchant_change_never_undoes_one_made_between_its_read_and_its_write(
    stack: LocalStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    other: str,
    expected: tuple[int | None, str | None, str | None, bool],
    registered: bool,
) -> None:
    """Two writers of one merchant at once (operators' commands, the merchant's install of
    the app): the other runs, whole and through its own connection, inside the first one's
    window."""
    assert stack.clover is not None
    stack.clover.add_merchant(RACER, f"unused-{RACER}", [])
    # The onboarding function started (its first call forgets runtime's cached objects):
    # the install's first step, which writes nothing.
    assert stack.install_app(RACER, approve=False).install.status == 302
    if registered:
        assert main(["merchants", "add", RACER, "--store-code", "STORE-A"]) == 0
    database = Database(stack.env["DATABASE_URL"])
    own = PostgresMerchantDirectory(database)
    real = runtime.merchants()

    def act(writer: str) -> None:
        if writer == "install":
            done = stack.install_app(RACER, deliver=False)
            assert done.callback is not None
            assert done.callback.status == 200, done.callback.body
        else:
            assert main(WRITERS[writer]) == 0

    def other_writer() -> None:
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(runtime, "merchants", lambda: own)
            act(other)

    interleaved = _Interleaved(real, other_writer)
    try:
        with monkeypatch.context() as racing:
            racing.setattr(runtime, "merchants", lambda: interleaved)
            act(command)
    finally:
        database.close()
    assert interleaved.interleaved
    merchant = real.get(RACER)
    assert merchant is not None
    shown = (
        merchant.poll_interval_seconds,
        merchant.clover_base_url,
        merchant.store_code,
        merchant.active,
    )
    assert shown == tuple(stack.clover.base_url if v == INSTALLED else v for v in expected)
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv",
    [
        ["merchants", "set-store", RACER, "STORE-A"],
        ["merchants", "add", RACER, "--store-code", "STORE-A"],  # a re-auth
    ],
    ids=["set-store", "reauth"],
)
def test_a_store_code_set_back_in_another_writers_window_relabels_at_once(
    stack: LocalStack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    """The merchant labels at STORE-A; the command gives it STORE-A while another
    operator's ``set-store … STORE-B`` commits in its window: its write moves the merchant
    from B back to A, so every label goes to A at once. Decided on a code read before the
    write (A to A: "not moved"), no label was queued, the ones B's move invalidated stayed
    stale until the polls heal them (``LABEL_HEAL_AFTER_SECONDS`` later)."""
    assert stack.clover is not None
    assert stack.hipoink is not None
    stack.add_merchant(RACER, "tok", "STORE-A", items=numbered_catalog(5))
    stack.run_cycle()
    stack.hipoink.add_store("STORE-B")
    database = Database(stack.env["DATABASE_URL"])
    own = PostgresMerchantDirectory(database)

    def other_writer() -> None:
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr(runtime, "merchants", lambda: own)
            assert main(["merchants", "set-store", RACER, "STORE-B"]) == 0

    interleaved = _Interleaved(runtime.merchants(), other_writer)
    try:
        with monkeypatch.context() as racing:
            racing.setattr(runtime, "merchants", lambda: interleaved)
            capsys.readouterr()
            assert main(argv) == 0
    finally:
        database.close()
    assert interleaved.interleaved
    said = capsys.readouterr().out
    assert "moved from store STORE-B: 5 label(s) queued for the new store" in said, said

    stack.drain("LabelQueue", "hipoink_sender")  # no poll: the command's jobs alone
    rows = json.loads(stack.cli("status", "--json"))
    assert next(r for r in rows if r["merchant_id"] == RACER)["stale_labels"] == 0
    assert stack.hipoink.labels("STORE-A") == expected_labels(stack.clover.items(RACER))


def test_a_store_move_whose_poll_is_not_queued_still_relabels_and_exits_3(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``merchants set-store`` to another store while the poll queue refuses: the code is
    written, the refused poll is one line on stderr and exit 3, as ``merchants add``, and
    every label is still queued for the new store. (A refused send ended the command with
    exit 1 before the relabel: the moved store's labels waited for the heal.)"""
    assert stack.clover is not None
    assert stack.hipoink is not None
    stack.add_merchant(RACER, "tok", "STORE-A", items=numbered_catalog(5))
    stack.run_cycle()
    stack.hipoink.add_store("STORE-B")
    monkeypatch.setenv("POLL_QUEUE_URL", stack.urls["PollQueue"] + "-gone")
    runtime.reset()
    capsys.readouterr()
    try:
        with unrecorded():  # a queue the stack does not have: not a call the operator needs
            code = main(["merchants", "set-store", RACER, "STORE-B"])
    finally:
        runtime.reset()
    out, err = capsys.readouterr()
    assert code == 3
    assert out.startswith(f"merchant {RACER}: store STORE-B\nmoved from store STORE-A: 5 label")
    assert err.count("\n") == 1
    assert err.startswith(f"esl-sync: merchant {RACER} given store STORE-B, but its poll was not")
    stack.drain("LabelQueue", "hipoink_sender")  # no poll: the command's jobs alone
    assert stack.hipoink.labels("STORE-B") == expected_labels(stack.clover.items(RACER))
    assert stack.queue_depths()["PollQueue"] == 0


def test_a_disabled_merchant_given_a_store_is_told_no_poll_is_queued(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.add_merchant(RACER, "tok", "STORE-A", items=numbered_catalog(2))
    assert main(["merchants", "disable", RACER]) == 0
    capsys.readouterr()
    assert main(["merchants", "set-store", RACER, "STORE-B"]) == 0
    assert capsys.readouterr().out.startswith(
        f"merchant {RACER}: store STORE-B\nno poll queued: {RACER} is disabled (merchants enable)\n"
    )
    assert stack.queue_depths()["PollQueue"] == 0


def end_sessions_waiting_on_a_lock(database_url: str, spared: int) -> int:
    """Wait (up to 10 s) for a session to wait on a lock, then end it (as a failover or an
    operator ending sessions would): how many were ended. ``spared``: the holder's pid."""
    deadline = time.monotonic() + 10
    with psycopg.connect(database_url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND pid <> %s AND datname = current_database()",
                (spared,),
            ).fetchone()
            if row and row[0]:
                return int(row[0])
            time.sleep(0.02)
    return 0


def test_a_heal_of_every_merchant_names_one_that_fails_and_heals_the_rest(
    stack: LocalStack,
) -> None:
    """The fleet's heal: one merchant's pass fails (here its session ended by Postgres while
    it waits for a lock on its labels: a failover, an operator ending sessions; in the
    field also SQS throttling past the client's retries). Its line says so, the merchants
    before and after it are healed and said, a count comes last and the exit status is 1."""
    merchants = ["MHEALFLEET01", "MHEALFLEET02", "MHEALFLEET03"]
    for merchant_id in merchants:
        stack.add_merchant(merchant_id, "tok", f"STORE-{merchant_id}", items=[dict(MILK)])
    poll(stack, *merchants)  # their labels queued, never delivered: stale
    url = stack.env["DATABASE_URL"]
    with psycopg.connect(url) as holder:  # the second merchant's labels, held
        holder.execute(
            "INSERT INTO label_state (merchant_id, pc) SELECT merchant_id, barcode FROM products"
            " WHERE merchant_id = %s AND barcode IS NOT NULL ON CONFLICT DO NOTHING",
            (merchants[1],),
        )
        answer: list[tuple[int, str, str]] = []
        worker = threading.Thread(
            target=lambda: answer.append(stack.run_cli("heal", "--older-than", "0"))
        )
        worker.start()
        ended = end_sessions_waiting_on_a_lock(url, holder.info.backend_pid)
        holder.rollback()
        worker.join(60)
    assert ended == 1
    ((code, out, err),) = answer
    lines = out.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 4, (code, out, err)
    healed = "queued 1 upsert(s) and 0 delete(s) in 1 label job(s)"
    assert lines[0] == f"{merchants[0]}: {healed}"
    assert lines[1].startswith(f"{merchants[1]}: NOT healed ("), lines[1]
    assert lines[1].endswith("): its labels may be partly queued; run the command again")
    assert lines[2] == f"{merchants[2]}: {healed}"
    assert lines[3] == "heal: 2 merchant(s) healed, 1 refused"
    assert err == (
        "esl-sync: heal: 1 merchant(s) not healed (named above): run the command again\n"
    )
    assert code == 1


def test_a_redrive_stopped_by_a_message_its_queue_refuses_says_how_many_it_moved(
    stack: LocalStack,
) -> None:
    """The poll queue refusing a dead letter sent back (here one larger than the queue's
    maximum message size, lowered since it was dead-lettered): the batch before it moved
    and said, the rest left dead-lettered, one line on stderr, exit 1."""
    source = stack.urls["PollQueue"]
    dead = runtime.dead_letter_queue("poll").url
    for i in range(10):
        body = PollRequest(merchant_id=f"MREDRIVE{i:04d}", reason="manual").to_json()
        stack.sqs.send_message(QueueUrl=dead, MessageBody=body)
    stack.sqs.send_message(QueueUrl=dead, MessageBody=" " * 2_000)
    stack.sqs.set_queue_attributes(QueueUrl=source, Attributes={"MaximumMessageSize": "1024"})
    code, out, err = stack.run_cli("redrive", "--queue", "poll")
    assert "Traceback" not in err
    assert (code, out) == (1, ""), err
    assert re.fullmatch(
        r"esl-sync: redrive: moved 10 message\(s\) from the poll dead-letter queue back to its"
        r" queue, then stopped \(.+\): the rest are still dead-lettered; run the command again\n",
        err,
    ), err
    assert len(_poll_requests(stack)) == 10


def test_an_operator_command_prints_its_own_lines_and_no_log_line_of_the_functions(
    stack: LocalStack,
) -> None:
    """The process as an operator runs it: ``resync``, ``heal`` and ``set-store`` call the
    code that logs "stale labels queued again" for CloudWatch; in a terminal that JSON line
    was printed on stdout among the command's own lines (which the README lists), where a
    script reading them met it too."""
    assert stack.clover is not None
    assert stack.hipoink is not None
    mid, items = "MCLILOGS0001", numbered_catalog(3)
    stack.add_merchant(mid, "tok", "STORE-L1", items=items)
    stack.hipoink.add_store("STORE-L2")
    stack.run_cycle()
    command = [sys.executable, "-m", "esl_sync_ops"]
    env = {**os.environ, **stack.env}
    run = functools.partial(
        subprocess.run, capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT
    )
    for argv, lines in [
        (
            ["resync", mid],
            [f"{mid}: cursor reset, 3 label(s) and 0 delete(s) queued, full re-read queued"],
        ),
        (
            ["heal", mid, "--older-than", "0"],
            [f"{mid}: queued 3 upsert(s) and 0 delete(s) in 1 label job(s)"],
        ),
        (
            ["merchants", "set-store", mid, "STORE-L2"],
            [
                f"merchant {mid}: store STORE-L2",
                f"poll of {mid} queued",
                "moved from store STORE-L1: 3 label(s) queued for the new store; the labels at"
                " STORE-L1 stay (remove them in Hipoink if that store is not this merchant's)",
            ],
        ),
    ]:
        completed = run(command + argv, env=env)
        assert (completed.returncode, completed.stderr) == (0, ""), argv
        assert completed.stdout.splitlines() == lines, argv


def test_poll_of_a_merchant_that_is_not_polled_queues_nothing_and_says_why(
    stack: LocalStack,
) -> None:
    """``esl-sync poll`` (the runbook's "when fixed") of a disabled merchant, or of one
    awaiting its store code, printed ``poll of MID queued``: the poller then skipped the
    request, and the operator waited for a poll that never came."""
    assert stack.clover is not None
    stack.add_merchant("MCLIPOLL0001", "tok", "STORE-P1", items=numbered_catalog(2))
    stack.cli("merchants", "disable", "MCLIPOLL0001")
    stack.clover.add_merchant("MCLIPOLL0002", "tok2", numbered_catalog(2))
    stack.install_app("MCLIPOLL0002", deliver=False)  # no store code assigned
    stack.drain("PollQueue", "poller")
    for mid, why in [
        ("MCLIPOLL0001", "is disabled (merchants enable)"),
        ("MCLIPOLL0002", "awaits its store code (merchants set-store)"),
    ]:
        assert stack.run_cli("poll", mid) == (0, f"no poll queued: {mid} {why}\n", "")
        assert stack.queue_depths()["PollQueue"] == 0
        # resync neither: its labels would carry what Postgres held when polls stopped
        # (before: 'MCLIPOLL0001: cursor reset, 2 label(s) ... queued', sent to the store).
        code, out, err = stack.run_cli("resync", mid)
        assert (code, err) == (0, "")
        assert out.startswith(f"no resync: {mid} is not polled")
        assert stack.queue_depths()["PollQueue"] == 0
        assert stack.queue_depths()["LabelQueue"] == 0
    stack.cli("merchants", "enable", "MCLIPOLL0001")
    stack.drain("PollQueue", "poller")
    assert stack.run_cli("poll", "MCLIPOLL0001") == (0, "poll of MCLIPOLL0001 queued\n", "")
    assert stack.queue_depths()["PollQueue"] == 1


def test_a_function_log_handler_already_writing_to_stderr_keeps_writing_there(
    stack: LocalStack,
) -> None:
    """A command sends the functions' log lines to stderr while it runs and gives each
    handler its stream back: one already on stderr got ``None`` back (``setStream``
    answers None when nothing changes), and every later line failed to be written."""
    from esl_sync.observability import logger
    from esl_sync_ops.cli import main

    handlers = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    assert handlers
    before = [h.stream for h in handlers]
    try:
        for handler in handlers:
            handler.setStream(sys.stderr)
        assert main(["merchants", "list"]) == 0
        assert [h.stream for h in handlers] == [sys.stderr] * len(handlers)
    finally:
        for handler, stream in zip(handlers, before, strict=True):
            handler.setStream(stream)
