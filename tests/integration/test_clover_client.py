"""CloverClient against the Clover simulator over real HTTP on loopback.

Covers the issue's "done when": page counts of the key walk, edits during the walk and
ties never skipping an item, the fallback when Clover ignores ``orderBy``, Retry-After
honoured on the wire, pacing under real rate limits, typed errors without the token
anywhere, 404 → None, and Clover's clock from ``Date``.
"""

from __future__ import annotations

import http.client
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devkit.catalog import gas_station_catalog
from devkit.clover_sim import CloverSimulator
from esl_sync.clover.client import CloverClient, MerchantCatalog
from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverError,
    CloverRateLimited,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.item_types import is_deleted
from esl_sync.clover.pacing import RequestPacer
from esl_sync.clover.transform import to_product
from esl_sync.clover.walk import ItemWalk
from esl_sync.sync.sweep import confirmed_gone

MID = "MERCHANT0001A"
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
START_MS = 1_704_067_200_000


def distinct_items(
    count: int, *, start_ms: int = START_MS, prefix: str = "I"
) -> list[dict[str, Any]]:
    """``count`` items with ids I0000.. and modifiedTimes one ms apart."""
    return [
        {
            "id": f"{prefix}{n:0{13 - len(prefix)}d}",
            "name": f"Item {n}",
            "sku": f"SKU-{n:05d}",
            "price": 100 + n,
            "priceType": "FIXED",
            "createdTime": start_ms + n,
            "modifiedTime": start_ms + n,
        }
        for n in range(count)
    ]


def tied_items(count: int, *, ms: int = START_MS) -> list[dict[str, Any]]:
    """``count`` items all modified in the same millisecond."""
    return [
        {
            "id": f"T{n:012d}",
            "name": f"Tied {n}",
            "sku": f"TIE-{n:05d}",
            "price": 200 + n,
            "createdTime": ms,
            "modifiedTime": ms,
        }
        for n in range(count)
    ]


class Sleeps:
    """An injected ``sleep``: records every wait; really sleeps only when asked to."""

    def __init__(self, *, real: bool = False) -> None:
        self.real = real
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def sim() -> Iterator[CloverSimulator]:
    with CloverSimulator() as simulator:
        yield simulator


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(
    sleeps: Sleeps,
) -> Iterator[Callable[..., CloverClient]]:
    clients: list[CloverClient] = []

    def make(**options: Any) -> CloverClient:
        options.setdefault("pacer", RequestPacer())  # isolated from other tests
        options.setdefault("sleep", sleeps)
        options.setdefault("backoff_base_seconds", 0.01)
        client = CloverClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def catalog_for(
    sim: CloverSimulator,
    make_client: Callable[..., CloverClient],
    items: list[dict[str, Any]] | None = None,
    **options: Any,
) -> MerchantCatalog:
    sim.add_merchant(MID, TOKEN, items)
    return make_client(**options).merchant(MID, TOKEN, sim.base_url)


