"""A merchant's state item in DynamoDB, to and from :class:`~esl_sync.records.MerchantState`
(and its sealed tokens), and the webhook's item to its kept verification codes: the
attribute codec of :mod:`esl_sync.store.dynamo`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from esl_sync.credentials import SealedTokens
from esl_sync.merchant_ports import FenceCount
from esl_sync.records import Fence, MerchantState, VerificationCode
from esl_sync.settings import (
    CLOCK_SKEW_MS,
    POLL_LEASE_MS,
    REFRESH_LOCK_TIMEOUTS,
    TIMEOUT_MAX_SECONDS,
    WEBHOOK_POLL_WINDOW_MAX_SECONDS,
)

# What ``save`` writes.
POLL_FIELDS = (
    "high_water_ms",
    "poll_count",
    "last_sweep_ms",
    "last_success_at",
    "last_failure_at",
    "last_failure_class",
    "last_failure_message",
    "consecutive_failures",
    "sweep_request_done",
    "sweep_after",
    "sweep_for",
)
# ``auth_state`` is written only with the tokens, ``sweep_request`` only by the webhook.
STATE_FIELDS = (*POLL_FIELDS, "auth_state", "sweep_request")
KEPT_UNREADABLE = frozenset({"sweep_after", "sweep_for"})
"""Attributes ``save`` leaves as stored while they are in ``unreadable``: an unreadable one
asks for a sweep from the first id (``esl_sync.sync.sweep.UNDER_WAY``), and a save that
did not sweep (a failed poll's, ``resync``'s) must not write it away as none under way.
What replaces them (``record_sweep``, ``ask_for_sweep``) drops them from ``unreadable``."""


def saved_fields(state: MerchantState) -> tuple[str, ...]:
    """The fields ``save`` writes: :data:`POLL_FIELDS` but those it keeps unread."""
    return tuple(n for n in POLL_FIELDS if n not in KEPT_UNREADABLE or n not in state.unreadable)


def to_attr(value: object) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, datetime):
        return {"S": value.isoformat()}
    return {"S": str(value)}


def from_attr(name: str, attr: dict[str, Any]) -> object:
    if "NULL" in attr:
        return None
    if "N" in attr:
        return int(attr["N"])
    if "BOOL" in attr:
        return attr["BOOL"]
    value = attr["S"]
    return datetime.fromisoformat(value) if name.endswith("_at") else value


class Unreadable(ValueError):
    """An attribute that is not what this module writes (edited by hand, or corrupted)."""


MAX_MS = 253_402_300_799_999
"""The last millisecond of the year 9999: a cursor or sweep time beyond it is no time."""
MAX_COUNT = 2**63 - 1
MAX_TEXT = 500
"""What a poll writes of a failure message (``poll.py``): a longer stored text is cut."""
UNREADABLE_SWEEP_REQUEST = "unreadable"
"""What a ``sweep_request`` nobody can read stands for: one request (a sweep repeats work,
never skips it), done once the sweep records it as done."""


def _whole(attr: Mapping[str, Any], low: int, high: int) -> int:
    """A DynamoDB number that is a whole number in [low, high]: ``int`` reads only plain
    digits (no fraction or exponent), and a flag is not a number."""
    text = attr.get("N") if isinstance(attr, Mapping) else None
    # Every range here starts at 0: plain digits only (no sign, fraction or exponent), and
    # few enough for int() (which refuses over 4,300): every value past 40 is out of range.
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 40):
        raise Unreadable
    value = int(text)
    if not low <= value <= high:
        raise Unreadable
    return value


def _text(attr: Mapping[str, Any]) -> str:
    value = attr.get("S") if isinstance(attr, Mapping) else None
    if not isinstance(value, str):
        raise Unreadable
    return value[:MAX_TEXT]


ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""An item id as a product has one (``esl_sync.clover.item_types.ID_PATTERN``, which the
stores may not import): what ``sweep_after`` holds."""


def _item_id(attr: Mapping[str, Any]) -> str:
    """A sweep's last id: any other text (edited by hand) is none, so that the sweep
    starts over from the first id (``sweep_due``), never past suspects it did not read."""
    value = attr.get("S") if isinstance(attr, Mapping) else None
    if not (isinstance(value, str) and ITEM_ID.fullmatch(value)):
        raise Unreadable
    return value


def _moment(attr: Mapping[str, Any]) -> datetime:
    """An ISO time; one written without an offset is UTC (as the dispatcher reads one)."""
    try:
        moment = datetime.fromisoformat(_text(attr))
    except ValueError:
        raise Unreadable from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_null(attr: object) -> bool:
    return isinstance(attr, Mapping) and attr.get("NULL") is True


_READERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "high_water_ms": lambda a: _whole(a, 0, MAX_MS),
    "poll_count": lambda a: _whole(a, 0, MAX_COUNT),
    "last_sweep_ms": lambda a: _whole(a, 0, MAX_MS),
    "last_success_at": _moment,
    "last_failure_at": _moment,
    "last_failure_class": _text,
    "last_failure_message": _text,
    "consecutive_failures": lambda a: _whole(a, 0, MAX_COUNT),
    "sweep_request_done": _text,
    "sweep_after": _item_id,
    "sweep_for": _text,
    "auth_state": _text,
    "sweep_request": _text,
}
"""Each state field as ``save`` (or the token and webhook writes) writes it; all but
:data:`_NEVER_NULL` may also be written as a null. (The null is checked in :func:`state_of`,
when an item is read, not wrapped around the readers when this module is imported.)"""
_NEVER_NULL = frozenset({"poll_count", "consecutive_failures", "auth_state"})


def state_of(merchant_id: str, item: Mapping[str, Any] | None) -> MerchantState:
    """The state the item holds. An attribute that is not what these writers write (a
    wrong type, a number out of range, a time that is none) reads as the first state's
    value, which repeats work and never skips it (no cursor: a full read; an unreadable
    sweep request: one sweep), and is named in ``unreadable``: one bad attribute never
    makes the item, the fleet's measurement or ``status`` unreadable."""
    state = MerchantState(merchant_id=merchant_id)
    if not item:
        return state
    unreadable: list[str] = []
    if "version" in item:
        try:
            state.version = _whole(item["version"], 0, MAX_COUNT)
        except Unreadable:
            unreadable.append("version")
    for name in STATE_FIELDS:
        if name in item:
            try:
                attr = item[name]
                null = name not in _NEVER_NULL and _is_null(attr)
                setattr(state, name, None if null else _READERS[name](attr))
            except Unreadable:
                unreadable.append(name)
                if name == "sweep_request":
                    state.sweep_request = UNREADABLE_SWEEP_REQUEST
    if "pending_deletes" in item:
        ids = (
            item["pending_deletes"].get("SS")
            if isinstance(item["pending_deletes"], Mapping)
            else None
        )
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
            state.pending_deletes = frozenset(ids)
        else:
            unreadable.append("pending_deletes")
    state.unreadable = tuple(unreadable)
    return state


def sealed_of(item: Mapping[str, Any] | None) -> SealedTokens | None:
    """The item's tokens, still encrypted (None: none stored)."""
    if not item or "token_ciphertext" not in item:
        return None
    return SealedTokens(
        ciphertext=bytes(item["token_ciphertext"]["B"]),
        generation=int(item.get("token_generation", {"N": "0"})["N"]),
        needs_reauth=item.get("auth_state", {}).get("S") == "needs_reauth",
        uninstalled=int(item.get("app_uninstalled_ms", {"N": "-1"})["N"])
        > int(item.get("authorized_ms", {"N": "0"})["N"]),
    )


UNTIL_PASSED = (
    "attribute_not_exists(#until) OR NOT attribute_type(#until, :number) OR #until <= :now"
    " OR #until > :beyond"
)
"""The condition "no lease, lock or window held": ``#until`` (a time in ms, its holder's
end) is missing, has passed (``:now``), is not a number (edited by hand: DynamoDB compares
no other type with a number, so it would hold for good), or lies further ahead than any
hold this code takes (``:beyond``: a hand edit, a host clock years ahead, microseconds or
seconds·1000 for ms: it would hold for as long as it says). The write that takes it
writes a number. Its values: :func:`until_values`."""
LONGEST_HOLD_MS = {
    "lease_until_ms": POLL_LEASE_MS,
    "refresh_lock_until_ms": REFRESH_LOCK_TIMEOUTS * TIMEOUT_MAX_SECONDS * 1000,
    "webhook_poll_until_ms": WEBHOOK_POLL_WINDOW_MAX_SECONDS * 1000,
}
"""The longest each time is ever held for, whatever the settings (the poll lease, the
token refresh lock at the longest ``CLOVER_TIMEOUT_SECONDS``, the longest
``CLOVER_WEBHOOK_POLL_WINDOW_SECONDS``): with :data:`~esl_sync.settings.CLOCK_SKEW_MS`
(another host's clock ahead of ours), the horizon past which a time was not written here."""


def until_values(name: str, now_ms: int, hold_ms: int) -> dict[str, Any]:
    """The values of :data:`UNTIL_PASSED` for the time ``name`` and of the write that takes
    it, held ``hold_ms`` from ``now_ms`` (``:until``). A hold longer than the longest
    allowed would be taken over as "not written here": it is refused (ValueError)."""
    longest = LONGEST_HOLD_MS[name]
    if not 0 <= hold_ms <= longest:
        raise ValueError(f"{name}: a hold of {hold_ms} ms is not within 0 to {longest} ms")
    return {
        ":until": {"N": str(now_ms + hold_ms)},
        ":now": {"N": str(now_ms)},
        ":beyond": {"N": str(now_ms + longest + CLOCK_SKEW_MS)},
        ":number": {"S": "N"},
    }


