"""Postgres implementations of the product, merchant and label-ledger interfaces."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row

from esl_sync.products import Product
from esl_sync.store.interfaces import (
    LabelAck,
    LabelFailure,
    LabelRepairs,
    Merchant,
    ProductChange,
    ProductRow,
    StaleLabel,
    StoreBlock,
)

_UPSERT = """
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        source_system text, source_id text, source_variant_id text, name text, barcode text,
        sku text, price numeric, cost numeric, currency text, price_type text, unit text,
        status text, extra_data jsonb, raw jsonb, source_modified_time bigint,
        validation_error text, content_hash text, label_hash text)
),
previous AS (
    SELECT p.source_system, p.source_id, p.source_variant_id, p.barcode, p.label_hash
    FROM products p JOIN incoming i USING (source_system, source_id, source_variant_id)
    WHERE p.merchant_id = %(merchant_id)s
),
written AS (
    INSERT INTO products AS p (
        source_system, merchant_id, source_id, source_variant_id, name, barcode, sku, price,
        cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash, deleted_at)
    SELECT source_system, %(merchant_id)s, source_id, source_variant_id, name, barcode, sku,
        price, cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash,
        CASE WHEN status = 'deleted' THEN now() END
    FROM incoming
    ON CONFLICT (source_system, merchant_id, source_id, source_variant_id) DO UPDATE SET
        name = EXCLUDED.name, barcode = EXCLUDED.barcode, sku = EXCLUDED.sku,
        price = EXCLUDED.price, cost = EXCLUDED.cost, currency = EXCLUDED.currency,
        price_type = EXCLUDED.price_type, unit = EXCLUDED.unit, status = EXCLUDED.status,
        extra_data = EXCLUDED.extra_data, raw = EXCLUDED.raw,
        source_modified_time = EXCLUDED.source_modified_time,
        validation_error = EXCLUDED.validation_error, content_hash = EXCLUDED.content_hash,
        label_hash = EXCLUDED.label_hash, updated_at = now(),
        deleted_at = CASE WHEN EXCLUDED.status = 'deleted'
                          THEN coalesce(p.deleted_at, now()) END
    WHERE p.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING p.source_system, p.source_id, p.source_variant_id
)
SELECT w.source_id, w.source_variant_id, prev.source_id IS NOT NULL AS existed,
       prev.barcode, prev.label_hash
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
    extra_data = p.extra_data || '{"removed_because": "not listed by Clover (404)"}'
FROM target t
WHERE p.merchant_id = %(merchant_id)s AND p.source_system = t.source_system
  AND p.source_id = t.source_id AND p.source_variant_id = t.source_variant_id
RETURNING t.source_id, t.source_variant_id, t.barcode, t.label_hash
"""


def _row_json(row: ProductRow) -> dict[str, Any]:
    product = row.product
    data = product.model_dump(mode="json", exclude={"merchant_id"})
    data["content_hash"] = content_hash(row)
    data["label_hash"] = row.label_hash
    return data


def content_hash(row: ProductRow) -> str:
    """The product's digest together with its label's: a mapping change rewrites the row."""
    return f"{row.product.content_hash}:{row.label_hash or '-'}"


class PostgresProductWriter:
    """Product writes inside one open transaction."""

    def __init__(self, conn: psycopg.Connection[Any], source_system: str = "clover") -> None:
        self._conn = conn
        self._source_system = source_system

    def upsert(self, merchant_id: str, rows: Sequence[ProductRow]) -> list[ProductChange]:
        latest = {(r.product.source_id, r.product.source_variant_id): r for r in rows}
        if not latest:
            return []
        payload = json.dumps([_row_json(r) for r in latest.values()])
        result = self._conn.execute(_UPSERT, {"rows": payload, "merchant_id": merchant_id})
        return [
            ProductChange(
                key=(sid, vid),
                previous_barcode=barcode if existed else None,
                previous_label_hash=label_hash if existed else None,
            )
            for sid, vid, existed, barcode, label_hash in result.fetchall()
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


class _CountingCursor(psycopg.Cursor[Any]):
    """Counts the statements this process sends: each one is a round trip to the server."""

    statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        _CountingCursor.statements += 1
        return super().execute(*args, **kwargs)


class Database:
    """One connection per process, opened lazily and reopened after it breaks."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._transactions = 0

    @property
    def round_trips(self) -> int:
        """Round trips so far: every statement, plus BEGIN and COMMIT of each transaction.

        The benchmark and the tests read it to hold the poll to one write per page.
        """
        return _CountingCursor.statements + 2 * self._transactions

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=10,
                application_name="esl-sync",
                cursor_factory=_CountingCursor,
            )
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[PostgresProductWriter]:
        conn = self.connection()
        self._transactions += 1
        with conn.transaction():
            yield PostgresProductWriter(conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
            self._upsert(conn, merchant)
            if then is not None:
                then()

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
                " created_at FROM merchants WHERE (%(id)s::text IS NULL OR merchant_id = %(id)s)"
                " AND (active OR NOT %(active_only)s) ORDER BY merchant_id",
                {"id": merchant_id, "active_only": active_only},
            )
            return [Merchant(**row) for row in cur.fetchall()]


class PostgresLabelLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]:
        result = self._db.connection().execute(
            "SELECT pc, label_hash FROM label_state"
            " WHERE merchant_id = %s AND pc = ANY(%s) AND acknowledged_at IS NOT NULL",
            (merchant_id, list(pcs)),
        )
        return {pc: label_hash for pc, label_hash in result.fetchall()}

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck]) -> None:
        if not acks:
            return
        self._db.connection().execute(
            "INSERT INTO label_state (merchant_id, pc, label_hash, acknowledged_at)"
            " SELECT %(m)s, a.pc, a.label_hash, now()"
            " FROM jsonb_to_recordset(%(acks)s::jsonb) AS a(pc text, label_hash text)"
            " ON CONFLICT (merchant_id, pc) DO UPDATE SET label_hash = EXCLUDED.label_hash,"
            " acknowledged_at = EXCLUDED.acknowledged_at, failure_class = NULL,"
            " failure_message = NULL, failed_at = NULL",
            {
                "m": merchant_id,
                "acks": json.dumps([{"pc": a.pc, "label_hash": a.label_hash} for a in acks]),
            },
        )

    def record_failures(self, merchant_id: str, failures: Sequence[LabelFailure]) -> None:
        if not failures:
            return
        self._db.connection().execute(
            "INSERT INTO label_state (merchant_id, pc, failure_class, failure_message, failed_at)"
            " SELECT %(m)s, f.pc, f.failure_class, f.message, now()"
            " FROM jsonb_to_recordset(%(f)s::jsonb) AS f(pc text, failure_class text, message text)"
            " ON CONFLICT (merchant_id, pc) DO UPDATE SET failure_class = EXCLUDED.failure_class,"
            " failure_message = EXCLUDED.failure_message, failed_at = EXCLUDED.failed_at",
            {
                "m": merchant_id,
                "f": json.dumps(
                    [
                        {"pc": f.pc, "failure_class": f.failure_class, "message": f.message}
                        for f in failures
                    ]
                ),
            },
        )

    def stale_labels_total(self) -> int:
        row = self._db.connection().execute("SELECT count(*) FROM stale_labels").fetchone()
        return int(row[0]) if row else 0

    def stale_labels(self, merchant_id: str) -> int:
        row = (
            self._db.connection()
            .execute("SELECT count(*) FROM stale_labels WHERE merchant_id = %s", (merchant_id,))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def stale_label_details(self, merchant_id: str) -> list[StaleLabel]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT pc, action, name, since, failure_class, failure_message, failed_at"
                " FROM stale_labels WHERE merchant_id = %s ORDER BY pc, action",
                (merchant_id,),
            )
            return [StaleLabel(**row) for row in cur.fetchall()]

    def repairs(self, merchant_id: str, stale_for: timedelta) -> LabelRepairs:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(_REPAIRS, {"m": merchant_id, "age": stale_for})
            rows = cur.fetchall()
        return LabelRepairs(
            upserts=[Product(**_product_fields(r)) for r in rows if r["action"] == "upsert"],
            deletes=[r["pc"] for r in rows if r["action"] == "delete"],
        )

    def check_block(self, merchant_id: str, cooldown_seconds: int) -> StoreBlock | None:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(_CHECK_BLOCK, {"m": merchant_id, "cooldown": cooldown_seconds})
            row = cur.fetchone()
        return StoreBlock(**row) if row else None

    def block_store(
        self, merchant_id: str, store_code: str, reason: str, cooldown_seconds: int
    ) -> None:
        self._db.connection().execute(
            "INSERT INTO store_blocks (merchant_id, store_code, reason, retry_after)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (merchant_id) DO UPDATE SET store_code = EXCLUDED.store_code,"
            " reason = EXCLUDED.reason, retry_after = EXCLUDED.retry_after",
            (merchant_id, store_code, reason, cooldown_seconds),
        )

    def invalidate_acknowledgements(self, merchant_id: str) -> None:
        # A hash no record has: every product's label differs, and a code Hipoink holds
        # that no product wants stays visible to the self-healing pass as a delete.
        self._db.connection().execute(
            "UPDATE label_state SET label_hash = 'invalidated' "
            "WHERE merchant_id = %s AND label_hash IS NOT NULL",
            (merchant_id,),
        )

    def unblock_store(self, merchant_id: str) -> bool:
        result = self._db.connection().execute(
            "DELETE FROM store_blocks WHERE merchant_id = %s", (merchant_id,)
        )
        return result.rowcount > 0

    def store_blocks(self) -> dict[str, StoreBlock]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT merchant_id, store_code, reason, blocked_at, retry_after"
                " FROM store_blocks ORDER BY merchant_id"
            )
            return {row["merchant_id"]: StoreBlock(**row) for row in cur.fetchall()}


