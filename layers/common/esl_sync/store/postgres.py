"""Postgres implementations of the product and merchant interfaces (the label ledger is
in :mod:`esl_sync.store.label_ledger`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from esl_sync.merchant_ports import MerchantChanges, MerchantSetting, StoreWritten
from esl_sync.records import (
    DatabaseUnanswered,
    Fence,
    LabelOwners,
    Merchant,
    ProductChange,
    ProductRow,
    StoredHash,
)
from esl_sync.store.label_owners import fence_params, label_owners, refused
from esl_sync.store.pg_connection import CountingCursor, closed_by_server, connect, near_idle_end
from esl_sync.store.product_sql import MARK_DELETED, UPSERT

# The install and `merchants set-store` of one merchant take turns (a transaction-scoped
# advisory lock), so an assignment is never written beside an install that misses it.
_LOCK_MERCHANT = "SELECT pg_advisory_xact_lock(hashtext('esl-sync merchant ' || %s))"
INVALIDATED_HASH = "invalidated"
"""A label hash no record has: a label holding it counts as stale (to be sent again)."""

# An operator's change of a merchant: only the columns it names (MerchantChanges), so a
# change another command commits meanwhile to the others stays.
_CHANGE = "UPDATE merchants SET {}, updated_at = now() WHERE merchant_id = %s"
_CHANGEABLE = {
    name: sql.Identifier(name) for name in ("clover_base_url", "poll_interval_seconds", "active")
}

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
UPDATE label_state SET label_hash = CASE WHEN label_hash IS NOT NULL THEN %(invalidated)s END,
    -- nor are the old store's refusals (one UPDATE: a row is changed once a statement),
    -- a mark kept under another failure too (record_failures keeps it)
    failure_class = nullif(failure_class, 'bad_record'),
    failure_message = CASE failure_class WHEN 'bad_record' THEN NULL ELSE failure_message END,
    failed_at = CASE failure_class WHEN 'bad_record' THEN NULL ELSE failed_at END,
    refused_hash = NULL, refused_version = NULL
WHERE merchant_id = %(m)s
  AND (label_hash IS NOT NULL OR failure_class = 'bad_record' OR refused_version IS NOT NULL)
  AND EXISTS (SELECT 1 FROM moved)
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


# `merchants add`: a merchant registered as given, or a registered one's store code and
# `active` written, and of its own settings only those the command names (the others stay,
# whatever another command or an install wrote meanwhile): one statement.
_REGISTER = """
INSERT INTO merchants (merchant_id, store_code, clover_base_url, active, poll_interval_seconds)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (merchant_id) DO UPDATE SET store_code = EXCLUDED.store_code,
    active = EXCLUDED.active{}, updated_at = now()
