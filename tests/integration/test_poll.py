"""The poll, proven end to end (issue 4): real handlers, moto, Postgres, simulators over HTTP.

Every test ends by comparing Postgres and the Hipoink simulator with the Clover catalog.
Clover's clock is frozen where a test is about times, so nothing here sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from devkit.aws_calls import AwsCallCounter
from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.clover_sim import CloverSimulator
from devkit.demo import expected_labels
from devkit.emf import metric_sums, metric_values
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT, load_template, resource
from esl_sync import admin, aws_observers, runtime
from esl_sync.messages import LabelJob, PollRequest
from esl_sync.ports import ProductStore, ProductWriter, StaleStateError, StateStore
from esl_sync.products import stable_hash
from esl_sync.records import Fence, Leased, Merchant, MerchantState
from esl_sync.settings import settings
from esl_sync.store.sqs import SqsPollQueue
from esl_sync.sync.cursor import CURSOR_SKEW_MARGIN_MS
from esl_sync.sync.lease import POLL_LEASE_MS
from esl_sync.sync.poll import PollDeps

T0 = 1_800_000_000_000  # a Clover time for the tests that freeze its clock
MINUTE = 60_000
StartStack = Callable[..., LocalStack]


@pytest.fixture
def start_stack(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[StartStack]:
    """Starts one local stack with the given settings (``CLOVER_PAGE_SIZE="5"``, …)."""
    with ExitStack() as running:

        def start(**settings: str) -> LocalStack:
            monkeypatch.setenv("DATABASE_URL", make_database())
            return running.enter_context(LocalStack(settings=settings))

        yield start


# -- helpers ---------------------------------------------------------------------------


def sims(stack: LocalStack) -> tuple[CloverSimulator, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def items_without_times(n: int, prefix: str = "ITEM") -> list[dict[str, Any]]:
    """Plain items that Clover stamps with its own clock when they are added."""
    return [
        {"name": f"{prefix} item {k}", "price": 100 + k, "sku": f"{prefix}-{k:03d}"}
        for k in range(n)
    ]


def merchant_state(merchant_id: str) -> MerchantState:
    return runtime.state_store().load(merchant_id)


def assert_in_step(stack: LocalStack, merchant_id: str, store_code: str) -> None:
    """Postgres holds every Clover item as Clover has it, and the shelf shows exactly them."""
    clover, hipoink = sims(stack)
    items = clover.items(merchant_id, include_deleted=True)
    rows = {row["source_id"]: row for row in stack.products(merchant_id)}
    assert rows.keys() <= {item["id"] for item in items}
    for item in items:
        row = rows.get(item["id"])
        if item.get("deleted"):
            assert row is None or row["status"] == "deleted", item["id"]
            continue
        assert row is not None, f"item {item['id']} is not in Postgres"
        assert row["raw"] == item, item["id"]
        assert row["status"] == ("deleted" if item.get("hidden") else "active"), item["id"]
        assert (row["deleted_at"] is not None) == (row["status"] == "deleted"), item["id"]
    expected = expected_labels(clover.items(merchant_id))
    shown = hipoink.labels(store_code)
    assert shown.keys() == expected.keys()
    for pc, record in expected.items():
        assert {key: shown[pc].get(key) for key in record} == record, pc


def assert_each_label_version_sent_once(hipoink: HipoinkSimulator, store_code: str) -> None:
    """No product code received the same record, hence the same label_hash, twice."""
    codes = {pc for request in hipoink.requests for pc in request.codes}
    for pc in codes:
        hashes = [stable_hash(record) for record in hipoink.upserts_of(store_code, pc)]
        assert len(hashes) == len(set(hashes)), f"{pc} received one label twice"


def log_entries(stack: LocalStack) -> list[dict[str, Any]]:
    entries = []
    for line in stack.logs:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def poll_lines(stack: LocalStack, merchant_id: str) -> list[dict[str, Any]]:
    """The "poll finished" lines of one merchant, oldest first."""
    return [
        entry
        for entry in log_entries(stack)
        if entry.get("message") == "poll finished" and entry.get("merchant_id") == merchant_id
    ]


def emf_metrics(stack: LocalStack, name: str) -> list[tuple[float, list[list[str]]]]:
    """Every value of one EMF metric, with the dimension sets it was emitted under."""
    found = []
    for entry in log_entries(stack):
        for directive in entry.get("_aws", {}).get("CloudWatchMetrics", []):
            if any(metric["Name"] == name for metric in directive["Metrics"]):
                values = entry[name] if isinstance(entry[name], list) else [entry[name]]
                found += [(value, directive["Dimensions"]) for value in values]
    return found


def poll(stack: LocalStack, *merchant_ids: str) -> None:
    """One poll of each merchant through the poll queue and the poller (no label delivery)."""
    SqsPollQueue(stack.urls["PollQueue"]).send(
        [PollRequest(merchant_id=m, reason="manual") for m in merchant_ids]
    )
    result = stack.drain("PollQueue", "poller")
    assert result.failures == 0


def row_versions(stack: LocalStack, merchant_id: str) -> dict[str, str]:
    """``xmin`` of every product row: it changes whenever the row is written."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT source_id, xmin::text FROM products WHERE merchant_id = %s", (merchant_id,)
        ).fetchall()
    return dict(rows)


def poller_event(merchant_id: str, message_id: str) -> dict[str, Any]:
    """An SQS event for the poller, shaped like the sample event Lambda would send."""
    sample = REPO_ROOT / "events" / "poller.json"
    event: dict[str, Any] = json.loads(sample.read_text())
    record = event["Records"][0]
    record["messageId"] = message_id
    record["body"] = PollRequest(merchant_id=merchant_id, reason="webhook").to_json()
    return event


# -- the checklist ---------------------------------------------------------------------


