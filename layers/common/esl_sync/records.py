"""The shared data: the values the logic and the adapters trade through :mod:`esl_sync.ports`.

Plain frozen dataclasses, or named tuples where a poll makes one per item
(``MerchantState`` is the one mutable record: a poll updates it and saves it back),
importing nothing at run time (the product model is a type here: a poll of clean items
builds none and loads no pydantic), so every layer may use them.
Tokens have a module of their own (:mod:`esl_sync.credentials`): they need care these do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # a type only: the poll builds a Product for an unclean item alone
    from esl_sync.credentials import SealedTokens
    from esl_sync.products import Product

# -- merchants, their state and their products ----------------------------------------


@dataclass(frozen=True)
class Merchant:
    """A row of ``merchants``: where to read and where the labels are. No secrets."""

    merchant_id: str
    store_code: str | None
    clover_base_url: str | None = None
    active: bool = True
    poll_interval_seconds: int | None = None
    created_at: datetime | None = None
    # When it last became pollable (enabled, or given its first store code; the database
    # records it): None when it has been pollable since ``created_at``.
    pollable_since: datetime | None = None
    # Labels whose last delivery failed for a reason that retrying can cure (Hipoink down,
    # the store blocked), counted by the lookup itself: a poll's cue to retry them, free of
    # any extra round trip for the healthy store, where it is 0.
    labels_failing: int = 0


@dataclass
class MerchantState:
    """The merchant's poll state in DynamoDB; ``version`` guards every write."""

    merchant_id: str
    version: int = 0
    high_water_ms: int | None = None
    poll_count: int = 0
    last_sweep_ms: int | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_class: str | None = None
    last_failure_message: str | None = None
    consecutive_failures: int = 0
    auth_state: str = "ok"
    extra: dict[str, str] = field(default_factory=dict)
    # Item ids a webhook reported deleted; the next poll confirms each with a single-item
    # read. ``save`` removes ``settled_deletes`` from the stored set (ids added since stay).
    pending_deletes: frozenset[str] = frozenset()
    settled_deletes: frozenset[str] = frozenset()
    # A webhook that could not add its deletions (too many pending) asks for a sweep with
    # a fresh token; a poll that sweeps records the token it read as done, so a request
    # that arrives during that poll still makes the next one sweep. A sweep is asked for
    # whenever the two differ: ``restore catch-up`` asks by writing another ``done`` (in
    # the state's versioned write, which never writes ``sweep_request``).
    sweep_request: str | None = None
    sweep_request_done: str | None = None
    # A sweep longer than a poll (:mod:`esl_sync.sync.sweep`): ``sweep_after`` the last id it
    # confirmed (None: no sweep under way), ``sweep_for`` the ``sweep_request`` it serves,
    # read when it started, which its last poll records as done.
    sweep_after: str | None = None
    sweep_for: str | None = None
    # This poll swept (not stored): an unreadable ``pending_deletes``, which asked for the
    # sweep, may go; a save without it (a failed poll's, ``resync``'s) leaves it as stored.
    swept: bool = False
    # Attributes of the stored item that could not be read (edited by hand, corrupted):
    # each holds its default here (:func:`esl_sync.store.state_item.state_of`).
    unreadable: tuple[str, ...] = ()

    @property
    def sweep_requested(self) -> bool:
        return self.sweep_request != self.sweep_request_done


@dataclass(frozen=True)
class Fence:
    """A poll lease's fencing token: the state item's ``lease_epoch`` (a random value set
    when the item is first leased; a deleted and recreated item gets another) and
    ``lease_generation`` (counted up by every lease taken). The poll's Postgres writes carry
    it, and ``label_clocks`` refuses one older than a generation already written there."""

    epoch: str
    generation: int


class StaleStateError(RuntimeError):
    """Someone else wrote the merchant state since we read it (or the poll lease was lost)."""


