"""A merchant's state item in DynamoDB, to and from :class:`~esl_sync.records.MerchantState`
(and its sealed tokens): the attribute codec of :mod:`esl_sync.store.dynamo`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from esl_sync.credentials import SealedTokens
from esl_sync.records import MerchantState

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
)
# ``auth_state`` is written only with the tokens, ``sweep_request`` only by the webhook.
STATE_FIELDS = (*POLL_FIELDS, "auth_state", "sweep_request")


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


def state_of(merchant_id: str, item: Mapping[str, Any] | None) -> MerchantState:
    state = MerchantState(merchant_id=merchant_id)
    if not item:
        return state
    state.version = int(item.get("version", {"N": "0"})["N"])
    for name in STATE_FIELDS:
        if name in item:
            setattr(state, name, from_attr(name, dict(item[name])))
    if "pending_deletes" in item:
        state.pending_deletes = frozenset(item["pending_deletes"]["SS"])
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
