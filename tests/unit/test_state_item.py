"""The state item's codec: a merchant's state and sealed tokens to and from DynamoDB's
attribute values, as the state table holds them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from esl_sync.credentials import SealedTokens
from esl_sync.merchant_ports import FenceCount
from esl_sync.records import Fence, MerchantState, VerificationCode
from esl_sync.store.state_item import (
    MAX_COUNT,
    POLL_FIELDS,
    STATE_FIELDS,
    fence_count,
    fence_of,
    from_attr,
    lease_taking,
    sealed_of,
    state_of,
    to_attr,
    until_values,
    verification_codes_of,
)

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "attr"),
    [
        (None, {"NULL": True}),
        (True, {"BOOL": True}),
        (False, {"BOOL": False}),
        (0, {"N": "0"}),
        (1_800_000_000_000, {"N": "1800000000000"}),
        (-3, {"N": "-3"}),
        ("needs_reauth", {"S": "needs_reauth"}),
        ("", {"S": ""}),
        (AT, {"S": "2026-03-01T12:30:05.123456+00:00"}),
    ],
)
def test_each_value_has_its_attribute_type(value: object, attr: dict[str, Any]) -> None:
    assert to_attr(value) == attr


@pytest.mark.parametrize(
    ("name", "attr", "value"),
    [
        ("high_water_ms", {"NULL": True}, None),
        ("high_water_ms", {"N": "1800000000000"}, 1_800_000_000_000),
        ("poll_count", {"N": "0"}, 0),
        ("sweep_request", {"BOOL": False}, False),
        ("sweep_request", {"BOOL": True}, True),
        ("last_failure_class", {"S": "CloverUnavailable"}, "CloverUnavailable"),
        ("last_success_at", {"S": "2026-03-01T12:30:05.123456+00:00"}, AT),
        ("last_failure_message", {"S": "2026-03-01T12:30:05+00:00"}, "2026-03-01T12:30:05+00:00"),
    ],
)
def test_an_attribute_reads_back_as_its_value(
    name: str, attr: dict[str, Any], value: object
) -> None:
    """A time only where the name says it is one (``…_at``): a message that looks like a
    time stays text."""
    assert from_attr(name, attr) == value
    assert type(from_attr(name, attr)) is type(value)


def test_a_merchant_without_an_item_has_the_first_state() -> None:
    assert state_of("M1", None) == MerchantState(merchant_id="M1")
    assert state_of("M1", {}) == MerchantState(merchant_id="M1")


def test_every_state_field_reads_back_from_what_is_written() -> None:
    state = MerchantState(
        merchant_id="M1",
        high_water_ms=1_800_000_000_000,
        poll_count=41,
        last_sweep_ms=1_799_000_000_000,
        last_success_at=AT,
        last_failure_at=datetime(2026, 2, 28, tzinfo=UTC),
        last_failure_class="CloverUnavailable",
        last_failure_message="503 from Clover",
        consecutive_failures=2,
        auth_state="needs_reauth",
        sweep_request="req-1",
        sweep_request_done="req-0",
        sweep_after="I-0_9z",
        sweep_for="req-0",
    )
    item = {name: to_attr(getattr(state, name)) for name in STATE_FIELDS}
    item["version"] = {"N": "7"}
    item["pending_deletes"] = {"SS": ["I2", "I1"]}
    assert state_of("M1", item) == MerchantState(
        **{**state.__dict__, "version": 7, "pending_deletes": frozenset({"I1", "I2"})}
    )


def test_an_item_of_another_writer_keeps_the_defaults_of_what_it_lacks() -> None:
    """A webhook's item holds only its sweep request; a token write only the tokens."""
    state = state_of("M1", {"sweep_request": {"S": "req-9"}, "token_ciphertext": {"B": b"x"}})
    assert state == MerchantState(merchant_id="M1", sweep_request="req-9")
    assert state.version == 0
    assert state.pending_deletes == frozenset()


def test_the_fields_a_poll_writes_leave_auth_and_the_webhook_s_request_alone() -> None:
    assert "auth_state" not in POLL_FIELDS
    assert "sweep_request" not in POLL_FIELDS
    assert set(STATE_FIELDS) == {*POLL_FIELDS, "auth_state", "sweep_request"}
    assert "sweep_request_done" in POLL_FIELDS
    assert {"sweep_after", "sweep_for"} <= set(POLL_FIELDS)
    assert "high_water_ms" in POLL_FIELDS