class FenceRefused(RuntimeError):
    """A newer poll of the merchant (a later lease generation) wrote first: this poll's
    lease was lost, so its transaction is rolled back and nothing it decided is sent."""


class DatabaseUnanswered(RuntimeError):
    """Postgres did not answer a statement before the invocation's deadline (or none was
    left to send one): a server gone without a word (a failover whose old primary vanished,
    a network cut, a hung server). The connection is discarded, never used again
    (:mod:`esl_sync.statement_deadline`)."""


class TransientConflict(RuntimeError):
    """A store refused the work for contention a retry resolves, not an outage: Postgres
    ended its transaction in a deadlock, a serialization failure or a lock wait that timed
    out (rolled back whole), or DynamoDB or KMS still throttled it after the client's own
    retries. Retry the unit of work (SQS's retry of its record) and count it; never page."""


@dataclass(frozen=True)
class Leased:
    """What taking a merchant's poll lease read in the same write: the state the last poll
    left, the merchant's tokens, still sealed (None: none stored), and the lease's fencing
    token (None: the item's fence attributes are unreadable, edited by hand)."""

    state: MerchantState
    sealed: SealedTokens | None
    fence: Fence | None = None


class ProductRow(NamedTuple):
    """A product to write: its key, the hash of the label it should show (None: no label)
    and the row as the page's statement reads it, written once
    (:mod:`esl_sync.sync.item_rows`): a JSON object of the row's columns but the merchant,
    its ``content_hash`` and ``label_hash`` included. A tuple: one per item of every page."""

    key: tuple[str, str]
    label_hash: str | None
    row_json: str

    def __repr__(self) -> str:  # the row's JSON is long, and holds the raw item
        return f"ProductRow(key={self.key!r}, label_hash={self.label_hash!r})"


@dataclass(frozen=True)
class StoredHash:
    """A product row's ``content_hash``, and whether Clover's version of it is refused."""

    content_hash: str
    refused: bool