def test_first_read_then_create_update_hide_delete_and_unhide(start_stack: StartStack) -> None:
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1")
    clover, hipoink = sims(stack)
    catalog = convenience_store_catalog(40, seed=11)
    stack.add_merchant("MLIST0000001", "tok", "STORE-L", items=catalog)

    stack.run_cycle()

    [first_walk, *_] = clover.requests
    assert first_walk.endpoint == "list"
    assert "filter" not in first_walk.query  # the first read reads everything, however old
    assert len(stack.products("MLIST0000001")) == 40
    assert_in_step(stack, "MLIST0000001", "STORE-L")

    shown = [i for i in clover.items("MLIST0000001") if not i.get("hidden") and i.get("sku")]
    repriced, renamed, hidden, deleted = shown[:4]
    created = clover.create_item("MLIST0000001", name="Red Bull 12oz", price=399, sku="NEW-001")
    clover.update_item("MLIST0000001", repriced["id"], price=repriced["price"] + 50)
    clover.update_item("MLIST0000001", renamed["id"], name="Renamed on the register")
    clover.hide_item("MLIST0000001", hidden["id"])
    clover.delete_item("MLIST0000001", deleted["id"])  # not listed any more: the sweep finds it
    codeless = clover.create_item("MLIST0000001", name="Loose bananas", price=59)

    stack.run_cycle()

    assert_in_step(stack, "MLIST0000001", "STORE-L")
    labels = hipoink.labels("STORE-L")
    assert labels["NEW-001"]["pp"] == "3.99"
    assert labels[renamed["sku"]]["pn"] == "Renamed on the register"
    assert hidden["sku"] not in labels
    assert deleted["sku"] not in labels
    rows = {row["source_id"]: row for row in stack.products("MLIST0000001")}
    assert rows[created["id"]]["status"] == "active"
    assert rows[deleted["id"]]["status"] == "deleted"
    assert rows[deleted["id"]]["deleted_at"] is not None
    assert rows[hidden["id"]]["extra_data"]["removed_because"] == "hidden"
    assert "no product code" in rows[codeless["id"]]["validation_error"]  # stored, no label
    assert poll_lines(stack, "MLIST0000001")[-1]["sweep"] == "removed 1 of 1 missing"

    clover.unhide_item("MLIST0000001", hidden["id"])
    stack.run_cycle()

    assert_in_step(stack, "MLIST0000001", "STORE-L")
    assert hipoink.labels("STORE-L")[hidden["sku"]]["pi"] == hidden["id"]
    restored = next(r for r in stack.products("MLIST0000001") if r["source_id"] == hidden["id"])
    assert (restored["status"], restored["deleted_at"]) == ("active", None)


def test_two_merchants_keep_their_own_cursors_and_shelves(stack: LocalStack) -> None:
    clover, hipoink = sims(stack)
    clover.freeze_clock(T0)
    for merchant_id, store, price in (
        ("MTWOA0000001", "STORE-A", 199),
        ("MTWOB0000001", "STORE-B", 249),
    ):
        shared = {"name": "Coca-Cola 20oz", "price": price, "sku": "SHARED-1"}
        stack.add_merchant(
            merchant_id, f"tok-{store}", store, items=[*items_without_times(5, store), shared]
        )
    clover.freeze_clock(T0 + MINUTE)
    stack.run_cycle()
    # A complete read moves the cursor to Clover's clock at its start, less the margin.
    assert (
        merchant_state("MTWOA0000001").high_water_ms
        == merchant_state("MTWOB0000001").high_water_ms
        == T0 + MINUTE - CURSOR_SKEW_MARGIN_MS
    )
    assert hipoink.labels("STORE-A")["SHARED-1"]["pp"] == "1.99"
    assert hipoink.labels("STORE-B")["SHARED-1"]["pp"] == "2.49"
    b_rows = row_versions(stack, "MTWOB0000001")

    clover.freeze_clock(T0 + 2 * MINUTE)
    item = next(i for i in clover.items("MTWOA0000001") if i["sku"] == "SHARED-1")
    clover.update_item("MTWOA0000001", item["id"], price=219)
    clover.freeze_clock(T0 + 3 * MINUTE)
    hipoink.reset_requests()
    poll(stack, "MTWOA0000001")  # A alone
    stack.drain("LabelQueue", "hipoink_sender")

    assert merchant_state("MTWOA0000001").high_water_ms == T0 + 3 * MINUTE - CURSOR_SKEW_MARGIN_MS
    assert merchant_state("MTWOB0000001").high_water_ms == T0 + MINUTE - CURSOR_SKEW_MARGIN_MS

    clover.freeze_clock(T0 + 4 * MINUTE)
    stack.run_cycle()
    assert hipoink.labels("STORE-A")["SHARED-1"]["pp"] == "2.19"
    assert hipoink.labels("STORE-B")["SHARED-1"]["pp"] == "2.49"
    assert hipoink.request_count(store_code="STORE-B") == 0
    assert row_versions(stack, "MTWOB0000001") == b_rows
    assert_in_step(stack, "MTWOA0000001", "STORE-A")
    assert_in_step(stack, "MTWOB0000001", "STORE-B")


# -- cost --------------------------------------------------------------------------------


def test_an_unchanged_merchant_costs_one_request_and_writes_nothing(stack: LocalStack) -> None:
    clover, _ = sims(stack)
    stack.add_merchant("MIDLE0000001", "tok", "STORE-I", items=gas_station_catalog(60, seed=4))
    stack.run_cycle()
    rows = row_versions(stack, "MIDLE0000001")
    requests = clover.request_count("MIDLE0000001")
    stack.dispatch()
    mark = len(stack.logs)

    assert stack.drain("PollQueue", "poller").failures == 0

    assert clover.request_count("MIDLE0000001") - requests == 1
    assert row_versions(stack, "MIDLE0000001") == rows
    assert stack.drain("LabelQueue", "hipoink_sender").records == 0
    # Logged as little as can be: named in its batch's one line, no line of its own ...
    lines = [json.loads(line) for line in stack.logs[mark:] if '"poll' in line]
    assert [line["message"] for line in lines] == ["polls without changes"]
    assert (lines[0]["polls"], lines[0]["merchant_ids"]) == (1, ["MIDLE0000001"])
    assert poll_lines(stack, "MIDLE0000001") == [poll_lines(stack, "MIDLE0000001")[0]]
    # ... and the batch's metrics, zero counts left out.
    emitted = metric_values(stack.logs[mark:])
    assert emitted.keys() == {"Polls", "CloverRequests", "SecondsSinceLastSuccess"}
    assert (emitted["Polls"], emitted["CloverRequests"]) == ([1.0], [1.0])
    # Freshness: how old the data was when the poll began, without a merchant dimension.
    [(age, dimensions)] = emf_metrics(stack, "SecondsSinceLastSuccess")
    assert 0 <= age < 60
    assert dimensions == [["service"]]


