"""The model of the fields of a Clover inventory item that the transform reads, with their
documented types: it judges and names the problems of an item that
:func:`esl_sync.clover.item_types.plain_fields` does not pass (a clean item never builds it,
so the poll loads no pydantic for one).

Unknown fields are ignored (Clover adds fields; ``raw`` keeps them all), and so are the
fields the transform does not read (``isRevenue``, ``itemStock``, …): junk in them
refuses nothing. The fields read are checked strictly: a string where an integer belongs,
a float or a boolean for cents, is an error, not a conversion. Every field but ``id``
may be absent or null (``return_null_fields=true`` sends nulls). Lengths and ranges are
not checked here but by the transform, against what Postgres and Hipoink take
(:mod:`esl_sync.storable`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from esl_sync.clover.item_types import ID_PATTERN, PriceType

CloverId = Annotated[str, Field(pattern=f"^{ID_PATTERN.pattern}$")]


class _CloverModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class CloverReference(_CloverModel):
    """A reference to another Clover object, e.g. ``itemGroup``."""

    id: CloverId


class CloverItem(_CloverModel):
    """One element of ``GET /v3/merchants/{mId}/items``, as far as the transform reads it.

    ``deletedTime`` is read as "present or not" only (see :func:`is_deleted`).
    """

    id: str = Field(min_length=1)
    name: str | None = None
    alternateName: str | None = None
    code: str | None = None
    sku: str | None = None
    price: int | None = None
    priceType: PriceType | None = None
    unitName: str | None = None
    cost: int | None = None
    hidden: bool | None = None
    available: bool | None = None
    isAgeRestricted: bool | None = None
    itemGroup: CloverReference | None = None
    modifiedTime: int | None = None
    deleted: bool | None = None
