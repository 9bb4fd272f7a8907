"""Hostile webhook bodies (issue 11, part 6), through the real webhook function as the HTTP
API calls it: whatever the body holds, the answer is a 4xx without an error line or a
traceback, before authentication as after it; the handshake keeps a few well-formed codes
and `status` prints them escaped; a flood of deletions never grows a merchant's state
beyond a bound (the next poll sweeps instead)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devkit.catalog import gas_station_catalog
from devkit.emf import metric_sums
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack, webhook_event
from devkit.template import load_template, resource
from esl_sync import runtime
from esl_sync.messages import PollRequest
from esl_sync.records import VerificationCode
from esl_sync.store import aws_json
from esl_sync.store.dynamo import WEBHOOK_ITEM_KEY, DynamoStateStore
from esl_sync_ops.cli import main
from tests.http_events import MALFORMED_EVENTS

MERCHANT, STORE = "MHOSTILE0001", "STORE-HOSTILE"
AUTHS = [None, CLOVER_WEBHOOK_AUTH]  # before authentication, and after it


@pytest.fixture
def hooked(stack: LocalStack) -> LocalStack:
    """One gas station, read once and on its shelf."""
    stack.add_merchant(MERCHANT, "tok-hostile", STORE, items=gas_station_catalog(30, seed=9))
    summary = stack.run_cycle()
    assert (summary.polls.failures, summary.labels.failures) == (0, 0)
    return stack


def delivery(merchant_id: str = MERCHANT, object_id: str = "I:ITEM0000001", **over: Any) -> str:
    event = {"objectId": object_id, "type": "UPDATE", "ts": 1795867199000}
    body = {"appId": "DRKVJT2ZRRRSC", "merchants": {merchant_id: [event]}}
    body.update(over)
    return json.dumps(body)


def errors_and_tracebacks(stack: LocalStack) -> list[str]:
    return [line for line in stack.logs if '"level":"ERROR"' in line or "Traceback" in line]


def assert_refused_quietly(stack: LocalStack, body: bytes | str, auth: str | None) -> str:
    """A 4xx, nothing queued or recorded, no error line, and an answer safe to print."""
    answer = stack.send_webhook(body, auth, deliver=False)
    assert 400 <= answer.status < 500, (answer.status, answer.message)
    assert sum(stack.queue_depths().values()) == 0
    assert errors_and_tracebacks(stack) == []
    assert answer.message.isprintable()
    assert runtime.state_store().load(MERCHANT).pending_deletes == frozenset()
    return answer.message


# -- the done-when cases -----------------------------------------------------------------


def test_a_body_nested_100000_deep_is_a_400_without_an_error_line(hooked: LocalStack) -> None:
    bodies = [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,  # unterminated too
        '{"a":' * 40_000 + "1" + "}" * 40_000,
        '{"verificationCode": ' + "[" * 100_000 + "]" * 100_000 + "}",
        delivery().replace('"DRKVJT2ZRRRSC"', "[" * 50_000 + "]" * 50_000),
        delivery().replace("1795867199000", "[" * 50_000 + "]" * 50_000),
    ]
    for auth in AUTHS:
        for body in bodies:
            assert len(body) < 256 * 1024
            assert "nested too deeply" in assert_refused_quietly(hooked, body, auth)


def test_5000_digit_numbers_are_a_400_without_an_error_line(hooked: LocalStack) -> None:
    digits = "9" * 5_000
    for auth in AUTHS:
        for body in (
            digits,
            "-" + digits,
            f'{{"verificationCode": {digits}}}',
            delivery().replace("1795867199000", digits),
            f'{{"appId": "A", "merchants": {{}}, "extra": [{digits}]}}',
        ):
            assert "more than 20 digits" in assert_refused_quietly(hooked, body, auth)
        for body in ("NaN", delivery().replace("1795867199000", "Infinity"), "1e999999"):
            assert_refused_quietly(hooked, body, auth)


def test_nul_and_lone_surrogates_in_ids_are_a_400_without_an_error_line(hooked: LocalStack) -> None:
    hostile = ["\\u0000", "\\ud800", "\\udfff", "\\udc80\\ud800", "\\u001b[2J", "\\n", "\\u202e"]
    bodies: list[bytes | str] = []
    for bad in hostile:
        merchant = json.dumps(MERCHANT)[1:-1] + bad
        bodies += [
            delivery().replace(MERCHANT, merchant),  # merchant id
            delivery(object_id="I:ITEM").replace("I:ITEM", "I:ITEM" + bad),  # object id
            delivery().replace("DRKVJT2ZRRRSC", "DRKVJT2ZRRRSC" + bad),  # app id
            f'{{"verificationCode": "ce7643c1-83ea-4218-abe6-da876c9c7a0a{bad}"}}',
        ]
    bodies += [
        delivery().encode().replace(MERCHANT.encode(), b"MHOSTILE\xff\xfe01"),  # not UTF-8
        delivery().encode().replace(MERCHANT.encode(), b"MHOSTILE\xed\xa0\x80"),  # CESU surrogate
        delivery().encode().replace(MERCHANT.encode(), b"MHOSTILE\x000001"),  # raw NUL
    ]
    for auth in AUTHS:
        for body in bodies:
            message = assert_refused_quietly(hooked, body, auth)
            raw = body if isinstance(body, bytes) else body.encode()
            if auth is None and b'"verificationCode"' not in raw:
                assert message.startswith(("body is not", "missing or wrong")), message
    assert metric_sums(hooked.logs)["WebhookRejected"] == 2 * len(bodies)
    # The answer names the merchant id it refused, escaped (never NUL or a surrogate raw).
    answer = hooked.send_webhook(delivery().replace(MERCHANT, "M\\u0000\\ud800X"), AUTHS[1])
    assert answer.status == 400
    assert answer.message.startswith("merchants.'M\\x00")  # pydantic turns \ud800 into U+FFFD


def test_wrong_types_and_shapes_are_a_400(hooked: LocalStack) -> None:
    for body in (
        delivery(appId=5),
        delivery(appId=None),
        delivery(merchants={MERCHANT: {"objectId": "I:X"}}),
        delivery(merchants={MERCHANT: [None]}),
        delivery(merchants={MERCHANT: [{"objectId": ["I:X"], "type": "UPDATE", "ts": 1}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:X", "type": "UPDATE", "ts": -1}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:X", "type": "UPDATE", "ts": True}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:X", "type": "UPDATE", "ts": "17"}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:X", "type": "UPDATE", "ts": 1.0}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:X", "type": "UPDATE", "ts": 10**16}]}),
        delivery(merchants={MERCHANT: [{"objectId": "X", "type": "UPDATE", "ts": 1}]}),
        delivery(merchants={MERCHANT: [{"objectId": "I:" + "X" * 65, "type": "UPDATE", "ts": 1}]}),
        delivery(merchants={"M" * 65: []}),
        '{"verificationCode": "not-a-uuid"}',
        '{"verificationCode": ""}',
        '{"verificationCode": "' + "a" * 10_000 + '"}',
        '"just a string"',
        "",
    ):
        assert_refused_quietly(hooked, body, CLOVER_WEBHOOK_AUTH)


@pytest.mark.parametrize("change", list(MALFORMED_EVENTS))
def test_an_event_api_gateway_would_not_send_is_a_400(hooked: LocalStack, change: str) -> None:
    """Only the HTTP API invokes the webhook; an event of another shape is refused before
    it is routed, never the resolver's exception answered 503 with a traceback."""
    event = webhook_event(delivery().encode(), CLOVER_WEBHOOK_AUTH)
    MALFORMED_EVENTS[change](event)

    answer = hooked.invoke("webhook", event)

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"]) == {"message": "not an HTTP API request"}
    assert sum(hooked.queue_depths().values()) == 0
    assert errors_and_tracebacks(hooked) == []
    sums = metric_sums(hooked.logs)
    assert (sums["WebhookRequests"], sums["WebhookRejected"]) == (1, 1)


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
HOSTILE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\x1b", "\n", "\u202e"]),
    max_size=70,
)