class ProductChange(NamedTuple):
    """A row a write changed, with what it held before (None: the row is new). A tuple: a
    first sync changes thousands of rows a page."""

    key: tuple[str, str]
    previous_barcode: str | None
    previous_label_hash: str | None
    label_dropped: bool = False
    """The row's version was refused and the label it kept was dropped: older code labelled
    an item without a price (not ``VARIABLE``) $0.00, which no version shows now."""


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue; ``group_id`` is its FIFO message group, if any."""

    body: str
    receipt_handle: str
    group_id: str | None


@dataclass(frozen=True)
class VerificationCode:
    """A webhook verification code as received (``source_ip``: the caller's address)."""

    code: str
    received_at: datetime
    source_ip: str | None = None


# -- Clover items as read -------------------------------------------------------------

Item = dict[str, Any]
"""A raw element of Clover's items listing, as sent (:mod:`esl_sync.clover.items` reads it)."""


@dataclass(frozen=True)
class ItemPage:
    """One answer of ``GET /v3/merchants/{mId}/items``: its elements (each a JSON object),
    the requests it took (retries included) and Clover's clock at the first of them (its
    ``Date`` header in epoch ms, whole seconds; ``None`` when no answer carried one)."""

    elements: list[Item]
    requests: int
    clover_time_ms: int | None


# -- labels: what Hipoink shows, what failed, what the self-healing pass repairs -------


class LabelOwner:
    """The product a code's label shows, and how many products claim that code.

    The product itself is built (and validated) from its row only when asked for: a poll
    that wrote the owner has its record already, and a first sync touches every code, so
    it holds one owner per code till its jobs are sent. ``read`` builds the product of a
    key: one reader serves every owner of a read-back, and slots keep each owner small
    (≈ 300 bytes less a code than a callable and an instance dict of its own)."""

    __slots__ = ("_product", "_read", "claims", "key", "merchant_id")

    def __init__(
        self,
        key: tuple[str, str],
        merchant_id: str,
        claims: int,
        read: Callable[[tuple[str, str]], Product],
    ) -> None:
        self.key, self.merchant_id, self.claims, self._read = key, merchant_id, claims, read
        self._product: Product | None = None

    @property
    def product(self) -> Product:
        if self._product is None:
            self._product = self._read(self.key)
        return self._product

    def __repr__(self) -> str:
        return (
            f"LabelOwner(key={self.key!r}, merchant_id={self.merchant_id!r}, claims={self.claims})"
        )

    @classmethod
    def of(cls, product: Product, claims: int) -> LabelOwner:
        return cls(product.key, product.merchant_id, claims, lambda _key: product)


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
    """A label Hipoink refused or could not take, named for the operator; ``refused``: the
    record (hash, job version) of a ``bad_record`` Hipoink gave, which a retry never sends."""

    pc: str
    failure_class: str
    message: str
    refused: LabelAck | None = None


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
    acknowledgement (``last_ack``): what the self-healing pass chooses from. ``clock`` is
    the merchant's committed label clock (0 before any) as the same reading saw it, so the
    products read are exactly what that version decided."""

    now: datetime
    last_ack: datetime | None
    candidates: list[RepairCandidate]
    clock: int = 0


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


@dataclass(frozen=True)
class LabelCounts:
    """A merchant's label ledger in ``esl-sync status``'s numbers: its stale labels, its
    refused items, and the product codes more than one product claims."""

    stale_labels: int = 0
    refused_items: int = 0
    label_conflicts: int = 0


# -- verifying labels against Hipoink --------------------------------------------------


@dataclass(frozen=True)
class VerifyTarget:
    """A label the ledger holds as acknowledged, as a verify compares it with Hipoink:
    the acknowledged hash (None: deleted) and version, and the hash and product of the
    code's owner now (``wanted`` None: no product wants the code). Only a label whose
    acknowledged hash is the one wanted can be rebuilt, so only such a label is compared;
    any other is stale already, and healed without a verify."""

    pc: str
    label_hash: str | None
    version: int | None
    wanted: str | None
    product: Product | None


@dataclass(frozen=True)
class HeldPage:
    """One page of ``product/query``: the products Hipoink holds (each with a usable text
    ``pc``; the values as the answer gave them, a compared value that is not text a label
    holds as :data:`UNREADABLE`), the ``total`` it reported, if any, and how many products
    of the page were skipped for want of a usable ``pc`` (none of ours has such a code)."""

    products: list[dict[str, object]]
    total: int | None = None
    skipped: int = 0


UNREADABLE = "\x00unreadable"
"""What a held product's compared field reads as when Hipoink's value is not text a label
holds (NUL, a lone surrogate, too long, a list …): no label of ours holds it (NUL), so it
differs from every value we send, and a label of ours holding it has drifted."""


@dataclass(frozen=True)
class Drift:
    """A label Hipoink holds otherwise than acknowledged: the fields that differ
    (``missing``: Hipoink does not hold the code; ``held``: it holds a code acknowledged
    as deleted), and the acknowledgement it contradicts (marked only if still the same)."""

    pc: str
    fields: tuple[str, ...]
    label_hash: str | None
    version: int | None


@dataclass(frozen=True)
class VerifyResult:
    """What one verify found, as the sender records it (``label_verify_results``): the
    store verified, who asked (``sweep`` or ``manual``), the counts, and ``refused``, the
    refusal's named reason, cleaned and cut (None: it completed)."""

    merchant_id: str
    store_code: str
    requested_by: str
    compared: int
    drifted: int
    marked: int
    unknown_codes: int
    skipped_products: int
    refused: str | None


@dataclass(frozen=True)
class LastVerify:
    """A merchant's last verify (``esl-sync status``): what it found and when it ended,
    how many verifies in a row were refused, and when the last one that was not ended."""

    result: VerifyResult
    verified_at: datetime
    refused_in_a_row: int
    completed_at: datetime | None