LEASE_NAMES = {"#owner": "lease_owner", "#until": "lease_until_ms"}
FENCE_NAMES = {"#epoch": "lease_epoch", "#count": "lease_generation"}
MAX_EPOCH = 64
"""The longest ``lease_epoch`` read as one (ours are 32 hex digits)."""


def lease_taking(
    owner: str, now_ms: int, duration_ms: int, *, new_epoch: bool = False
) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """The conditional write that takes the poll lease (update, condition, values, names):
    granted when the lease is free or expired (or its time is not a number, or lies past
    any lease: :data:`UNTIL_PASSED`), it also counts ``lease_generation`` up (``ADD``:
    created at 1 on an item that has none) and sets ``lease_epoch`` once (a random value:
    an item deleted and created again gets another), so the item it returns holds the
    lease's :class:`~esl_sync.records.Fence`. ``new_epoch``: a fence edited by hand
    (another type, out of range) is replaced by a new epoch at generation 1; the owner may
    already hold the lease (it took it with the unreadable fence)."""
    values = {
        ":owner": {"S": owner},
        ":epoch": {"S": uuid.uuid4().hex},
        ":one": {"N": "1"},
    } | until_values(LEASE_NAMES["#until"], now_ms, duration_ms)
    taken = "SET #owner = :owner, #until = :until, #epoch = "
    condition = UNTIL_PASSED
    if new_epoch:
        update = f"{taken}:epoch, #count = :one"
        condition += " OR #owner = :owner"
    else:
        update = f"{taken}if_not_exists(#epoch, :epoch) ADD #count :one"
    return update, condition, values, LEASE_NAMES | FENCE_NAMES


def fence_of(item: Mapping[str, Any]) -> Fence | None:
    """The fencing token the lease write returned; None when either attribute is not as
    that write leaves it (edited by hand): the caller writes a new epoch."""
    try:
        epoch = item["lease_epoch"]["S"]
        generation = _whole(item["lease_generation"], 1, MAX_COUNT)
    except (KeyError, TypeError, Unreadable):
        return None
    if not (isinstance(epoch, str) and 0 < len(epoch) <= MAX_EPOCH and epoch.isprintable()):
        return None
    return Fence(epoch, generation)


def fence_count(item: Mapping[str, Any] | None, seen: Fence) -> FenceCount:
    """Why the state item (as a refused :meth:`raise_lease_generation` found it; None or
    empty: there is none) needs no raise to ``seen``."""
    if not item:
        return FenceCount("no state item")
    if item.get("lease_epoch") != {"S": seen.epoch}:
        return FenceCount("another epoch")
    count = item.get("lease_generation")
    if isinstance(count, dict) and len(count) == 1:
        kind, stored = next(iter(count.items()))
        if kind == "N":
            return FenceCount("in step", str(stored))
        if kind in _ATTRIBUTE_TYPES:
            return FenceCount("not a count", kind)
    return FenceCount("not a count", "?")


_ATTRIBUTE_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})

CODE_SLOT = "verification_code_"  # + slot number: one kept code each


def verification_codes_of(item: Mapping[str, Any]) -> list[VerificationCode]:
    """The kept codes, newest first, each code once; an item written before codes were
    kept holds one in ``verification_code`` (shown last)."""
    numbered: list[tuple[int, VerificationCode]] = []
    # A slot that is not as written (edited by hand, corrupted) is no code: it is left out,
    # so that it never makes `esl-sync status` fail for every merchant.
    for name, attr in item.items():
        if name.startswith(CODE_SLOT):
            try:
                slot = attr["M"]
                code = VerificationCode(
                    str(slot["code"]["S"]),
                    datetime.fromisoformat(slot["received_at"]["S"]),
                    slot.get("source_ip", {}).get("S"),
                )
                numbered.append((int(slot["n"]["N"]), code))
            except (KeyError, TypeError, ValueError, AttributeError):
                pass  # not as written: left out
    try:
        legacy = datetime.fromisoformat(item["verification_received_at"]["S"])
        numbered.append((0, VerificationCode(str(item["verification_code"]["S"]), legacy)))
    except (KeyError, TypeError, ValueError):
        pass  # none, or not as written
    codes: dict[str, VerificationCode] = {}
    for _, code in sorted(numbered, key=lambda pair: -pair[0]):
        codes.setdefault(code.code, code)
    return list(codes.values())
