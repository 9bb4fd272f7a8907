"""What can go wrong when talking to Clover, one type per way the caller reacts.

Every error names the merchant it concerns and never carries the access token: not in
its text, not in its repr, not in a chained cause (httpx exceptions hold the request,
and with it the ``Authorization`` header, so they are never chained).
"""

from __future__ import annotations


class CloverError(Exception):
    """Base of every Clover error; ``merchant_id`` says whose call failed."""

    def __init__(self, message: str, *, merchant_id: str) -> None:
        super().__init__(f"merchant {merchant_id}: {message}")
        self.merchant_id = merchant_id


class CloverAuthError(CloverError):
    """401 or 403: the token is expired, revoked or lacks a permission. Not retried."""

    def __init__(self, message: str, *, merchant_id: str, status: int) -> None:
        super().__init__(message, merchant_id=merchant_id)
        self.status = status


class CloverRateLimited(CloverError):
    """429 after every attempt.

    ``retry_after_seconds`` is how long Clover asked to wait (or the backoff that would
    have been used when it did not say); ``limit`` is the ``X-RateLimit-*`` header that
    named the limit hit (e.g. ``"X-RateLimit-tokenLimit"``), ``None`` when none did.
    """

    def __init__(
        self, message: str, *, merchant_id: str, retry_after_seconds: float, limit: str | None
    ) -> None:
        super().__init__(message, merchant_id=merchant_id)
        self.retry_after_seconds = retry_after_seconds
        self.limit = limit


class CloverServerError(CloverError):
    """5xx after every attempt."""

    def __init__(self, message: str, *, merchant_id: str, status: int) -> None:
        super().__init__(message, merchant_id=merchant_id)
        self.status = status


class CloverTimeout(CloverError):
    """No complete answer within the client timeout, after every attempt."""


class CloverOutOfTime(CloverError):
    """Not sent: the invocation would end before the answer (or a retry's wait and answer)
    could arrive. The poll fails by name and is retried with a whole invocation's time,
    instead of being cut off by Lambda's timeout with its batch."""


class CloverConnectionError(CloverError):
    """The connection failed (refused, reset, protocol error) after every attempt."""


class CloverBadResponse(CloverError):
    """A 2xx answer that is not JSON or not the documented shape; the message names the part."""


class CloverRequestRejected(CloverError):
    """Any other non-success status (400, 404 on a list, 405, 3xx, …). Not retried."""

    def __init__(self, message: str, *, merchant_id: str, status: int) -> None:
        super().__init__(message, merchant_id=merchant_id)
        self.status = status


class CloverRefreshRejected(CloverAuthError):
    """Clover refused a refresh token (401/403): used, revoked or expired. Refresh tokens
    work once, so only new tokens from the merchant's authorization help."""


class CloverCodeRejected(CloverError):
    """Clover refused an authorization code exchange (400, 401 or 403): the code expired or
    was used already, or the app's client id or secret is wrong. Clover's answer does not
    say which; retrying cannot help (the merchant opens the app again)."""

    def __init__(self, message: str, *, merchant_id: str, status: int) -> None:
        super().__init__(message, merchant_id=merchant_id)
        self.status = status
