"""Client-side pacing that keeps this process inside Clover's rate limits.

Clover allows, per access token, 16 requests per second and 5 in flight, and per app
(all merchants together) 50 per second and 10 in flight. A :class:`RequestPacer` holds
every request until both budgets have room: a sliding window of request starts (so no
window of ``window_seconds`` ever holds more than the rate) and a count of requests in
flight. After a 429, :meth:`RequestPacer.pause` holds back every request of that token
(or of the whole process) until ``Retry-After`` has passed, because retrying early makes
Clover's wait longer.

Tokens are never stored: callers pass a key derived from the token (see
:func:`token_key`). The app-wide budget is per process; across Lambda instances it is
kept by the event source's ``MaximumConcurrency`` and by the dispatcher's spreading.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def token_key(token: str) -> str:
    """A stable, non-reversible key for one access token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class _Budget:
    starts: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    paused_until: float = 0.0


class RequestPacer:
    """Per-key and process-wide request budgets, shared by every thread of the process.

    ``window_seconds`` is the rate window (1 s for Clover); ``margin_seconds`` widens it a
    little so that network jitter cannot make Clover see one request too many in a second.
    """

    def __init__(
        self,
        *,
        token_rps: int = 16,
        token_concurrency: int = 5,
        app_rps: int = 50,
        app_concurrency: int = 10,
        window_seconds: float = 1.0,
        margin_seconds: float = 0.05,
    ) -> None:
        for name, value in (
            ("token_rps", token_rps),
            ("token_concurrency", token_concurrency),
            ("app_rps", app_rps),
            ("app_concurrency", app_concurrency),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if window_seconds <= 0 or margin_seconds < 0:
            raise ValueError("window_seconds must be positive and margin_seconds not negative")
        self.token_rps = token_rps
        self.token_concurrency = token_concurrency
        self.app_rps = app_rps
        self.app_concurrency = app_concurrency
        self.window = window_seconds + margin_seconds
        self._condition = threading.Condition()
        self._app = _Budget()
        self._tokens: dict[str, _Budget] = {}

    def __repr__(self) -> str:
        return (
            f"RequestPacer(token_rps={self.token_rps}, token_concurrency={self.token_concurrency}, "
            f"app_rps={self.app_rps}, app_concurrency={self.app_concurrency})"
        )

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one request slot of ``key`` (and of the process) for the ``with`` body."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    def acquire(self, key: str) -> None:
        """Block until a request for ``key`` may start, then count it as started."""
        with self._condition:
            while True:
                token = self._tokens.setdefault(key, _Budget())
                now = time.monotonic()
                wait = self._wait_needed(token, now)
                if wait == 0.0:
                    token.starts.append(now)
                    token.in_flight += 1
                    self._app.starts.append(now)
                    self._app.in_flight += 1
                    return
                self._condition.wait(timeout=wait)

    def release(self, key: str) -> None:
        """Count a request of ``key`` as finished."""
        with self._condition:
            token = self._tokens[key]
            token.in_flight -= 1
            self._app.in_flight -= 1
            self._forget_idle(time.monotonic())
            self._condition.notify_all()

    def pause(self, key: str | None, seconds: float) -> None:
        """Start no request of ``key`` (``None``: of anyone) for ``seconds`` from now."""
        with self._condition:
            until = time.monotonic() + max(0.0, seconds)
            budget = self._app if key is None else self._tokens.setdefault(key, _Budget())
            budget.paused_until = max(budget.paused_until, until)
            self._condition.notify_all()

    def in_flight(self, key: str | None = None) -> int:
        """Requests now in flight for ``key`` (``None``: in the whole process)."""
        with self._condition:
            if key is None:
                return self._app.in_flight
            budget = self._tokens.get(key)
            return budget.in_flight if budget else 0

    def _wait_needed(self, token: _Budget, now: float) -> float | None:
        """0.0 when a request may start now; seconds to wait; ``None``: until a release."""
        waits = [0.0]
        for budget, rps in ((token, self.token_rps), (self._app, self.app_rps)):
            while budget.starts and budget.starts[0] <= now - self.window:
                budget.starts.popleft()
            if len(budget.starts) >= rps:
                waits.append(budget.starts[0] + self.window - now)
            waits.append(budget.paused_until - now)
        longest = max(waits)
        if longest > 0:
            return longest
        if token.in_flight >= self.token_concurrency or (
            self._app.in_flight >= self.app_concurrency
        ):
            return None
        return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop the budgets that constrain nothing any more, so keys do not pile up."""
        for key, token in list(self._tokens.items()):
            while token.starts and token.starts[0] <= now - self.window:
                token.starts.popleft()
            if token.in_flight == 0 and not token.starts and token.paused_until <= now:
                del self._tokens[key]


_default_lock = threading.Lock()
_default: RequestPacer | None = None


def default_pacer() -> RequestPacer:
    """The pacer shared by every :class:`~esl_sync.clover.client.CloverClient` of the process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RequestPacer()
        return _default
