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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from esl_sync.storable import BIGINT_MAX, BIGINT_MIN, clean_json, clean_text

CHECKED_RAW = "storable_raw"
"""Validation context key: the raw item (that very object) the caller found storable as it
is (:func:`esl_sync.storable.json_text`), so it is neither copied nor walked again."""


def _raw(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    context = info.context
    if isinstance(context, dict) and context.get(CHECKED_RAW) is value:
        return value
    return clean_json(handler(value))


ProductStatus = Literal["active", "deleted"]

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]  # numeric(14, 2)
Json = Annotated[dict[str, Any], AfterValidator(clean_json)]
RawJson = Annotated[dict[str, Any], WrapValidator(_raw)]
Bigint = Annotated[int, Field(ge=BIGINT_MIN, le=BIGINT_MAX)]


_TEXT_FIELDS = (
    "source_system",
    "merchant_id",
    "source_id",
    "source_variant_id",
    "name",
    "barcode",
    "sku",
    "currency",
    "price_type",
    "unit",
    "validation_error",
)


_STABLE_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""What ``json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)`` does,
without building an encoder per call (half the cost of a label's hash)."""


def stable_hash(value: Any) -> str:
    """A short, stable digest of JSON-able data (keys sorted, decimals as strings)."""
    return hashlib.sha256(_STABLE_JSON.encode(value).encode()).hexdigest()[:32]


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
    price: Money | None = None
    cost: Money | None = None
    currency: str = "USD"
    price_type: str = "FIXED"
    unit: str | None = None
    status: ProductStatus = "active"
    extra_data: Json = Field(default_factory=dict)
    raw: RawJson = Field(default_factory=dict)
    source_modified_time: Bigint | None = None
    validation_error: str | None = Field(
        None,
        description="Why Clover's current version of the item was refused, named for the"
        " operator. A refused product changes no label: its row keeps the label fields of"
        " the version before (see ``esl_sync.store.postgres``).",
    )

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        """Every text field cleaned (:func:`esl_sync.storable.clean_text`), in one call
        rather than one per field: most text is plain ASCII, which this only looks at."""
        if not isinstance(data, dict):
            return data
        cleaned = None
        for name in _TEXT_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and (not value.isascii() or "\x00" in value):
                cleaned = cleaned if cleaned is not None else dict(data)
                cleaned[name] = clean_text(value)
        return cleaned if cleaned is not None else data

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
