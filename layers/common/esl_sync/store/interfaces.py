"""The small interfaces the logic talks to; tests swap them, ``store`` implements them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from esl_sync.messages import LabelJob, PollRequest
from esl_sync.products import Product


@dataclass(frozen=True)
class Merchant:
    """A row of ``merchants``: where to read and where the labels are. No secrets."""

    merchant_id: str
    store_code: str | None
    clover_base_url: str | None = None
    active: bool = True
    poll_interval_seconds: int | None = None


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
class LabelAck:
    """What Hipoink acknowledged for one product code (``label_hash`` None: deleted)."""

    pc: str
    label_hash: str | None


@dataclass(frozen=True)
class LabelFailure:
    """A label Hipoink refused or could not take, named for the operator."""

    pc: str
    failure_class: str
    message: str


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


class ProductStore(Protocol):
    def transaction(self) -> AbstractContextManager[ProductWriter]:
        """A unit of work: committed when the block exits normally, rolled back otherwise."""
        ...


class MerchantDirectory(Protocol):
    def get(self, merchant_id: str) -> Merchant | None: ...

    def all(self, *, active_only: bool = False) -> list[Merchant]: ...

    def save(self, merchant: Merchant) -> None: ...


class LabelLedger(Protocol):
    """``label_state``: what Hipoink acknowledged, and what failed."""

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]: ...

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck]) -> None: ...

    def record_failures(self, merchant_id: str, failures: Sequence[LabelFailure]) -> None: ...

    def stale_labels(self, merchant_id: str) -> int:
        """Labels that do not show what the product table says they should."""
        ...


class StateStore(Protocol):
    def load(self, merchant_id: str) -> MerchantState: ...

    def save(self, state: MerchantState) -> None:
        """Write the state if nobody wrote it since it was loaded; else StaleStateError."""
        ...

    def read_token(self, merchant_id: str) -> str | None: ...

    def write_token(self, merchant_id: str, token: str) -> None: ...


class PollQueue(Protocol):
    def send(
        self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None
    ) -> None: ...


class LabelQueue(Protocol):
    def send(self, jobs: Sequence[LabelJob]) -> None: ...


__all__ = [
    "LabelAck",
    "LabelFailure",
    "LabelLedger",
    "LabelQueue",
    "Merchant",
    "MerchantDirectory",
    "MerchantState",
    "PollQueue",
    "ProductChange",
    "ProductRow",
    "ProductStore",
    "ProductWriter",
    "StaleStateError",
    "StateStore",
]