def test_sealed_tokens_are_read_with_their_generation_and_reauth_flag() -> None:
    item = {
        "token_ciphertext": {"B": bytearray(b"\x00sealed")},
        "token_generation": {"N": "12"},
        "auth_state": {"S": "needs_reauth"},
    }
    sealed = sealed_of(item)
    assert sealed == SealedTokens(ciphertext=b"\x00sealed", generation=12, needs_reauth=True)
    assert type(sealed.ciphertext) is bytes


def test_tokens_without_a_generation_or_auth_state_are_generation_zero_and_usable() -> None:
    sealed = sealed_of({"token_ciphertext": {"B": b"c"}, "auth_state": {"S": "ok"}})
    assert sealed == SealedTokens(ciphertext=b"c", generation=0, needs_reauth=False)
    assert sealed_of({"token_ciphertext": {"B": b"c"}}) == SealedTokens(b"c", 0, False)


@pytest.mark.parametrize(
    "item", [None, {}, {"high_water_ms": {"N": "5"}, "auth_state": {"S": "ok"}}]
)
def test_an_item_without_tokens_has_none(item: dict[str, Any] | None) -> None:
    assert sealed_of(item) is None


@pytest.mark.parametrize(
    ("times", "uninstalled"),
    [
        ({}, False),
        ({"authorized_ms": {"N": "100"}}, False),
        ({"app_uninstalled_ms": {"N": "100"}, "authorized_ms": {"N": "100"}}, False),
        ({"app_uninstalled_ms": {"N": "100"}, "authorized_ms": {"N": "101"}}, False),
        ({"app_uninstalled_ms": {"N": "101"}, "authorized_ms": {"N": "100"}}, True),
        ({"app_uninstalled_ms": {"N": "0"}}, False),
        ({"app_uninstalled_ms": {"N": "1"}}, True),
    ],
)
def test_tokens_are_uninstalled_only_when_clover_said_so_after_they_were_authorized(
    times: dict[str, Any], uninstalled: bool
) -> None:
    """A reinstall authorizes anew, so an older uninstall no longer counts."""
    sealed = sealed_of({"token_ciphertext": {"B": b"c"}, **times})
    assert sealed is not None
    assert sealed.uninstalled is uninstalled


# -- an item edited by hand or corrupted: each attribute read by its own type -----------------

UNREADABLE: list[tuple[str, dict[str, Any]]] = [
    ("last_success_at", {"S": "yesterday"}),
    ("last_success_at", {"S": "99999-01-01T00:00:00+00:00"}),
    ("last_failure_at", {"N": "1800000000"}),
    ("high_water_ms", {"S": "1800000000000"}),
    ("high_water_ms", {"N": "1.5"}),
    ("high_water_ms", {"N": "1" + "0" * 37}),  # past the year 9999: no time at all
    ("high_water_ms", {"N": "-1"}),
    ("last_sweep_ms", {"BOOL": True}),
    ("poll_count", {"BOOL": True}),  # a flag is not a count
    ("poll_count", {"N": "-3"}),
    ("consecutive_failures", {"M": {}}),
    ("last_failure_message", {"N": "7"}),
    ("last_failure_class", {"L": []}),
    ("auth_state", {"BOOL": False}),
    ("sweep_request_done", {"SS": ["a"]}),
    ("sweep_after", {"N": "5"}),
    ("sweep_after", {"S": "I1 "}),  # not an item id: the sweep starts over
    ("sweep_for", {"BOOL": True}),
    ("version", {"S": "7"}),
    ("version", {"N": "2.5"}),
    ("pending_deletes", {"L": [{"S": "I1"}]}),
    ("pending_deletes", {"S": "I1"}),
]