def read_all(walk: ItemWalk) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The latest version of every yielded item, and every yielded id in order."""
    latest: dict[str, dict[str, Any]] = {}
    yielded: list[str] = []
    for page in walk:
        for item in page:
            yielded.append(item["id"])
            known = latest.get(item["id"])
            if known is None or item["modifiedTime"] > known["modifiedTime"]:
                latest[item["id"]] = item
    return latest, yielded


def assert_latest_of_everything(sim: CloverSimulator, latest: dict[str, dict[str, Any]]) -> None:
    truth = {item["id"]: item for item in sim.items(MID)}
    missing = sorted(set(truth) - set(latest))
    assert not missing, f"{len(missing)} items skipped, e.g. {missing[:5]}"
    stale = [
        item_id
        for item_id, item in truth.items()
        if (latest[item_id]["modifiedTime"], latest[item_id]["price"])
        != (item["modifiedTime"], item["price"])
    ]
    assert not stale, f"{len(stale)} items read in an old version, e.g. {stale[:5]}"


def list_filters(sim: CloverSimulator) -> list[tuple[list[str], str | None]]:
    return [
        (record.query.get("filter", []), next(iter(record.query.get("offset", [])), None))
        for record in sim.requests
        if record.endpoint == "list"
    ]


# -- page counts ---------------------------------------------------------------------


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (999, 1), (1000, 2), (1999, 2), (2000, 3)])
def test_distinct_items_cost_floor_n_over_1000_plus_one_list_requests(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], count: int, pages: int
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(count))
    walk = ItemWalk(catalog, None)
    _latest, yielded = read_all(walk)
    assert len(yielded) == len(set(yielded)) == count
    assert sim.request_count(MID, "list") == pages == count // 1000 + 1
    assert walk.requests == catalog.requests == pages
    assert not walk.fell_back
    assert walk.max_modified_ms == (START_MS + count - 1 if count else None)
    # The second page moves by key: from the last ms seen, skipping the one item seen there.
    if count >= 1000:
        assert list_filters(sim)[1] == ([f"modifiedTime>={START_MS + 999}"], "1")


def test_since_filters_and_sorts(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(50))
    latest, _ = read_all(ItemWalk(catalog, START_MS + 40))
    assert sorted(latest) == [f"I{n:012d}" for n in range(40, 50)]
    record = sim.requests[0]
    assert record.query["filter"] == [f"modifiedTime>={START_MS + 40}"]
    assert record.query["orderBy"] == ["modifiedTime ASC"]
    assert record.query["limit"] == ["1000"]


def test_1500_items_in_one_millisecond_cost_two_list_requests(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, tied_items(1500))
    walk = ItemWalk(catalog, START_MS)
    _latest, yielded = read_all(walk)
    assert len(yielded) == len(set(yielded)) == 1500
    assert sim.request_count(MID, "list") == 2
    assert list_filters(sim)[1] == ([f"modifiedTime>={START_MS}"], "1000")


def test_small_pages_through_ties(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    items = (
        distinct_items(7)
        + tied_items(23, ms=START_MS + 3)
        + distinct_items(5, start_ms=START_MS + 10, prefix="J")
    )
    catalog = catalog_for(sim, make_client, items, page_size=4)
    latest, yielded = read_all(ItemWalk(catalog, None))
    assert len(yielded) == len(set(yielded)) == 35
    assert_latest_of_everything(sim, latest)
    assert sim.request_count(MID, "list") == 35 // 4 + 1


# -- edits during the walk -------------------------------------------------------------


def test_edits_between_page_requests_skip_nothing(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    items = distinct_items(2500)
    catalog = catalog_for(sim, make_client, items)
    edited: list[str] = []

    def edit(page_number: int) -> None:
        # Before the 2nd and 3rd pages: edit the last 50 items of the page just read,
        # including the one the next request's offset counts.
        if page_number in (1, 2):
            for item in items[1000 * page_number - 50 : 1000 * page_number]:
                sim.update_item(MID, item["id"], price=item["price"] + 1000)
                edited.append(item["id"])

    sim.before_list_page = edit
    walk = ItemWalk(catalog, None)
    latest, yielded = read_all(walk)
    sim.before_list_page = None

    assert len(edited) == 100
    assert_latest_of_everything(sim, latest)
    assert all(latest[item_id]["price"] >= 1000 for item_id in edited)
    # Each id came once, or twice when it came back newer.
    assert len(yielded) == 2500 + 100
    assert walk.max_modified_ms == max(item["modifiedTime"] for item in sim.items(MID))
    assert not walk.fell_back


def test_edits_inside_a_1500_item_tie_skip_nothing(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    items = tied_items(1500)
    catalog = catalog_for(sim, make_client, items)

    def edit(page_number: int) -> None:
        if page_number == 1:  # 50 of the 1000 already read leave the tie millisecond
            for item in items[100:150]:
                sim.update_item(MID, item["id"], price=9999)

    sim.before_list_page = edit
    walk = ItemWalk(catalog, START_MS)
    latest, _ = read_all(walk)
    sim.before_list_page = None

    assert_latest_of_everything(sim, latest)
    assert all(latest[item["id"]]["price"] == 9999 for item in items[100:150])
    # The tie millisecond was re-read completely.
    assert ([f"modifiedTime={START_MS}"], None) in list_filters(sim)


def test_items_created_and_hidden_during_the_walk(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    items = distinct_items(1200)
    catalog = catalog_for(sim, make_client, items)
    created: list[str] = []

    def churn(page_number: int) -> None:
        if page_number == 1:
            created.append(sim.create_item(MID, name="New", sku="NEW-1", price=5)["id"])
            sim.hide_item(MID, items[999]["id"])

    sim.before_list_page = churn
    latest, _ = read_all(ItemWalk(catalog, None))
    assert_latest_of_everything(sim, latest)
    assert latest[items[999]["id"]]["hidden"] is True
    assert created[0] in latest


# -- fallback ------------------------------------------------------------------------


@pytest.mark.parametrize("since", [None, START_MS + 100])
def test_ignored_order_by_falls_back_to_a_complete_walk(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], since: int | None
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(2100))
    sim.ignore_order_by = True
    walk = ItemWalk(catalog, since)
    latest, yielded = read_all(walk)
    assert walk.fell_back
    assert_latest_of_everything(sim, latest)
    assert len(yielded) == len(set(yielded)) == 2100
    # After the unsorted first page: a complete walk without filter, by offset.
    assert list_filters(sim)[1:] == [([], None), ([], "1000"), ([], "2000")]


@pytest.mark.parametrize("since", [None, START_MS])
def test_ignored_order_by_on_pages_sorted_by_chance_still_skips_nothing(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], since: int | None
) -> None:
    """A Clover that ignores ``orderBy`` lists in its own order (the simulator's default:
    newest created first); a full page of that order can still be sorted by
    ``modifiedTime`` by chance (here the two newest items, stamped 10 and 30 ms after the
    start). Paging on from its last time (``modifiedTime>=30``) would skip every item
    stamped in between that the order lists later (the oldest, stamped 20 ms after): a
    first sync would never read it, nor would any sweep, whose walk is the same (found by
    tests/integration/test_catalog_model.py). Such a page is in the default order too, so
    the walk cannot tell and falls back."""
    items = distinct_items(3)
    for item, stamp in zip(items, (20, 30, 10), strict=True):
        item["modifiedTime"] = START_MS + stamp
    catalog = catalog_for(sim, make_client, items, page_size=2)
    sim.ignore_order_by = True
    walk = ItemWalk(catalog, since)
    latest, yielded = read_all(walk)
    assert_latest_of_everything(sim, latest)
    assert len(yielded) == len(set(yielded)) == 3
    assert walk.fell_back


def test_a_full_page_of_items_created_in_one_ms_falls_back_and_reads_everything(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    """Clover honours ``orderBy`` here, but the items share one ``createdTime`` (a catalog
    imported at once), so a full page is in the default order as well: unproven, the walk
    falls back (one key page, then the complete walk: 1 + 2 requests for 5 items in pages
    of 3) rather than trust it. Equal times are no rise, and an item without one between
    them proves nothing either way."""
    items = distinct_items(5)
    for item in items:
        item["createdTime"] = START_MS
    items[1]["createdTime"] = None
    catalog = catalog_for(sim, make_client, items, page_size=3)
    walk = ItemWalk(catalog, None)
    latest, yielded = read_all(walk)
    assert_latest_of_everything(sim, latest)
    assert sorted(yielded) == sorted(item["id"] for item in items)
    assert walk.fell_back
    assert walk.requests == 1 + 2


@pytest.mark.parametrize(
    "created",
    [
        [100, 1000, 98, 97, 96],  # a rise between the first two
        [100, 99, 98, 1000, 96],  # between the page's last two
        [100, None, 1000, 97, 96],  # across an item without one, which is passed over
    ],
)
def test_a_full_page_whose_created_times_rise_once_is_trusted(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], created: list[int | None]
) -> None:
    """One rise of ``createdTime`` anywhere in a page proves it is not Clover's default
    order (newest created first): Clover sorted it, and the walk pages on by key (5 items
    in pages of 4: 2 requests), however default-like the rest of the page looks."""
    items = distinct_items(5)
    for item, value in zip(items, created, strict=True):
        item["createdTime"] = value
    catalog = catalog_for(sim, make_client, items, page_size=4)
    walk = ItemWalk(catalog, None)
    latest, _ = read_all(walk)
    assert_latest_of_everything(sim, latest)
    assert not walk.fell_back
    assert walk.requests == 2


def test_rejected_sorted_query_falls_back(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(30))
    sim.fail_next(400)
    walk = ItemWalk(catalog, START_MS)
    latest, _ = read_all(walk)
    assert walk.fell_back
    assert_latest_of_everything(sim, latest)


# -- listing every id, and single items -------------------------------------------------


def test_a_walk_from_the_start_reads_every_item_deleted_flags_included(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    """The sweep's listing: a walk from ``None`` yields every item, and an item Clover lists
    flagged deleted as well (the poll counts it as not present, see ``is_deleted``)."""
    items = gas_station_catalog(1200, seed=7)
    catalog = catalog_for(sim, make_client, items)
    gone = items[5]["id"]
    sim.delete_item(MID, gone)
    sim.list_deleted = True  # Clover may list deleted items, flagged: still not present
    walk = ItemWalk(catalog, None)
    latest, _ = read_all(walk)
    assert set(latest) == {item["id"] for item in items}
    assert {i for i, item in latest.items() if is_deleted(item)} == {gone}
    assert walk.requests == 2 == sim.request_count(MID, "list")
    assert walk.clover_time_ms is not None
    assert not walk.fell_back
    first, second = list_filters(sim)
    assert first == ([], None)  # the first page asks for everything, sorted
    [by_key] = second[0]  # then by key
    assert by_key.startswith("modifiedTime>=")


def test_get_item_and_404(sim: CloverSimulator, make_client: Callable[..., CloverClient]) -> None:
    items = distinct_items(3)
    catalog = catalog_for(sim, make_client, items)
    assert catalog.get_item(items[1]["id"]) == sim.item(MID, items[1]["id"])
    assert catalog.get_item("NOSUCHITEM000") is None
    sim.delete_item(MID, items[2]["id"])
    assert catalog.get_item(items[2]["id"]) is None
    assert catalog.requests == 3
    assert sim.request_count(MID, "get") == 3


def test_walk_items_transform(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, gas_station_catalog(300, seed=1))
    latest, _ = read_all(ItemWalk(catalog, None))
    products = [to_product(item, merchant_id=MID) for item in latest.values()]
    assert len(products) == 300
    assert any(p.unit == "gal" for p in products)


def test_gzip_answers_read_as_plain_ones(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    """The client asks for gzip; whether Clover compresses is unconfirmed, so the simulator
    plays both, and a walk reads the same items either way."""
    catalog = catalog_for(sim, make_client, gas_station_catalog(1100, seed=3))
    plain, _ = read_all(ItemWalk(catalog, None))
    sim.gzip_answers = True
    compressed, _ = read_all(ItemWalk(catalog, None))
    assert compressed == plain
    assert len(plain) == 1100
    connection = http.client.HTTPConnection(sim.base_url.removeprefix("http://"))
    for accept, encoding in (("gzip", "gzip"), ("identity", None)):
        connection.request(
            "GET",
            f"{catalog.items_path}?limit=1",
            headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": accept},
        )
        answer = connection.getresponse()
        body = answer.read()
        assert answer.getheader("Content-Encoding") == encoding
        assert body[:2] == (b"\x1f\x8b" if encoding else b'{"')
    connection.close()


# -- Clover's clock --------------------------------------------------------------------


def test_clover_time_comes_from_the_date_header(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(3))
    sim.clock_offset_ms = -3 * 3600 * 1000  # Clover's clock is 3 h behind ours
    walk = ItemWalk(catalog, None)
    read_all(walk)
    assert walk.clover_time_ms is not None
    clover_now = sim.clock_ms()
    assert clover_now - 2000 <= walk.clover_time_ms <= clover_now
    assert walk.clover_time_ms % 1000 == 0  # HTTP dates have whole seconds

    sim.freeze_clock(1_800_000_123_456)
    again = ItemWalk(catalog, None)
    read_all(again)
    assert again.clover_time_ms == 1_800_000_123_000


def test_clover_time_is_from_the_first_response(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(5), page_size=2)
    sim.freeze_clock(1_800_000_000_000)

    def tick(page_number: int) -> None:
        sim.freeze_clock(1_800_000_000_000 + 60_000 * (page_number + 1))

    sim.before_list_page = tick
    walk = ItemWalk(catalog, None)
    read_all(walk)
    assert walk.requests == 3
    assert walk.clover_time_ms == 1_800_000_060_000  # the clock as of the first answer


# -- retries and rate limits -------------------------------------------------------------


def test_retry_after_is_honoured_on_the_wire(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    sleeps = Sleeps(real=True)
    catalog = catalog_for(sim, make_client, distinct_items(3), sleep=sleeps)
    sim.retry_after_seconds = 2
    sim.fail_next(429)
    walk = ItemWalk(catalog, None)
    latest, _ = read_all(walk)
    assert len(latest) == 3
    first, second = sim.requests[:2]
    assert first.status == 429
    assert second.status == 200
    assert second.time - first.time >= 2.0
    assert sleeps.calls
    assert min(sleeps.calls) >= 2.0
    assert walk.requests == catalog.requests == 2


def test_real_rate_limit_waits_without_early_retries(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    sleeps = Sleeps(real=True)
    # Our pacer allows more than the simulator does, so the simulator's limit is hit.
    pacer = RequestPacer(token_rps=100, token_concurrency=5)
    catalog = catalog_for(sim, make_client, distinct_items(3), sleep=sleeps, pacer=pacer)
    sim.token_rps = 2
    sim.retry_after_seconds = 2
    for item in distinct_items(3):
        assert catalog.get_item(item["id"]) is not None
    statuses = [record.status for record in sim.requests]
    assert statuses == [200, 200, 429, 200]
    assert sim.early_retries(TOKEN) == 0
    assert sim.requests[3].time - sim.requests[2].time >= 2.0


def test_rate_limited_after_every_attempt(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], sleeps: Sleeps
) -> None:
    class Unpaused(RequestPacer):
        def pause(self, key: str | None, seconds: float) -> None:
            paused.append(seconds)  # the fake sleep must not be undone by a real pause

    paused: list[float] = []
    catalog = catalog_for(
        sim, make_client, distinct_items(3), max_attempts=3, pacer=Unpaused(token_rps=100)
    )
    sim.token_rps = 1
    sim.retry_after_seconds = 7
    assert catalog.get_item("I000000000000") is not None
    with pytest.raises(CloverRateLimited) as caught:
        catalog.get_item("I000000000001")
    assert caught.value.retry_after_seconds == 7
    assert caught.value.limit == "X-RateLimit-tokenLimit"
    assert caught.value.merchant_id == MID
    assert len(sleeps.calls) == 2
    assert all(seconds >= 7 for seconds in sleeps.calls)
    assert paused == [7, 7]  # other requests of the token are held back as well
    assert catalog.requests == 4


def test_many_threads_stay_inside_the_limits(
    sim: CloverSimulator, make_client: Callable[..., CloverClient]
) -> None:
    tokens = {f"MERCHANT000{n}X": f"tok-{n}-secret" for n in range(3)}
    for number, (merchant_id, token) in enumerate(tokens.items()):
        sim.add_merchant(merchant_id, token, distinct_items(5, prefix=f"M{number}"))
    client = make_client(pacer=RequestPacer())  # Clover's published limits
    catalogs = [client.merchant(mid, token, sim.base_url) for mid, token in tokens.items()]
    sim.delay_seconds = 0.05  # every request stays open a while, so they overlap

    def fetch(n: int) -> dict[str, Any] | None:
        catalog = catalogs[n % 3]
        return catalog.get_item(sim.items(catalog.merchant_id)[n % 5]["id"])

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(fetch, range(60)))
    assert all(result is not None for result in results)
    assert not [record for record in sim.requests if record.status == 429]
    for token in tokens.values():
        assert 1 < sim.max_in_flight(token) <= 5
        assert sim.max_rps(token) <= 16
    assert sim.max_in_flight() <= 10
    assert sim.max_rps() <= 50


# -- typed errors, and the token never shows -------------------------------------------


def _provoke_401(sim: CloverSimulator, catalog: MerchantCatalog) -> None:
    sim.set_token(MID, "another-token")
    list(ItemWalk(catalog, None))


def _provoke_500_storm(sim: CloverSimulator, catalog: MerchantCatalog) -> None:
    sim.fail_next(500, count=50)
    list(ItemWalk(catalog, None))


def _provoke_timeout(sim: CloverSimulator, catalog: MerchantCatalog) -> None:
    sim.delay_next(1.0, count=3)
    catalog.get_item("I000000000000")


def _provoke_not_json(sim: CloverSimulator, catalog: MerchantCatalog) -> None:
    sim.fail_next(200, body=f"<html>proxy error for Bearer {TOKEN}</html>")
    list(ItemWalk(catalog, None))


@pytest.mark.parametrize(
    ("provoke", "error_type", "requests", "text"),
    [
        (_provoke_401, CloverAuthError, 1, "HTTP 401"),
        (_provoke_500_storm, CloverServerError, 3, "HTTP 500 after 3 attempts"),
        (_provoke_timeout, CloverTimeout, 3, "no answer within 0.2s"),
        (_provoke_not_json, CloverBadResponse, 1, "body is not JSON"),
    ],
    ids=["401", "500-storm", "timeout", "not-json"],
)
def test_failures_end_in_typed_errors_without_the_token(
    sim: CloverSimulator,
    make_client: Callable[..., CloverClient],
    sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
    provoke: Callable[[CloverSimulator, MerchantCatalog], None],
    error_type: type[CloverError],
    requests: int,
    text: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    catalog = catalog_for(sim, make_client, distinct_items(3), max_attempts=3, timeout_seconds=0.2)
    with pytest.raises(error_type) as caught:
        provoke(sim, catalog)
    error = caught.value
    assert isinstance(error, CloverError)
    assert error.merchant_id == MID
    assert text in str(error)
    assert catalog.requests == requests
    assert len(sleeps.calls) == requests - 1  # retried only what is worth retrying
    for wait, attempt in zip(sleeps.calls, range(requests), strict=False):
        assert 0 <= wait <= 0.01 * 2**attempt
    shown = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        repr(catalog),
        caplog.text,
        *(record.getMessage() for record in caplog.records),
    ]
    assert caplog.records, "the debug log should have said something"
    assert not [piece for piece in shown if TOKEN in piece]


@pytest.mark.parametrize(
    ("body", "part"),
    [
        ('{"items": []}', "body has no 'elements' list"),
        ('{"elements": {}}', "body has no 'elements' list"),
        ("[1, 2]", "body has no 'elements' list"),
        ('{"elements": [{"id": "A", "modifiedTime": 1}, 7]}', "elements[1] is not an object"),
        (
            '{"elements": [{"id": "A", "modifiedTime": "1"}]}',
            "elements[0].modifiedTime is not an integer",
        ),
        ('{"elements": [{"id": "A"}]}', "elements[0].modifiedTime is not an integer"),
    ],
)
def test_bad_shapes_name_the_part(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], body: str, part: str
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(3))
    sim.fail_next(200, body=body)
    with pytest.raises(CloverBadResponse) as caught:
        list(ItemWalk(catalog, None))
    assert part in str(caught.value)
    assert catalog.requests == 1


def test_server_error_then_success_is_retried(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], sleeps: Sleeps
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(3))
    sim.fail_next(503, count=2)
    sim.fail_next(502, count=1)
    latest, _ = read_all(ItemWalk(catalog, None))
    assert len(latest) == 3
    assert catalog.requests == 4
    assert len(sleeps.calls) == 3


def test_get_item_401_is_not_retried(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], sleeps: Sleeps
) -> None:
    catalog = catalog_for(sim, make_client, distinct_items(1))
    sim.fail_next(403)
    with pytest.raises(CloverAuthError) as caught:
        catalog.get_item("I000000000000")
    assert caught.value.status == 403
    assert not sleeps.calls


def test_client_is_a_context_manager(sim: CloverSimulator) -> None:
    items = distinct_items(2)
    sim.add_merchant(MID, TOKEN, items)
    with CloverClient(pacer=RequestPacer()) as client:
        assert client.merchant(MID, TOKEN, sim.base_url).get_item(items[0]["id"])
    assert TOKEN not in repr(client)


@pytest.mark.parametrize("body", ["null", " null\n"])
def test_a_200_whose_body_is_null_is_no_404(
    sim: CloverSimulator, make_client: Callable[..., CloverClient], body: str
) -> None:
    """Only a 404 (or a deleted flag) says an item is gone: a 200 whose body is JSON
    ``null`` (a proxy, a bug on Clover's side) is an unusable answer, not a deletion, so a
    sweep keeps the suspect (``CloverBadResponse`` is one of ``sweep.UNREAD``)."""
    items = distinct_items(3)
    catalog = catalog_for(sim, make_client, items)
    sim.fail_next(200, body=body)
    with pytest.raises(CloverBadResponse, match="not a JSON object"):
        catalog.get_item(items[1]["id"])
    sim.fail_next(200, body=body)
    assert confirmed_gone(catalog.get_item, [items[1]["id"]], MID) == set()
