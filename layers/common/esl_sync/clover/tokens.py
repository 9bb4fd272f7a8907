"""Clover access tokens that refresh themselves safely (docs/architecture.md, "Tokens").

A refresh token works once: two concurrent refreshes of one merchant kill its tokens.
So a refresh happens only under the merchant's refresh lock (a conditional write); a
poller that finds the lock held waits and re-reads what the holder stored. Every write
of tokens makes a new generation, and ``needs_reauth`` is only ever set on the
generation that failed, never over tokens an operator (or a refresh) stored since.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from esl_sync.clover.errors import CloverBadResponse, CloverRefreshRejected
from esl_sync.credentials import CloverTokens, SealedTokens, StoredTokens
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import Refresher, TokenStore


class ReauthRequired(Exception):
    """The merchant's tokens are refused and cannot be renewed: only new tokens from its
    authorization help (``esl-sync merchants add``). ``cause`` is what Clover refused."""

    def __init__(self, merchant_id: str, cause: Exception | None) -> None:
        super().__init__(
            f"merchant {merchant_id} needs re-authorization"
            + (f": {cause}" if cause is not None else "")
        )
        self.cause = cause


NOTHING_STORED = "no Clover token stored"


class NoCloverToken(Exception):
    """The merchant has a store code and no Clover token (registered by ``esl-sync
    merchants add`` without one): a poll reads nothing until its tokens are stored. The
    poll records it as the merchant's last error, which ``esl-sync status`` shows."""

    def __init__(self) -> None:
        super().__init__(f"{NOTHING_STORED}: run `esl-sync merchants add` with the store's tokens")


class AppUninstalled(Exception):
    """Clover reported the app uninstalled (a webhook hint) after the stored tokens were
    authorized: they are as good as revoked."""


STORE_ATTEMPTS = 4
STORE_RETRY_SECONDS = 0.5
"""Pauses between tries of storing a refreshed pair: 0.5, 1 and 2 s, well within the
refresh lock (``lock_ms``)."""


class TokenRefreshBusy(RuntimeError):
    """Another poller held the refresh lock for longer than a refresh can take."""