@pytest.mark.parametrize(("name", "attr"), UNREADABLE)
def test_an_attribute_of_the_wrong_type_or_range_reads_as_its_default_and_is_named(
    name: str, attr: dict[str, Any]
) -> None:
    """One bad attribute never makes the whole item unreadable (it stopped the dispatcher's
    fleet measurement and ``status`` for every merchant, and every poll of its own): it
    reads as the first state's value, which repeats work and never skips it (no cursor: a
    full read), and its name is kept for the log line."""
    good = {"poll_count": {"N": "4"}, "last_failure_class": {"S": "CloverUnavailable"}}
    state = state_of("M1", {**good, name: attr})
    first = MerchantState(merchant_id="M1")
    assert getattr(state, name) == getattr(first, name)
    assert state.unreadable == (name,)
    if name != "poll_count":
        assert state.poll_count == 4
    if name != "last_failure_class":
        assert state.last_failure_class == "CloverUnavailable"


def test_a_time_written_without_an_offset_is_utc() -> None:
    """A hand-written time without an offset could not be compared with the aware ones."""
    state = state_of("M1", {"last_success_at": {"S": "2026-03-01T12:30:05.123456"}})
    assert state.last_success_at == AT
    assert state.unreadable == ()


def test_an_unreadable_sweep_request_still_asks_for_one_sweep() -> None:
    """A request nobody can read is honoured once (a sweep repeats work, never skips it):
    the sweep records it as done, and the same unreadable request then asks for nothing."""
    state = state_of("M1", {"sweep_request": {"N": "5"}})
    assert state.unreadable == ("sweep_request",)
    assert state.sweep_requested
    done = state_of(
        "M1", {"sweep_request": {"N": "5"}, "sweep_request_done": to_attr(state.sweep_request)}
    )
    assert not done.sweep_requested


def test_a_long_stored_message_is_cut_to_what_a_poll_writes() -> None:
    state = state_of("M1", {"last_failure_message": {"S": "x" * 400_000}})
    assert state.last_failure_message == "x" * 500


YEAR_9999_LAST_MS = 253_402_300_799_999
READABLE_AT_THE_BOUNDS = [
    ("high_water_ms", {"N": "0"}, 0),
    ("high_water_ms", {"N": str(YEAR_9999_LAST_MS)}, YEAR_9999_LAST_MS),
    ("high_water_ms", {"NULL": True}, None),
    ("last_sweep_ms", {"N": "0"}, 0),
    ("last_sweep_ms", {"N": str(YEAR_9999_LAST_MS)}, YEAR_9999_LAST_MS),
    ("poll_count", {"N": "0"}, 0),
    ("poll_count", {"N": str(2**63 - 1)}, 2**63 - 1),
    ("consecutive_failures", {"N": "0"}, 0),
    ("consecutive_failures", {"N": str(2**63 - 1)}, 2**63 - 1),
    ("version", {"N": "0"}, 0),
    ("last_success_at", {"NULL": True}, None),
    ("sweep_request", {"NULL": True}, None),
]
UNREADABLE_PAST_THE_BOUNDS = [
    ("high_water_ms", {"N": str(YEAR_9999_LAST_MS + 1)}),
    ("last_sweep_ms", {"N": str(YEAR_9999_LAST_MS + 1)}),
    ("poll_count", {"N": str(2**63)}),
    ("consecutive_failures", {"N": str(2**63)}),
    ("version", {"N": str(2**63)}),
    ("high_water_ms", {"NULL": False}),  # not a null: nothing a writer writes
    ("last_success_at", {"NULL": "true"}),
    ("high_water_ms", ["N", "5"]),  # not an attribute at all
    ("high_water_ms", {"N": "9" * 5000}),  # past Python's int-from-text limit: no crash
]


@pytest.mark.parametrize(("name", "attr", "value"), READABLE_AT_THE_BOUNDS)
def test_a_value_at_its_bound_is_read_as_it_is(name: str, attr: Any, value: object) -> None:
    state = state_of("M1", {name: attr})
    assert getattr(state, name) == value
    assert state.unreadable == ()


@pytest.mark.parametrize(("name", "attr"), UNREADABLE_PAST_THE_BOUNDS)
def test_a_value_just_past_its_bound_is_unreadable(name: str, attr: Any) -> None:
    state = state_of("M1", {name: attr})
    assert getattr(state, name) == getattr(MerchantState(merchant_id="M1"), name)
    assert state.unreadable == (name,)


