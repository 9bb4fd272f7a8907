"""The fields of a Clover inventory item that the sync uses, with their documented types.

Unknown fields are ignored (Clover adds fields; ``raw`` keeps them all). The fields used
are checked strictly: a string where an integer belongs is an error, not a conversion.
Every field but ``id`` may be absent or null (``return_null_fields=true`` sends nulls).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PriceType = Literal["FIXED", "VARIABLE", "PER_UNIT"]

NAME_MAX_LENGTH = 127
CODE_MAX_LENGTH = 100
UNIT_NAME_MAX_LENGTH = 64


class _CloverModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class CloverReference(_CloverModel):
    """A reference to another Clover object, e.g. ``itemGroup``."""

    id: str


class CloverItemStock(_CloverModel):
    """``itemStock`` (present when expanded)."""

    quantity: float | None = None


class CloverItem(_CloverModel):
    """One element of ``GET /v3/merchants/{mId}/items``."""

    id: str = Field(min_length=1)
    name: str | None = Field(None, max_length=NAME_MAX_LENGTH)
    alternateName: str | None = None
    code: str | None = Field(None, max_length=CODE_MAX_LENGTH)
    sku: str | None = Field(None, max_length=CODE_MAX_LENGTH)
    price: int | None = None
    priceType: PriceType | None = None
    unitName: str | None = Field(None, max_length=UNIT_NAME_MAX_LENGTH)
    cost: int | None = None
    hidden: bool | None = None
    available: bool | None = None
    isRevenue: bool | None = None
    isAgeRestricted: bool | None = None
    itemGroup: CloverReference | None = None
    modifiedTime: int | None = None
    deleted: bool | None = None
    deletedTime: int | None = None
    itemStock: CloverItemStock | None = None
