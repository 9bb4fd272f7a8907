"""Model-based: what ``esl-sync status`` says of a merchant's freshness, and what the
dispatcher's ``MerchantsStale`` gauge (the freshness alarm's) counts, follow a simple model
whatever happens (a hypothesis state machine over the real stack).

Each example is two merchants (fresh ones, with a small catalog and a Hipoink store, on one
shared local stack: real Postgres, moto, the poller, dispatcher and sender handlers, the
Clover simulator over HTTP) and random steps among: Clover edits, polls (the poller handler
given one merchant's request, as the poll queue delivers it; a failed one is not retried
here, the model's next poll step is the retry) with Clover answering well, with 5xx (each of
the client's attempts) or with a 401 (a plain token: the merchant needs re-authorization),
the operator pausing (``merchants disable``) and resuming (``merchants
enable``) a merchant or storing new tokens for it (``merchants add``, which enables it too),
time passing, and a dispatcher tick. After every step ``esl-sync status --json`` must say of
each merchant what the model says, as README ("Operations") and docs/architecture.md ("Fleet
health") put it:

* ``fresh``: none while the merchant is disabled (not polled, not judged); otherwise whether
  the later of its last successful poll and its last resume (enabled again after a pause,
  by ``merchants enable`` or ``merchants add``; before either, its registration) is within
  three intervals: resumed after a pause of any length, it is fresh until three intervals
  pass with no successful poll;
* ``last_success``: the time of its last successful poll, unchanged by a failed or skipped
  one; ``last_error``: the class of its last failure, kept after a success (it is the *last*
  error, not a current one) and after new tokens; ``last_error_at``: when that failing poll
  ran, unchanged by any later poll that does not fail;
* ``lag_seconds``: the age ``fresh`` judges (none while disabled), in whole minutes as the
  model counts them;
* ``auth``: ``needs_reauth`` from a refused token until new tokens are stored; meanwhile its
  polls are skipped and fail nothing;
* after a successful poll, Postgres holds Clover's prices (the poll read the edits);

and a tick's ``MerchantsStale`` counts the merchants that are enabled and not fresh.

Time passes by ageing what esl-sync stored (the states' ``last_success_at`` and
``last_failure_at`` and the rows' ``created_at`` and ``pollable_since`` move back), so that
the CLI and the dispatcher judge on their own clock. Ages are whole even minutes and the
limit (three 5-minute intervals) an odd one, so the seconds an example takes never tip a
comparison. A tick's polls are not delivered (dropped): the poll steps stand for
deliveries. The fixed 10 examples of 20 steps take about 12 s;
``FRESHNESS_MODEL_EXAMPLES=N`` explores N random ones.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from psycopg.rows import dict_row

from devkit.clover_sim import CloverSimulator
from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync.messages import PollRequest
from tests.strategies import model_settings

INTERVAL_MINUTES = 5  # CLOVER_SYNC_INTERVAL_SECONDS
STALE_AFTER_MINUTES = 3 * INTERVAL_MINUTES
SETTINGS = {"CLOVER_SYNC_INTERVAL_SECONDS": str(INTERVAL_MINUTES * 60)}
MERCHANTS = 2
# The kinds of step, polls and time weighted up (the fixed examples are few).
ACTIONS = [*["poll"] * 3, "edit", "tick", "tick", "pause_or_resume", "new_tokens", "time", "time"]


@dataclass
class Expected:
    """What the model says of one merchant."""

    active: bool = True
    auth: str = "ok"
    age_minutes: int = 0  # since its last success or resume, or since it was registered
    last_success: tuple[datetime, datetime] | None = None  # when its poll ran (real clock)
    aged_minutes: int = 0  # time passed since that poll (its stored time moved back)
    last_error: str | None = None  # the class of its last failure
    last_error_at: tuple[datetime, datetime] | None = None  # when that poll ran, aged
    token: int = 0

    @property
    def polled(self) -> bool:
        """Whether a poll reaches Clover: a disabled or unauthorized merchant's is skipped."""
        return self.active and self.auth == "ok"

    @property
    def fresh(self) -> bool | None:
        return self.age_minutes <= STALE_AFTER_MINUTES if self.active else None


@dataclass
class Shared:
    stack: LocalStack
    clover: CloverSimulator
    db: psycopg.Connection[dict[str, Any]]


@pytest.fixture(scope="module")
def shared(make_database: Callable[[], str]) -> Iterator[Shared]:
    """One stack for every example; each example is fresh merchants on it (the earlier
    examples' are disabled, so that the dispatcher's gauge counts this one's alone)."""
    url = make_database()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        with LocalStack(settings=SETTINGS) as stack:
            assert stack.clover is not None
            patch.setattr(runtime.clover(), "sleep", lambda _seconds: None)  # retry at once
            with psycopg.connect(url, row_factory=dict_row, autocommit=True) as db:
                yield Shared(stack, stack.clover, db)


_counter = itertools.count(1)