"""
_SETTINGS: dict[MerchantSetting, sql.Identifier] = {
    "clover_base_url": sql.Identifier("clover_base_url"),
    "poll_interval_seconds": sql.Identifier("poll_interval_seconds"),
}


_new_tuple = tuple.__new__


class PostgresProductWriter:
    """Product writes inside one open transaction, under a poll's fence (None: none)."""

    def __init__(
        self, conn: psycopg.Connection[Any], fence: Fence | None = None, source: str = "clover"
    ) -> None:
        self._conn, self._fence, self._source_system = conn, fence, source

    def _fenced(self, statement: str, merchant_id: str, **params: str) -> list[Any]:
        """The rows of a write that checks the fence when it writes any (the last column:
        refused); FenceRefused if it was."""
        values = {"merchant_id": merchant_id, **params, **fence_params(self._fence)}
        rows = self._conn.execute(statement, values).fetchall()
        if any(row[-1] for row in rows):
            raise refused(self._conn, merchant_id, self._fence)
        return rows

    def upsert(self, merchant_id: str, rows: Sequence[ProductRow]) -> list[ProductChange]:
        latest = {r.key: r.row_json for r in rows}  # the last version of a product wins
        if not latest:
            return []
        payload = f"[{','.join(latest.values())}]"
        # Each change keyed by its row's own key (the poll's label plan keeps the key of every
        # label it sends: the item's id as read, not a copy from the answer, ≈ 120 bytes an
        # item less), made as a tuple directly (key, previous barcode and label hash, label
        # dropped), not through ProductChange's generated __new__ by name: a first sync
        # changes every row, ≈ 0.25 µs less each (issue 15).
        own = {key: key for key in latest}
        return [
            _new_tuple(ProductChange, (own.get(key := (sid, vid), key), barcode, lh, dropped))
            if existed
            else _new_tuple(ProductChange, (own.get(key := (sid, vid), key), None, None, dropped))
            for sid, vid, existed, barcode, lh, dropped, _ in self._fenced(
                UPSERT, merchant_id, rows=payload
            )
        ]

    def mark_deleted(
        self, merchant_id: str, keys: Iterable[tuple[str, str]]
    ) -> list[ProductChange]:
        payload = json.dumps([{"sid": sid, "vid": vid} for sid, vid in keys])
        return [
            ProductChange(key=(sid, vid), previous_barcode=barcode, previous_label_hash=lh)
            for sid, vid, barcode, lh, _ in self._fenced(MARK_DELETED, merchant_id, keys=payload)
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
        return label_owners(self._conn, merchant_id, pcs, self._fence)


class Database:
    """One connection per thread, opened lazily and reopened after it breaks, after the
    server closed it while it was idle (:func:`closed_by_server`), or as the server's idle
    session timeout ends it (:func:`near_idle_end`).

    A psycopg connection serves one thread at a time, and the poller overlaps the polls of
    a batch on worker threads it keeps (:mod:`esl_sync.sync.poll_batch`): so each thread
    has its own connection, kept between invocations (as many as the poller has workers,
    plus the invoking thread's)."""

    def __init__(
        self,
        conninfo: str | Callable[[], str],
        *,
        reread: Callable[[], None] | None = None,
        idle_session_seconds: int = 0,
        session_settings: bool = True,
    ) -> None:
        """``conninfo``: the connection string, or what reads it for each connection
        opened; ``reread``: makes the next read ask its source again (see :meth:`_open`);
        ``idle_session_seconds``: the server ends a connection idle that long (0: never;
        :func:`~esl_sync.store.pg_connection.connect`); without ``session_settings``, no
        setting is sent (nor the idle timeout: behind RDS Proxy, which they would pin)."""
        self._conninfo = conninfo if callable(conninfo) else lambda: conninfo
        self._idle_seconds = idle_session_seconds if session_settings else 0
        self._session_settings = session_settings
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
        return CountingCursor.statements + 2 * self._transactions

    def connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if (
            conn is None
            or conn.closed
            or conn.broken
            or near_idle_end(conn, self._idle_seconds)
            or closed_by_server(conn)
        ):
            if conn is not None:
                conn.close()
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._opened = [c for c in self._opened if not c.closed]
                self._opened.append(conn)
        return conn

    def read[T](self, read: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``read`` (statements that apply nothing) on this thread's connection, read again
        once on a new one if the server ended the connection as the read was sent: a
        failover or ``pg_terminate_backend`` whose goodbye was still on its way when
        :meth:`connection` checked it (the webhook's 503, the dispatcher's tick failed).
        Exact only for a read outside a transaction, so only such a one is read again."""
        conn = self.connection()
        idle = conn.info.transaction_status == TransactionStatus.IDLE
        try:
            return read(conn)
        except psycopg.OperationalError:
            if not (idle and (conn.broken or conn.closed)):
                raise
        return read(self.connection())

    def _open(self) -> psycopg.Connection[Any]:
        """A new connection. One that fails is tried once more if the login's secret, read
        again, now holds another: Secrets Manager's rotation changes the password before
        the secret, and a kept login is refused from then on. Any failure counts (the
        server's words for a refused password may be in its own language); a database
        that is down costs one more read of the secret."""
        conninfo = self._conninfo()
        try:
            return connect(conninfo, self._idle_seconds, session_settings=self._session_settings)
        except psycopg.OperationalError:
            if self._reread is None:
                raise
            self._reread()
            fresh = self._conninfo()
            if fresh == conninfo:
                raise
        return connect(fresh, self._idle_seconds, session_settings=self._session_settings)

    @contextmanager
    def transaction(self, fence: Fence | None = None) -> Iterator[PostgresProductWriter]:
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
            yield PostgresProductWriter(conn, fence)
        except BaseException:
            try:
                if not (conn.closed or conn.broken):
                    psycopg.Cursor(conn).execute(b"ROLLBACK")
            except (psycopg.Error, DatabaseUnanswered):
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


def _store_to_replace(conn: psycopg.Connection[Any], m: str, store: str | None) -> str | None:
    """In a writer's transaction, before it writes ``store`` (None: keeps the code): the
    merchant's lock (every writer of its store code takes it first), what the old store
    acknowledged invalidated if ``store`` is another, and the code the row holds (what the
    write replaces; read under the lock and the row's, so no other code commits between)."""
    conn.execute(_LOCK_MERCHANT, (m,))
    if store is not None:
        conn.execute(
            _INVALIDATE_IF_MOVED, {"m": m, "store": store, "invalidated": INVALIDATED_HASH}
        )
    row = conn.execute(
        "SELECT store_code FROM merchants WHERE merchant_id = %s FOR UPDATE", (m,)
    ).fetchone()
    return row[0] if row else None


class PostgresMerchantDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, merchant_id: str) -> Merchant | None:
        rows = self._select(merchant_id, active_only=False)
        return rows[0] if rows else None

    def all(self, *, active_only: bool = False) -> list[Merchant]:
        return self._select(None, active_only=active_only)

    def save(
        self,
        merchant: Merchant,
        *,
        then: Callable[[], object] | None = None,
        keep: Collection[MerchantSetting] = (),
    ) -> None:
        self.register(merchant, then=then, keep=keep)

    def register(
        self,
        merchant: Merchant,
        *,
        then: Callable[[], object] | None = None,
        keep: Collection[MerchantSetting] = (),
    ) -> StoreWritten:
        """The row written in one statement, and the store code it replaced
        (:meth:`esl_sync.merchant_ports.StoreWriter.register`)."""
        conn = self._db.connection()
        with conn.transaction():
            replaced = _store_to_replace(conn, merchant.merchant_id, merchant.store_code)
            self._upsert(conn, merchant, keep)
            if then is not None:
                then()
        return StoreWritten(True, replaced)

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

    def move_store(self, merchant_id: str, store_code: str) -> StoreWritten:
        conn = self._db.connection()
        with conn.transaction():
            replaced = _store_to_replace(conn, merchant_id, store_code)
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
        return StoreWritten(bool(updated), replaced)

    def change(self, merchant_id: str, changes: MerchantChanges) -> Merchant | None:
        """Only the named columns, in one ``UPDATE`` (see
        :class:`esl_sync.merchant_ports.MerchantEditor`)."""
        columns = [(_CHANGEABLE[name], value) for name, value in changes.items()]
        if columns:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(column) for column, _ in columns
            )
            updated = self._db.connection().execute(
                sql.SQL(_CHANGE).format(assignments),
                [*(value for _, value in columns), merchant_id],
            )
            if not updated.rowcount:
                return None
        return self.get(merchant_id)

    def _upsert(
        self, conn: psycopg.Connection[Any], merchant: Merchant, keep: Collection[MerchantSetting]
    ) -> None:
        written = [name for name in _SETTINGS if name not in keep]
        conn.execute(
            sql.SQL(_REGISTER).format(
                sql.SQL("").join(
                    sql.SQL(", {0} = EXCLUDED.{0}").format(_SETTINGS[n]) for n in written
                )
            ),
            (
                merchant.merchant_id,
                merchant.store_code,
                merchant.clover_base_url,
                merchant.active,
                merchant.poll_interval_seconds,
            ),
        )

    def _select(self, merchant_id: str | None, *, active_only: bool) -> list[Merchant]:
        return self._db.read(lambda conn: self._read(conn, merchant_id, active_only))

    @staticmethod
    def _read(
        conn: psycopg.Connection[Any], merchant_id: str | None, active_only: bool
    ) -> list[Merchant]:
        with conn.cursor(row_factory=dict_row) as cur:
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
