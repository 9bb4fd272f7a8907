"""The fields of a Clover inventory item that the transform reads, with their documented types.

Unknown fields are ignored (Clover adds fields; ``raw`` keeps them all), and so are the
fields the transform does not read (``isRevenue``, ``itemStock``, …): junk in them
refuses nothing. The fields read are checked strictly: a string where an integer belongs,
a float or a boolean for cents, is an error, not a conversion. Every field but ``id``
may be absent or null (``return_null_fields=true`` sends nulls). Lengths and ranges are
not checked here but by the transform, against what Postgres and Hipoink take
(:mod:`esl_sync.storable`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PriceType = Literal["FIXED", "VARIABLE", "PER_UNIT"]

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A Clover object id as this service accepts it: Clover's are 13 characters of ``A-Z0-9``;
letters, digits, ``_`` and ``-`` up to 64 leave room without letting a control character,
a path separator or a megabyte into a key, a URL or a log line."""
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


_EXACT_TYPES: dict[str, type] = {
    "name": str,
    "alternateName": str,
    "code": str,
    "sku": str,
    "price": int,
    "unitName": str,
    "cost": int,
    "hidden": bool,
    "available": bool,
    "isAgeRestricted": bool,
    "modifiedTime": int,
    "deleted": bool,
}
_PRICE_TYPES = frozenset(("FIXED", "VARIABLE", "PER_UNIT"))


def plain_fields(raw: dict[str, Any]) -> bool:
    """Whether every field :class:`CloverItem` reads is absent, null or of its exact type,
    so that ``raw.get(field)`` is what ``CloverItem.model_validate(raw)`` would hold.

    The poll's fast path: a plain check here costs about half of pydantic's validation
    (written by hand because the semantics must be exactly "what strict pydantic accepts,
    or narrower": ``type(v) is int`` leaves out ``bool`` as strict mode does, and a ``str``
    subclass or anything else unusual answers False, for pydantic to judge and name).
    ``id`` is the caller's (:func:`esl_sync.clover.transform.to_product` checks it first).
    """
    for name, kind in _EXACT_TYPES.items():
        value = raw.get(name)
        if value is not None and type(value) is not kind:
            return False
    price_type = raw.get("priceType")
    if price_type is not None and (type(price_type) is not str or price_type not in _PRICE_TYPES):
        return False
    group = raw.get("itemGroup")
    if group is None:
        return True
    group_id = group.get("id") if type(group) is dict else None
    return type(group_id) is str and ID_PATTERN.fullmatch(group_id) is not None


def is_deleted(item: Mapping[str, Any]) -> bool:
    """Whether Clover flags ``item`` as deleted (``deleted: true`` or a ``deletedTime``)."""
    return item.get("deleted") is True or item.get("deletedTime") is not None
