"""The label ledger's interface and the values it trades in (``label_state``, the label
clock, store blocks); re-exported by :mod:`esl_sync.store.interfaces`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from esl_sync.products import Product


@dataclass(frozen=True)
class LabelOwner:
    """The product a code's label shows, and how many products claim that code."""

    product: Product
    claims: int


@dataclass(frozen=True)
class LabelOwners:
    """A poll's label decision: the version it carries and, per code, its product (a code
    without an entry is wanted by no product: its label goes)."""

    version: int
    owners: dict[str, LabelOwner]


@dataclass(frozen=True)
class LabelAck:
    """What Hipoink acknowledged for one product code (``label_hash`` None: deleted), and
    the version of the decision it came from (None: a job from before versions)."""

    pc: str
    label_hash: str | None
    version: int | None = None


@dataclass(frozen=True)
class AckedLabel:
    """What the ledger says Hipoink shows under a code: hash (None: deleted) and version."""

    label_hash: str | None
    version: int | None


@dataclass(frozen=True)
class LabelFailure:
    """A label Hipoink refused or could not take, named for the operator."""

    pc: str
    failure_class: str
    message: str


@dataclass(frozen=True)
class StaleLabel:
    """A label that does not show what the product table says, with its last failure.

    ``action`` is what would fix it: ``upsert`` (show the product's current record) or
    ``delete`` (remove a label that no product wants any more). ``since`` is when the
    product last changed (upsert) or when Hipoink last acknowledged the label (delete).
    """

    pc: str
    action: str
    name: str | None
    since: datetime | None
    failure_class: str | None
    failure_message: str | None
    failed_at: datetime | None


@dataclass(frozen=True)
class LabelConflict:
    """A product that claims a code other products claim too; only one is on the label."""

    pc: str
    source_id: str
    name: str
    shown: bool
    claims: int
    shown_source_id: str


@dataclass(frozen=True)
class RefusedItem:
    """An item whose current Clover version was refused (``problem`` names why).

    Its label, if ``label_kept``, still shows the last accepted version (under ``pc``);
    ``since`` is when the refusals began. Fixing the item in Clover clears it.
    """

    item_id: str
    pc: str | None
    name: str
    since: datetime | None
    label_kept: bool
    problem: str


@dataclass(frozen=True)
class RepairCandidate:
    """A stale label as the self-healing pass sees it (``product`` None: a delete)."""

    pc: str
    product: Product | None
    since: datetime | None
    failure_class: str | None = None
    failed_at: datetime | None = None
    requeued_at: datetime | None = None


@dataclass(frozen=True)
class RepairSnapshot:
    """A merchant's stale labels, read at the database's ``now`` with its newest
    acknowledgement (``last_ack``): what the self-healing pass chooses from."""

    now: datetime
    last_ack: datetime | None
    candidates: list[RepairCandidate]


@dataclass(frozen=True)
class StoreBlock:
    """Hipoink refused a store's configuration: its labels wait until a re-test passes.

    ``retest`` is True for the one caller allowed to try the store again after the
    cool-down (``retry_after``); everyone else sends nothing while the block holds.
    """

    merchant_id: str
    store_code: str
    reason: str
    blocked_at: datetime
    retry_after: datetime
    retest: bool = False


class LabelLedger(Protocol):
    """``label_state``: what Hipoink acknowledged, and what failed."""

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, AckedLabel]: ...

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck]) -> None: ...

    def renew(self, merchant_id: str, acks: Sequence[LabelAck]) -> None:
        """Raise the version of labels Hipoink already shows (no call was made, so the
        acknowledgement time stays: it is the evidence that Hipoink answers)."""
        ...

    def record_failures(self, merchant_id: str, failures: Sequence[LabelFailure]) -> None: ...

    def stale_labels_total(self) -> int:
        """Stale labels across every merchant (a gauge for the dashboard)."""
        ...

    def stale_labels(self, merchant_id: str) -> int:
        """Labels that do not show what the product table says they should."""
        ...

    def stale_label_details(self, merchant_id: str) -> list[StaleLabel]:
        """The stale labels themselves, with their last failure, for the operator."""
        ...

    def label_conflicts(self, merchant_id: str) -> list[LabelConflict]:
        """Every product that claims a code another product claims too."""
        ...

    def refused_items(self, merchant_id: str) -> list[RefusedItem]:
        """The merchant's items whose current version was refused, for the operator."""
        ...

    def label_version(self, merchant_id: str, *, advance: bool) -> int:
        """The merchant's label clock: advanced (only by a caller holding the merchant's
        poll lease), or its committed value (0 before any)."""
        ...

    def repair_candidates(self, merchant_id: str) -> RepairSnapshot:
        """The merchant's stale labels, for the self-healing pass to choose from."""
        ...

    def mark_requeued(
        self, merchant_id: str, pcs: Sequence[str], *, clear_failures_before: datetime | None
    ) -> None:
        """Note that ``pcs`` were queued again now; with ``clear_failures_before``, forget
        the retryable failures recorded before it on labels that are not in ``pcs`` and
        no longer stale (the pass saw them fixed)."""
        ...

    def check_block(self, merchant_id: str, cooldown_seconds: int) -> StoreBlock | None:
        """None: the store may be sent to. Else its block; once the cool-down has passed,
        exactly one caller gets it with ``retest`` True (the next re-test is moved one
        cool-down ahead), so a broken store sees one call per cool-down."""
        ...

    def block_store(
        self, merchant_id: str, store_code: str, reason: str, cooldown_seconds: int
    ) -> None:
        """Stop sending to the store until ``cooldown_seconds`` from now (then re-test)."""
        ...

    def unblock_store(self, merchant_id: str) -> bool:
        """Lift the block; False when there was none."""
        ...

    def invalidate_acknowledgements(self, merchant_id: str) -> None:
        """Forget which version each label shows, so every label counts as stale."""
        ...

    def store_blocks(self) -> dict[str, StoreBlock]:
        """Every block in force, by merchant id (read only: claims no re-test)."""
        ...
