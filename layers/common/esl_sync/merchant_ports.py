"""What the operator's changes to one merchant need from the merchants table
(:func:`esl_sync.admin.set_poll_options`, :func:`esl_sync.admin.set_active`).

Beside :mod:`esl_sync.ports`, which holds every other Protocol and has no room left.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from esl_sync.records import Merchant


class MerchantChanges(TypedDict, total=False):
    """The columns of ``merchants`` an operator's change names: only these are written."""

    clover_base_url: str | None
    poll_interval_seconds: int | None
    active: bool


class MerchantEditor(Protocol):
    def change(self, merchant_id: str, changes: MerchantChanges) -> Merchant | None:
        """Write the named columns of a registered merchant, and only them, in one
        statement: a change made meanwhile to any other column (another operator's
        ``merchants set``, ``disable``, a re-auth, an install) stays. The row as it is
        after the change, or None for a merchant not registered (nothing written)."""
        ...
