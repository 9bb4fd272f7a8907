"""What the logic needs from the world: every interface it talks to, in one place.

The logic (:mod:`esl_sync.sync`, :mod:`esl_sync.webhooks`, :mod:`esl_sync.admin`, the walk
and the token keeper in :mod:`esl_sync.clover`) depends on these Protocols only; the
adapters (:mod:`esl_sync.store`, the HTTP clients in :mod:`esl_sync.clover` and
:mod:`esl_sync.hipoink`) implement them, :mod:`esl_sync.runtime` wires one to the other,
and the tests swap in the in-memory fakes of ``tests/fakes.py``. The values they trade are
in :mod:`esl_sync.records` and :mod:`esl_sync.credentials`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from esl_sync.credentials import CloverTokens, SealedTokens, StoredTokens
from esl_sync.hipoink.records import HipoinkRecord
from esl_sync.messages import LabelMessage, PollRequest
from esl_sync.records import (
    AckedLabel,
    DeadLetter,
    Fence,
    Item,
    ItemPage,
    LabelAck,
    LabelConflict,
    LabelFailure,
    LabelOwners,
    Leased,
    Merchant,
    MerchantState,
    ProductChange,
    ProductRow,
    RefusedItem,
    RepairSnapshot,
    StaleLabel,
    StoreBlock,
    StoredHash,
    VerificationCode,
)
from esl_sync.records import StaleStateError as StaleStateError  # re-exported

# -- Postgres: merchants, products, the label ledger -----------------------------------


class MerchantDirectory(Protocol):
    def get(self, merchant_id: str) -> Merchant | None: ...

    def all(self, *, active_only: bool = False) -> list[Merchant]: ...

    def save(self, merchant: Merchant, *, then: Callable[[], object] | None = None) -> None:
        """Insert or update the row. ``then`` runs before the row is committed: if it
        raises, the row stays as it was (the token written with a merchant, say)."""
        ...


class MerchantRegistry(Protocol):
    """Merchants as the app's install flow and ``esl-sync merchants set-store`` change them.

    A store code an operator sets before the merchant installed the app waits for it (an
    assignment); the install takes it.
    """

    def register_install(
        self,
        merchant_id: str,
        clover_base_url: str,
        store_code: str | None,
        *,
        then: Callable[[], object],
    ) -> Merchant:
        """Register the merchant or re-activate it: active, on ``clover_base_url`` (its
        region's REST host), with the store code it has, else the one assigned to it
        (consumed), else ``store_code`` (a configured rule's, or None: it awaits one).
        ``then`` runs before the commit: if it raises, nothing is written."""
        ...


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

    def stored_hashes(self, merchant_id: str, item_ids: Sequence[str]) -> dict[str, StoredHash]:
        """The stored ``content_hash`` of these Clover items' products, and whether each is
        refused now (one round trip); an item without a row is left out."""
        ...

    def label_owners(self, merchant_id: str, pcs: Iterable[str]) -> LabelOwners:
        """Advance the merchant's label clock and say which product each code's label
        shows, as this transaction's writes left them (one round trip)."""
        ...


class ProductStore(Protocol):
    def transaction(self, fence: Fence | None = None) -> AbstractContextManager[ProductWriter]:
        """A unit of work: committed when the block exits normally, rolled back otherwise;
        under a poll's ``fence`` its writes raise FenceRefused once a newer lease wrote."""
        ...


class LabelLedger(Protocol):
    """``label_state``: what Hipoink acknowledged, and what failed."""

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, AckedLabel]: ...

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        """Record what ``store_code`` acknowledged, unless the merchant has moved to another
        store since the job was decided (that store's labels are not these)."""
        ...

    def renew(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        """Raise the version of labels Hipoink already shows (no call was made, so the
        acknowledgement time stays: it is the evidence that Hipoink answers); as
        :meth:`acknowledge`, only while ``store_code`` is still the merchant's."""
        ...

    def record_failures(
        self, merchant_id: str, failures: Sequence[LabelFailure], *, store_code: str | None = None
    ) -> None:
        """A ``refused`` record is kept only while ``store_code`` is the merchant's store."""

    def refusals(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, LabelAck]:
        """The versioned records Hipoink refused and that still stand (``LabelFailure.refused``)."""
        ...

    def stale_labels_total(self) -> int:
        """Stale labels across every merchant (a gauge for the dashboard)."""
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

    def labels_wanted(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]:
        """Per code, the label hash the product store wants on the shelf now (None: no
        product claims the code, the label goes), as committed."""
        ...

    def advance_label_clock(self, merchant_id: str, *, fence: Fence | None = None) -> int:
        """The merchant's label clock, advanced under the poll lease's ``fence`` (else
        FenceRefused); its committed value is read with the stale labels (``RepairSnapshot``)."""
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

    def check_block(
        self, merchant_id: str, store_code: str, cooldown_seconds: int
    ) -> StoreBlock | None:
        """None: the merchant's ``store_code`` may be sent to (a block of another store
        the merchant had does not hold it). Else its block; once the cool-down has passed,
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


# -- DynamoDB: merchant state, tokens, webhook hints -----------------------------------


class StateStore(Protocol):
    def load(self, merchant_id: str) -> MerchantState: ...

    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        """Every given merchant's state (a default one where none is stored yet)."""
        ...

    def save(self, state: MerchantState, *, release_lease: str | None = None) -> None:
        """Write the state if nobody wrote it since it was loaded; else StaleStateError.

        With ``release_lease`` (its owner), the same write gives the poll lease back, and
        only if that owner still holds it (else StaleStateError, nothing written).
        ``auth_state`` is not written here: the token lifecycle owns it (:class:`TokenStore`).
        """
        ...

    def take_lease(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> Leased | None:
        """Take the merchant's poll lease if it is free or expired, reading its state and
        sealed tokens in the same conditional write; None while another poll holds it.

        The lease lives beside ``version``, not in it: taking or giving it up never makes
        the holder's own ``save`` stale.
        """
        ...

    def release_lease(self, merchant_id: str, owner: str) -> None:
        """Give the lease up if ``owner`` still holds it (once expired, it may be another's)."""
        ...


class TokenStore(Protocol):
    """Clover tokens, encrypted in the merchant's state item, and what guards them."""

    def load_tokens(self, merchant_id: str) -> StoredTokens | None: ...

    def open_tokens(self, merchant_id: str, sealed: SealedTokens) -> StoredTokens:
        """Tokens read sealed (with the poll's lease), decrypted."""
        ...

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


class InstallTokens(Protocol):
    """What the install flow writes into the state table: never a token in clear, and it
    never reads one (its role may encrypt, not decrypt)."""

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        """The merchant's refresh lock (:class:`TokenStore`'s): exchanges and refreshes of
        one merchant never overlap."""
        ...

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None: ...

    def claim_install(self, merchant_id: str, *, issued_ms: int, nonce: str) -> bool:
        """Mark the sign-in started at ``issued_ms`` used, unless it or a later one was
        used already or tokens were stored since it started (a conditional write);
        whether it was marked now."""
        ...

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        """The tokens encrypted for this merchant, written nowhere yet."""
        ...

    def write_installed_tokens(
        self, merchant_id: str, sealed: bytes, *, issued_ms: int, now_ms: int
    ) -> bool:
        """Store the sealed tokens as a new generation (auth ``ok``, authorized at
        ``now_ms``) unless tokens were stored since ``issued_ms``; whether stored."""
        ...


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

    def release_webhook_poll(self, merchant_id: str, *, until_ms: int) -> None:
        """Give back a claimed window (ending at ``until_ms``) whose poll was not queued."""
        ...

    def add_pending_deletes(self, merchant_id: str, item_ids: Iterable[str], *, limit: int) -> bool:
        """Add item ids for the next poll to confirm, as long as no more than ``limit`` are
        then pending (and the stored ids are a set: one edited by hand is not); else add
        none and ask for a sweep (``sweep_request``). Whether added."""
        ...

    def record_uninstall(self, merchant_id: str, *, ts_ms: int) -> None:
        """Note that Clover reported the app uninstalled at ``ts_ms`` (kept if later than
        one noted before); tokens authorized after it are not affected."""
        ...


# -- SQS -------------------------------------------------------------------------------


class PollQueue(Protocol):
    def send(
        self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None
    ) -> None: ...


class LabelQueue(Protocol):
    def send(self, jobs: Sequence[LabelMessage]) -> None: ...


class DeadLetterQueue(Protocol):
    """A dead-letter queue and the queue its messages came from."""

    def receive(self) -> list[DeadLetter]:
        """Up to ten messages (hidden from other readers until deleted or timed out)."""
        ...

    def send_back(self, letters: Sequence[DeadLetter]) -> None:
        """Send the messages to the source queue, in order, keeping their FIFO group."""
        ...

    def delete(self, letters: Sequence[DeadLetter]) -> None: ...


# -- Clover and Hipoink ----------------------------------------------------------------


class CodeExchanger(Protocol):
    """The install flow's code exchange (see :class:`esl_sync.clover.oauth.CloverOAuthClient`)."""

    def exchange_code(
        self, base_url: str, merchant_id: str, code: str, client_secret: str
    ) -> CloverTokens: ...


class Refresher(Protocol):
    """The OAuth refresh call (see :class:`esl_sync.clover.oauth.CloverOAuthClient`)."""

    def refresh(self, base_url: str, merchant_id: str, refresh_token: str) -> CloverTokens: ...


class CatalogReader(Protocol):
    """One merchant's Clover items, read with its token (the HTTP client's
    :class:`esl_sync.clover.client.MerchantCatalog`); the keyed walk
    (:mod:`esl_sync.clover.walk`) pages through :meth:`list_page`."""

    @property
    def merchant_id(self) -> str: ...

    @property
    def page_size(self) -> int:
        """The ``limit`` of a list request: a shorter page is the last."""
        ...

    @property
    def items_path(self) -> str:
        """The listing's path, as error messages name it."""
        ...

    @property
    def requests(self) -> int:
        """Every request made through this reader, retries included."""
        ...

    def list_page(self, params: Sequence[tuple[str, str]]) -> ItemPage:
        """One request of the items listing with these query parameters."""
        ...

    def get_item(self, item_id: str) -> Item | None:
        """The item as Clover holds it now; ``None`` when Clover answers 404."""
        ...


class CatalogReaders(Protocol):
    """Where a poll gets a merchant's :class:`CatalogReader` (the process's Clover client)."""

    def merchant(
        self,
        merchant_id: str,
        token: str,
        base_url: str,
        time_left_ms: Callable[[], int] | None = None,
    ) -> CatalogReader: ...


class LabelSink(Protocol):
    """The Hipoink product API (see :class:`esl_sync.hipoink.client.HipoinkClient`)."""

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None: ...

    def delete(self, store_code: str, codes: Sequence[str]) -> int: ...


# -- Lambda ----------------------------------------------------------------------------


class RemainingTime(Protocol):
    """The part of Lambda's context object the deadline check needs (:mod:`esl_sync.deadline`)."""

    def get_remaining_time_in_millis(self) -> int: ...
