"""The Hipoink simulator answers like the real server, over real HTTP on loopback.

The sender's tests trust this simulator, so its answers (messages, batch semantics,
faults) are pinned here against docs/hipoink-api.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devkit.hipoink_sim import F1Encoding, HipoinkSimulator

SIGN = "s3cret-sign"
STORE = "store-1"


@pytest.fixture
def sim() -> Iterator[HipoinkSimulator]:
    with HipoinkSimulator(sign=SIGN, stores=[STORE]) as simulator:
        yield simulator


@pytest.fixture
def client(sim: HipoinkSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as http:
        yield http


def product(pc: str, price: str = "1.00", **extra: Any) -> dict[str, Any]:
    return {"pc": pc, "pn": f"Product {pc}", "pp": price, **extra}


def call(
    client: httpx.Client, path: str, client_id: str = "default", **body: Any
) -> dict[str, Any]:
    """POST an API call with the right sign and store unless overridden; the JSON answer."""
    payload = {"store_code": STORE, "sign": SIGN, **body}
    response = client.post(f"/api/{client_id}/{path}", json=payload)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def upsert(client: httpx.Client, records: list[Any] | str, **body: Any) -> dict[str, Any]:
    return call(client, "product/create_multiple", f1=records, is_base64="0", **body)


def error_of(answer: dict[str, Any]) -> str:
    assert answer["error_code"] == 1, answer
    message: str = answer["error_msg"]
    return message


# Upserts


@pytest.mark.parametrize(
    ("mode", "as_string", "accepted"),
    [
        ("both", False, True),
        ("both", True, True),
        ("array", False, True),
        ("array", True, False),
        ("string", False, False),
        ("string", True, True),
    ],
)
def test_create_multiple_f1_encoding(
    sim: HipoinkSimulator,
    client: httpx.Client,
    mode: F1Encoding,
    as_string: bool,
    accepted: bool,
) -> None:
    sim.f1_encoding = mode
    records = [product("A"), product("B", "2.50")]
    answer = upsert(client, json.dumps(records) if as_string else records)
    if accepted:
        assert answer == {"error_code": 0, "error_msg": ""}
        assert sim.labels(STORE) == {"A": records[0], "B": records[1]}
    else:
        wanted = "JSON array" if mode == "array" else "JSON-encoded string"
        assert wanted in error_of(answer)
        assert sim.labels(STORE) == {}


def test_f1_string_that_is_not_an_array_is_refused(client: httpx.Client) -> None:
    assert "not a JSON-encoded array" in error_of(upsert(client, "{oops"))


def test_upsert_replaces_the_whole_record(sim: HipoinkSimulator, client: httpx.Client) -> None:
    upsert(client, [product("A", pu="kg", f3="promo")])
    assert upsert(client, [product("A", "3.10")])["error_code"] == 0
    assert sim.labels(STORE) == {"A": product("A", "3.10")}


def test_create_single_stores_the_product_without_the_envelope(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    answer = call(client, "product/create", is_base64="0", **product("A", pu="each"))
    assert answer["error_code"] == 0
    assert call(client, "product/create", **product("A", "9.99"))["error_code"] == 0
    assert sim.labels(STORE) == {"A": product("A", "9.99")}
    assert sim.upserts_of(STORE, "A") == [product("A", pu="each"), product("A", "9.99")]


def test_stores_are_separate(sim: HipoinkSimulator, client: httpx.Client) -> None:
    sim.add_store("store-2")
    upsert(client, [product("A")], store_code="store-2")
    assert sim.labels("store-2") == {"A": product("A")}
    assert sim.labels(STORE) == {}


# Deletes and queries


def test_del_multiple_counts_only_deleted_codes_and_unbinds_labels(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    upsert(client, [product("A"), product("B"), product("C")])
    sim.bind(STORE, "esl-1", "A")
    sim.bind(STORE, "esl-2", "C")
    answer = call(client, "product/del_multiple", f1=["A", "nope", "B", "A"])
    assert answer == {"error_code": 0, "error_msg": "", "count": 2}
    assert list(sim.labels(STORE)) == ["C"]
    assert sim.bindings(STORE) == {"esl-2": "C"}
    assert call(client, "product/del_multiple", f1=["A"])["count"] == 0


def test_del_multiple_can_refuse_a_batch_with_an_unknown_code(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    sim.unknown_delete = "error"
    upsert(client, [product("A")])
    answer = call(client, "product/del_multiple", f1=["A", "nope"])
    assert error_of(answer) == "product nope not found"
    assert list(sim.labels(STORE)) == ["A"]  # the whole batch was refused
    assert call(client, "product/del_multiple", f1=["A"])["count"] == 1


def test_del_multiple_refuses_codes_that_are_not_strings(client: httpx.Client) -> None:
    answer = call(client, "product/del_multiple", f1=[{"pc": "A"}])
    assert error_of(answer) == "f1 must be a list of product codes"


def test_query_pages_through_products(sim: HipoinkSimulator, client: httpx.Client) -> None:
    upsert(client, [product(f"P{i}") for i in range(5)])
    pages = [call(client, "product/query", f1=page, f2=2) for page in (1, 2, 3, 4)]
    assert [[r["pc"] for r in p["data"]] for p in pages] == [["P0", "P1"], ["P2", "P3"], ["P4"], []]
    assert {p["total"] for p in pages} == {5}
    assert call(client, "product/query", f1="2", f2="4")["data"] == [product("P4")]


def test_query_refuses_a_bad_page(client: httpx.Client) -> None:
    answer = call(client, "product/query", f1=0, f2=10)
    assert error_of(answer) == "field f1 must be a positive integer"


def test_query_also_answers_get_but_writes_need_post(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    body = {"store_code": STORE, "sign": SIGN, "f1": 1, "f2": 10}
    got = client.request("GET", "/api/default/product/query", json=body)
    assert got.json() == {"error_code": 0, "error_msg": "", "data": [], "total": 0}
    write = client.request("GET", "/api/default/product/create_multiple", json=body)
    assert write.status_code == 405


def test_unknown_endpoint_is_404(client: httpx.Client) -> None:
    assert client.post("/api/default/product/nope", json={}).status_code == 404
    assert client.post("/elsewhere", json={}).status_code == 404


# Errors


def test_unknown_client_id(sim: HipoinkSimulator, client: httpx.Client) -> None:
    assert error_of(upsert(client, [product("A")], client_id="other")) == "app key other not found"
    sim.client_id = "other"
    assert upsert(client, [product("A")], client_id="other")["error_code"] == 0


def test_wrong_or_missing_sign(sim: HipoinkSimulator, client: httpx.Client) -> None:
    assert error_of(upsert(client, [product("A")], sign="wrong")) == "sign error"
    response = client.post("/api/default/product/query", json={"store_code": STORE})
    assert response.json() == {"error_code": 1, "error_msg": "sign error"}
    sim.sign = "rotated"
    assert error_of(upsert(client, [product("A")])) == "sign error"
    assert upsert(client, [product("A")], sign="rotated")["error_code"] == 0


def test_missing_or_unknown_store(client: httpx.Client) -> None:
    answer = client.post("/api/default/product/create_multiple", json={"sign": SIGN, "f1": []})
    assert answer.json() == {"error_code": 1, "error_msg": "default missing store_code field"}
    assert error_of(upsert(client, [product("A")], store_code="")) == (
        "default missing store_code field"
    )
    assert error_of(upsert(client, [product("A")], store_code="zz")) == "store zz not found"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"pn": "x", "pp": "1.00"}, "product #1: missing field pc"),
        ({"pc": "", "pn": "x", "pp": "1.00"}, "product #1: field pc must be"),
        ({"pc": "9" * 65, "pn": "x", "pp": "1.00"}, "product #1: field pc must be"),
        ({"pc": 123, "pn": "x", "pp": "1.00"}, "product #1: field pc must be"),
        ({"pc": "0123", "pp": "1.00"}, "product 0123: missing field pn"),
        ({"pc": "0123", "pn": "", "pp": "1.00"}, "product 0123: field pn must be"),
        ({"pc": "0123", "pn": "n" * 128, "pp": "1.00"}, "product 0123: field pn must be"),
        ({"pc": "0123", "pn": "x"}, "product 0123: missing field pp"),
        ({"pc": "0123", "pn": "x", "pp": 12.3}, "product 0123: field pp must be a decimal string"),
        ({"pc": "0123", "pn": "x", "pp": "12.345"}, "product 0123: field pp must be a decimal"),
        ({"pc": "0123", "pn": "x", "pp": "$1"}, "product 0123: field pp must be a decimal"),
        ({"pc": "0123", "pn": "x", "pp": "-1.00"}, "product 0123: field pp must be a decimal"),
        ("0123", "product #1: record must be an object"),
    ],
)
def test_bad_record_fails_the_whole_batch(
    sim: HipoinkSimulator, client: httpx.Client, record: Any, message: str
) -> None:
    answer = upsert(client, [product("ok-1"), record, product("ok-2")])
    assert error_of(answer).startswith(message)
    assert sim.labels(STORE) == {}
    assert sim.upserts_of(STORE, "ok-1") == []


def test_longest_valid_fields_and_price_forms_are_accepted(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    records = [
        {"pc": "9" * 64, "pn": "n" * 127, "pp": "12"},
        product("B", "12.3"),
        product("C", "0.05"),
    ]
    assert upsert(client, records)["error_code"] == 0
    assert len(sim.labels(STORE)) == 3


def test_bad_single_create_is_refused(sim: HipoinkSimulator, client: httpx.Client) -> None:
    answer = call(client, "product/create", **product("0123", "12.3.4"))
    assert error_of(answer) == "product 0123: field pp must be a decimal string"
    assert sim.labels(STORE) == {}


def test_batch_limit(sim: HipoinkSimulator, client: httpx.Client) -> None:
    sim.max_batch_size = 2
    records = [product("A"), product("B"), product("C")]
    assert error_of(upsert(client, records)) == "too many products (max 2)"
    deleting = call(client, "product/del_multiple", f1=["A", "B", "C"])
    assert error_of(deleting) == "too many products (max 2)"
    assert upsert(client, records[:2])["error_code"] == 0


def test_body_that_is_not_json(sim: HipoinkSimulator, client: httpx.Client) -> None:
    for raw in (b"{not json", b"[1, 2]", b""):
        response = client.post("/api/default/product/create_multiple", content=raw)
        assert response.json() == {"error_code": 1, "error_msg": "invalid json"}
    assert sim.requests[-1].error_msg == "invalid json"


def test_reject_pcs_fails_the_batch_until_they_are_left_out(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    records = [product(f"P{i:03}") for i in range(100)]
    sim.reject_pcs = {"P010", "P050", "P090"}
    assert error_of(upsert(client, records)) == "product P010: rejected"
    assert sim.labels(STORE) == {}
    good = [r for r in records if r["pc"] not in sim.reject_pcs]
    assert upsert(client, good)["error_code"] == 0
    assert len(sim.labels(STORE)) == 97


# Faults


def test_fail_next_answers_the_status_without_processing(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    sim.fail_next(500, count=2)
    body = {"store_code": STORE, "sign": SIGN, "f1": [product("A")], "is_base64": "0"}
    statuses = [
        client.post("/api/default/product/create_multiple", json=body).status_code for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert sim.upserts_of(STORE, "A") == [product("A")]
    assert [r.http_status for r in sim.requests] == [500, 500, 200]


def test_fail_next_with_a_non_json_body(sim: HipoinkSimulator, client: httpx.Client) -> None:
    sim.fail_next(body="<html>Bad Gateway</html>")
    sim.fail_next(502, body="<html>proxy</html>")
    first = client.post("/api/default/product/create_multiple", json={})
    second = client.post("/api/default/product/create_multiple", json={})
    assert (first.status_code, first.text) == (200, "<html>Bad Gateway</html>")
    assert (second.status_code, second.text) == (502, "<html>proxy</html>")
    with pytest.raises(json.JSONDecodeError):
        first.json()
    assert upsert(client, [product("A")])["error_code"] == 0


def test_down_answers_503_until_back(sim: HipoinkSimulator, client: httpx.Client) -> None:
    sim.down = True
    for _ in range(2):
        response = client.post("/api/default/product/query", json={})
        assert response.status_code == 503
    sim.down = False
    assert call(client, "product/query", f1=1, f2=1)["error_code"] == 0


def test_delay_next_times_the_client_out_but_still_processes(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    sim.delay_next(0.4)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/api/default/product/create_multiple",
            json={"store_code": STORE, "sign": SIGN, "f1": [product("A")]},
            timeout=0.1,
        )
    started = time.monotonic()
    assert call(client, "product/query", f1=1, f2=1)["error_code"] == 0
    assert time.monotonic() - started < 0.3
    deadline = time.monotonic() + 2
    while not sim.labels(STORE) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.labels(STORE) == {"A": product("A")}


def test_delay_seconds_slows_every_request(sim: HipoinkSimulator, client: httpx.Client) -> None:
    sim.delay_seconds = 0.15
    started = time.monotonic()
    call(client, "product/query", f1=1, f2=1)
    call(client, "product/query", f1=1, f2=1)
    assert time.monotonic() - started >= 0.3


# Observability


def test_request_log_records_calls_but_never_the_sign(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    upsert(client, [product("A"), product("B")])
    upsert(client, [product("C")], store_code="zz")
    call(client, "product/del_multiple", f1=["A"])
    first, second, third = sim.requests
    assert (first.path, first.store_code, first.n_records, first.codes) == (
        "product/create_multiple",
        STORE,
        2,
        ["A", "B"],
    )
    assert (first.http_status, first.error_code, first.error_msg) == (200, 0, "")
    assert (second.store_code, second.error_msg) == ("zz", "store zz not found")
    assert (third.path, third.codes) == ("product/del_multiple", ["A"])
    assert SIGN not in repr(sim.requests)
    assert sim.request_count() == 3
    assert sim.request_count("product/create_multiple") == 2
    assert sim.request_count("product/create_multiple", store_code=STORE) == 1
    sim.reset_requests()
    assert sim.request_count() == 0


def test_upserts_of_keeps_every_stored_version_in_order(
    sim: HipoinkSimulator, client: httpx.Client
) -> None:
    upsert(client, [product("A", "1.00")])
    upsert(client, [product("A", "2.00"), {"pc": "B"}])
    upsert(client, [product("A", "3.00")])
    call(client, "product/del_multiple", f1=["A"])
    assert sim.upserts_of(STORE, "A") == [product("A", "1.00"), product("A", "3.00")]
    assert sim.upserts_of(STORE, "B") == []


def test_base_url_needs_a_running_server() -> None:
    simulator = HipoinkSimulator()
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    with simulator:
        assert simulator.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
