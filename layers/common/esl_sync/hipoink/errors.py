"""What can go wrong when sending to Hipoink, one type per way the sender reacts.

Hipoink answers HTTP 200 even for errors; ``error_code`` decides, and its ``error_msg``
says which class the error is (see :func:`classify`). Kept apart from the HTTP client so
the delivery logic can react to them without importing it.
"""

from __future__ import annotations

import re

# A message that starts by naming a product is about that record ("product 123: missing
# field pp", "product #4: …"); one that names the sign, the app key (client id), the store
# or the f1 envelope is about our configuration ("sign error", "app key x not found",
# "default missing store_code field", "store S not found", "f1 must be a JSON array").
_NAMES_PRODUCT = re.compile(r"^\s*product\b", re.IGNORECASE)
_TOO_MANY = re.compile(r"too many|too large", re.IGNORECASE)
_CONFIGURATION = re.compile(
    r"\bsign\b|app ?key|client.?id|\bstore|\bf1\b|invalid json", re.IGNORECASE
)
_NOT_FOUND = re.compile(r"not (found|exist)", re.IGNORECASE)


class HipoinkError(Exception):
    """Base of the sender's errors; the message is safe to log and to store (the server's
    own words are kept as :func:`esl_sync.hipoink.client.said` leaves them)."""


class HipoinkRetryable(HipoinkError):
    """Timeout, connection error, 5xx, 429, 408 or a body that is not JSON: retry later."""


class HipoinkUnreadable(HipoinkRetryable):
    """An answer of ``product/query`` that parses but cannot be read as a page of products
    (no list, a product without a usable code, text no label holds): named, never guessed
    at. Retryable like any unreadable answer; a verify that meets one marks nothing."""


class HipoinkRecordError(HipoinkError):
    """Hipoink refused the batch because of what is in it: split it, do not retry it."""


class HipoinkNotFound(HipoinkRecordError):
    """A product code Hipoink does not know; for a delete of that one code, that is done."""


class HipoinkConfigError(HipoinkError):
    """Wrong sign, client id, store code or ``f1`` encoding, or a server certificate that
    fails verification: retrying cannot help, so stop sending for the store."""


def classify(message: str) -> type[HipoinkError]:
    """The class of an ``error_code != 0`` answer, from its message.

    A refusal that names neither a product nor our configuration is treated as a refusal
    of the batch's content (split, not retried): retrying ``error_code`` 1 as if it were
    transient is a mistake public integrations made (docs/hipoink-api.md). "Too many
    products" also splits the batch, which adapts to a server whose limit is below
    ``HIPOINK_BATCH_SIZE``.
    """
    if _NAMES_PRODUCT.search(message):
        return HipoinkNotFound if _NOT_FOUND.search(message) else HipoinkRecordError
    if _TOO_MANY.search(message):
        return HipoinkRecordError
    if _CONFIGURATION.search(message):
        return HipoinkConfigError
    if _NOT_FOUND.search(message):
        return HipoinkNotFound
    return HipoinkRecordError
