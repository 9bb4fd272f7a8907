"""The small interfaces the logic talks to; tests swap them, ``store`` implements them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from esl_sync.messages import LabelJob, PollRequest
from esl_sync.products import Product
from esl_sync.store.label_interfaces import (
    AckedLabel,
    LabelAck,
    LabelConflict,
    LabelFailure,
    LabelLedger,
    LabelOwner,
    LabelOwners,
    RefusedItem,
    RepairCandidate,
    RepairSnapshot,
    StaleLabel,
    StoreBlock,
)

if TYPE_CHECKING:
    from esl_sync.clover.oauth import CloverTokens


@dataclass(frozen=True)
class Merchant:
    """A row of ``merchants``: where to read and where the labels are. No secrets."""

    merchant_id: str
    store_code: str | None
    clover_base_url: str | None = None
    active: bool = True
    poll_interval_seconds: int | None = None
    created_at: datetime | None = None
    # Labels whose last delivery failed for a reason that retrying can cure (Hipoink down,
    # the store blocked), counted by the lookup itself: a poll's cue to retry them, free of
    # any extra round trip for the healthy store, where it is 0.
    labels_failing: int = 0


@dataclass(frozen=True)
class ProductRow:
    """A product to write, with the hash of the label it should show (None: no label)."""

    product: Product
    label_hash: str | None


@dataclass(frozen=True)
class ProductChange:
    """A row a write changed, with what it held before (None: the row is new)."""

    key: tuple[str, str]
    previous_barcode: str | None
    previous_label_hash: str | None


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue; ``group_id`` is its FIFO message group, if any."""

    body: str
    receipt_handle: str
    group_id: str | None


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
    # that arrives during that poll still makes the next one sweep.
    sweep_request: str | None = None
    sweep_request_done: str | None = None

    @property
    def sweep_requested(self) -> bool:
        return self.sweep_request is not None and self.sweep_request != self.sweep_request_done


class StaleStateError(RuntimeError):
    """Someone else wrote the merchant state since we read it."""


class ProductWriter(Protocol):
    """Product writes of one transaction."""

    def upsert(self, merchant_id: str, rows: Sequence[ProductRow]) -> list[ProductChange]:
        """Write changed rows in one round trip; return only the rows that changed."""
        ...

    def mark_deleted(
        self, merchant_id: str, keys: Iterable[tuple[str, str]]
    ) -> list[ProductChange]: ...

    def active_keys(self, merchant_id: str) -> set[tuple[str, str]]:
        """(source_id, source_variant_id) of every active product of the merchant."""
        ...

    def label_owners(self, merchant_id: str, pcs: Iterable[str]) -> LabelOwners:
        """Advance the merchant's label clock and say which product each code's label
        shows, as this transaction's writes left them (one round trip)."""
        ...


class ProductStore(Protocol):
    def transaction(self) -> AbstractContextManager[ProductWriter]:
        """A unit of work: committed when the block exits normally, rolled back otherwise."""
        ...


class MerchantDirectory(Protocol):
    def get(self, merchant_id: str) -> Merchant | None: ...

    def all(self, *, active_only: bool = False) -> list[Merchant]: ...

    def save(self, merchant: Merchant, *, then: Callable[[], object] | None = None) -> None:
        """Insert or update the row. ``then`` runs before the row is committed: if it
        raises, the row stays as it was (the token written with a merchant, say)."""
        ...


@dataclass(frozen=True)
class StoredTokens:
    """A merchant's tokens as stored, with the generation that guards every change of them.

    Every write of new tokens (an operator's, a refresh's) makes a new generation, so a
    poll that got a 401 on an old token can tell that newer tokens arrived meanwhile.
    """

    tokens: CloverTokens
    generation: int
    needs_reauth: bool = False


class TokenStore(Protocol):
    """Clover tokens, encrypted in the merchant's state item, and what guards them."""

    def load_tokens(self, merchant_id: str) -> StoredTokens | None: ...

    def write_token(self, merchant_id: str, token: str | CloverTokens) -> int:
        """Store an operator's new token (plain or pair): a new generation, and the
        merchant is no longer marked ``needs_reauth``. Returns the generation."""
        ...

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        """The tokens encrypted for this merchant, written nowhere yet (KMS refuses here)."""
        ...

    def write_sealed_tokens(self, merchant_id: str, sealed: bytes) -> int:
        """``write_token`` for tokens sealed by :meth:`seal_tokens`."""
        ...

    def replace_tokens(
        self, merchant_id: str, tokens: CloverTokens, *, generation: int
    ) -> int | None:
        """Store refreshed tokens if ``generation`` is still the stored one: the new
        generation, or None when other tokens were stored meanwhile."""
        ...

    def mark_needs_reauth(self, merchant_id: str, *, generation: int) -> bool:
        """Mark the merchant ``needs_reauth`` if ``generation`` is still the stored one
        (never over tokens stored since); whether it was marked."""
        ...

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        """The per-merchant refresh lock, if free or expired (a conditional write)."""
        ...

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None: ...