def test_a_2000_item_first_sync_writes_each_page_in_one_statement(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clover, _ = sims(stack)
    catalog = gas_station_catalog(2000, seed=9)
    stack.add_merchant("MBULK0000001", "tok", "STORE-BULK", items=catalog)
    stack.dispatch()
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(query if isinstance(query, str) else repr(query))
        return execute(cursor, query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.Cursor, "execute", counted)
        assert stack.drain("PollQueue", "poller").failures == 0

    pages = sum(1 for r in clover.requests if r.endpoint == "list") - 1  # the last is empty
    assert pages == 2
    writes = [s for s in statements if "INSERT INTO products" in s or "UPDATE products" in s]
    assert len(writes) <= pages
    # ... and one to look the merchant up, one to settle which product each changed code
    # shows (with the version the label jobs carry), besides the transaction's BEGIN (with
    # its setting) and COMMIT
    control = [s for s in statements if s.lstrip("b'\"").startswith(("BEGIN", "COMMIT"))]
    assert len(control) == 2
    # A new connection's own settings (store.pg_connection.connect: one statement, once per
    # connection, not per poll): this stack's poller opens its connection in this poll.
    setup = [s for s in statements if s.startswith("SELECT set_config(")]
    assert len(setup) == 1
    statements = [s for s in statements if s not in setup]
    assert len(statements) - len(control) <= pages + 2
    stack.drain("LabelQueue", "hipoink_sender")
    assert len(stack.products("MBULK0000001")) == 2000
    assert_in_step(stack, "MBULK0000001", "STORE-BULK")


def test_a_sweep_transforms_only_what_changed_since_it_was_stored(
    start_stack: StartStack, monkeypatch: pytest.MonkeyPatch, transformed: list[str]
) -> None:
    """A re-read item whose stored row was made from the very same raw item and mapping is
    skipped before the transform; a changed item, or every item once the mapping changes
    (a setting here), is transformed again. A refused item still counts as refused."""
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1")  # every poll after the first sweeps
    clover, hipoink = sims(stack)
    catalog = items_without_times(120)
    catalog[7] = {"name": "Lottery", "price": 500, "priceType": "VARIABLE", "sku": "LOTTO"}
    catalog[9] = {"price": 100, "sku": "NO-NAME"}  # refused: no name
    stack.add_merchant("MSKIP0000001", "tok", "STORE-SK", items=catalog)
    stack.run_cycle()
    assert len(transformed) == 120
    item = next(i for i in clover.items("MSKIP0000001") if i.get("sku") == "ITEM-005")
    clover.update_item("MSKIP0000001", item["id"], price=999)
    transformed.clear()
    mark = len(stack.logs)

    stack.run_cycle()  # a sweep: all 120 read, one transformed

    assert transformed == [item["id"]]
    assert poll_lines(stack, "MSKIP0000001")[-1]["sweep"] == "nothing missing"
    assert metric_sums(stack.logs[mark:])["ItemsFetched"] == 120
    assert metric_sums(stack.logs[mark:])["InvalidItems"] == 1  # skipped, still refused
    assert hipoink.labels("STORE-SK")["ITEM-005"]["pp"] == "9.99"

    monkeypatch.setenv("HIPOINK_VARIABLE_PRICE_TEXT", "0.00")  # the mapping changes
    settings.cache_clear()
    transformed.clear()
    stack.run_cycle()

    assert len(transformed) == 120
    assert hipoink.labels("STORE-SK")["LOTTO"]["pp"] == "0.00"


# -- crashes between the effects -----------------------------------------------------------


class InjectedCrash(RuntimeError):
    """The process dying right after an effect took place."""


class CrashOnce:
    def __init__(self) -> None:
        self.fired = False

    def __call__(self, where: str) -> None:
        if not self.fired:
            self.fired = True
            raise InjectedCrash(f"crash {where}")


class LabelQueueCrashingAfterSend:
    def __init__(self, real: Any, crash: CrashOnce) -> None:
        self._real, self._crash = real, crash

    def send(self, jobs: Sequence[LabelJob]) -> None:
        self._real.send(jobs)
        self._crash("after the label jobs were sent")


class ProductStoreCrashingAfterCommit:
    def __init__(self, real: ProductStore, crash: CrashOnce) -> None:
        self._real, self._crash = real, crash

    @contextmanager
    def transaction(self, fence: Fence | None = None) -> Iterator[ProductWriter]:
        with self._real.transaction(fence) as writer:
            yield writer
        self._crash("after the commit")


class StateStoreCrashingAfterSave:
    def __init__(self, real: StateStore, crash: CrashOnce) -> None:
        self._real, self._crash = real, crash

    def load(self, merchant_id: str) -> MerchantState:
        return self._real.load(merchant_id)

    def save(self, state: MerchantState, *, release_lease: str | None = None) -> None:
        self._real.save(state, release_lease=release_lease)
        self._crash("after the cursor was saved")

    def take_lease(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> Leased | None:
        return self._real.take_lease(merchant_id, owner, now_ms=now_ms, duration_ms=duration_ms)

    def release_lease(self, merchant_id: str, owner: str) -> None:
        self._real.release_lease(merchant_id, owner)


CRASHES: dict[str, Callable[[PollDeps, CrashOnce], PollDeps]] = {
    "after_labels_sent": lambda deps, crash: replace(
        deps, label_queue=LabelQueueCrashingAfterSend(deps.label_queue, crash)
    ),
    "after_commit": lambda deps, crash: replace(
        deps, products=ProductStoreCrashingAfterCommit(deps.products, crash)
    ),
    "after_cursor_saved": lambda deps, crash: replace(
        deps, state=StateStoreCrashingAfterSave(deps.state, crash)
    ),
}


@pytest.mark.parametrize("crash_point", sorted(CRASHES))
def test_a_crash_after_any_effect_is_repaired_by_the_redelivery_without_double_sends(
    start_stack: StartStack, monkeypatch: pytest.MonkeyPatch, crash_point: str
) -> None:
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1")
    clover, hipoink = sims(stack)
    stack.add_merchant(
        "MCRASH000001", "tok", "STORE-C", items=convenience_store_catalog(20, seed=5)
    )
    stack.run_cycle()
    shown = [i for i in clover.items("MCRASH000001") if not i.get("hidden") and i.get("sku")]
    clover.update_item("MCRASH000001", shown[0]["id"], price=shown[0]["price"] + 25)
    clover.update_item("MCRASH000001", shown[1]["id"], name="Renamed before the crash")
    clover.hide_item("MCRASH000001", shown[2]["id"])
    clover.delete_item("MCRASH000001", shown[3]["id"])
    clover.create_item("MCRASH000001", name="Created before the crash", price=149, sku="NEW-CRASH")
    crash = CrashOnce()
    real_deps = runtime.poll_deps
    monkeypatch.setattr(runtime, "poll_deps", lambda: CRASHES[crash_point](real_deps(), crash))

    cycle = stack.run_cycle()

    assert crash.fired
    assert (cycle.polls.records, cycle.polls.failures) == (2, 1)  # the crash, then the redelivery
    assert cycle.dead_lettered == 0
    assert [line["status"] for line in poll_lines(stack, "MCRASH000001")[-2:]] == ["failed", "ok"]
    assert_in_step(stack, "MCRASH000001", "STORE-C")
    assert_each_label_version_sent_once(hipoink, "STORE-C")


# -- times, ties and late items ------------------------------------------------------------


def test_items_edited_between_page_requests_are_all_read(start_stack: StartStack) -> None:
    stack = start_stack(CLOVER_PAGE_SIZE="5")
    clover, _ = sims(stack)
    stack.add_merchant(
        "MEDIT0000001", "tok", "STORE-E", items=convenience_store_catalog(23, seed=2)
    )
    ids = [i["id"] for i in sorted(clover.items("MEDIT0000001"), key=lambda i: i["modifiedTime"])]

    def edit_between_pages(number: int) -> None:
        if number == 1:  # one item already read, one not yet read
            clover.update_item("MEDIT0000001", ids[0], price=555)
            clover.update_item("MEDIT0000001", ids[15], name="Edited ahead of the walk")
        if number == 2:
            clover.update_item("MEDIT0000001", ids[7], price=777)
            clover.create_item("MEDIT0000001", name="Created mid-walk", price=100, sku="MID-WALK")

    clover.before_list_page = edit_between_pages
    stack.run_cycle()
    clover.before_list_page = None

    assert_in_step(stack, "MEDIT0000001", "STORE-E")


def test_items_sharing_the_cursors_millisecond_are_not_lost(start_stack: StartStack) -> None:
    stack = start_stack(CLOVER_PAGE_SIZE="3", CLOVER_OVERLAP_MS="0")
    clover, _ = sims(stack)
    clover.freeze_clock(T0)
    stack.add_merchant("MTIES0000001", "tok", "STORE-T", items=items_without_times(7))
    clover.freeze_clock(T0 + MINUTE)
    stack.run_cycle()  # seven items at one ms, three a page: all read
    cursor = T0 + MINUTE - CURSOR_SKEW_MARGIN_MS
    assert merchant_state("MTIES0000001").high_water_ms == cursor
    assert_in_step(stack, "MTIES0000001", "STORE-T")

    # More writes stamped with the cursor's millisecond, committed after the last read.
    clover.freeze_clock(cursor)
    clover.create_item("MTIES0000001", name="Same ms A", price=301, sku="TIE-A")
    clover.create_item("MTIES0000001", name="Same ms B", price=302, sku="TIE-B")
    first = clover.items("MTIES0000001")[0]
    clover.update_item("MTIES0000001", first["id"], price=999)
    clover.freeze_clock(T0 + 2 * MINUTE)
    stack.run_cycle()

    assert_in_step(stack, "MTIES0000001", "STORE-T")


def test_an_item_listed_only_after_a_read_that_began_after_its_stamp_is_not_lost(
    start_stack: StartStack,
) -> None:
    """The cursor stays a margin behind Clover's clock at the start of the read, so a
    change stamped just before the read but listed only after it is read next time, even
    without an overlap window."""
    stack = start_stack(CLOVER_OVERLAP_MS="0")
    clover, _ = sims(stack)
    clover.freeze_clock(T0)
    stack.add_merchant("MSTART000001", "tok", "STORE-ST", items=items_without_times(4))
    clover.freeze_clock(T0 + MINUTE)
    stack.run_cycle()
    late, prompt = clover.items("MSTART000001")[:2]
    t = T0 + 2 * MINUTE
    clover.freeze_clock(t)
    clover.update_item("MSTART000001", late["id"], price=811)
    clover.hide_from_listing = {late["id"]}  # its write is not visible yet
    clover.freeze_clock(t + 1_000)
    clover.update_item("MSTART000001", prompt["id"], price=812)
    clover.freeze_clock(t + 2_000)
    stack.run_cycle()
    assert (merchant_state("MSTART000001").high_water_ms or 0) <= t

    clover.hide_from_listing = set()
    clover.freeze_clock(t + 3_000)
    stack.run_cycle()

    assert_in_step(stack, "MSTART000001", "STORE-ST")


@pytest.mark.parametrize("offset_ms", [2 * MINUTE, -2 * MINUTE], ids=["ahead", "behind"])
def test_a_clover_clock_ahead_or_behind_ours_loses_nothing(
    start_stack: StartStack, offset_ms: int
) -> None:
    stack = start_stack(CLOVER_OVERLAP_MS="0")  # the cursor alone must be right
    clover, _ = sims(stack)
    clover.clock_offset_ms = offset_ms
    stack.add_merchant("MSKEW0000001", "tok", "STORE-S", items=items_without_times(6))
    stack.run_cycle()
    cursor = merchant_state("MSKEW0000001").high_water_ms
    assert cursor is not None
    # On Clover's clock (ours is two minutes off), behind it by the margin at least.
    assert clover.clock_ms() - 60_000 < cursor <= clover.clock_ms() - CURSOR_SKEW_MARGIN_MS

    first = clover.items("MSKEW0000001")[0]
    clover.update_item("MSKEW0000001", first["id"], price=777)
    clover.create_item("MSKEW0000001", name="Created after the first read", price=5, sku="NEW")
    stack.run_cycle()

    assert_in_step(stack, "MSKEW0000001", "STORE-S")


def test_one_date_header_a_century_ahead_does_not_hide_the_changes_after_it(
    stack: LocalStack,
) -> None:
    """A front end whose ``Date`` is wrong once: taken, the cursor (which never moves back)
    would sit a century ahead and every incremental read would miss every change until a
    sweep. It is not believed: the cursor stays, by name, and the next change is read."""
    clover, _ = sims(stack)
    stack.add_merchant("MGLITCH00001", "tok", "STORE-GL", items=items_without_times(6))
    stack.run_cycle()
    before = merchant_state("MGLITCH00001").high_water_ms
    assert before is not None
    clover.date_offset_ms = 100 * 365 * 24 * 3_600_000
    logged = len(stack.logs)
    stack.run_cycle()
    clover.date_offset_ms = 0
    assert merchant_state("MGLITCH00001").high_water_ms == before
    assert metric_sums(stack.logs[logged:])["CloverClockImplausible"] == 1

    first = clover.items("MGLITCH00001")[0]
    clover.update_item("MGLITCH00001", first["id"], price=777)
    logged = len(stack.logs)
    stack.run_cycle()
    [line] = [json.loads(e) for e in stack.logs[logged:] if '"poll finished"' in e]
    assert line["products_changed"] == 1  # read by the incremental poll (no sweep ran)
    assert_in_step(stack, "MGLITCH00001", "STORE-GL")


@pytest.mark.parametrize("how", ["dropped Date", "Date in 1970"])
def test_a_cursor_left_hours_behind_moves_again_once_clovers_date_is_right(
    stack: LocalStack, how: str
) -> None:
    """A cursor left hours behind Clover's clock: polls without a ``Date`` for three hours
    (a proxy that drops it; the cursor stays, and each of them is a success), or a first
    read whose ``Date`` said 1970. When a right ``Date`` comes, it leaps past the cursor by
    more than an hour beyond the time since the last success: it was refused as "ahead",
    and so was every later one (each refusal is a success again), so the cursor stayed
    there for good: every incremental poll re-read every item changed since, more each
    time, and warned CloverClockImplausible. A time no later than our own clock plus the
    hour is no leap into the future: it is taken."""
    clover, _ = sims(stack)
    now = clover.clock_ms()
    if how == "dropped Date":
        clover.freeze_clock(now - 3 * 3_600_000)
    else:
        clover.date_offset_ms = -now
    stack.add_merchant("MBEHIND00001", "tok", "STORE-BH", items=items_without_times(6))
    stack.run_cycle()
    left = merchant_state("MBEHIND00001").high_water_ms
    assert left is not None
    assert left < now - 3_600_000
    if how == "dropped Date":
        clover.freeze_clock(None)
        clover.send_date = False
        stack.run_cycle()  # three hours later, no Date: the cursor stays
        assert merchant_state("MBEHIND00001").high_water_ms == left
        clover.send_date = True
    clover.date_offset_ms = 0
    logged = len(stack.logs)

    stack.run_cycle()
    stack.run_cycle()

    moved = merchant_state("MBEHIND00001").high_water_ms
    assert moved is not None
    assert clover.clock_ms() - 60_000 < moved <= clover.clock_ms() - CURSOR_SKEW_MARGIN_MS
    assert metric_sums(stack.logs[logged:]).get("CloverClockImplausible", 0) == 0
    first = clover.items("MBEHIND00001")[0]
    clover.update_item("MBEHIND00001", first["id"], price=779)
    stack.run_cycle()
    assert_in_step(stack, "MBEHIND00001", "STORE-BH")


def test_a_stored_cursor_ahead_of_clovers_clock_is_dropped_and_every_item_read_again(
    stack: LocalStack,
) -> None:
    """A cursor no read of this Clover proved (stored by a glitch before it was refused, or
    edited by hand) is dropped; the next poll reads everything, as the first one did."""
    clover, _ = sims(stack)
    stack.add_merchant("MGLITCH00002", "tok", "STORE-GL2", items=items_without_times(6))
    stack.run_cycle()
    state = merchant_state("MGLITCH00002")
    state.high_water_ms = 253_402_300_799_999  # the year 9999
    runtime.state_store().save(state)
    first = clover.items("MGLITCH00002")[0]
    clover.update_item("MGLITCH00002", first["id"], price=778)

    stack.run_cycle()  # reads from the year 9999: nothing, but the cursor goes

    assert merchant_state("MGLITCH00002").high_water_ms is None
    stack.run_cycle()
    assert_in_step(stack, "MGLITCH00002", "STORE-GL2")
    assert merchant_state("MGLITCH00002").high_water_ms is not None


def test_items_that_become_visible_late_are_read_again(stack: LocalStack) -> None:
    clover, _ = sims(stack)
    clover.freeze_clock(T0)
    stack.add_merchant("MLATE0000001", "tok", "STORE-LATE", items=items_without_times(6))
    clover.freeze_clock(T0 + MINUTE)
    stack.run_cycle()
    x, y, z = clover.items("MLATE0000001")[:3]

    # Every change shows in lists 30 s after its modifiedTime.
    clover.visibility_lag_ms = 30_000
    t1 = T0 + 2 * MINUTE
    clover.freeze_clock(t1)
    clover.update_item("MLATE0000001", x["id"], price=701)
    clover.freeze_clock(t1 + 10_000)
    stack.run_cycle()
    stored = {r["source_id"]: r for r in stack.products("MLATE0000001")}
    assert stored[x["id"]]["raw"]["price"] == x["price"]  # not visible yet
    clover.freeze_clock(t1 + 40_000)
    stack.run_cycle()
    assert_in_step(stack, "MLATE0000001", "STORE-LATE")

    # One change shows late while a later one shows at once: the cursor passes the late
    # one, and only the overlap window brings it back.
    clover.visibility_lag_ms = 0
    t2 = T0 + 5 * MINUTE
    clover.freeze_clock(t2)
    clover.update_item("MLATE0000001", y["id"], price=702)
    clover.hide_from_listing = {y["id"]}
    clover.freeze_clock(t2 + 20_000)
    clover.update_item("MLATE0000001", z["id"], price=703)
    clover.freeze_clock(t2 + 25_000)
    stack.run_cycle()
    assert (merchant_state("MLATE0000001").high_water_ms or 0) > t2
    clover.hide_from_listing = set()
    clover.freeze_clock(t2 + 30_000)
    stack.run_cycle()

    assert_in_step(stack, "MLATE0000001", "STORE-LATE")


def test_after_a_bulk_edit_idle_polls_cost_one_request_and_late_items_are_still_read(
    stack: LocalStack,
) -> None:
    """2,000 items repriced within one minute: the poll after it reads them all; the idle
    polls after that cost one request each (the cursor moved past the edit, not only to
    its newest item), and an item that lists 110 s late is still read by the next one."""
    clover, hipoink = sims(stack)
    m = "MBULKEDIT001"
    clover.freeze_clock(T0)
    # Created over time, as a store's items are (one shared createdTime would make the walk
    # fall back on each full page: see test_clover_client.py, orderBy unproven).
    items = [
        item | {"createdTime": T0 - 2_000_000 + 997 * k}
        for k, item in enumerate(items_without_times(2000))
    ]
    stack.add_merchant(m, "tok", "STORE-BE", items=items)
    clover.freeze_clock(T0 + MINUTE)
    stack.run_cycle()
    ids = sorted(i["id"] for i in clover.items(m))
    edit = T0 + 10 * MINUTE
    for k in range(20):  # 100 items every 3 s
        clover.freeze_clock(edit + 3_000 * k)
        clover.bulk_price_change(m, ids[100 * k : 100 * (k + 1)], delta=50)
    poll_at = edit + 4 * MINUTE
    clover.freeze_clock(poll_at - MINUTE)
    late = clover.update_item(m, ids[7], price=4321)  # stamped a minute before the poll …
    clover.hide_from_listing = {late["id"]}  # … and not listed yet when it reads
    clover.freeze_clock(poll_at)
    before = clover.request_count(m)
    stack.run_cycle()
    assert clover.request_count(m) - before == 2  # the 1,999 items listed: two pages
    assert hipoink.labels("STORE-BE")[late["sku"]]["pp"] != "43.21"

    clover.freeze_clock(poll_at + 50_000)
    clover.hide_from_listing = set()  # listed 110 s after its stamp
    for n in (1, 2, 3):
        clover.freeze_clock(poll_at + 5 * MINUTE * n)
        before = clover.request_count(m)
        stack.run_cycle()
        assert clover.request_count(m) - before == 1, f"idle poll {n}"
    # the late item, then nothing: one line for it, none for the quiet polls
    assert poll_lines(stack, m)[-1]["items_fetched"] == 1
    assert poll_lines(stack, m)[-1]["products_changed"] == 1
    assert hipoink.labels("STORE-BE")[late["sku"]]["pp"] == "43.21"
    assert_in_step(stack, m, "STORE-BE")


# -- the sweep -----------------------------------------------------------------------------


def test_a_sweep_refuses_a_listing_missing_half_the_items_then_removes_a_real_deletion(
    start_stack: StartStack,
) -> None:
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="1")
    clover, hipoink = sims(stack)
    stack.add_merchant("MSWEEP000001", "tok", "STORE-W", items=items_without_times(20))
    stack.run_cycle()
    before = hipoink.labels("STORE-W")
    ids = [i["id"] for i in clover.items("MSWEEP000001")]
    clover.hide_from_listing = set(ids[::2])

    stack.run_cycle()

    assert hipoink.labels("STORE-W") == before
    assert all(row["status"] == "active" for row in stack.products("MSWEEP000001"))
    assert poll_lines(stack, "MSWEEP000001")[-1]["sweep"] == "refused: 10 of 20 missing"
    assert [value for value, _ in emf_metrics(stack, "SweepRefused")] == [1]

    # One item missing from the listing but still there (GET answers 200), one deleted (404).
    kept, gone = clover.items("MSWEEP000001")[2:4]
    clover.hide_from_listing = {kept["id"]}
    clover.delete_item("MSWEEP000001", gone["id"])
    stack.run_cycle()

    assert kept["sku"] in hipoink.labels("STORE-W")
    assert gone["sku"] not in hipoink.labels("STORE-W")
    assert poll_lines(stack, "MSWEEP000001")[-1]["sweep"] == "removed 1 of 2 missing"
    clover.hide_from_listing = set()
    assert_in_step(stack, "MSWEEP000001", "STORE-W")


def test_a_change_every_incremental_read_missed_is_caught_by_the_next_sweep(
    start_stack: StartStack,
) -> None:
    """A sweep re-reads every item, so even a change stamped behind the cursor and its
    overlap window (late beyond any window, or skipped by a walk) reaches the label."""
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="3")
    clover, hipoink = sims(stack)
    stack.add_merchant("MMISSED00001", "tok", "STORE-M", items=items_without_times(12))
    stack.run_cycle()
    item = clover.items("MMISSED00001")[5]
    clover.freeze_clock(merchant_state("MMISSED00001").high_water_ms - 3_600_000)
    clover.update_item("MMISSED00001", item["id"], price=777)
    clover.freeze_clock(None)

    stack.run_cycle()  # incremental: the change is behind the cursor and the overlap

    assert hipoink.labels("STORE-M")[item["sku"]]["pp"] != "7.77"
    assert poll_lines(stack, "MMISSED00001")[-1].get("sweep") is None

    stack.run_cycle()  # the third poll sweeps, reading every item

    assert hipoink.labels("STORE-M")[item["sku"]]["pp"] == "7.77"
    line = poll_lines(stack, "MMISSED00001")[-1]
    assert line["sweep"] == "nothing missing"
    assert line["clover_requests"] == 1  # 12 items: the whole catalog in one page
    assert_in_step(stack, "MMISSED00001", "STORE-M")