@dataclass
class TokenKeeper:
    """Where a poll gets a usable Clover access token, over the state table's
    :class:`~esl_sync.ports.TokenStore` and the OAuth :class:`~esl_sync.ports.Refresher`.

    ``refresher`` is a callable returning the refresh client, so that the app credentials
    are read only when a refresh is actually needed (plain tokens never need them).
    ``lock_ms`` bounds a refresh (longer than the OAuth call's timeout); waiters give up
    a little after it, by which time a dead holder's lock has expired and been taken over.
    """

    store: TokenStore
    refresher: Callable[[], Refresher]
    margin_seconds: int
    lock_ms: int = 30_000
    wait_step_seconds: float = 0.1
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def access_token(self, merchant_id: str, base_url: str) -> StoredTokens | None:
        """The stored tokens, refreshed first when the access token is close to expiry;
        None when none are stored. Raises :class:`ReauthRequired`."""
        return self._usable(merchant_id, base_url, self.store.load_tokens(merchant_id))

    def access_token_from(
        self, merchant_id: str, base_url: str, sealed: SealedTokens | None
    ) -> StoredTokens | None:
        """:meth:`access_token` for tokens the caller read already (the poll reads them
        with its lease), so a poll reads the state table once."""
        stored = None if sealed is None else self.store.open_tokens(merchant_id, sealed)
        return self._usable(merchant_id, base_url, stored)

    def _usable(
        self, merchant_id: str, base_url: str, stored: StoredTokens | None
    ) -> StoredTokens | None:
        if stored is None:
            return None
        if stored.needs_reauth:
            raise ReauthRequired(merchant_id, None)
        if stored.uninstalled:
            return self._mark(
                merchant_id,
                stored.generation,
                AppUninstalled("Clover reported the app uninstalled"),
            )
        tokens = stored.tokens
        if tokens.refresh_token is None or not tokens.expires_within(
            self.margin_seconds, self.clock()
        ):
            return stored
        return self._refresh(merchant_id, base_url, stored)

    def renew(
        self,
        merchant_id: str,
        base_url: str,
        rejected: StoredTokens,
        error: Exception,
        *,
        refresh: bool = True,
    ) -> StoredTokens:
        """Clover refused ``rejected``: tokens stored since, else (``refresh``) refreshed
        ones. Raises :class:`ReauthRequired` after marking the merchant when there are none."""
        current = self.store.load_tokens(merchant_id)
        if current is not None and current.generation != rejected.generation:
            return current  # stored since the poll began: retry with those
        if current is not None and current.needs_reauth:
            raise ReauthRequired(merchant_id, error)
        if refresh and rejected.tokens.refresh_token is not None:
            return self._refresh(merchant_id, base_url, rejected)
        return self._mark(merchant_id, rejected.generation, error)

    def _refresh(self, merchant_id: str, base_url: str, stale: StoredTokens) -> StoredTokens:
        """Refresh under the lock, or wait for whoever holds it and use what they stored."""
        owner = uuid.uuid4().hex
        deadline = self.clock() + self.lock_ms / 1000 + 1
        while True:
            if self.store.acquire_refresh_lock(
                merchant_id, owner, now_ms=int(self.clock() * 1000), duration_ms=self.lock_ms
            ):
                try:
                    return self._refresh_locked(merchant_id, base_url, stale)
                finally:
                    self.store.release_refresh_lock(merchant_id, owner)
            self.sleep(self.wait_step_seconds)
            current = self.store.load_tokens(merchant_id)
            if current is not None and current.generation != stale.generation:
                return current
            if current is None or current.needs_reauth:
                raise ReauthRequired(merchant_id, None)
            if self.clock() > deadline:
                raise TokenRefreshBusy(f"merchant {merchant_id}: the refresh lock stays held")

    def _refresh_locked(self, merchant_id: str, base_url: str, stale: StoredTokens) -> StoredTokens:
        current = self.store.load_tokens(merchant_id)
        if current is None or current.needs_reauth:
            raise ReauthRequired(merchant_id, None)
        if current.generation != stale.generation:
            return current  # refreshed (or replaced) between our read and the lock
        refresh_token = current.tokens.refresh_token
        assert refresh_token is not None  # the generation ``stale`` came from had one
        try:
            tokens = self.refresher().refresh(
                base_url, merchant_id, refresh_token.get_secret_value()
            )
        except CloverRefreshRejected as error:
            return self._mark(merchant_id, current.generation, error)
        problem = tokens.unusable_because()
        if problem is not None:
            # The old refresh token is spent and the new pair cannot be sent or stored (a line
            # break in a token, more than KMS encrypts): only a new authorization helps.
            unusable = CloverBadResponse(
                f"Clover's refreshed pair: {problem}", merchant_id=merchant_id
            )
            return self._mark(merchant_id, current.generation, unusable)
        generation = self._store_refreshed(merchant_id, tokens, current.generation)
        if generation is None:  # an operator stored tokens while we refreshed: theirs win
            newer = self.store.load_tokens(merchant_id)
            if newer is None:
                raise ReauthRequired(merchant_id, None)
            return newer
        metrics.add_metric(name="TokenRefreshes", unit=MetricUnit.Count, value=1)
        logger.info(
            "Clover tokens refreshed",
            merchant_id=merchant_id,
            access_token_expiration=tokens.access_token_expiration,
            refresh_token_expiration=tokens.refresh_token_expiration,
        )
        return StoredTokens(tokens, generation)

    def _store_refreshed(
        self, merchant_id: str, tokens: CloverTokens, generation: int
    ) -> int | None:
        """:meth:`TokenStore.replace_tokens`, tried again (never the refresh) when it fails:
        Clover spent the old refresh token as it answered, so a pair lost to one failed
        write (KMS or DynamoDB failing past the client's own retries) is a merchant who must
        install the app again. A try after a write that went through finds the generation
        moved, and the caller reads the pair back."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self.store.replace_tokens(merchant_id, tokens, generation=generation)
            except Exception as error:
                failure = f"{type(error).__name__}: {str(error)[:200]}"  # names no token
                if attempt == STORE_ATTEMPTS:
                    metrics.add_metric(name="TokenStoreFailures", unit=MetricUnit.Count, value=1)
                    logger.error(
                        "refreshed Clover tokens could not be stored: the merchant needs a"
                        " new install unless a later write stores them",
                        merchant_id=merchant_id,
                        error=failure,
                    )
                    raise
                logger.warning(
                    "refreshed Clover tokens not stored yet; trying again",
                    merchant_id=merchant_id,
                    attempt=attempt,
                    error=failure,
                )
                self.sleep(STORE_RETRY_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _mark(self, merchant_id: str, generation: int, error: Exception) -> StoredTokens:
        """Mark ``needs_reauth`` on ``generation`` and raise; or, when newer tokens were
        stored meanwhile, return those instead (the race an operator must win)."""
        if self.store.mark_needs_reauth(merchant_id, generation=generation):
            metrics.add_metric(name="NeedsReauth", unit=MetricUnit.Count, value=1)
            logger.error(
                "Clover refused the merchant's tokens: it is not polled until new tokens"
                " are stored (the merchant opens the app again in Clover, or esl-sync"
                " merchants add)",
                merchant_id=merchant_id,
                error=str(error),
            )
            raise ReauthRequired(merchant_id, error)
        newer = self.store.load_tokens(merchant_id)
        if newer is None or newer.needs_reauth:
            raise ReauthRequired(merchant_id, error)
        return newer
