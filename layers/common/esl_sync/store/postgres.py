"""Postgres implementations of the product and merchant interfaces (the label ledger is
in :mod:`esl_sync.store.label_ledger`)."""

from __future__ import annotations

import json
import select
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from esl_sync.records import LabelOwners, Merchant, ProductChange, ProductRow, StoredHash
from esl_sync.store.label_owners import label_owners

# One statement per page. A refused item (validation_error set) changes no label: if its
# row exists, the row keeps every label field of the version before (name, code, prices,
# status, label_hash, …) and takes only the new raw item, validation_error and content
# hash; updated_at (the stale labels' "since") stays, refused_at says since when. Every
# value arrives storable (esl_sync.products, esl_sync.sync.item_rows), so no item can make
# Postgres refuse the page. One exception, for rows older code wrote: a kept version with
# no price that is not VARIABLE was labelled $0.00, which no version shows now (the
# transform refuses it): its label is dropped (label_hash NULL, returned as
# label_dropped), so the poll takes that label off instead of keeping $0.00 up.
_UPSERT = """
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        source_system text, source_id text, source_variant_id text, name text, barcode text,
        sku text, price numeric, cost numeric, currency text, price_type text, unit text,
        status text, extra_data jsonb, raw jsonb, source_modified_time bigint,
        validation_error text, content_hash text, label_hash text)
),
previous AS (
    SELECT p.source_system, p.source_id, p.source_variant_id, p.name, p.barcode, p.sku,
        p.price, p.cost, p.currency, p.price_type, p.unit, p.status, p.extra_data,
        p.source_modified_time, p.label_hash
    FROM products p JOIN incoming i USING (source_system, source_id, source_variant_id)
    WHERE p.merchant_id = %(merchant_id)s
),
chosen AS (
    SELECT i.* FROM incoming i LEFT JOIN previous v
        USING (source_system, source_id, source_variant_id)
    WHERE i.validation_error IS NULL OR v.source_id IS NULL
    UNION ALL
    SELECT i.source_system, i.source_id, i.source_variant_id, v.name, v.barcode, v.sku,
        v.price, v.cost, v.currency, v.price_type, v.unit, v.status, v.extra_data, i.raw,
        v.source_modified_time, i.validation_error, i.content_hash,
        CASE WHEN v.price IS NOT NULL OR v.price_type = 'VARIABLE' THEN v.label_hash END
    FROM incoming i JOIN previous v USING (source_system, source_id, source_variant_id)
    WHERE i.validation_error IS NOT NULL
),
written AS (
    INSERT INTO products AS p (
        source_system, merchant_id, source_id, source_variant_id, name, barcode, sku, price,
        cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash, deleted_at, refused_at)
    SELECT source_system, %(merchant_id)s, source_id, source_variant_id, name, barcode, sku,
        price, cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash,
        CASE WHEN status = 'deleted' THEN now() END,
        CASE WHEN validation_error IS NOT NULL THEN now() END
    FROM chosen
    ON CONFLICT (source_system, merchant_id, source_id, source_variant_id) DO UPDATE SET
        name = EXCLUDED.name, barcode = EXCLUDED.barcode, sku = EXCLUDED.sku,
        price = EXCLUDED.price, cost = EXCLUDED.cost, currency = EXCLUDED.currency,
        price_type = EXCLUDED.price_type, unit = EXCLUDED.unit, status = EXCLUDED.status,
        extra_data = EXCLUDED.extra_data, raw = EXCLUDED.raw,
        source_modified_time = EXCLUDED.source_modified_time,
        validation_error = EXCLUDED.validation_error, content_hash = EXCLUDED.content_hash,
        label_hash = EXCLUDED.label_hash,
        updated_at = CASE WHEN EXCLUDED.validation_error IS NULL THEN now() ELSE p.updated_at END,
        refused_at = CASE WHEN EXCLUDED.validation_error IS NOT NULL
                          THEN coalesce(p.refused_at, now()) END,
        deleted_at = CASE WHEN EXCLUDED.status = 'deleted'
                          THEN coalesce(p.deleted_at, now()) END
    WHERE p.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING p.source_system, p.source_id, p.source_variant_id, p.label_hash,
        p.validation_error
)
SELECT w.source_id, w.source_variant_id, prev.source_id IS NOT NULL AS existed,
       prev.barcode, prev.label_hash,
       w.validation_error IS NOT NULL AND w.label_hash IS NULL
           AND prev.label_hash IS NOT NULL AS label_dropped
FROM written w LEFT JOIN previous prev USING (source_system, source_id, source_variant_id)
"""