def _slot(n: int, code: str, at: datetime, source_ip: str | None = None) -> dict[str, Any]:
    """A kept webhook verification code as ``record_verification_code`` writes its slot."""
    return {
        "M": {
            "n": {"N": str(n)},
            "code": {"S": code},
            "received_at": {"S": at.isoformat()},
            "source_ip": {"S": source_ip} if source_ip else {"NULL": True},
        }
    }


def test_kept_verification_codes_read_newest_first_each_once_the_legacy_one_last() -> None:
    """What ``esl-sync status`` shows an operator registering the webhook: the codes by the
    order they came (the counter ``n``, not the slot's name nor the item's order), a code
    Clover sent twice once, as it came last, and a code kept before slots existed last.
    The attribute names are written out: they are what the table already holds."""
    later = AT.replace(minute=40)
    no_address = _slot(5, "code-d", AT)
    del no_address["M"]["source_ip"]  # as slots were written before addresses were kept
    item = {
        "pk": {"S": "#webhook"},
        "codes_received": {"N": "7"},
        "verification_code_1": _slot(4, "code-a", AT, "203.0.113.9"),
        "verification_code_0": _slot(7, "code-b", later),
        "verification_code_2": _slot(6, "code-a", later, "198.51.100.1"),
        "verification_code_3": no_address,
        "verification_code": {"S": "code-old"},
        "verification_received_at": {"S": AT.replace(hour=1).isoformat()},
    }

    assert verification_codes_of(item) == [
        VerificationCode("code-b", later, None),
        VerificationCode("code-a", later, "198.51.100.1"),
        VerificationCode("code-d", AT, None),
        VerificationCode("code-old", AT.replace(hour=1), None),
    ]
    assert verification_codes_of({}) == []


@pytest.mark.parametrize(
    "corrupt",
    [
        {"S": "not a map"},
        {"M": {}},
        {"M": {**_slot(9, "x", AT)["M"], "n": {"S": "nine"}}},
        {"M": {**_slot(9, "x", AT)["M"], "n": {"N": "9.5"}}},
        {"M": {**_slot(9, "x", AT)["M"], "received_at": {"S": "yesterday"}}},
        {"M": {**_slot(9, "x", AT)["M"], "received_at": {"N": "1"}}},
        {"M": {k: v for k, v in _slot(9, "x", AT)["M"].items() if k != "code"}},
        {"M": {**_slot(9, "x", AT)["M"], "source_ip": "203.0.113.9"}},
        "a string",
    ],
)
def test_a_kept_code_not_as_written_is_left_out_and_the_others_still_shown(corrupt: Any) -> None:
    """A slot edited by hand or corrupted is no code; it never hides the others (it comes
    first here) nor fails ``esl-sync status`` for every merchant. A legacy code with an
    unreadable time is left out the same way."""
    item = {
        "verification_code_0": corrupt,
        "verification_code_1": _slot(3, "code-c", AT),
        "verification_code": {"S": "code-old"},
        "verification_received_at": {"S": "not a time"},
    }

    assert verification_codes_of(item) == [VerificationCode("code-c", AT, None)]


EPOCH = "0f" * 16  # a lease write's epoch: uuid4().hex
LONGEST_EPOCH = "e" * 64  # read as written; one character more is an edit by hand


def _fenced(epoch: Any, generation: Any) -> dict[str, Any]:
    """A state item as a lease write returns it, its fence's two attributes as given."""
    return {"merchant_id": {"S": "M1"}, "lease_epoch": epoch, "lease_generation": generation}


@pytest.mark.parametrize(
    ("epoch", "generation"),
    [(EPOCH, 1), (EPOCH, 7), (LONGEST_EPOCH, MAX_COUNT), ("e", 2)],
)
def test_a_lease_writes_fence_is_read_as_it_is(epoch: str, generation: int) -> None:
    item = _fenced({"S": epoch}, {"N": str(generation)})
    assert fence_of(item) == Fence(epoch, generation)


