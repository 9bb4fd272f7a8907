"""Operator actions shared by the CLI and the local stack: onboarding and disabling merchants."""

from __future__ import annotations

from dataclasses import replace

from esl_sync.store.interfaces import Merchant, MerchantDirectory, StateStore


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
