"""Operator actions shared by the CLI and the local stack: onboarding and disabling merchants."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from esl_sync.store.interfaces import LabelLedger, Merchant, MerchantDirectory, StateStore


class UnknownMerchantError(LookupError):
    """The merchant id is not in the ``merchants`` table."""


def add_merchant(
    directory: MerchantDirectory,
    state: StateStore,
    merchant: Merchant,
    token: str | None,
) -> None:
    """Register (or update) a merchant; its Clover token goes to the encrypted state only."""
    directory.save(merchant)
    if token:
        state.write_token(merchant.merchant_id, token)


def set_active(directory: MerchantDirectory, merchant_id: str, active: bool) -> Merchant:
    merchant = directory.get(merchant_id)
    if merchant is None:
        raise UnknownMerchantError(f"unknown merchant {merchant_id!r}")
    updated = replace(merchant, active=active)
    directory.save(updated)
    return updated


def merchant_status(
    directory: MerchantDirectory, state: StateStore, ledger: LabelLedger
) -> list[dict[str, Any]]:
    """One row per merchant: is its shelf current, and if not, since when and why."""
    now = datetime.now(UTC)
    rows = []
    for merchant in directory.all():
        current = state.load(merchant.merchant_id)
        cursor = (
            datetime.fromtimestamp(current.high_water_ms / 1000, UTC)
            if current.high_water_ms is not None
            else None
        )
        last_error = (
            f"{current.last_failure_class}: {current.last_failure_message}"
            if current.last_failure_class
            else None
        )
        rows.append(
            {
                "merchant_id": merchant.merchant_id,
                "store_code": merchant.store_code,
                "active": merchant.active,
                "auth": current.auth_state,
                "cursor": cursor,
                "last_success": current.last_success_at,
                "lag_seconds": (
                    int((now - current.last_success_at).total_seconds())
                    if current.last_success_at
                    else None
                ),
                "stale_labels": ledger.stale_labels(merchant.merchant_id),
                "last_error": last_error,
            }
        )
    return rows