# -- concurrency and failures --------------------------------------------------------------


def test_a_second_delivery_while_a_poll_runs_is_acknowledged_without_work(
    stack: LocalStack,
) -> None:
    clover, _ = sims(stack)
    stack.add_merchant("MLEASE000001", "tok", "STORE-LS", items=items_without_times(8))
    walking, release = threading.Event(), threading.Event()

    def hold_first_page(number: int) -> None:
        if number == 0:
            walking.set()
            release.wait(10)

    clover.before_list_page = hold_first_page
    answers: list[dict[str, Any]] = []
    first = threading.Thread(
        target=lambda: answers.append(stack.invoke("poller", poller_event("MLEASE000001", "m-1")))
    )
    first.start()
    try:
        assert walking.wait(10)
        second = stack.invoke("poller", poller_event("MLEASE000001", "m-2"))
    finally:
        release.set()
        first.join(10)

    assert second == {"batchItemFailures": []}
    assert answers == [{"batchItemFailures": []}]
    assert clover.request_count("MLEASE000001") == 1  # the first poll's single page
    assert sorted(line["status"] for line in poll_lines(stack, "MLEASE000001")) == ["busy", "ok"]
    busy = next(line for line in poll_lines(stack, "MLEASE000001") if line["status"] == "busy")
    assert busy["clover_requests"] == 0
    clover.before_list_page = None
    stack.drain("LabelQueue", "hipoink_sender")
    assert_in_step(stack, "MLEASE000001", "STORE-LS")

    poll(stack, "MLEASE000001")  # the lease was given back
    assert poll_lines(stack, "MLEASE000001")[-1]["status"] == "ok"