def sometimes(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """Mostly the valid value, so that whole deliveries get through often enough too."""
    return st.integers(0, 5).flatmap(lambda k: hostile if k == 0 else valid)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A Clover notification with any slot replaced by anything: a hostile merchant id,
    object id, app id, type, ts, shape; handshakes; plus raw byte damage."""
    event: Any = {
        "objectId": draw(sometimes(st.sampled_from(["I:ITEM0000001", "O:ORD1"]), HOSTILE_TEXT)),
        "type": draw(sometimes(st.sampled_from(["CREATE", "UPDATE", "DELETE"]), JSON_VALUES)),
        "ts": draw(
            sometimes(
                st.integers(min_value=0, max_value=2**42),
                st.integers(min_value=-(10**25), max_value=10**25) | JSON_VALUES,
            )
        ),
    }
    events: Any = draw(sometimes(st.just([event]), JSON_VALUES))
    merchant = draw(sometimes(st.sampled_from([MERCHANT, "MUNKNOWN0001"]), HOSTILE_TEXT))
    body: Any = {
        "appId": draw(sometimes(st.just("DRKVJT2ZRRRSC"), HOSTILE_TEXT | JSON_VALUES)),
        "merchants": draw(sometimes(st.just({merchant: events}), JSON_VALUES)),
    }
    handshake = {"verificationCode": draw(sometimes(st.uuids().map(str), HOSTILE_TEXT))}
    body = draw(sometimes(st.sampled_from([body, body, body, handshake]), JSON_VALUES))
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 3)) == 0:  # byte damage: cut, or splice in bytes anywhere
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        return raw[:at] + draw(st.binary(max_size=6)) + raw[at + draw(st.integers(0, 3)) :]
    return raw


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=hostile_bodies(), authenticated=st.sampled_from([True, True, False]))
def test_any_body_is_answered_without_a_5xx_error_line_or_traceback(
    hooked: LocalStack, body: bytes, authenticated: bool
) -> None:
    before = len(hooked.logs)
    auth = CLOVER_WEBHOOK_AUTH if authenticated else None
    answer = hooked.send_webhook(body, auth, deliver=False)
    assert answer.status in (200, 202, 400, 401, 413), answer
    event(f"HTTP {answer.status}")
    assert answer.message.isprintable()
    new = hooked.logs[before:]
    assert [line for line in new if '"level":"ERROR"' in line or "Traceback" in line] == []
    hooked.drain("PollQueue", "poller")
    hooked.drain("LabelQueue", "hipoink_sender")


# -- the handshake -----------------------------------------------------------------------


def test_a_handshake_code_with_escapes_is_refused_and_status_prints_codes_escaped(
    hooked: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    for code in (
        "\\u001b]0;pwned\\u0007ce7643c1-83ea-4218-abe6-da876c9c7a0a",
        "ce7643c1-83ea-4218-abe6-da876c9c7a0a\\n",
        "ce7643c1-83ea-4218-abe6-da876c9c7a0a\\u0000",
        "CE7643C1-83EA-4218-ABE6-DA876C9C7A0\\ud800",
    ):
        assert_refused_quietly(hooked, f'{{"verificationCode": "{code}"}}', None)
    assert runtime.state_store().verification_codes() == []

    # A code stored raw by an older version (one attribute, no checks) prints escaped.
    boto3.client("dynamodb").put_item(
        TableName=hooked.env["STATE_TABLE_NAME"],
        Item={
            "merchant_id": {"S": WEBHOOK_ITEM_KEY},
            "verification_code": {"S": "\x1b[2J\x1b]0;pwned\x07code\r\nfake: line"},
            "verification_received_at": {"S": "2026-11-28T12:00:00+00:00"},
        },
    )
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\r" not in out
    assert "code: \\x1b[2J\\x1b]0;pwned\\x07code\\r\\nfake: line (received" in out


def test_a_code_item_edited_by_hand_never_stops_status(
    hooked: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kept code's slot that is not as written (no code, a time that is none, a number
    that is text) is left out; the others still print and `status` still answers."""
    good = {"code": {"S": "GOOD-CODE"}, "received_at": {"S": "2026-11-28T12:00:00+00:00"}}
    boto3.client("dynamodb").put_item(
        TableName=hooked.env["STATE_TABLE_NAME"],
        Item={
            "merchant_id": {"S": WEBHOOK_ITEM_KEY},
            "verification_code_0": {"M": {**good, "n": {"N": "3"}}},
            "verification_code_1": {"M": {"received_at": good["received_at"], "n": {"N": "4"}}},
            "verification_code_2": {"M": {**good, "received_at": {"S": "noon"}, "n": {"N": "5"}}},
            "verification_code_3": {"M": {**good, "n": {"S": "six"}}},
            "verification_code_4": {"S": "not a slot"},
            "verification_received_at": {"N": "1"},  # a legacy code's time, not a time
            "verification_code": {"S": "LEGACY"},
        },
    )
    assert [c.code for c in runtime.state_store().verification_codes()] == ["GOOD-CODE"]
    capsys.readouterr()
    assert main(["status"]) == 0
    assert "last Clover webhook verification code: GOOD-CODE" in capsys.readouterr().out


def test_forged_handshakes_cannot_hide_clovers_code(
    hooked: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clovers = "ce7643c1-83ea-4218-abe6-da876c9c7a0a"
    assert hooked.send_webhook({"verificationCode": clovers}, None).status == 200
    forged = [f"00000000-0000-4000-8000-{n:012d}" for n in range(3)]
    for code in forged:
        assert hooked.send_webhook({"verificationCode": code}, None).status == 200
    assert hooked.send_webhook({"verificationCode": forged[0]}, None).status == 200  # again

    kept = runtime.state_store().verification_codes()  # newest first, each code once
    assert [c.code for c in kept] == [forged[0], *reversed(forged[1:]), clovers]
    assert {c.source_ip for c in kept} == {"52.9.80.11"}  # the sample event's sourceIp
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"last Clover webhook verification code: {forged[0]}" in out
    assert f"earlier Clover webhook verification code: {clovers}" in out
    assert "from 52.9.80.11" in out

    # The list is bounded: a flood pushes the oldest out, never grows the item.
    flood = [f"11111111-0000-4000-8000-{n:012d}" for n in range(20)]
    for code in flood:
        hooked.send_webhook({"verificationCode": code}, None)
    kept = runtime.state_store().verification_codes()
    assert [c.code for c in kept] == flood[::-1][:5]  # the last five, newest first


@pytest.mark.parametrize(
    "source_ip",
    ["fe80::1%\x1b]0;pwned\x07", "fe80::1%" + "x" * 100_000, "fe80::1%eth0", "52.9.80.11\n"],
)
def test_a_source_address_api_gateway_never_sends_is_not_kept(
    hooked: LocalStack, source_ip: str
) -> None:
    """API Gateway's ``sourceIp`` is a plain address; an IPv6 scope id (``%...``: any text,
    escapes, 100 KB) is only another caller's, and is neither kept with the code nor logged
    (five such codes would pass DynamoDB's 400 KB item limit: every handshake a 503)."""
    code = "ce7643c1-83ea-4218-abe6-da876c9c7a0a"
    event = webhook_event(json.dumps({"verificationCode": code}).encode(), None)
    event["requestContext"]["http"]["sourceIp"] = source_ip
    mark = len(hooked.logs)

    answer = hooked.invoke("webhook", event)

    assert answer["statusCode"] == 200
    [kept] = runtime.state_store().verification_codes()
    assert (kept.code, kept.source_ip) == (code, None)
    assert not [line for line in hooked.logs[mark:] if "fe80" in line or "52.9.80.11\\n" in line]


class UpdatesOnly:
    """DynamoDB as the webhook's role allows it: ``dynamodb:UpdateItem`` and nothing else."""

    def __init__(self, real: aws_json.AwsJsonClient) -> None:
        self._real = real

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        assert operation == "UpdateItem", operation
        return self._real.call(operation, params)


def test_the_webhooks_writes_need_nothing_but_update_item(hooked: LocalStack) -> None:
    hints = DynamoStateStore(
        hooked.env["STATE_TABLE_NAME"], None, dynamodb=UpdatesOnly(aws_json.client("dynamodb"))
    )
    now = datetime.now(UTC)
    for n in range(7):
        code = f"22222222-0000-4000-8000-{n:012d}"
        hints.record_verification_code(VerificationCode(code, now, "52.9.80.11"), keep=5)
    assert hints.add_pending_deletes(MERCHANT, ["ITEM1"], limit=500)
    assert not hints.add_pending_deletes(MERCHANT, ["ITEM2", "ITEM3"], limit=2)
    assert hints.claim_webhook_poll(MERCHANT, now_ms=1, window_ms=10)
    kept = runtime.state_store().verification_codes()
    assert [c.code[-1] for c in kept] == ["6", "5", "4", "3", "2"]


# -- uninstall hints ----------------------------------------------------------------------


def test_an_uninstall_dated_in_the_future_counts_from_its_arrival(hooked: LocalStack) -> None:
    """An uninstall's ``ts`` is compared with when tokens were stored: a later ts than the
    delivery's arrival (Clover's clock ahead, a garbled or forged delivery: up to the year
    9999 reads as a time) counts as its arrival. Taken as sent, it outlived every token
    stored before that date: a reinstall's, an operator's, for good."""
    year_9999 = 253_402_300_799_999
    event = {"objectId": "A:DRKVJT2ZRRRSC", "type": "DELETE", "ts": year_9999}
    body = {"appId": "DRKVJT2ZRRRSC", "merchants": {MERCHANT: [event]}}
    answer = hooked.send_webhook(body, CLOVER_WEBHOOK_AUTH)
    assert (answer.status, answer.polls.records) == (202, 1)
    store = runtime.state_store()
    before = store.load_tokens(MERCHANT)
    assert before is not None
    assert (before.uninstalled, before.needs_reauth) == (True, True)  # the hint is taken

    store.write_token(MERCHANT, "tok-hostile")  # new tokens (a reinstall, an operator's)
    mark = len(hooked.logs)

    after = store.load_tokens(MERCHANT)
    assert after is not None
    assert (after.uninstalled, after.needs_reauth) == (False, False)
    summary = hooked.run_cycle()
    assert (summary.polls.records, summary.polls.failures) == (1, 0)
    assert store.load(MERCHANT).auth_state == "ok"
    assert [line for line in hooked.logs[mark:] if '"level":"ERROR"' in line] == []


# -- deletion floods ---------------------------------------------------------------------


def state_item_bytes(stack: LocalStack, merchant_id: str) -> int:
    """About what DynamoDB counts against its 400 KB: names and values."""
    item = boto3.client("dynamodb").get_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": merchant_id}}
    )["Item"]
    total = 0
    for name, value in item.items():
        [(kind, data)] = value.items()
        parts = data if kind in ("SS", "NS", "BS") else [data]
        total += len(name) + sum(len(p if isinstance(p, bytes) else str(p)) for p in parts)
    return total


def test_5000_deleted_ids_keep_the_state_bounded_and_the_next_poll_sweeps(
    hooked: LocalStack,
) -> None:
    assert hooked.clover is not None
    assert hooked.hipoink is not None
    clover, hipoink = hooked.clover, hooked.hipoink
    shown = [i for i in clover.items(MERCHANT) if not i.get("hidden") and i.get("sku")]
    gone = shown[:3]
    for item in gone:
        clover.delete_item(MERCHANT, item["id"])
    ids = [f"FLOOD{n:08d}" for n in range(5_000 - len(gone))] + [i["id"] for i in gone]
    sizes = []
    for start in range(0, len(ids), 250):  # 20 deliveries of 250 (each ~17 KB)
        events = [
            {"objectId": f"I:{item_id}", "type": "DELETE", "ts": int(time.time() * 1000)}
            for item_id in ids[start : start + 250]
        ]
        body = {"appId": "DRKVJT2ZRRRSC", "merchants": {MERCHANT: events}}
        answer = hooked.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False)
        assert answer.status == 202
        sizes.append(state_item_bytes(hooked, MERCHANT))

    state = runtime.state_store().load(MERCHANT)
    assert state.pending_deletes == frozenset(ids[: 2 * 250])  # the first two fit, exactly
    assert len(state.pending_deletes) == 500  # MAX_PENDING_DELETES, written out
    assert state.sweep_requested
    assert max(sizes) < 50_000  # DynamoDB's limit is 400 KB
    assert sizes[2:] == [sizes[2]] * 18  # full: the item no longer grows
    assert metric_sums(hooked.logs)["WebhookSweepsRequested"] == 18
    assert errors_and_tracebacks(hooked) == []

    polls = hooked.drain("PollQueue", "poller")
    hooked.drain("LabelQueue", "hipoink_sender")

    assert (polls.records, polls.failures) == (1, 0)
    [line] = [
        json.loads(entry)
        for entry in hooked.logs
        if '"message":"poll finished"' in entry and '"reason":"webhook"' in entry
    ]
    assert line["sweep"] == "removed 3 of 3 missing"
    labels = hipoink.labels(STORE)
    assert all(item["sku"] not in labels for item in gone)
    assert not runtime.state_store().load(MERCHANT).sweep_requested

    # The request is answered: the next poll is an ordinary one again.
    runtime.poll_queue().send([PollRequest(merchant_id=MERCHANT, reason="manual")])
    mark = len(hooked.logs)
    hooked.drain("PollQueue", "poller")
    [quiet] = [json.loads(e) for e in hooked.logs[mark:] if '"message":"polls without' in e]
    assert quiet["merchant_ids"] == [MERCHANT]  # no sweep, nothing found: one quiet poll
    assert not [e for e in hooked.logs[mark:] if '"message":"poll finished"' in e]