@pytest.mark.parametrize(
    "item",
    [
        {"merchant_id": {"S": "M1"}},  # leased before fences: no fence yet
        {"lease_epoch": {"S": EPOCH}},
        {"lease_generation": {"N": "3"}},
        _fenced({"S": EPOCH}, {"N": "0"}),  # the first lease counts 1
        _fenced({"S": EPOCH}, {"N": str(MAX_COUNT + 1)}),
        _fenced({"S": EPOCH}, {"N": "1.5"}),
        _fenced({"S": EPOCH}, {"N": "-1"}),
        _fenced({"S": EPOCH}, {"N": "1E+125"}),
        _fenced({"S": EPOCH}, {"N": "1e3"}),  # 1000, but not as the lease write leaves it
        _fenced({"S": EPOCH}, {"N": "9.9999999999999999999999999999999999999E+125"}),
        _fenced({"S": EPOCH}, {"N": "1.000000000000000000000000000E+126"}),  # moto's sum
        _fenced({"S": EPOCH}, {"N": "9" * 41}),
        _fenced({"S": EPOCH}, {"S": "7"}),
        _fenced({"S": EPOCH}, "7"),
        _fenced({"S": ""}, {"N": "3"}),
        _fenced({"S": LONGEST_EPOCH + "e"}, {"N": "3"}),
        _fenced({"S": "epoch\x00"}, {"N": "3"}),
        _fenced({"S": "epoch\n"}, {"N": "3"}),
        _fenced({"N": "3"}, {"N": "3"}),
        _fenced({"S": 3}, {"N": "3"}),
        _fenced(EPOCH, {"N": "3"}),
        _fenced(None, {"N": "3"}),
    ],
)
def test_a_fence_edited_by_hand_is_none_so_the_poll_writes_a_new_epoch(
    item: dict[str, Any],
) -> None:
    assert fence_of(item) is None


# What ``esl-sync fence catch-up`` reads when its conditional write is refused: the item the
# write found (``ReturnValuesOnConditionCheckFailure: ALL_OLD``), as DynamoDB returns it. The
# write raises ``lease_generation`` to what Postgres saw (here 6) when the item is in that
# epoch and counts fewer or none, so a refusal means: no item, another epoch, or a count of
# that epoch that is at least 6 or not a number at all.
SEEN = Fence(EPOCH, 6)


def _found(generation: Any, epoch: Any = None) -> dict[str, Any]:
    """The state item the refused write found: a lease's attributes, a cursor, the fence."""
    return {
        "merchant_id": {"S": "M1"},
        "lease_owner": {"S": "poll-1"},
        "lease_until_ms": {"N": "1800000330000"},
        "high_water_ms": {"N": "1800000000000"},
        "version": {"N": "12"},
        "lease_epoch": {"S": EPOCH} if epoch is None else epoch,
        "lease_generation": generation,
    }


@pytest.mark.parametrize("item", [None, {}])
def test_a_merchant_without_a_state_item_has_no_count_to_raise(
    item: dict[str, Any] | None,
) -> None:
    """The backup is older than the merchant: the write creates nothing (its tokens are
    gone with the item), and the line says so rather than "in step"."""
    assert fence_count(item, SEEN) == FenceCount("no state item")


@pytest.mark.parametrize(
    "item",
    [
        _found({"N": "6"}, epoch={"S": "another-epoch"}),  # removed and added back
        _found({"N": "2"}, epoch={"S": "0F" * 16}),  # DynamoDB compares case and all
        _found({"N": "6"}, epoch={"S": EPOCH + "\x00"}),
        _found({"N": "6"}, epoch={"S": EPOCH[:-1]}),
        _found({"N": "6"}, epoch={"S": ""}),
        _found({"N": "6"}, epoch={"N": "6"}),  # edited to another type: not this epoch
        _found({"N": "6"}, epoch={"SS": [EPOCH]}),
        _found({"N": "6"}, epoch={"NULL": True}),
        _found({"N": "6"}, epoch=EPOCH),  # not an attribute value at all
        _found({"N": "6"}, epoch={"S": EPOCH, "N": "6"}),
        {"merchant_id": {"S": "M1"}, "lease_generation": {"N": "6"}},  # leased before fences
        {"merchant_id": {"S": "M1"}},  # never leased: tokens stored, no poll yet
        _found({"S": "7"}, epoch={"S": "another-epoch"}),  # the epoch is what matters first
        _found({"BOOL": True}, epoch={"S": "another-epoch"}),
    ],
)
def test_a_state_item_of_another_epoch_or_none_needs_no_raise(item: dict[str, Any]) -> None:
    """Postgres accepts a new epoch whatever its generation, so the next poll writes: the
    count of another epoch is neither raised nor read (nothing about it is shown)."""
    assert fence_count(item, SEEN) == FenceCount("another epoch")


