"""The product as this service stores it: one row of the ``products`` table.

Hashes decide what is written and what is sent: ``content_hash`` covers every stored
field (unchanged rows are not rewritten), ``label_hash`` covers only what a shelf label
shows (only its change produces a label job).
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ProductStatus = Literal["active", "deleted"]


def stable_hash(value: Any) -> str:
    """A short, stable digest of JSON-able data (keys sorted, decimals as strings)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Product(BaseModel):
    """A catalog item of one merchant, normalised from its source system."""

    model_config = ConfigDict(frozen=True)

    source_system: str = "clover"
    merchant_id: str
    source_id: str
    source_variant_id: str = ""
    name: str
    barcode: str | None = Field(None, description="The Hipoink product code (pc).")
    sku: str | None = None
    price: Decimal | None = None
    cost: Decimal | None = None
    currency: str = "USD"
    price_type: str = "FIXED"
    unit: str | None = None
    status: ProductStatus = "active"
    extra_data: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict)
    source_modified_time: int | None = None
    validation_error: str | None = Field(
        None, description="Why this product cannot go to a label, named for the operator."
    )

    @property
    def key(self) -> tuple[str, str]:
        """The identity of the product within its merchant."""
        return (self.source_id, self.source_variant_id)

    @property
    def labelable(self) -> bool:
        """Whether this product belongs on a shelf label right now."""
        return self.status == "active" and self.barcode is not None and not self.validation_error

    @property
    def content_hash(self) -> str:
        """Digest of every stored field: an unchanged hash means the row is not rewritten."""
        return stable_hash(self.model_dump(mode="json"))