@pytest.mark.parametrize(("share", "overlapped"), [("2", 2), ("10", 5)])
def test_a_batch_overlaps_its_polls_within_the_instances_in_flight_share(
    start_stack: StartStack, share: str, overlapped: int
) -> None:
    """Five merchants in one invocation, Clover slow to answer: the polls overlap, and
    never more of them have a request in flight than the instance's share of Clover's
    budget (the template gives each instance 10 ÷ PollerMaximumConcurrency)."""
    stack = start_stack(CLOVER_INSTANCE_IN_FLIGHT=share)
    clover, _ = sims(stack)
    merchants = [f"MOVERLAP0{n:03d}" for n in range(5)]
    for n, merchant_id in enumerate(merchants):
        items = items_without_times(3, f"O{n}")
        stack.add_merchant(merchant_id, f"tok-{n}", f"STORE-O{n}", items=items)
    clover.reset_counters()
    clover.delay_seconds = 0.3
    stack.dispatch()

    polls = stack.drain("PollQueue", "poller", batch_size=5)

    clover.delay_seconds = 0.0
    assert (polls.invocations, polls.records, polls.failures) == (1, 5, 0)
    assert clover.max_in_flight() == overlapped
    stack.drain("LabelQueue", "hipoink_sender")
    for n, merchant_id in enumerate(merchants):
        assert_in_step(stack, merchant_id, f"STORE-O{n}")