class TokenProvider(Protocol):
    """Where a poll gets a usable Clover access token (see :mod:`esl_sync.clover.tokens`)."""

    def access_token(self, merchant_id: str, base_url: str) -> StoredTokens | None:
        """The stored tokens, refreshed first when the access token is close to expiry;
        None when none are stored. Raises ``ReauthRequired``."""
        ...

    def renew(
        self,
        merchant_id: str,
        base_url: str,
        rejected: StoredTokens,
        error: Exception,
        *,
        refresh: bool = True,
    ) -> StoredTokens:
        """Clover refused ``rejected``: tokens stored since, else (``refresh``) refreshed
        ones. Raises ``ReauthRequired`` after marking the merchant when there are none."""
        ...


@dataclass(frozen=True)
class VerificationCode:
    """A webhook verification code as received (``source_ip``: the caller's address)."""

    code: str
    received_at: datetime
    source_ip: str | None = None


class WebhookHints(Protocol):
    """What the webhook function may write into the state table (never tokens)."""

    def record_verification_code(self, received: VerificationCode, *, keep: int) -> None:
        """Add a code to the ``keep`` most recent ones (a code received again moves up)."""
        ...

    def verification_codes(self) -> list[VerificationCode]:
        """The codes kept, newest first."""
        ...

    def claim_webhook_poll(self, merchant_id: str, *, now_ms: int, window_ms: int) -> bool:
        """True for the first hint of a window (it queues the poll), False for the rest."""
        ...

    def add_pending_deletes(self, merchant_id: str, item_ids: Iterable[str], *, limit: int) -> bool:
        """Add item ids for the next poll to confirm, as long as no more than ``limit`` are
        then pending; else add none and ask for a sweep (``sweep_request``). Whether added."""
        ...


class StateStore(Protocol):
    def load(self, merchant_id: str) -> MerchantState: ...

    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        """Every given merchant's state (a default one where none is stored yet)."""
        ...

    def save(self, state: MerchantState) -> None:
        """Write the state if nobody wrote it since it was loaded; else StaleStateError.

        ``auth_state`` is not written here: the token lifecycle owns it (:class:`TokenStore`).
        """
        ...

    def acquire_lease(self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int) -> bool:
        """Take the merchant's poll lease if it is free or expired; False while another holds it.

        The lease lives beside ``version``, not in it: taking or giving it up never makes
        the holder's own ``save`` stale.
        """
        ...

    def release_lease(self, merchant_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` still holds it (once expired, it may be another's)."""
        ...


class PollQueue(Protocol):
    def send(
        self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None
    ) -> None: ...


class LabelQueue(Protocol):
    def send(self, jobs: Sequence[LabelJob]) -> None: ...


class DeadLetterQueue(Protocol):
    """A dead-letter queue and the queue its messages came from."""

    def receive(self) -> list[DeadLetter]:
        """Up to ten messages (hidden from other readers until deleted or timed out)."""
        ...

    def send_back(self, letters: Sequence[DeadLetter]) -> None:
        """Send the messages to the source queue, in order, keeping their FIFO group."""
        ...

    def delete(self, letters: Sequence[DeadLetter]) -> None: ...


__all__ = [
    "AckedLabel",
    "DeadLetter",
    "DeadLetterQueue",
    "LabelAck",
    "LabelConflict",
    "LabelFailure",
    "LabelLedger",
    "LabelOwner",
    "LabelOwners",
    "LabelQueue",
    "Merchant",
    "MerchantDirectory",
    "MerchantState",
    "PollQueue",
    "ProductChange",
    "ProductRow",
    "ProductStore",
    "ProductWriter",
    "RefusedItem",
    "RepairCandidate",
    "RepairSnapshot",
    "StaleLabel",
    "StaleStateError",
    "StateStore",
    "StoreBlock",
    "StoredTokens",
    "TokenProvider",
    "TokenStore",
    "VerificationCode",
    "WebhookHints",
]