class FreshnessMachine(RuleBasedStateMachine):
    shared: Shared  # set by the test

    def __init__(self) -> None:
        super().__init__()
        n = next(_counter)
        self.merchants = [f"MFRESH{n:04d}{k:02d}" for k in range(MERCHANTS)]
        self.model = {m: Expected() for m in self.merchants}
        self.trace: list[str] = []

    @property
    def stack(self) -> LocalStack:
        return self.shared.stack

    @property
    def clover(self) -> CloverSimulator:
        return self.shared.clover

    def cli(self, *argv: str, stdin: str = "") -> str:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            return self.stack.cli(*argv)

    @initialize()
    def start(self) -> None:
        for k, merchant in enumerate(self.merchants):
            items = [
                {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"C{i}"}
                for i in range(3)
            ]
            self.stack.add_merchant(merchant, self._token(merchant), f"S-{merchant}", items=items)
            self.trace.append(f"add {merchant} (store S-{merchant}), k={k}")
        self._check()

    def teardown(self) -> None:
        for merchant in self.merchants:
            self.clover.clear_faults(merchant)
            self.shared.db.execute(
                "UPDATE merchants SET active = false WHERE merchant_id = %s", (merchant,)
            )
        for queue, depth in self.stack.queue_depths().items():
            if depth:  # a failed example's leftovers
                self._drop(queue)

    def _drop(self, queue: str) -> None:
        """Receive the queue's messages and delete them, undelivered (moto, as SQS, allows
        one purge a minute)."""
        sqs, url = self.stack.sqs, self.stack.urls[queue]
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _token(self, merchant: str) -> str:
        return f"tok-{merchant}-{self.model[merchant].token}"

    # -- the steps: one rule, so that every example mixes every kind of step (hypothesis
    # would otherwise leave whole rules out of an example, and a handful of fixed examples
    # then holds few that matter)

    @rule(
        action=st.sampled_from(ACTIONS),
        k=st.integers(0, MERCHANTS - 1),
        clover=st.sampled_from(["ok", "ok", "5xx", "401"]),
        active=st.booleans(),
        minutes=st.sampled_from([2, 6, 20, 20]),
        item=st.integers(0, 2),
        price=st.integers(0, 999),
    )
    def step(
        self,
        action: str,
        k: int,
        clover: str,
        active: bool,
        minutes: int,
        item: int,
        price: int,
    ) -> None:
        if action == "poll":
            self.poll(k, clover)
        elif action == "edit":
            self.edit(k, item, price)
        elif action == "tick":
            self.tick()
        elif action == "pause_or_resume":
            self.pause_or_resume(k, active)
        elif action == "new_tokens":
            self.new_tokens(k)
        else:
            self.time_passes(minutes)

    # -- Clover ---------------------------------------------------------------------------

    def edit(self, k: int, item: int, price: int) -> None:
        merchant = self.merchants[k]
        item_id = self.clover.items(merchant)[item]["id"]
        self.clover.update_item(merchant, item_id, price=price)
        self.trace.append(f"{merchant}: item {item} priced {price}")
        self._check()

    # -- polls ----------------------------------------------------------------------------

    def poll(self, k: int, clover: str) -> None:
        """One poll of the merchant, Clover answering well, with 5xx (every attempt of the
        poll's first request: it fails) or with a 401 (its plain token refused). A poll of
        a disabled or unauthorized merchant is skipped without asking Clover anything."""
        merchant, expected = self.merchants[k], self.model[self.merchants[k]]
        if clover == "5xx":
            self.clover.fail_next(500, runtime.clover().max_attempts, merchant_id=merchant)
        elif clover == "401":
            self.clover.fail_next(401, merchant_id=merchant)
        event = json.loads((REPO_ROOT / "events" / "poller.json").read_text())
        event["Records"][0]["body"] = PollRequest(merchant_id=merchant).to_json()
        before = datetime.now(UTC)
        answer = self.stack.invoke("poller", event)  # a failed poll is a failed record
        after = datetime.now(UTC)
        unmet = self.clover.clear_faults(merchant)
        self.stack.drain("LabelQueue", "hipoink_sender")
        outcome = "skipped"
        if expected.polled:
            if clover == "5xx":
                outcome, expected.last_error = "failed", "CloverServerError"
            elif clover == "401":
                outcome, expected.last_error = "needs re-auth", "CloverAuthError"
                expected.auth = "needs_reauth"
            if clover != "ok":
                expected.last_error_at = (before, after)
            else:
                outcome = "ok"
                expected.age_minutes = expected.aged_minutes = 0
                expected.last_success = (before, after)
        self.trace.append(f"{merchant}: poll, Clover answers {clover} ({outcome})")
        queued = {"ok": 0, "5xx": runtime.clover().max_attempts, "401": 1}[clover]
        assert unmet == (queued if outcome == "skipped" else 0), self.trace  # no request
        retried = [{"itemIdentifier": event["Records"][0]["messageId"]}]
        assert answer["batchItemFailures"] == (retried if outcome == "failed" else []), (
            answer,
            self.trace,
        )
        if outcome == "ok":
            prices = {
                p["sku"]: p["price"]
                for p in self.stack.products(merchant)
                if p["status"] == "active"
            }
            assert prices == {
                i["sku"]: Decimal(i["price"]) / 100 for i in self.clover.items(merchant)
            }, self.trace
        self._check()

    def tick(self) -> None:
        """The dispatcher's tick: its gauge counts the enabled merchants that are not fresh
        (measured before its polls, which are not delivered here)."""
        mark = len(self.stack.logs)
        self.stack.dispatch()
        stale = metric_sums(self.stack.logs[mark:])["MerchantsStale"]
        self._drop("PollQueue")
        expected = sum(e.fresh is False for e in self.model.values())
        self.trace.append(f"tick: MerchantsStale {stale}")
        assert stale == expected, self.trace
        self._check()

    # -- the operator ---------------------------------------------------------------------

    def pause_or_resume(self, k: int, active: bool) -> None:
        merchant = self.merchants[k]
        self.cli("merchants", "enable" if active else "disable", merchant)
        self._resume_if_paused(merchant, active)
        self.trace.append(f"{merchant}: {'enabled' if active else 'disabled'}")
        self._check()

    def new_tokens(self, k: int) -> None:
        """New tokens (Clover's old one stops working), stored with ``merchants add``: it
        lifts ``needs_reauth`` and enables the merchant."""
        merchant, expected = self.merchants[k], self.model[self.merchants[k]]
        expected.token += 1
        self.clover.set_token(merchant, self._token(merchant))
        add = ["merchants", "add", merchant, "--store-code", f"S-{merchant}", "--token-stdin"]
        self.cli(*add, stdin=self._token(merchant) + "\n")
        self._resume_if_paused(merchant, True)
        expected.auth = "ok"
        self.trace.append(f"{merchant}: new tokens")
        self._check()

    def _resume_if_paused(self, merchant: str, active: bool) -> None:
        """Enabled again after a pause (of any length), a merchant is judged from the
        resume: no poll could have run since. Enabling an enabled one changes nothing."""
        expected = self.model[merchant]
        if active and not expected.active:
            expected.age_minutes = 0
        expected.active = active

    def time_passes(self, minutes: int) -> None:
        states = runtime.state_store()
        for merchant in self.merchants:
            state = states.load(merchant)
            if state.last_success_at is not None:
                state.last_success_at -= timedelta(minutes=minutes)
            if state.last_failure_at is not None:
                state.last_failure_at -= timedelta(minutes=minutes)
            if state.last_success_at is not None or state.last_failure_at is not None:
                states.save(state)
            failed = self.model[merchant].last_error_at
            if failed is not None:
                self.model[merchant].last_error_at = (
                    failed[0] - timedelta(minutes=minutes),
                    failed[1] - timedelta(minutes=minutes),
                )
            self.shared.db.execute(
                "UPDATE merchants SET created_at = created_at - make_interval(mins => %s),"
                " pollable_since = pollable_since - make_interval(mins => %s)"
                " WHERE merchant_id = %s",
                (minutes, minutes, merchant),
            )
            self.model[merchant].age_minutes += minutes
            self.model[merchant].aged_minutes += minutes
        self.trace.append(f"{minutes} minutes pass")
        self._check()

    # -- what must hold -------------------------------------------------------------------

    def _check(self) -> None:
        rows = {r["merchant_id"]: r for r in json.loads(self.cli("status", "--json"))}
        for merchant, expected in self.model.items():
            row = rows[merchant]
            seen = {
                "active": row["active"],
                "fresh": row["fresh"],
                "auth": row["auth"],
                "last_error": (row["last_error"] or ":").split(":")[0] or None,
            }
            wanted = {
                "active": expected.active,
                "fresh": expected.fresh,
                "auth": expected.auth,
                "last_error": expected.last_error,
            }
            assert seen == wanted, (merchant, seen, wanted, self.trace)
            if expected.last_success is None:
                assert row["last_success"] is None, (merchant, row, self.trace)
            else:
                aged = timedelta(minutes=expected.aged_minutes)
                began, ended = (moment - aged for moment in expected.last_success)
                shown = datetime.fromisoformat(row["last_success"])
                assert began <= shown <= ended, (merchant, shown, began, ended, self.trace)
            if expected.last_error_at is None:
                assert row["last_error_at"] is None, (merchant, row, self.trace)
            else:
                began, ended = expected.last_error_at
                failed_at = datetime.fromisoformat(row["last_error_at"])
                assert began <= failed_at <= ended, (merchant, failed_at, began, ended, self.trace)
            lag = row["lag_seconds"]
            if not expected.active:
                assert lag is None, (merchant, row, self.trace)
            else:  # the seconds an example takes stay well under a minute
                assert 0 <= lag - 60 * expected.age_minutes < 60, (merchant, lag, self.trace)


def test_status_and_the_freshness_gauge_follow_the_model(shared: Shared) -> None:
    FreshnessMachine.shared = shared
    run_state_machine_as_test(
        FreshnessMachine,
        settings=model_settings("FRESHNESS_MODEL_EXAMPLES", 10, 20, HealthCheck.too_slow),
    )