def test_the_lease_outlasts_the_pollers_timeout_by_a_little() -> None:
    """A poll killed by its Lambda timeout frees its merchant soon after, never before."""
    timeout_ms = 1000 * int(resource(load_template(), "PollerFunction")["Properties"]["Timeout"])
    assert timeout_ms < POLL_LEASE_MS <= timeout_ms + 60_000


def test_the_lease_is_conditional_and_leaves_the_state_version_alone(stack: LocalStack) -> None:
    store = runtime.state_store()
    assert store.take_lease("MLEASE000002", "a", now_ms=1_000, duration_ms=100) is not None
    assert store.take_lease("MLEASE000002", "b", now_ms=1_099, duration_ms=100) is None
    store.release_lease("MLEASE000002", "b")  # not b's to give back
    assert store.take_lease("MLEASE000002", "b", now_ms=1_050, duration_ms=100) is None
    taken = store.take_lease("MLEASE000002", "b", now_ms=1_100, duration_ms=100)  # expired
    assert taken is not None
    assert (taken.state.version, taken.sealed) == (0, None)  # read in the same write
    store.release_lease("MLEASE000002", "a")  # a lost it: nothing happens
    assert store.take_lease("MLEASE000002", "c", now_ms=1_150, duration_ms=100) is None
    saved = store.load("MLEASE000002")
    assert saved.version == 0
    store.save(saved)  # not stale: the lease did not touch the version
    with pytest.raises(StaleStateError):  # a's lease is gone: its last write is refused
        store.save(store.load("MLEASE000002"), release_lease="a")
    mine = store.load("MLEASE000002")
    store.save(mine, release_lease="b")  # the state, and b's lease given back
    leased = store.take_lease("MLEASE000002", "c", now_ms=1_150, duration_ms=100)
    assert leased is not None
    assert leased.state.version == 2