_MARK_DELETED = """
WITH target AS (
    SELECT source_system, source_id, source_variant_id, barcode, label_hash
    FROM products
    WHERE merchant_id = %(merchant_id)s AND status = 'active'
      AND (source_id, source_variant_id) IN (
          SELECT * FROM jsonb_to_recordset(%(keys)s::jsonb) AS k(sid text, vid text))
    FOR UPDATE
)
UPDATE products p SET status = 'deleted', deleted_at = now(), updated_at = now(),
    label_hash = NULL, content_hash = 'removed:' || p.content_hash,
    validation_error = NULL, refused_at = NULL,
    extra_data = p.extra_data || '{"removed_because": "not listed by Clover (404)"}'
FROM target t
WHERE p.merchant_id = %(merchant_id)s AND p.source_system = t.source_system
  AND p.source_id = t.source_id AND p.source_variant_id = t.source_variant_id
RETURNING t.source_id, t.source_variant_id, t.barcode, t.label_hash
"""


# The install and `merchants set-store` of one merchant take turns (a transaction-scoped
# advisory lock), so an assignment is never written beside an install that misses it.
_LOCK_MERCHANT = "SELECT pg_advisory_xact_lock(hashtext('esl-sync merchant ' || %s))"
INVALIDATED_HASH = "invalidated"
"""A label hash no record has: a label holding it counts as stale (to be sent again)."""
# A merchant moved to another Hipoink store (its code changed): what the ledger says Hipoink
# acknowledged is the old store's, so the new store's labels would never count as stale and
# its shelf stay bare. Run before the change, in its transaction. Versions stay (see
# PostgresLabelLedger.invalidate_acknowledgements).
_INVALIDATE_IF_MOVED = """
WITH moved AS (
    SELECT 1 FROM merchants WHERE merchant_id = %(m)s
    AND store_code IS NOT NULL AND store_code <> %(store)s
), unblocked AS (  -- the old store's block (a mistyped code Hipoink refused) is not the new one's
    DELETE FROM store_blocks WHERE merchant_id = %(m)s AND store_code <> %(store)s
    AND EXISTS (SELECT 1 FROM moved)
)
UPDATE label_state SET label_hash = %(invalidated)s
WHERE merchant_id = %(m)s AND label_hash IS NOT NULL AND EXISTS (SELECT 1 FROM moved)
"""

# A merchant that installs the app: registered, or re-activated on its region's REST host;
# its store code is kept, else the operator's assignment (consumed), else the rule's.
_REGISTER_INSTALL = """
WITH assigned AS (DELETE FROM store_assignments WHERE merchant_id = %s RETURNING store_code)
INSERT INTO merchants (merchant_id, store_code, clover_base_url, active)
VALUES (%s, coalesce((SELECT store_code FROM assigned), %s), %s, true)
ON CONFLICT (merchant_id) DO UPDATE SET active = true,
    clover_base_url = EXCLUDED.clover_base_url,
    store_code = coalesce(merchants.store_code, EXCLUDED.store_code), updated_at = now()
"""


class PostgresProductWriter:
    """Product writes inside one open transaction."""

    def __init__(self, conn: psycopg.Connection[Any], source_system: str = "clover") -> None:
        self._conn = conn
        self._source_system = source_system

    def upsert(self, merchant_id: str, rows: Sequence[ProductRow]) -> list[ProductChange]:
        latest = {r.key: r.row_json for r in rows}  # the last version of a product wins
        if not latest:
            return []
        payload = f"[{','.join(latest.values())}]"
        result = self._conn.execute(_UPSERT, {"rows": payload, "merchant_id": merchant_id})
        return [
            ProductChange(
                key=(sid, vid),
                previous_barcode=barcode if existed else None,
                previous_label_hash=label_hash if existed else None,
                label_dropped=dropped,
            )
            for sid, vid, existed, barcode, label_hash, dropped in result.fetchall()
        ]

    def mark_deleted(
        self, merchant_id: str, keys: Iterable[tuple[str, str]]
    ) -> list[ProductChange]:
        payload = json.dumps([{"sid": sid, "vid": vid} for sid, vid in keys])
        result = self._conn.execute(_MARK_DELETED, {"keys": payload, "merchant_id": merchant_id})
        return [
            ProductChange(key=(sid, vid), previous_barcode=barcode, previous_label_hash=lh)
            for sid, vid, barcode, lh in result.fetchall()
        ]

    def active_keys(self, merchant_id: str) -> set[tuple[str, str]]:
        result = self._conn.execute(
            "SELECT source_id, source_variant_id FROM products"
            " WHERE merchant_id = %s AND source_system = %s AND status = 'active'",
            (merchant_id, self._source_system),
        )
        return {(sid, vid) for sid, vid in result.fetchall()}

    def stored_hashes(self, merchant_id: str, item_ids: Sequence[str]) -> dict[str, StoredHash]:
        # The ids as one JSON text, as label_owners sends its codes: psycopg writes a list
        # of 1,000 as an array in Python at ≈ 0.9 ms, json's encoder at ≈ 0.07 (a sweep
        # asks this for every page).
        result = self._conn.execute(
            "SELECT source_id, content_hash, validation_error IS NOT NULL FROM products"
            " WHERE merchant_id = %s AND source_system = %s AND source_variant_id = ''"
            " AND source_id IN (SELECT jsonb_array_elements_text(%s::jsonb))",
            (merchant_id, self._source_system, json.dumps(list(item_ids))),
        )
        return {sid: StoredHash(h, refused) for sid, h, refused in result.fetchall()}

    def label_owners(self, merchant_id: str, pcs: Iterable[str]) -> LabelOwners:
        return label_owners(self._conn, merchant_id, pcs)