def test_a_sweep_a_webhook_asks_for_is_made_by_a_first_read_too(hooked: LocalStack) -> None:
    """A state item without a cursor or any history (lost by an import, a hand edit) while
    Postgres holds the merchant's rows: the next poll is a first read. A delivery of more
    deletions than the state may hold asks for a sweep instead, and that first read makes
    it (it lists the whole catalog anyway): the deleted items' labels go. (A first read
    used to never sweep and to record the request as done: the labels stayed until the
    next scheduled sweep, hours later.)"""
    assert hooked.clover is not None
    assert hooked.hipoink is not None
    clover, hipoink = hooked.clover, hooked.hipoink
    gone = [i for i in clover.items(MERCHANT) if not i.get("hidden") and i.get("sku")][:3]
    for item in gone:
        clover.delete_item(MERCHANT, item["id"])
    store = runtime.state_store()
    store._dynamodb.call(  # type: ignore[attr-defined]
        "UpdateItem",
        {
            "TableName": hooked.env["STATE_TABLE_NAME"],
            "Key": {"merchant_id": {"S": MERCHANT}},
            "UpdateExpression": "REMOVE high_water_ms, poll_count, last_success_at, last_sweep_ms",
        },
    )
    ids = [f"FLOOD{n:08d}" for n in range(498)] + [i["id"] for i in gone]  # one too many
    events = [{"objectId": f"I:{i}", "type": "DELETE", "ts": int(time.time() * 1000)} for i in ids]
    body = {"appId": "DRKVJT2ZRRRSC", "merchants": {MERCHANT: events}}
    assert hooked.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False).status == 202
    state = store.load(MERCHANT)
    assert (state.high_water_ms, state.poll_count, state.last_success_at) == (None, 0, None)
    assert state.pending_deletes == frozenset()
    assert state.sweep_requested

    mark = len(hooked.logs)
    polls = hooked.drain("PollQueue", "poller")
    hooked.drain("LabelQueue", "hipoink_sender")
    assert (polls.records, polls.failures) == (1, 0)
    [line] = [json.loads(e) for e in hooked.logs[mark:] if '"message":"poll finished"' in e]
    assert line["sweep"] == "removed 3 of 3 missing"
    assert not {str(item["sku"]) for item in gone} & hipoink.labels(STORE).keys()
    after = store.load(MERCHANT)
    assert after.high_water_ms is not None
    assert not after.sweep_requested


