"""Clover side of the sync: the HTTP client, the item model, and item → product."""

from esl_sync.clover.client import (
    CloverClient,
    ItemIdListing,
    ItemWalk,
    MerchantCatalog,
    is_deleted,
)
from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverConnectionError,
    CloverError,
    CloverRateLimited,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.items import CloverItem
from esl_sync.clover.pacing import RequestPacer, default_pacer
from esl_sync.clover.transform import DEFAULT_CODE_FIELDS, InvalidItem, cents_to_dollars, to_product

__all__ = [
    "DEFAULT_CODE_FIELDS",
    "CloverAuthError",
    "CloverBadResponse",
    "CloverClient",
    "CloverConnectionError",
    "CloverError",
    "CloverItem",
    "CloverRateLimited",
    "CloverRequestRejected",
    "CloverServerError",
    "CloverTimeout",
    "InvalidItem",
    "ItemIdListing",
    "ItemWalk",
    "MerchantCatalog",
    "RequestPacer",
    "cents_to_dollars",
    "default_pacer",
    "is_deleted",
    "to_product",
]