_PRODUCT_COLUMNS = (
    "source_system",
    "merchant_id",
    "source_id",
    "source_variant_id",
    "name",
    "barcode",
    "sku",
    "price",
    "cost",
    "currency",
    "price_type",
    "unit",
    "status",
    "extra_data",
    "source_modified_time",
    "validation_error",
)


def _product_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {column: row[column] for column in _PRODUCT_COLUMNS}


# Stale for longer than %(age)s, counted from the product's change or the label's last
# failure (a store that keeps failing is retried once per period, not on every pass). A
# record Hipoink refused (bad_record) is sent again only once its product has changed.
_REPAIRS = f"""
SELECT s.action, s.pc, {", ".join(f"p.{c}" for c in _PRODUCT_COLUMNS)}
FROM stale_labels s
LEFT JOIN products p ON p.merchant_id = s.merchant_id AND p.source_system = s.source_system
     AND p.source_id = s.source_id AND p.source_variant_id = s.source_variant_id
WHERE s.merchant_id = %(m)s
  AND greatest(s.since, s.failed_at) < now() - %(age)s::interval
  AND NOT coalesce(s.failure_class = 'bad_record' AND s.failed_at >= s.since, false)
ORDER BY s.pc
"""  # noqa: S608 - the interpolated names are the constant column list above

# The block, claiming the one re-test when the cool-down has passed. Two senders racing for
# it serialise on the row lock; the loser re-reads retry_after and sees the block.
_CHECK_BLOCK = """
WITH claimed AS (
    UPDATE store_blocks SET retry_after = now() + make_interval(secs => %(cooldown)s)
    WHERE merchant_id = %(m)s AND retry_after <= now()
    RETURNING merchant_id, store_code, reason, blocked_at, retry_after, true AS retest
)
SELECT * FROM claimed
UNION ALL
SELECT merchant_id, store_code, reason, blocked_at, retry_after, false
FROM store_blocks WHERE merchant_id = %(m)s AND NOT EXISTS (SELECT 1 FROM claimed)
"""