def test_a_poll_reads_and_writes_the_state_table_twice(stack: LocalStack) -> None:
    """The lease taken with the state and tokens read in one write; the state saved with
    the lease given back in another: for an idle and a changed poll alike."""
    clover, _ = sims(stack)
    stack.add_merchant("MTWICE000001", "tok", "STORE-TW", items=items_without_times(8))
    stack.run_cycle()
    calls: list[str] = []

    def seen(service: str, operation: str, params: Mapping[str, Any]) -> None:
        if service == "dynamodb":
            calls.append(operation)

    aws_observers.observe(seen)
    try:
        poll(stack, "MTWICE000001")  # idle
        clover.update_item("MTWICE000001", clover.items("MTWICE000001")[0]["id"], price=5)
        poll(stack, "MTWICE000001")  # changed
    finally:
        aws_observers.unobserve(seen)
    assert calls == ["UpdateItem"] * 4


def test_the_aws_calls_of_each_kind_of_poll(start_stack: StartStack) -> None:
    """Counted by the observer the bench uses: two state writes whatever the poll; the
    first read also opens the tokens (one KMS decrypt, then kept) and sends the labels;
    a changed poll sends its labels; a sweep also queues its daily verify of the labels
    (one message more, once per LABEL_VERIFY_INTERVAL_HOURS); idle polls call nothing else."""
    stack = start_stack(CLOVER_CLEANUP_EVERY_N_POLLS="3")
    clover, _ = sims(stack)
    counter = AwsCallCounter()
    counter.attach()
    m = "MKINDS000001"
    stack.add_merchant(m, "tok", "STORE-KI", items=items_without_times(8))
    seen: list[dict[str, int]] = []

    def counted_poll() -> None:
        before = counter.snapshot("PollerFunction")
        poll(stack, m)
        seen.append(dict(counter.snapshot("PollerFunction") - before))

    try:
        counted_poll()  # the first read
        counted_poll()  # idle
        clover.update_item(m, clover.items(m)[0]["id"], price=5)
        counted_poll()  # a sweep (the 3rd poll) that finds the change
        counted_poll()  # idle again
    finally:
        counter.detach()
    two_writes = {"dynamodb:UpdateItem": 2}
    assert seen == [
        # also the instance's first invocation: the database secret, read once
        {
            **two_writes,
            "kms:Decrypt": 1,
            "sqs:SendMessageBatch": 1,
            "secretsmanager:GetSecretValue": 1,
        },
        two_writes,
        {**two_writes, "sqs:SendMessageBatch": 2},  # its labels, then the verify
        two_writes,
    ]
    assert [line.get("sweep") for line in poll_lines(stack, m)] == [None, "nothing missing"]


def test_a_401_marks_only_its_merchant_and_the_batch_carries_on(stack: LocalStack) -> None:
    clover, _ = sims(stack)
    for n in (1, 2, 3):
        stack.add_merchant(
            f"MAUTH000000{n}", f"tok-{n}", f"STORE-{n}", items=items_without_times(5, f"S{n}")
        )
    clover.set_token("MAUTH0000001", "a-token-we-do-not-have")

    cycle = stack.run_cycle()

    assert cycle.polls.invocations == 1  # all three in one batch
    assert (cycle.polls.records, cycle.polls.failures) == (3, 0)
    assert_in_step(stack, "MAUTH0000002", "STORE-2")
    assert_in_step(stack, "MAUTH0000003", "STORE-3")
    revoked = merchant_state("MAUTH0000001")
    assert revoked.auth_state == "needs_reauth"
    assert revoked.last_failure_class == "CloverAuthError"
    assert revoked.high_water_ms is None
    assert stack.products("MAUTH0000001") == []
    assert [value for value, _ in emf_metrics(stack, "NeedsReauth")] == [1]

    requests = clover.request_count("MAUTH0000001")
    mark = len(stack.logs)
    stack.run_cycle()
    assert clover.request_count("MAUTH0000001") == requests  # skipped until re-authorised
    assert poll_lines(stack, "MAUTH0000001")[-1]["status"] == "skipped"
    assert metric_sums(stack.logs[mark:])["PollsSkipped"] == 1  # the skip is counted
    assert merchant_state("MAUTH0000001").last_failure_class == "CloverAuthError"  # kept


