"""What the headers of Clover's answers say: its clock (``Date``), and for a 429 which limit
was hit and how long to wait (``X-RateLimit-*``, ``Retry-After``).

Every value is what a server, proxy or gateway may write: a date that does not parse, a
``Retry-After`` of ``nan``, ``inf``, 400 digits or a date in 2099, a limit's header name of
5,000 characters. Each reads as a value the client can act on, or as None; never an
exception (the client's promise: a Clover error type, never another).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC
from email.message import Message
from email.utils import parsedate_to_datetime

from esl_sync.observability import NAMESPACE, SERVICE, MetricUnit, metrics, single_metric

_LOG = logging.getLogger("esl_sync.clover.client")  # its lines, as ever

#: ``X-RateLimit-*`` headers that name the limit a 429 hit; cross-token ones pause everyone.
RATE_LIMIT_HEADERS = (
    "X-RateLimit-tokenLimit",
    "X-RateLimit-tokenConcurrentLimit",
    "X-RateLimit-crossTokenLimit",
    "X-RateLimit-crossTokenConcurrentLimit",
)
OTHER_LIMIT = "X-RateLimit-other"  #: what a 429 names under any other X-RateLimit-* header


def date_ms(value: str | None) -> int | None:
    """An HTTP ``Date`` header as epoch milliseconds, ``None`` when absent or unreadable:
    a year, day, time or zone of many digits too (the parser raises OverflowError for
    those, not ValueError)."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        _LOG.debug("clover: unreadable Date header %r", value)
        return None
    if moment.tzinfo is None:  # "-0000": UTC by RFC 5322
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def retry_after_seconds(headers: Message) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), ``None`` when absent or
    unreadable (``nan`` included); a number too large for a float is ``inf``, a wait no
    poll takes (see :class:`esl_sync.clover.client.MerchantCatalog`)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)  # "inf" and "1e400" too: both mean "longer than we wait"
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    then = date_ms(value)
    if then is None:
        return None
    now = date_ms(headers.get("Date"))
    reference = now if now is not None else int(time.time() * 1000)
    return max(0.0, (then - reference) / 1000)


def duration_text(seconds: float) -> str:
    """A wait for a message: ``"3600s"``; anything over a day (``inf`` included) as such."""
    return f"{seconds:.0f}s" if seconds <= 86_400 else "more than a day"


def named_limit(headers: Message) -> str | None:
    """Which of Clover's ``X-RateLimit-*`` headers named the limit a 429 hit, else
    :data:`OTHER_LIMIT` or None: a name becomes a metric dimension (each value a metric paid
    monthly), and a server or proxy may write any (``X-RateLimit-Remaining``, 5,000 chars)."""
    for name in RATE_LIMIT_HEADERS:
        if name in headers:  # matched ignoring case
            return name
    if any(name.lower().startswith("x-ratelimit-") for name in headers):  # its names
        return OTHER_LIMIT
    return None


def count_rate_limit(limit: str | None) -> None:
    """A 429 as metrics: the total (which an alarm compares with ``CloverRequests``) and
    one by the limit that was hit, so an operator sees which budget ran out."""
    metrics.add_metric(name="CloverRateLimited", unit=MetricUnit.Count, value=1)
    named = (limit or "unnamed").removeprefix("X-RateLimit-")
    with single_metric(
        name="CloverRateLimitedByLimit",
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        metric.add_dimension(name="Limit", value=named)