@pytest.mark.parametrize("edited", [{"S": "ITEM1"}, {"N": "5"}, {"L": [{"S": "ITEM1"}]}])
def test_pending_deletes_edited_by_hand_never_fail_a_webhook_and_the_next_poll_sweeps(
    hooked: LocalStack, edited: dict[str, Any]
) -> None:
    """``pending_deletes`` of another type than a string set (an operator's console edit):
    a delete notification still answers 202 (DynamoDB refuses to ``ADD`` a set to it, which
    failed every delivery with a 5xx), asking for a sweep instead; the next poll sweeps, so
    the deleted item's label goes, and writes the attribute anew."""
    assert hooked.clover is not None
    assert hooked.hipoink is not None
    clover, hipoink = hooked.clover, hooked.hipoink
    [gone] = [i for i in clover.items(MERCHANT) if not i.get("hidden") and i.get("sku")][:1]
    clover.delete_item(MERCHANT, gone["id"])
    store = runtime.state_store()
    store._dynamodb.call(  # type: ignore[attr-defined]
        "UpdateItem",
        {
            "TableName": hooked.env["STATE_TABLE_NAME"],
            "Key": {"merchant_id": {"S": MERCHANT}},
            "UpdateExpression": "SET pending_deletes = :odd",
            "ExpressionAttributeValues": {":odd": edited},
        },
    )
    event = {"objectId": f"I:{gone['id']}", "type": "DELETE", "ts": int(time.time() * 1000)}
    body = {"appId": "DRKVJT2ZRRRSC", "merchants": {MERCHANT: [event]}}
    answer = hooked.send_webhook(body, CLOVER_WEBHOOK_AUTH, deliver=False)
    assert answer.status == 202
    assert errors_and_tracebacks(hooked) == []
    state = store.load(MERCHANT)
    assert state.unreadable == ("pending_deletes",)
    assert state.sweep_requested

    polls = hooked.drain("PollQueue", "poller")
    hooked.drain("LabelQueue", "hipoink_sender")
    assert (polls.records, polls.failures) == (1, 0)
    assert gone["sku"] not in hipoink.labels(STORE)
    repaired = store.load(MERCHANT)
    assert repaired.unreadable == ()
    assert repaired.pending_deletes == frozenset()
    assert not repaired.sweep_requested
    # and the next deletion is noted as ever
    assert store.add_pending_deletes(MERCHANT, ["ITEM2"], limit=500)
    assert store.load(MERCHANT).pending_deletes == frozenset({"ITEM2"})


def test_a_sweep_requested_during_a_poll_is_not_lost(hooked: LocalStack) -> None:
    """The poll records the request token it read; one written meanwhile stays pending."""
    store = runtime.state_store()
    assert not store.add_pending_deletes(MERCHANT, ["A", "B"], limit=1)
    first = store.load(MERCHANT)
    assert first.sweep_requested
    assert not store.add_pending_deletes(MERCHANT, ["C", "D"], limit=1)  # during the poll
    first.sweep_request_done = first.sweep_request  # what a sweeping poll saves
    store.save(first)
    assert store.load(MERCHANT).sweep_requested  # the second request is still open


# -- the alarm ---------------------------------------------------------------------------


def test_a_5xx_answer_raises_an_alarm() -> None:
    """Today's 503s (the function's own answer to an unexpected error) and crashes are both
    5xx at API Gateway: the alarm watches the webhook API's 5xx count."""
    alarm = resource(load_template(), "WebhookServerErrorsAlarm")["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/ApiGateway", "5xx")
    assert alarm["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": "WebhookApi"}}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