class _CountingCursor(psycopg.Cursor[Any]):
    """Counts the statements this process sends: each one is a round trip to the server."""

    statements = 0
    lock = threading.Lock()

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        with _CountingCursor.lock:
            _CountingCursor.statements += 1
        return super().execute(*args, **kwargs)


class Database:
    """One connection per thread, opened lazily and reopened after it breaks or after the
    server closed it while it was idle (:func:`_closed_by_server`).

    A psycopg connection serves one thread at a time, and the poller overlaps the polls of
    a batch on worker threads it keeps (:mod:`esl_sync.sync.poll_batch`): so each thread
    has its own connection, kept between invocations (as many as the poller has workers,
    plus the invoking thread's)."""

    def __init__(
        self, conninfo: str | Callable[[], str], *, reread: Callable[[], None] | None = None
    ) -> None:
        """``conninfo``: the connection string, or what reads it for each connection
        opened; ``reread``: makes the next read ask its source again (see :meth:`_open`)."""
        self._conninfo = conninfo if callable(conninfo) else lambda: conninfo
        self._reread = reread
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._transactions = 0

    @property
    def round_trips(self) -> int:
        """Round trips so far: every statement, plus BEGIN and COMMIT of each transaction.

        The benchmark and the tests read it to hold the poll to one write per page.
        """
        return _CountingCursor.statements + 2 * self._transactions

    def connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken or _closed_by_server(conn):
            if conn is not None:
                conn.close()
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._opened = [c for c in self._opened if not c.closed]
                self._opened.append(conn)
        return conn

    def _open(self) -> psycopg.Connection[Any]:
        """A new connection. One that fails is tried once more if the login's secret, read
        again, now holds another: Secrets Manager's rotation changes the password before
        the secret, and a kept login is refused from then on. Any failure counts (the
        server's words for a refused password may be in its own language); a database
        that is down costs one more read of the secret."""
        conninfo = self._conninfo()
        try:
            return _connect(conninfo)
        except psycopg.OperationalError:
            if self._reread is None:
                raise
            self._reread()
            fresh = self._conninfo()
            if fresh == conninfo:
                raise
        return _connect(fresh)

    @contextmanager
    def transaction(self) -> Iterator[PostgresProductWriter]:
        """The poll's transaction, open while it waits for Clover (pages, retries, delete
        confirmations): it sets its own ``idle_in_transaction_session_timeout``
        (:data:`_BEGIN_POLL`), so a server hardened with a short one does not end the
        session of a poll that waits longer than that for a slow Clover.

        BEGIN and the setting go in one round trip (a statement without parameters may hold
        two); psycopg's ``transaction()`` would send BEGIN alone, so this one ends itself:
        COMMIT, or ROLLBACK on any exception (a connection that cannot roll back is closed)."""
        conn = self.connection()
        with self._lock:
            self._transactions += 1
        psycopg.Cursor(conn).execute(_BEGIN_POLL)  # counted as BEGIN (round_trips)
        try:
            yield PostgresProductWriter(conn)
        except BaseException:
            try:
                if not (conn.closed or conn.broken):
                    psycopg.Cursor(conn).execute(b"ROLLBACK")
            except psycopg.Error:
                conn.close()  # its state unknown: no later use may inherit it (a new one opens)
            raise
        psycopg.Cursor(conn).execute(b"COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


_BEGIN_POLL = b"BEGIN; SET LOCAL idle_in_transaction_session_timeout = '15min'"
"""As long as a Lambda invocation may last: no poll's transaction outlives its invocation
(a function ended or timed out closes its connections), so the server's own limit (an
operator's hardening, often a minute or less) only ever ended polls that were working."""


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=10,
        application_name="esl-sync",
        cursor_factory=_CountingCursor,
    )


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server closed (or is closing) this idle connection: a failover, a
    restart, an idle timeout or ``pg_terminate_backend`` ends every connection a warm
    function keeps, and the first statement sent on one fails (``AdminShutdown``, "server
    closed the connection"): the dispatcher's tick, or each poll worker's next poll.

    An idle connection has nothing to read, unless the server has said goodbye (its error
    message, the TLS close, the end of the stream): one ``poll`` of the socket, no round
    trip, finds that before anything is sent, so a new connection is opened instead
    (urllib3 checks its kept HTTP connections the same way). Now and then the server
    sends an idle connection something else (a parameter change); that connection is
    replaced too, which costs only the new connection. A connection inside a transaction
    is in use, and never replaced under its user. A server gone without a word (a network
    cut) is not found here: the statement fails, and psycopg marks the connection broken.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class PostgresMerchantDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, merchant_id: str) -> Merchant | None:
        rows = self._select(merchant_id, active_only=False)
        return rows[0] if rows else None

    def all(self, *, active_only: bool = False) -> list[Merchant]:
        return self._select(None, active_only=active_only)

    def save(self, merchant: Merchant, *, then: Callable[[], object] | None = None) -> None:
        conn = self._db.connection()
        with conn.transaction():
            conn.execute(_LOCK_MERCHANT, (merchant.merchant_id,))
            if merchant.store_code is not None:
                conn.execute(
                    _INVALIDATE_IF_MOVED,
                    {
                        "m": merchant.merchant_id,
                        "store": merchant.store_code,
                        "invalidated": INVALIDATED_HASH,
                    },
                )
            self._upsert(conn, merchant)
            if then is not None:
                then()

    def register_install(
        self,
        merchant_id: str,
        clover_base_url: str,
        store_code: str | None,
        *,
        then: Callable[[], object],
    ) -> Merchant:
        conn = self._db.connection()
        with conn.transaction():
            conn.execute(_LOCK_MERCHANT, (merchant_id,))
            conn.execute(_REGISTER_INSTALL, (merchant_id, merchant_id, store_code, clover_base_url))
            then()
        merchant = self.get(merchant_id)
        assert merchant is not None  # committed just now
        return merchant

    def assign_store(self, merchant_id: str, store_code: str) -> bool:
        conn = self._db.connection()
        with conn.transaction():
            conn.execute(_LOCK_MERCHANT, (merchant_id,))
            conn.execute(
                _INVALIDATE_IF_MOVED,
                {"m": merchant_id, "store": store_code, "invalidated": INVALIDATED_HASH},
            )
            updated = conn.execute(
                "UPDATE merchants SET store_code = %s, updated_at = now() WHERE merchant_id = %s",
                (store_code, merchant_id),
            ).rowcount
            if not updated:
                conn.execute(
                    "INSERT INTO store_assignments (merchant_id, store_code) VALUES (%s, %s)"
                    " ON CONFLICT (merchant_id) DO UPDATE SET store_code = EXCLUDED.store_code,"
                    " assigned_at = now()",
                    (merchant_id, store_code),
                )
        return bool(updated)

    def _upsert(self, conn: psycopg.Connection[Any], merchant: Merchant) -> None:
        conn.execute(
            "INSERT INTO merchants (merchant_id, store_code, clover_base_url, active,"
            " poll_interval_seconds) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (merchant_id) DO UPDATE SET store_code = EXCLUDED.store_code,"
            " clover_base_url = EXCLUDED.clover_base_url, active = EXCLUDED.active,"
            " poll_interval_seconds = EXCLUDED.poll_interval_seconds, updated_at = now()",
            (
                merchant.merchant_id,
                merchant.store_code,
                merchant.clover_base_url,
                merchant.active,
                merchant.poll_interval_seconds,
            ),
        )

    def _select(self, merchant_id: str | None, *, active_only: bool) -> list[Merchant]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT merchant_id, store_code, clover_base_url, active, poll_interval_seconds,"
                " created_at, pollable_since, (SELECT count(*) FROM label_state l"
                " WHERE l.merchant_id = m.merchant_id"
                " AND l.failure_class IN ('retryable', 'configuration', 'drift')) AS labels_failing"
                " FROM merchants m WHERE (%(id)s::text IS NULL OR merchant_id = %(id)s)"
                " AND (active OR NOT %(active_only)s) ORDER BY merchant_id",
                {"id": merchant_id, "active_only": active_only},
            )
            return [Merchant(**row) for row in cur.fetchall()]
