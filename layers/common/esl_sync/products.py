"""The product as this service stores it: one row of the ``products`` table.

Hashes decide what is written and what is sent: ``content_hash`` covers every stored
field (unchanged rows are not rewritten), ``label_hash`` covers only what a shelf label
shows (only its change produces a label job).

Every field is storable by construction (see :mod:`esl_sync.storable`): text and JSON are
cleaned on the way in, and money and times carry their columns' limits, so a product that
can be built can never make Postgres refuse the page's statement. The transform refuses
out-of-range values by name before they get here; these checks are the last line.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from esl_sync.storable import BIGINT_MAX, BIGINT_MIN, clean_json, clean_text

ProductStatus = Literal["active", "deleted"]

Text = Annotated[str, AfterValidator(clean_text)]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]  # numeric(14, 2)
Json = Annotated[dict[str, Any], AfterValidator(clean_json)]
Bigint = Annotated[int, Field(ge=BIGINT_MIN, le=BIGINT_MAX)]


def stable_hash(value: Any) -> str:
    """A short, stable digest of JSON-able data (keys sorted, decimals as strings)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Product(BaseModel):
    """A catalog item of one merchant, normalised from its source system."""

    model_config = ConfigDict(frozen=True)

    source_system: Text = "clover"
    merchant_id: Text
    source_id: Text
    source_variant_id: Text = ""
    name: Text
    barcode: Text | None = Field(None, description="The Hipoink product code (pc).")
    sku: Text | None = None
    price: Money | None = None
    cost: Money | None = None
    currency: Text = "USD"
    price_type: Text = "FIXED"
    unit: Text | None = None
    status: ProductStatus = "active"
    extra_data: Json = Field(default_factory=dict)
    raw: Json = Field(default_factory=dict)
    source_modified_time: Bigint | None = None
    validation_error: Text | None = Field(
        None,
        description="Why Clover's current version of the item was refused, named for the"
        " operator. A refused product changes no label: its row keeps the label fields of"
        " the version before (see ``esl_sync.store.postgres``).",
    )

    @property
    def key(self) -> tuple[str, str]:
        """The identity of the product within its merchant."""
        return (self.source_id, self.source_variant_id)

    @property
    def refused(self) -> bool:
        """Clover's current version of the item was refused (``validation_error`` says why)."""
        return self.validation_error is not None

    @property
    def labelable(self) -> bool:
        """Whether this product belongs on a shelf label right now."""
        return self.status == "active" and self.barcode is not None and not self.refused

    @property
    def content_hash(self) -> str:
        """Digest of every stored field: an unchanged hash means the row is not rewritten."""
        return stable_hash(self.model_dump(mode="json"))
