"""What verifying labels against Hipoink needs from the world (:mod:`esl_sync.sync.verify`).

Beside :mod:`esl_sync.ports`, which holds every other Protocol and has no room left: the
label ledger's reading and marking of a verify (and its record of what each found), Hipoink's
product listing, the ledger as the poll uses it (it also decides when a verify is due), and
as ``status`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from esl_sync.ports import LabelLedger
from esl_sync.records import (
    Drift,
    HeldPage,
    LabelCounts,
    LastVerify,
    VerifyResult,
    VerifyTarget,
)


class HeldProducts(Protocol):
    """Hipoink's ``product/query`` (see :class:`esl_sync.hipoink.client.HipoinkClient`)."""

    def query(self, store_code: str, page: int, page_size: int) -> HeldPage:
        """One page (numbered from 1) of the store's products; an answer that cannot be
        read as one is refused by name (:class:`esl_sync.hipoink.errors.HipoinkUnreadable`)."""
        ...


class VerifyLedger(Protocol):
    """``label_state`` as a verify reads and marks it."""

    def verify_targets(self, merchant_id: str, store_code: str) -> list[VerifyTarget] | None:
        """Every label acknowledged for the merchant, with what its code's owner wants now;
        None when ``store_code`` is no longer the merchant's store."""
        ...

    def mark_drifted(self, merchant_id: str, store_code: str, drifts: Sequence[Drift]) -> int:
        """Make each drifted label count as stale (failure class ``drift``, naming its
        fields), only where its acknowledgement is still the one compared and the store
        still the merchant's; how many were marked."""
        ...

    def record_verify(self, result: VerifyResult) -> None:
        """Keep ``result`` as the merchant's last verify, in one statement (nothing for a
        merchant not registered)."""
        ...


class PollLedger(LabelLedger, Protocol):
    """The ledger as a poll uses it: its healing, and when its labels are verified."""

    def claim_verify(self, merchant_id: str, interval_hours: int) -> bool:
        """True, and noted, when no automatic verify was queued for the merchant within
        ``interval_hours``; False otherwise (racing pollers: one wins)."""
        ...


class StatusLedger(LabelLedger, Protocol):
    """The ledger as ``esl-sync status`` reads it: each merchant's label counts and last
    verify, for the whole fleet at once (a fixed number of statements, however many
    merchants: not a few per merchant, each a round trip)."""

    def label_counts(self, merchant_ids: Sequence[str]) -> dict[str, LabelCounts]:
        """Each named merchant's stale labels, refused items and product codes claimed by
        more than one product (zeros for one with none, or not registered), in one
        statement; the same numbers as ``stale_label_details``, ``refused_items`` and
        ``label_conflicts`` give one merchant at a time."""
        ...

    def last_verifies(self) -> dict[str, LastVerify]:
        """The last verify of every merchant verified since it is recorded, by merchant id."""
        ...