@pytest.mark.parametrize(
    ("generation", "stored"),
    [
        ({"N": "6"}, "6"),  # caught up already: running the command twice writes nothing
        ({"N": "7"}, "7"),  # a poll took a lease since
        ({"N": str(MAX_COUNT)}, str(MAX_COUNT)),
        ({"N": "6.5"}, "6.5"),  # a fraction edited by hand: shown as stored, not rounded
        ({"N": "1E+125"}, "1E+125"),  # DynamoDB's largest numbers, as it returns them
        (
            {"N": "9.9999999999999999999999999999999999999E+125"},
            "9.9999999999999999999999999999999999999E+125",
        ),
        ({"N": "9" * 38}, "9" * 38),
    ],
)
def test_a_count_of_the_epoch_at_least_postgres_s_is_in_step_and_shown_as_stored(
    generation: dict[str, Any], stored: str
) -> None:
    """``MID: in step (lease generation 7, Postgres saw 6)``: the number exactly as DynamoDB
    holds it (never read as a number: one edited past any count is still named)."""
    assert fence_count(_found(generation), SEEN) == FenceCount("in step", stored)


@pytest.mark.parametrize(
    ("generation", "kind"),
    [
        ({"S": "7"}, "S"),  # a count typed as text by hand
        ({"S": "7\x00" + "x" * 400_000}, "S"),  # its text is never shown: only its type
        ({"S": ""}, "S"),
        ({"BOOL": True}, "BOOL"),
        ({"BOOL": False}, "BOOL"),
        ({"NULL": True}, "NULL"),
        ({"B": "Nw=="}, "B"),
        ({"M": {"N": {"N": "7"}}}, "M"),
        ({"L": [{"N": "7"}]}, "L"),
        ({"SS": ["7"]}, "SS"),
        ({"NS": ["7", "8"]}, "NS"),
        ({"BS": ["Nw=="]}, "BS"),
    ],
)
def test_a_count_of_another_dynamodb_type_is_named_by_its_type(
    generation: dict[str, Any], kind: str
) -> None:
    """``lease generation is not a number (stored as S)``: DynamoDB cannot compare it with
    a number, so the write leaves it and the next lease starts a new epoch."""
    assert fence_count(_found(generation), SEEN) == FenceCount("not a count", kind)


@pytest.mark.parametrize(
    "generation",
    [
        {"X": "7"},  # no DynamoDB type
        {"n": "7"},  # nor is a type's name in another case
        {"N": "7", "S": "7"},  # two types: DynamoDB never returns one so
        {"S": "7", "N": "7"},
        {},
        "7",  # not an attribute value at all
        ["N", "7"],
        7,
        None,
    ],
)
def test_a_count_that_is_no_dynamodb_value_is_not_a_count_of_an_unknown_type(
    generation: Any,
) -> None:
    """Never a traceback nor its content in the line: ``stored as ?``."""
    assert fence_count(_found(generation), SEEN) == FenceCount("not a count", "?")


def _placeholders(*expressions: str) -> tuple[set[str], set[str]]:
    text = " ".join(expressions)
    return set(re.findall(r"#\w+", text)), set(re.findall(r":\w+", text))


def test_the_lease_write_takes_a_free_or_expired_lease_and_counts_its_generation() -> None:
    """What DynamoDB is asked (tests/integration/test_poll_fence.py runs it against moto):
    DynamoDB refuses a name or value the expressions do not use, so each is used."""
    update, condition, values, names = lease_taking("poll-1", 1_000, 250)
    assert update == (
        "SET #owner = :owner, #until = :until, #epoch = if_not_exists(#epoch, :epoch) "
        "ADD #count :one"
    )
    assert condition == (
        "attribute_not_exists(#until) OR NOT attribute_type(#until, :number) OR #until <= :now"
        " OR #until > :beyond"
    )
    assert {k: v for k, v in values.items() if k != ":epoch"} == {
        ":owner": {"S": "poll-1"},
        ":until": {"N": "1250"},
        ":now": {"N": "1000"},
        ":beyond": {"N": "391000"},  # the longest lease, 330 s, and a minute of clock skew
        ":one": {"N": "1"},
        ":number": {"S": "N"},
    }
    assert names == {
        "#owner": "lease_owner",
        "#until": "lease_until_ms",
        "#epoch": "lease_epoch",
        "#count": "lease_generation",
    }
    assert _placeholders(update, condition) == (set(names), set(values))
    epoch = values[":epoch"]["S"]
    assert re.fullmatch(r"[0-9a-f]{32}", epoch)
    assert fence_of(_fenced({"S": epoch}, {"N": "1"})) == Fence(epoch, 1)


