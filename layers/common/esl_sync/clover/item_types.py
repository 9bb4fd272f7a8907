"""The documented types of the Clover item fields the transform reads, checked without a
model: the poll's fast path for a clean item (nearly every item) loads no pydantic.

:class:`esl_sync.clover.items.CloverItem` is the model of the same fields; it is built (and
pydantic loaded, ≈ 110 ms of a cold start, issue 15) only for an item this check does not
pass, to judge it and name its problems. ``tests/unit/test_transform_fast_path.py`` checks
the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

PriceType = Literal["FIXED", "VARIABLE", "PER_UNIT"]

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A Clover object id as this service accepts it: Clover's are 13 characters of ``A-Z0-9``;
letters, digits, ``_`` and ``-`` up to 64 leave room without letting a control character,
a path separator or a megabyte into a key, a URL or a log line."""

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

READ_FIELDS = frozenset(("id", "priceType", "itemGroup", *_EXACT_TYPES))
"""The fields :class:`~esl_sync.clover.items.CloverItem` reads (its ``model_fields``)."""


def plain_fields(raw: dict[str, Any]) -> bool:
    """Whether every field :class:`~esl_sync.clover.items.CloverItem` reads is absent, null
    or of its exact type, so that ``raw.get(field)`` is what
    ``CloverItem.model_validate(raw)`` would hold.

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
