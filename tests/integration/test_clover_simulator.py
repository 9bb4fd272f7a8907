"""The Clover simulator answers like Clover, over real HTTP on loopback.

The poller's tests trust this simulator, so its answers (paging, filters, ordering, auth,
rate limits, faults) are pinned here against docs/clover-api.md, and so is
the realism of the generated catalogs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.clover_sim import CloverSimulator, token_fingerprint

MERCHANT = "MERCHANT0001A"
TOKEN = "token-of-merchant-a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ITEMS = f"/v3/merchants/{MERCHANT}/items"
FROZEN_MS = 1_700_000_000_000


@pytest.fixture
def clover() -> Iterator[CloverSimulator]:
    """A running simulator with rate limits off, for the tests that are not about them."""
    with CloverSimulator() as simulator:
        simulator.rate_limits_enabled = False
        yield simulator


@pytest.fixture
def http(clover: CloverSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=clover.base_url, headers=AUTH, timeout=5.0) as client:
        yield client


def item_id(n: int) -> str:
    return f"ITEM{n:09d}"


def item(n: int, **fields: Any) -> dict[str, Any]:
    """Item n: created at 1000 + n, modified at 2000 + n, unless overridden."""
    return {
        "id": item_id(n),
        "name": f"Item {n}",
        "price": 100 + n,
        "hidden": False,
        "createdTime": 1_000 + n,
        "modifiedTime": 2_000 + n,
        **fields,
    }


def elements(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["elements"]
    return found


def ids(response: httpx.Response) -> list[str]:
    return [element["id"] for element in elements(response)]


def message(response: httpx.Response) -> str:
    text: str = response.json()["message"]
    return text


def list_all_at_once(base_url: str, merchants: list[tuple[str, str]]) -> list[httpx.Response]:
    """One list request per (merchant, token), released together to be in flight together."""
    barrier = threading.Barrier(len(merchants))

    def send(merchant: tuple[str, str]) -> httpx.Response:
        merchant_id, token = merchant
        with httpx.Client(base_url=base_url, timeout=5.0) as client:
            barrier.wait()
            return client.get(
                f"/v3/merchants/{merchant_id}/items", headers={"Authorization": f"Bearer {token}"}
            )

    with ThreadPoolExecutor(len(merchants)) as pool:
        return list(pool.map(send, merchants))


# Paging


def test_pages_by_limit_and_offset_with_100_by_default(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, gas_station_catalog(250))

    assert len(elements(http.get(ITEMS))) == 100
    walked: list[str] = []
    while True:
        page = ids(http.get(ITEMS, params={"limit": 60, "offset": len(walked)}))
        walked += page
        if len(page) < 60:
            break
    assert len(walked) == len(set(walked)) == 250
    assert set(walked) == {listed["id"] for listed in clover.items(MERCHANT)}
    assert len(elements(http.get(ITEMS, params={"limit": 1000}))) == 250
    assert elements(http.get(ITEMS, params={"offset": 250})) == []


@pytest.mark.parametrize("limit", ["1001", "0", "-1", "ten"])
def test_a_limit_outside_1_to_1000_is_refused(
    clover: CloverSimulator, http: httpx.Client, limit: str
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])

    response = http.get(ITEMS, params={"limit": limit})

    assert response.status_code == 400
    assert "limit" in message(response)


# Filters


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("=", [2]),
        ("!=", [0, 1, 3, 4]),
        ("<", [0, 1]),
        ("<=", [0, 1, 2]),
        (">", [3, 4]),
        (">=", [2, 3, 4]),
    ],
)
def test_each_filter_operator(
    clover: CloverSimulator, http: httpx.Client, op: str, expected: list[int]
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(n) for n in range(5)])

    found = ids(http.get(ITEMS, params={"filter": f"modifiedTime{op}2002"}))

    assert sorted(found) == [item_id(n) for n in expected]


def test_repeated_filters_are_anded_and_compare_by_field_type(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    group = {"id": "GROUP000001AB"}
    clover.add_merchant(
        MERCHANT,
        TOKEN,
        [
            item(0, price=999, hidden=True, isAgeRestricted=True, sku="TOB-1", code="012345678905"),
            item(1, price=1000, hidden=True, sku="GRO-1", itemGroup=group),
            item(2, price=1001, sku="GRO-2", itemGroup=group),
            item(3, price=5),
        ],
    )

    def found(*filters: str) -> list[str]:
        return sorted(ids(http.get(ITEMS, params=[("filter", f) for f in filters])))

    assert found("modifiedTime>=2001", "modifiedTime<2003") == [item_id(1), item_id(2)]
    assert found("price>=1000") == [item_id(1), item_id(2)]  # numbers, not text
    assert found("hidden=true", "isAgeRestricted=true") == [item_id(0)]
    assert found("hidden=false") == [item_id(2), item_id(3)]
    assert found("sku=GRO-2") == [item_id(2)]
    assert found("sku!=GRO-2") == [item_id(0), item_id(1)]  # no sku matches nothing
    assert found("itemCode=012345678905") == [item_id(0)]
    assert found("itemGroup.id=GROUP000001AB", "price<1001") == [item_id(1)]
    assert found(f"id={item_id(3)}") == [item_id(3)]


@pytest.mark.parametrize(
    ("text", "named"),
    [("colour=red", "colour"), ("price>=cheap", "price"), ("hidden<true", "hidden")],
)
def test_a_bad_filter_is_refused_by_name(
    clover: CloverSimulator, http: httpx.Client, text: str, named: str
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])

    response = http.get(ITEMS, params={"filter": text})

    assert response.status_code == 400
    assert named in message(response)


# Ordering


@pytest.mark.parametrize("field", ["modifiedTime", "createdTime"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
@pytest.mark.parametrize("space", ["+", "%20"])
def test_order_by_either_time_either_way(
    clover: CloverSimulator, http: httpx.Client, field: str, direction: str, space: str
) -> None:
    # The two time orders disagree, so sorting by the wrong field shows.
    clover.add_merchant(
        MERCHANT, TOKEN, [item(n, modifiedTime=2_000 + (n * 7) % 5) for n in range(5)]
    )

    listed = elements(http.get(f"{ITEMS}?orderBy={field}{space}{direction}"))

    times = [element[field] for element in listed]
    assert times == sorted(times, reverse=direction == "DESC")


def test_default_order_is_created_time_descending_with_ties_by_id(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(
        MERCHANT,
        TOKEN,
        [
            item(0, createdTime=1_000),
            item(1, createdTime=1_000),
            item(2, createdTime=999),
            item(3, createdTime=1_001),
        ],
    )

    assert ids(http.get(ITEMS)) == [item_id(3), item_id(1), item_id(0), item_id(2)]


def test_ignore_order_by_answers_in_the_default_order(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(
        MERCHANT, TOKEN, [item(n, modifiedTime=2_000 + (n * 7) % 5) for n in range(5)]
    )
    ascending = {"orderBy": "modifiedTime ASC"}
    honoured = ids(http.get(ITEMS, params=ascending))

    clover.ignore_order_by = True

    ignored = ids(http.get(ITEMS, params=ascending))
    assert ignored == ids(http.get(ITEMS)) == [item_id(n) for n in reversed(range(5))]
    assert ignored != honoured


# Expansion and headers


def test_expand_item_stock(clover: CloverSimulator, http: httpx.Client) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0), item(1)])
    stocked = clover.set_stock(MERCHANT, item_id(0), 12)
    expand = {"expand": "itemStock"}

    assert all("itemStock" not in element for element in elements(http.get(ITEMS)))
    listed = {element["id"]: element for element in elements(http.get(ITEMS, params=expand))}
    assert listed[item_id(0)]["itemStock"] == {
        "quantity": 12.0,
        "modifiedTime": stocked["itemStock"]["modifiedTime"],
    }
    assert listed[item_id(0)]["modifiedTime"] == 2_000  # stock has its own modifiedTime
    assert listed[item_id(1)]["itemStock"] == {"quantity": 0.0, "modifiedTime": 1_001}
    single = http.get(f"{ITEMS}/{item_id(0)}", params=expand).json()
    assert single["itemStock"]["quantity"] == 12.0
    assert ids(http.get(ITEMS, params={"filter": "itemStock.quantity>10"})) == [item_id(0)]
    assert http.get(ITEMS, params={"expand": "vendors"}).status_code == 400

    clover.stock_bumps_modified_time = True
    bumped = clover.set_stock(MERCHANT, item_id(1), 3)
    assert bumped["modifiedTime"] == bumped["itemStock"]["modifiedTime"] > 2_001


def test_list_headers_name_the_filter_fields_and_give_clover_s_date(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])

    response = http.get(ITEMS, params={"return_null_fields": "true"})

    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["href"].startswith(f"{clover.base_url}{ITEMS}?")
    fields = set(response.headers["X-Clover-Allowed-Filter-Fields"].split(","))
    assert {"modifiedTime", "hidden", "deleted", "itemCode", "itemGroup.id"} <= fields
    served = parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(served - time.time()) <= 2

    clover.clock_offset_ms = -3_600_000

    skewed = parsedate_to_datetime(http.get(ITEMS).headers["Date"]).timestamp()
    assert abs(skewed - (time.time() - 3_600)) <= 2


# Single items, deletions, hidden items


def test_single_item_or_404(clover: CloverSimulator, http: httpx.Client) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])

    found = http.get(f"{ITEMS}/{item_id(0)}")
    assert found.status_code == 200
    assert found.json() == clover.item(MERCHANT, item_id(0))
    missing = http.get(f"{ITEMS}/NOSUCHITEM000")
    assert missing.status_code == 404
    assert "message" in missing.json()

    clover.delete_item(MERCHANT, item_id(0))

    assert http.get(f"{ITEMS}/{item_id(0)}").status_code == 404


def test_deleted_items_are_listed_only_when_list_deleted(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0), item(1)])
    deleted = clover.delete_item(MERCHANT, item_id(1))

    assert ids(http.get(ITEMS)) == [item_id(0)]

    clover.list_deleted = True

    listed = {element["id"]: element for element in elements(http.get(ITEMS))}
    assert listed[item_id(1)]["deleted"] is True
    assert listed[item_id(1)]["deletedTime"] == deleted["deletedTime"] == deleted["modifiedTime"]
    assert "deleted" not in listed[item_id(0)]
    assert ids(http.get(ITEMS, params={"filter": "deleted=false"})) == [item_id(0)]
    assert ids(http.get(ITEMS, params={"filter": "deleted=true"})) == [item_id(1)]


def test_hidden_items_are_listed_with_hidden_true(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0), item(1)])
    clover.hide_item(MERCHANT, item_id(1))

    listed = {element["id"]: element for element in elements(http.get(ITEMS))}

    assert listed[item_id(1)]["hidden"] is True
    assert listed[item_id(0)]["hidden"] is False
    assert listed[item_id(1)]["modifiedTime"] > 2_001
    assert clover.unhide_item(MERCHANT, item_id(1))["hidden"] is False


# Auth


def test_requests_without_the_merchant_s_bearer_token_get_401(clover: CloverSimulator) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])
    clover.add_merchant("MERCHANT0002B", "token-of-merchant-b")

    with httpx.Client(base_url=clover.base_url, timeout=5.0) as bare:
        refused = [
            bare.get(ITEMS),
            bare.get(ITEMS, headers={"Authorization": "Bearer wrong"}),
            bare.get(ITEMS, headers={"Authorization": "Bearer token-of-merchant-b"}),
            bare.get(ITEMS, headers={"Authorization": TOKEN}),
            bare.get(f"{ITEMS}/{item_id(0)}", headers={"Authorization": "Bearer wrong"}),
            bare.get("/v3/merchants/UNKNOWN000000/items", headers=AUTH),
            bare.get(ITEMS, params={"access_token": TOKEN}, headers=AUTH),
        ]
        assert bare.get(ITEMS, headers=AUTH).status_code == 200

    assert [response.status_code for response in refused] == [401] * len(refused)
    assert {message(response) for response in refused} == {"401 Unauthorized"}


def test_a_replaced_token_stops_working(clover: CloverSimulator, http: httpx.Client) -> None:
    clover.add_merchant(MERCHANT, TOKEN)

    clover.set_token(MERCHANT, "rotated-token")

    assert http.get(ITEMS).status_code == 401
    assert http.get(ITEMS, headers={"Authorization": "Bearer rotated-token"}).status_code == 200


# OAuth: expiring access tokens, single-use refresh tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refresh(
    clover: CloverSimulator, refresh_token: str, client_id: str | None = None
) -> httpx.Response:
    body = {"client_id": client_id or clover.client_id, "refresh_token": refresh_token}
    return httpx.post(f"{clover.base_url}/oauth/v2/refresh", json=body, timeout=5.0)


def test_issued_tokens_expire_after_their_lifetime_on_clover_s_clock(
    clover: CloverSimulator,
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.freeze_clock(FROZEN_MS)
    pair = clover.issue_tokens(MERCHANT, access_lifetime_seconds=60, refresh_lifetime_seconds=600)

    assert pair["access_token_expiration"] == FROZEN_MS // 1000 + 60
    assert pair["refresh_token_expiration"] == FROZEN_MS // 1000 + 600
    with httpx.Client(base_url=clover.base_url, timeout=5.0) as client:
        assert client.get(ITEMS, headers=AUTH).status_code == 401  # a new authorization
        assert client.get(ITEMS, headers=bearer(pair["access_token"])).status_code == 200
        clover.freeze_clock(FROZEN_MS + 60_000)
        assert client.get(ITEMS, headers=bearer(pair["access_token"])).status_code == 401
    clover.freeze_clock(FROZEN_MS + 600_000)
    assert message(refresh(clover, pair["refresh_token"])) == "invalid refresh token"


def test_a_refresh_token_works_once(clover: CloverSimulator) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.access_token_lifetime_seconds = 900
    first = clover.issue_tokens(MERCHANT)

    renewed = refresh(clover, first["refresh_token"])
    again = refresh(clover, first["refresh_token"])

    assert renewed.status_code == 200
    pair = renewed.json()
    assert set(pair) == {
        "access_token",
        "access_token_expiration",
        "refresh_token",
        "refresh_token_expiration",
    }
    assert pair["access_token_expiration"] - time.time() == pytest.approx(900, abs=5)
    assert (again.status_code, message(again)) == (401, "invalid refresh token")
    assert clover.access_token(MERCHANT) == pair["access_token"]
    assert refresh(clover, pair["refresh_token"]).status_code == 200
    records = [r for r in clover.requests if r.endpoint == "refresh"]
    assert [(r.merchant_id, r.status) for r in records] == [
        (MERCHANT, 200),
        (None, 401),
        (MERCHANT, 200),
    ]
    assert clover.request_count(MERCHANT, "refresh") == 2


def test_a_revoked_refresh_token_is_refused_and_bad_requests_say_why(
    clover: CloverSimulator,
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    pair = clover.issue_tokens(MERCHANT)

    wrong_client = refresh(clover, pair["refresh_token"], client_id="someone-else")
    clover.revoke_refresh_token(MERCHANT)
    revoked = refresh(clover, pair["refresh_token"])
    malformed = httpx.post(f"{clover.base_url}/oauth/v2/refresh", content=b"{", timeout=5.0)

    assert (wrong_client.status_code, message(wrong_client)) == (401, "invalid client_id")
    assert (revoked.status_code, message(revoked)) == (401, "invalid refresh token")
    assert malformed.status_code == 400
    with httpx.Client(base_url=clover.base_url, timeout=5.0) as client:
        # Revoking the refresh token leaves the access token alive until it expires.
        assert client.get(ITEMS, headers=bearer(pair["access_token"])).status_code == 200


# OAuth: the install's authorize page and code exchange

SITE = "https://app.example/clover"


def approve(clover: CloverSimulator, **query: str) -> httpx.Response:
    params = {"client_id": clover.client_id, "redirect_uri": f"{SITE}/oauth/callback"} | query
    return httpx.get(f"{clover.base_url}/oauth/v2/authorize", params=params, timeout=5.0)


def exchange(clover: CloverSimulator, code: str, secret: str | None = None) -> httpx.Response:
    body = {"client_id": clover.client_id, "client_secret": secret or clover.client_secret}
    return httpx.post(f"{clover.base_url}/oauth/v2/token", json=body | {"code": code}, timeout=5.0)


def test_the_authorize_page_approves_for_the_signed_in_merchant_with_a_one_time_code(
    clover: CloverSimulator,
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.site_url = SITE
    clover.signed_in_merchant = MERCHANT

    answer = approve(clover, state="s1.opaque")

    assert answer.status_code == 302
    location = httpx.URL(answer.headers["location"])
    assert str(location.copy_with(query=None)) == f"{SITE}/oauth/callback"
    back = dict(location.params)
    assert set(back) == {"merchant_id", "employee_id", "client_id", "code", "state"}
    assert (back["merchant_id"], back["client_id"], back["state"]) == (
        MERCHANT,
        clover.client_id,
        "s1.opaque",
    )
    assert back["code"] in clover.issued_tokens()
    pair = exchange(clover, back["code"])
    assert pair.status_code == 200
    assert client_items(clover, pair.json()["access_token"]) == 200
    assert client_items(clover, TOKEN) == 401  # the new authorization replaces the old token
    again = exchange(clover, back["code"])
    assert (again.status_code, message(again)) == (400, "invalid authorization code")
    assert clover.request_count(MERCHANT, "token") == 2


def test_codes_expire_and_need_the_app_s_secret(clover: CloverSimulator) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.signed_in_merchant = MERCHANT
    clover.freeze_clock(FROZEN_MS)
    code = dict(httpx.URL(approve(clover).headers["location"]).params)["code"]

    wrong_secret = exchange(clover, code, secret="not-the-app-s-secret")
    clover.freeze_clock(FROZEN_MS + clover.code_lifetime_seconds * 1000)
    expired = exchange(clover, code)

    assert (wrong_secret.status_code, message(wrong_secret)) == (401, "invalid client credentials")
    assert (expired.status_code, message(expired)) == (400, "authorization code expired")


def test_the_authorize_page_refuses_another_app_a_foreign_redirect_and_nobody_signed_in(
    clover: CloverSimulator,
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.site_url = SITE
    nobody = approve(clover)
    clover.signed_in_merchant = MERCHANT
    other_app = approve(clover, client_id="another-app")
    elsewhere = approve(clover, redirect_uri="https://evil.example/clover/oauth/callback")
    outside = approve(clover, redirect_uri="https://app.example/clover-not/x")

    assert [r.status_code for r in (nobody, other_app, elsewhere, outside)] == [401, 400, 400, 400]
    assert [r.endpoint for r in clover.requests] == ["authorize"] * 4


def client_items(clover: CloverSimulator, token: str) -> int:
    return httpx.get(f"{clover.base_url}{ITEMS}", headers=bearer(token), timeout=5.0).status_code


# Rate limits


def test_a_sixth_request_in_flight_for_one_token_gets_429() -> None:
    with CloverSimulator() as clover:
        clover.add_merchant(MERCHANT, TOKEN)
        clover.delay_seconds = 0.3

        responses = list_all_at_once(clover.base_url, [(MERCHANT, TOKEN)] * 6)

        assert sorted(r.status_code for r in responses) == [200] * 5 + [429]
        [refused] = [r for r in responses if r.status_code == 429]
        assert refused.headers["X-RateLimit-tokenConcurrentLimit"] == "5"
        assert refused.headers["Retry-After"] == "1"
        assert clover.max_in_flight(TOKEN) == clover.max_in_flight() == 6


def test_an_eleventh_request_in_flight_across_tokens_gets_429() -> None:
    merchants = [(f"MERCHANT{n:05d}", f"token-{n}") for n in range(3)]
    with CloverSimulator() as clover:
        for merchant_id, token in merchants:
            clover.add_merchant(merchant_id, token)
        clover.delay_seconds = 0.3

        responses = list_all_at_once(clover.base_url, merchants * 3 + merchants[:2])

        refused = [r for r in responses if r.status_code != 200]
        assert len(responses) == 11
        assert [r.headers["X-RateLimit-crossTokenConcurrentLimit"] for r in refused] == ["10"]
        assert clover.max_in_flight() == 11


def test_a_seventeenth_request_within_a_second_gets_429_and_early_retries_wait_longer() -> None:
    with CloverSimulator() as clover:
        clover.add_merchant(MERCHANT, TOKEN)
        with httpx.Client(base_url=clover.base_url, headers=AUTH, timeout=5.0) as http:
            assert [http.get(ITEMS).status_code for _ in range(16)] == [200] * 16

            refused = http.get(ITEMS)
            assert refused.status_code == 429
            assert refused.headers["X-RateLimit-tokenLimit"] == "16"
            assert refused.headers["Retry-After"] == "1"
            assert clover.early_retries(TOKEN) == 0

            time.sleep(0.6)
            too_soon = http.get(ITEMS)
            assert too_soon.status_code == 429
            assert clover.early_retries(TOKEN) == clover.early_retries() == 1
            assert clover.max_rps(TOKEN) == 18

            time.sleep(0.6)  # past the first Retry-After, but the early retry restarted it
            assert http.get(ITEMS).status_code == 429
            assert clover.early_retries(TOKEN) == 2

            time.sleep(float(too_soon.headers["Retry-After"]))
            assert http.get(ITEMS).status_code == 200


def test_a_fifty_first_request_within_a_second_across_tokens_gets_429() -> None:
    tokens = [f"token-{n}" for n in range(4)]
    with CloverSimulator() as clover:
        for n, token in enumerate(tokens):
            clover.add_merchant(f"MERCHANT{n:05d}", token)
        with httpx.Client(base_url=clover.base_url, timeout=5.0) as http:

            def send(n: int) -> httpx.Response:
                merchant = f"MERCHANT{n % 4:05d}"
                headers = {"Authorization": f"Bearer {tokens[n % 4]}"}
                return http.get(f"/v3/merchants/{merchant}/items", headers=headers)

            assert {send(n).status_code for n in range(50)} == {200}
            refused = send(50)

        assert refused.status_code == 429
        assert refused.headers["X-RateLimit-crossTokenLimit"] == "50"
        assert clover.max_rps() == 51


def test_rate_limits_can_be_switched_off(clover: CloverSimulator, http: httpx.Client) -> None:
    clover.add_merchant(MERCHANT, TOKEN)

    assert {http.get(ITEMS).status_code for _ in range(20)} == {200}
    assert clover.max_rps(TOKEN) == 20


# Faults


def test_fail_next_answers_the_given_status_then_recovers(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.add_merchant("MERCHANT0002B", "token-of-merchant-b")

    clover.fail_next(503, count=2)
    failed = [http.get(ITEMS) for _ in range(3)]
    assert [r.status_code for r in failed] == [503, 503, 200]
    assert message(failed[0]) == "503 Service Unavailable"

    clover.fail_next(500, merchant_id="MERCHANT0002B")
    assert http.get(ITEMS).status_code == 200
    other = {"Authorization": "Bearer token-of-merchant-b"}
    assert http.get("/v3/merchants/MERCHANT0002B/items", headers=other).status_code == 500

    clover.fail_next(200, body="<html>upstream hiccup</html>")
    garbled = http.get(ITEMS)
    assert garbled.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        garbled.json()

    clover.fail_next(401)
    assert http.get(ITEMS).status_code == 401
    assert http.get(ITEMS).status_code == 200


def test_clear_faults_forgets_one_merchants_or_every_unmet_failure(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.add_merchant("MERCHANT0002B", "token-of-merchant-b")
    other = {"Authorization": "Bearer token-of-merchant-b"}
    clover.fail_next(500, count=3, merchant_id="MERCHANT0002B")
    clover.fail_next(503, merchant_id=MERCHANT)

    assert clover.clear_faults("MERCHANT0002B") == 3
    assert http.get("/v3/merchants/MERCHANT0002B/items", headers=other).status_code == 200
    assert http.get(ITEMS).status_code == 503  # another merchant's stays

    clover.fail_next(503, count=2)
    clover.fail_next(500, merchant_id="MERCHANT0002B")
    clover.delay_next(5)
    assert clover.clear_faults() == 3
    began = time.monotonic()
    assert http.get(ITEMS).status_code == 200
    assert http.get("/v3/merchants/MERCHANT0002B/items", headers=other).status_code == 200
    assert time.monotonic() - began < 2  # the delay went too


def test_delays_slow_answers_down(clover: CloverSimulator, http: httpx.Client) -> None:
    clover.add_merchant(MERCHANT, TOKEN)

    clover.delay_next(0.5)
    with pytest.raises(httpx.ReadTimeout):
        http.get(ITEMS, timeout=0.1)
    began = time.monotonic()
    assert http.get(ITEMS).status_code == 200
    assert time.monotonic() - began < 0.3

    clover.delay_seconds = 0.2
    began = time.monotonic()
    assert http.get(ITEMS).status_code == 200
    assert time.monotonic() - began >= 0.2


def test_visibility_lag_hides_fresh_changes_from_lists_only(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])
    clover.visibility_lag_ms = 60_000
    assert ids(http.get(ITEMS)) == [item_id(0)]

    clover.update_item(MERCHANT, item_id(0), price=149)
    created = clover.create_item(MERCHANT, name="Coca-Cola 20oz", price=229)

    assert ids(http.get(ITEMS)) == []  # even the old item vanishes while its change lags
    assert http.get(f"{ITEMS}/{created['id']}").json()["price"] == 229

    clover.clock_offset_ms = 60_000

    assert sorted(ids(http.get(ITEMS))) == sorted([item_id(0), created["id"]])


def test_hide_from_listing_leaves_items_out_of_lists_only(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(n) for n in range(4)])
    clover.hide_from_listing = {item_id(1), item_id(3)}

    assert sorted(ids(http.get(ITEMS))) == [item_id(0), item_id(2)]
    sorted_walk = {"filter": "modifiedTime>=0", "orderBy": "modifiedTime ASC"}
    assert ids(http.get(ITEMS, params=sorted_walk)) == [item_id(0), item_id(2)]
    assert http.get(f"{ITEMS}/{item_id(1)}").json() == clover.item(MERCHANT, item_id(1))

    clover.hide_from_listing.clear()

    assert sorted(ids(http.get(ITEMS))) == [item_id(n) for n in range(4)]


def test_before_list_page_lets_a_test_change_the_catalog_between_pages(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(n) for n in range(4)])
    numbers: list[int] = []

    def between_pages(number: int) -> None:
        numbers.append(number)
        if number == 1:
            clover.delete_item(MERCHANT, item_id(3))

    clover.before_list_page = between_pages

    first = ids(http.get(ITEMS, params={"limit": 2}))
    second = ids(http.get(ITEMS, params={"limit": 2, "offset": 2}))

    assert first == [item_id(3), item_id(2)]
    assert second == [item_id(0)]  # item 1 slid into the page already read: skipped
    assert numbers == [0, 1]
    clover.reset_counters()
    http.get(ITEMS)
    assert numbers == [0, 1, 0]


def test_after_list_page_answers_late_what_was_read_before(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    """A slow answer: the page is read, then held; a change meanwhile is not in it."""
    clover.add_merchant(MERCHANT, TOKEN, [item(n, price=100) for n in range(2)])
    numbers: list[int] = []

    def late(number: int) -> None:
        numbers.append(number)
        clover.update_item(MERCHANT, item_id(0), price=999)

    clover.after_list_page = late

    page = http.get(ITEMS).json()["elements"]

    assert {element["id"]: element["price"] for element in page}[item_id(0)] == 100
    assert numbers == [0]
    changed = next(i for i in clover.items(MERCHANT) if i["id"] == item_id(0))
    assert changed["price"] == 999  # changed after the read, before the answer


# Clock and mutations


def test_a_frozen_clock_stamps_many_changes_with_one_millisecond(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN)
    clover.freeze_clock(FROZEN_MS)

    created = [clover.create_item(MERCHANT, name=f"Snack {n}", price=99) for n in range(30)]
    changed = clover.bulk_price_change(MERCHANT, [c["id"] for c in created[:10]], delta=20)

    stamps = {c["createdTime"] for c in created} | {c["modifiedTime"] for c in changed}
    assert stamps == {FROZEN_MS}
    assert [c["price"] for c in changed] == [119] * 10
    query = {"filter": f"modifiedTime>={FROZEN_MS}", "orderBy": "modifiedTime ASC", "limit": 20}
    first = http.get(ITEMS, params=query)
    second = http.get(ITEMS, params={**query, "offset": 20})
    assert len(set(ids(first) + ids(second))) == 30  # ties keep one order across pages
    assert parsedate_to_datetime(first.headers["Date"]).timestamp() == FROZEN_MS // 1000

    clover.freeze_clock(None)

    assert clover.clock_ms() > FROZEN_MS


def test_mutations_stamp_times_from_the_simulator_clock(clover: CloverSimulator) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [{"name": "Dasani Water 20oz", "price": 179}])
    [added] = clover.items(MERCHANT)
    assert re.fullmatch(r"[A-Z0-9]{13}", added["id"])
    assert added["createdTime"] == added["modifiedTime"] <= clover.clock_ms()

    clover.freeze_clock(FROZEN_MS)
    updated = clover.update_item(MERCHANT, added["id"], price=199)
    clover.freeze_clock(FROZEN_MS + 9)
    deleted = clover.delete_item(MERCHANT, added["id"])

    assert (updated["price"], updated["modifiedTime"]) == (199, FROZEN_MS)
    assert (deleted["deleted"], deleted["deletedTime"]) == (True, FROZEN_MS + 9)
    assert clover.items(MERCHANT) == []
    assert clover.items(MERCHANT, include_deleted=True) == [deleted]
    assert clover.item(MERCHANT, added["id"]) == deleted
    with pytest.raises(KeyError):
        clover.update_item(MERCHANT, added["id"], price=1)
    with pytest.raises(ValueError, match="exactly one"):
        clover.bulk_price_change(MERCHANT, [], price=1, delta=1)


# Observability and lifecycle


def test_requests_are_recorded_without_the_token(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    clover.add_merchant(MERCHANT, TOKEN, [item(0)])

    http.get(ITEMS, params={"limit": "5"})
    http.get(f"{ITEMS}/{item_id(0)}")
    http.get("/v3/merchants")

    assert clover.request_count() == 3
    assert clover.request_count(MERCHANT) == 2
    assert clover.request_count(MERCHANT, "list") == clover.request_count(endpoint="get") == 1
    first = clover.requests[0]
    assert (first.merchant_id, first.endpoint, first.status) == (MERCHANT, "list", 200)
    assert first.query == {"limit": ["5"]}
    assert first.token_fingerprint == token_fingerprint(TOKEN)
    assert TOKEN not in repr(clover.requests)

    clover.reset_counters()

    assert clover.request_count() == 0
    assert clover.max_rps() == 0


def test_stop_releases_delayed_answers() -> None:
    clover = CloverSimulator().start()
    clover.add_merchant(MERCHANT, TOKEN)
    clover.delay_seconds = 30
    with (
        httpx.Client(base_url=clover.base_url, headers=AUTH) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.get(ITEMS, timeout=0.2)

    clover.stop()

    deadline = time.monotonic() + 2
    while clover.request_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clover.request_count() == 1
    with pytest.raises(RuntimeError):
        _ = clover.base_url


# Catalogs


def upc_is_valid(code: str) -> bool:
    digits = [int(d) for d in code]
    return (sum(digits[0:11:2]) * 3 + sum(digits[1:11:2]) + digits[11]) % 10 == 0


def test_catalogs_are_deterministic_per_seed() -> None:
    assert gas_station_catalog(200, seed=7) == gas_station_catalog(200, seed=7)
    assert gas_station_catalog(200, seed=7) != gas_station_catalog(200, seed=8)
    assert len(gas_station_catalog(37)) == 37
    start = gas_station_catalog(5, start_ms=FROZEN_MS)[0]["createdTime"]
    assert FROZEN_MS < start <= FROZEN_MS + 120_000


def test_catalog_items_are_unique_and_shaped_like_clover_s() -> None:
    catalog = gas_station_catalog(600)

    assert all(re.fullmatch(r"[A-Z0-9]{13}", i["id"]) for i in catalog)
    assert len({i["id"] for i in catalog}) == 600
    assert all(re.fullmatch(r"\d{12}", i["code"]) and upc_is_valid(i["code"]) for i in catalog)
    assert len({i["code"] for i in catalog}) == 600
    skus = [i["sku"] for i in catalog if "sku" in i]
    assert len(skus) == len(set(skus))
    assert all("sku" in i for i in catalog if not i["hidden"])
    assert any("sku" not in i for i in catalog)
    assert all(0 < len(i["name"]) <= 127 for i in catalog)
    assert {i["priceType"] for i in catalog} == {"FIXED", "VARIABLE", "PER_UNIT"}
    assert all(isinstance(i["price"], int) and isinstance(i["cost"], int) for i in catalog)
    created = [i["createdTime"] for i in catalog]
    assert created == sorted(created)
    assert all(i["modifiedTime"] >= i["createdTime"] for i in catalog)


def test_a_gas_station_sells_fuel_per_gallon_and_hides_most_tobacco() -> None:
    catalog = gas_station_catalog(300)

    fuel = [i for i in catalog if i["priceType"] == "PER_UNIT" and i.get("unitName") == "gal"]
    assert len(fuel) == 4
    assert all(250 <= i["price"] <= 600 for i in fuel)
    tobacco = [i for i in catalog if i["isAgeRestricted"] and "Marlboro" in i["name"]]
    assert any(i["hidden"] for i in tobacco)
    restricted = [i for i in catalog if i["isAgeRestricted"]]
    assert sum(i["hidden"] for i in restricted) > len(restricted) / 2
    assert any(i["priceType"] == "VARIABLE" for i in catalog)
    groups = Counter(i["itemGroup"]["id"] for i in catalog if "itemGroup" in i)
    coffee = [i for i in catalog if i["name"].startswith("Coffee ")]
    assert [i["name"] for i in coffee] == ["Coffee Small", "Coffee Medium", "Coffee Large"]
    assert groups[coffee[0]["itemGroup"]["id"]] == 3
    assert len({i["createdTime"] for i in coffee}) == 1  # variants come from one call
    assert len([g for g, size in groups.items() if size >= 2]) >= 2


def test_a_convenience_store_sells_no_fuel() -> None:
    catalog = convenience_store_catalog(100)

    assert len(catalog) == 100
    assert not any(i.get("unitName") == "gal" for i in catalog)


def test_a_catalog_round_trips_through_the_simulator(
    clover: CloverSimulator, http: httpx.Client
) -> None:
    catalog = gas_station_catalog(120, seed=3)
    clover.add_merchant(MERCHANT, TOKEN, catalog)

    listed = elements(http.get(ITEMS, params={"limit": 1000}))

    assert {i["id"]: i for i in listed} == {i["id"]: i for i in catalog}