def test_a_lease_write_after_a_fence_edited_by_hand_starts_a_new_epoch_at_one() -> None:
    """The owner may hold the lease already: it took it with the unreadable fence."""
    update, condition, values, names = lease_taking("poll-1", 1_000, 250, new_epoch=True)
    assert update == "SET #owner = :owner, #until = :until, #epoch = :epoch, #count = :one"
    assert condition == (
        "attribute_not_exists(#until) OR NOT attribute_type(#until, :number) OR #until <= :now"
        " OR #until > :beyond OR #owner = :owner"
    )
    assert _placeholders(update, condition) == (set(names), set(values))
    assert values[":one"] == {"N": "1"}
    other = lease_taking("poll-1", 1_000, 250, new_epoch=True)[2]
    assert other[":epoch"] != values[":epoch"]


@pytest.mark.parametrize(
    ("name", "longest_ms"),
    [
        ("lease_until_ms", 330_000),  # POLL_LEASE_MS
        ("refresh_lock_until_ms", 2_700_000),  # 3 x CLOVER_TIMEOUT_SECONDS, at most 900 s
        ("webhook_poll_until_ms", 3_600_000),  # CLOVER_WEBHOOK_POLL_WINDOW_SECONDS <= 3600
    ],
)
def test_a_time_past_the_longest_hold_and_a_minute_is_not_ours(name: str, longest_ms: int) -> None:
    """``:beyond``, past which a lease, lock or window time counts as expired: no hold the
    code and the settings allow ends there, even written by a host whose clock is a minute
    ahead. A longer hold would be taken over at once: refused before it is written."""
    assert until_values(name, 1_000, longest_ms) == {
        ":until": {"N": str(1_000 + longest_ms)},
        ":now": {"N": "1000"},
        ":beyond": {"N": str(1_000 + longest_ms + 60_000)},
        ":number": {"S": "N"},
    }
    assert until_values(name, 5, 0)[":until"] == {"N": "5"}
    for hold_ms in (longest_ms + 1, -1):
        with pytest.raises(ValueError, match=f"{name}: a hold of {hold_ms} ms"):
            until_values(name, 1_000, hold_ms)


def test_the_longest_holds_are_those_the_code_and_the_settings_take() -> None:
    """Each is taken by its store method with the longest the settings accept."""
    from esl_sync.settings import ConfigurationError, Settings
    from esl_sync.sync.lease import POLL_LEASE_MS

    # A poll holds its merchant 330 s (the poller's 300 s timeout and half a minute), and a
    # lease time over 390 s ahead (that and a minute of another host's clock) is taken over.
    lease = until_values("lease_until_ms", 0, POLL_LEASE_MS)
    assert (lease[":until"], lease[":beyond"]) == ({"N": "330000"}, {"N": "390000"})
    longest = Settings.from_values(
        {"clover_timeout_seconds": "900", "clover_webhook_poll_window_seconds": "3600"}
    )
    assert longest.refresh_lock_ms == 2_700_000
    until_values("refresh_lock_until_ms", 0, longest.refresh_lock_ms)
    until_values("webhook_poll_until_ms", 0, longest.clover_webhook_poll_window_seconds * 1000)
    beyond = {"clover_timeout_seconds": "900.001", "clover_webhook_poll_window_seconds": "3601"}
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_values(beyond)
    assert "CLOVER_TIMEOUT_SECONDS" in str(refused.value)
    assert "CLOVER_WEBHOOK_POLL_WINDOW_SECONDS" in str(refused.value)
