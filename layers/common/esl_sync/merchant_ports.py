"""What the operator's writes of one merchant need from the merchants table
(:func:`esl_sync.admin.add_merchant`, :func:`esl_sync.admin.set_poll_options`,
:func:`esl_sync.admin.set_active`), and from the poll lease's fence after a restore of the
state table (:func:`esl_sync.admin.catch_up_fences`).

Beside :mod:`esl_sync.ports`, which holds every other Protocol and has no room left.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

from esl_sync.records import Fence, Merchant


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


MerchantSetting = Literal["clover_base_url", "poll_interval_seconds"]
"""A merchant's own settings (None in a row: the stack's)."""


@dataclass(frozen=True)
class StoreWritten:
    """A write of a merchant's store code: whether the merchant is registered (False: the
    code is kept for its install, ``store_assignments``), and the code its row held just
    before (None: none, or not registered), read under the merchant's lock in the write's
    own transaction, so another writer's code committed in between is the one replaced."""

    registered: bool
    replaced: str | None


class StoreWriter(Protocol):
    """The writes that decide whether a merchant's store moved (then every label goes to
    the new one at once: :func:`esl_sync.admin.relabel_if_moved`), from what they replaced."""

    def register(
        self,
        merchant: Merchant,
        *,
        then: Callable[[], object] | None = None,
        keep: Collection[MerchantSetting] = (),
    ) -> StoreWritten:
        """Register the merchant as given (``esl-sync merchants add``) or, if it is
        registered, write its store code, ``active`` and its settings but those in ``keep``,
        in one statement: a change made meanwhile to a setting it keeps (another operator's
        ``merchants set``, an install's Clover host) stays. ``then`` runs before the row is
        committed: if it raises, the row stays as it was (the tokens written with it). Says
        what it replaced (``registered``: it is, once written)."""
        ...

    def move_store(self, merchant_id: str, store_code: str) -> StoreWritten:
        """Set a registered merchant's store code, or keep it for the merchant's install
        (``esl-sync merchants set-store``), saying which and what it replaced."""
        ...


class SeenFences(Protocol):
    def seen_fences(self, merchant_id: str | None = None) -> dict[str, Fence]:
        """The fence Postgres saw last (``label_clocks``, migration 0009) of one merchant
        or (None) of every merchant a poll wrote for under one."""
        ...


FenceStanding = Literal["raised", "in step", "another epoch", "not a count", "no state item"]


@dataclass(frozen=True)
class FenceCount:
    """What :meth:`FenceCounter.raise_lease_generation` found, read by its one conditional
    write: ``raised`` (``stored``: the count it had as stored, a fraction edited by hand,
    or ``none``); else nothing written: ``in step`` (``stored``: a count of ``seen``'s
    epoch, at least its generation), ``another epoch`` (another one or none: the next lease
    writes in it or starts one, which Postgres accepts), ``not a count`` (``stored``: the
    DynamoDB type of a count edited by hand, ``S``: the next lease starts a new epoch),
    ``no state item`` (none is created)."""

    standing: FenceStanding
    stored: str = ""


class FenceCounter(Protocol):
    def raise_lease_generation(self, merchant_id: str, seen: Fence) -> FenceCount:
        """Raise the state item's ``lease_generation`` to ``seen.generation`` if the item
        is in ``seen``'s epoch and counts fewer or none (a restore put it back), in one
        conditional write beside the lease (its owner, time and the state's version stay);
        what it found (:class:`FenceCount`), as that write read it."""
        ...


@dataclass(frozen=True)
class VersionsRaised:
    """The ``label_versions`` sequence's last value as read (``before``), the floor it was
    compared with, and the value set (``raised_to``; None: it was at the floor or past)."""

    before: int
    floor: int
    raised_to: int | None


class LabelVersions(Protocol):
    """The ``label_versions`` sequence every label version comes from (migration 0004), as
    :func:`esl_sync.restore.raise_versions` moves it past a restored database's."""

    def raise_label_versions(self) -> VersionsRaised:
        """If the sequence's last value is below the floor (the database server's clock in
        microseconds since 1970: 1,000 versions a millisecond), set it there (the next
        version is the floor + 1), read, compared and written in one statement."""
        ...


class StateItems(Protocol):
    def state_item_ids(self) -> list[str]:
        """The merchant id of every item of the state table (reserved items, whose keys
        start with ``#``, left out), read without any other attribute."""
        ...