def without_token(stack: LocalStack) -> None:
    """MNOTOKEN0001 registered as ``merchants add`` without a token leaves it: a store code,
    no Clover token; and MNOTOKEN0002, a merchant with one, in the same batches."""
    clover, hipoink = sims(stack)
    clover.add_merchant("MNOTOKEN0001", "tok-1", items_without_times(3, "NT"))
    hipoink.add_store("STORE-NT")
    # What `merchants add` writes, without the poll it queues: the cycles below count every one.
    admin.add_merchant(
        runtime.merchants(), runtime.state_store(), Merchant("MNOTOKEN0001", "STORE-NT"), None
    )
    stack.add_merchant("MNOTOKEN0002", "tok-2", "STORE-2", items=items_without_times(3, "N2"))


def test_a_poll_skipped_for_want_of_a_clover_token_is_counted(stack: LocalStack) -> None:
    """Its polls read nothing, so it must not go quiet: each skip is counted
    (``PollsSkipped``) and, until tokens are stored, every poll is one."""
    without_token(stack)

    cycle = stack.run_cycle()

    assert (cycle.polls.records, cycle.polls.failures) == (2, 0)  # skipped, not retried
    assert metric_sums(stack.logs)["PollsSkipped"] == 1
    assert sims(stack)[0].request_count("MNOTOKEN0001") == 0
    [line] = poll_lines(stack, "MNOTOKEN0001")
    assert (line["status"], line["detail"]) == ("skipped", "no Clover token stored")
    assert merchant_state("MNOTOKEN0001").consecutive_failures == 1
    assert_in_step(stack, "MNOTOKEN0002", "STORE-2")

    mark = len(stack.logs)
    stack.run_cycle()  # skipped again: counted again
    assert metric_sums(stack.logs[mark:])["PollsSkipped"] == 1
    assert merchant_state("MNOTOKEN0001").consecutive_failures == 2

    runtime.state_store().write_token("MNOTOKEN0001", "tok-1")
    mark = len(stack.logs)
    stack.run_cycle()  # tokens stored: polled, and nothing is skipped
    assert "PollsSkipped" not in metric_sums(stack.logs[mark:])
    state = merchant_state("MNOTOKEN0001")
    assert (state.consecutive_failures, state.last_failure_class) == (0, "NoCloverToken")
    assert_in_step(stack, "MNOTOKEN0001", "STORE-NT")


def test_a_merchant_without_a_clover_token_is_named_in_status(stack: LocalStack) -> None:
    """``esl-sync status`` says why its shelf is not updated (the freshness alarm fires
    three intervals later, and its runbook row sends the operator here), and when."""
    without_token(stack)
    before = datetime.now(UTC)

    stack.run_cycle()

    rows = {r["merchant_id"]: r for r in json.loads(stack.cli("status", "--json"))}
    row = rows["MNOTOKEN0001"]
    reason = "NoCloverToken: no Clover token stored: run `esl-sync merchants add` with the"
    assert row["last_error"] == f"{reason} store's tokens", row
    assert before <= datetime.fromisoformat(row["last_error_at"]) <= datetime.now(UTC)
    assert (row["auth"], row["last_success"], row["fresh"]) == ("ok", None, True)
    assert rows["MNOTOKEN0002"]["last_error"] is None
    assert f"{reason} store's tokens" in stack.cli("status")  # the table shows it whole


def test_a_merchant_whose_clover_keeps_failing_fails_alone_and_is_retried(
    stack: LocalStack,
) -> None:
    clover, _ = sims(stack)
    for n in (1, 2, 3):
        stack.add_merchant(
            f"MDOWN000000{n}", f"tok-{n}", f"STORE-{n}", items=items_without_times(5, f"D{n}")
        )
    runtime.clover().sleep = lambda _seconds: None  # retry without waiting
    attempts = runtime.clover().max_attempts
    clover.fail_next(503, count=attempts, merchant_id="MDOWN0000001")

    cycle = stack.run_cycle()

    assert (cycle.polls.records, cycle.polls.failures) == (4, 1)  # then SQS delivered it again
    assert merchant_state("MDOWN0000001").consecutive_failures == 0
    for n in (1, 2, 3):
        assert_in_step(stack, f"MDOWN000000{n}", f"STORE-{n}")


SQS_CLASSIC_LIMIT = 262_144  # bytes: a message, and a SendMessageBatch's messages together


@pytest.mark.parametrize(("batch_size", "n_items"), [("200", 2000), ("1000", 1200)])
def test_label_jobs_past_sqss_limits_are_split_and_every_label_arrives(
    make_stack: Callable[..., LocalStack],
    request: pytest.FixtureRequest,
    batch_size: str,
    n_items: int,
) -> None:
    """Names of 127 characters of four bytes each (emoji; CJK text is three): a job of 200
    labels is ≈ 110 KB, and a first sync's eight went in one SendMessageBatch (≈ 850 KB),
    past SQS's 256 KiB for a batch's messages together; at ``HIPOINK_BATCH_SIZE`` 1000 one
    job (≈ 500 KB) passed the label queue's limit for a message: the poll failed, every
    retry, and the store's labels never updated. Now batches are grouped and jobs halved to
    fit 256 KiB (the classic limit, which the template sets on the label queues)."""
    stack = make_stack(HIPOINK_BATCH_SIZE=batch_size)
    assert stack.clover is not None
    assert stack.hipoink is not None
    items = gas_station_catalog(n_items, seed=3)
    for n, item in enumerate(items):
        item["name"] = f"{n:05d}" + "\U0001f600" * 122
    stack.add_merchant("MLARGEJOBS01", "tok-large", "STORE-LARGE", items=items)
    sent: list[list[int]] = []

    def seen(service: str, operation: str, params: Mapping[str, Any]) -> None:
        if operation in ("SendMessage", "SendMessageBatch"):
            entries = params.get("Entries", [params])
            sent.append([len(e["MessageBody"].encode()) for e in entries])

    aws_observers.observe(seen)
    request.addfinalizer(lambda: aws_observers.unobserve(seen))

    summary = stack.run_cycle()

    assert (summary.polls.failures, summary.labels.failures) == (0, 0)
    assert stack.hipoink.labels("STORE-LARGE") == expected_labels(
        stack.clover.items("MLARGEJOBS01")
    )
    label_calls = [sizes for sizes in sent if max(sizes) > 10_000]  # not the poll requests
    assert sum(sum(sizes) for sizes in label_calls) > SQS_CLASSIC_LIMIT  # more than one call
    assert all(sum(sizes) <= SQS_CLASSIC_LIMIT for sizes in sent)
