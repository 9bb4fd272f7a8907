"""The label ledger in Postgres: what Hipoink acknowledged, at which version, what failed,
which product each code's label shows, and the stores Hipoink refused.

The rule that picks one product per code lives in SQL (the ``label_owner`` function of
migration 0004, read back by :mod:`esl_sync.store.label_owners`), so the poll, the stale
count, the heal and ``status`` all read the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from psycopg.rows import dict_row

from esl_sync.merchant_ports import VersionsRaised
from esl_sync.records import (
    AckedLabel,
    Drift,
    Fence,
    LabelAck,
    LabelConflict,
    LabelCounts,
    LabelFailure,
    LastVerify,
    RefusedItem,
    RepairCandidate,
    RepairSnapshot,
    StaleLabel,
    StoreBlock,
    VerifyResult,
    VerifyTarget,
)
from esl_sync.store import label_counts, verify_results
from esl_sync.store.label_owners import (
    ADVANCE_CLOCK,
    PRODUCT_SELECT,
    fence_params,
    product_of,
    refused,
)
from esl_sync.store.postgres import INVALIDATED_HASH

if TYPE_CHECKING:
    from esl_sync.store.postgres import Database


_REPAIR_CANDIDATES = f"""
WITH head AS (
    SELECT now() AS now,
           (SELECT max(acknowledged_at) FROM label_state WHERE merchant_id = %(m)s) AS last_ack,
           coalesce((SELECT version FROM label_clocks WHERE merchant_id = %(m)s), 0) AS clock
), stale AS (
    SELECT s.pc, s.since, s.failure_class, s.failed_at, l.requeued_at,
           p.source_id IS NOT NULL AS has_product, {PRODUCT_SELECT}
    FROM stale_labels s
    LEFT JOIN label_state l ON l.merchant_id = s.merchant_id AND l.pc = s.pc
    LEFT JOIN products p ON p.merchant_id = s.merchant_id AND p.source_system = s.source_system
         AND p.source_id = s.source_id AND p.source_variant_id = s.source_variant_id
    WHERE s.merchant_id = %(m)s
)
SELECT head.now, head.last_ack, head.clock, stale.* FROM head LEFT JOIN stale ON true
ORDER BY stale.pc
"""  # noqa: S608 - the interpolated names are the constant column list above

# What each code's label should show now, as committed: the hash of the product the
# label_owner rule puts on it (NULL: no product claims the code).
_LABELS_WANTED = """
SELECT code.pc, p.label_hash FROM jsonb_array_elements_text(%(pcs)s::jsonb) AS code (pc)
LEFT JOIN LATERAL label_owner(%(m)s, code.pc) o ON true
LEFT JOIN products p ON p.merchant_id = %(m)s AND p.source_system = o.source_system
     AND p.source_id = o.source_id AND p.source_variant_id = o.source_variant_id
"""

# Queued again now; and retryable failures the pass found fixed (no longer stale) are
# forgotten, so the merchant lookup stops counting them (only those older than the pass's
# own reading: a failure recorded meanwhile is kept).
_MARK_REQUEUED = """
WITH queued AS (
    INSERT INTO label_state (merchant_id, pc, requeued_at)
    SELECT %(m)s, pc, now() FROM unnest(%(pcs)s::text[]) AS pc
    ON CONFLICT (merchant_id, pc) DO UPDATE SET requeued_at = EXCLUDED.requeued_at
)
UPDATE label_state l SET failure_class = NULL, failure_message = NULL, failed_at = NULL
WHERE %(before)s::timestamptz IS NOT NULL AND l.merchant_id = %(m)s
  AND l.failure_class IN ('retryable', 'configuration', 'drift') AND l.failed_at < %(before)s
  AND NOT l.pc = ANY(%(pcs)s)
  AND NOT EXISTS (SELECT 1 FROM stale_labels s WHERE s.merchant_id = l.merchant_id
                  AND s.pc = l.pc)
"""

# The block of the job's store, claiming the one re-test when the cool-down has passed. Two
# senders racing for it serialise on the row lock; the loser re-reads retry_after and sees
# the block. A block names the store Hipoink refused: a merchant moved to another store (a
# mistyped code corrected) is not held by the old one's.
_CHECK_BLOCK = """
WITH claimed AS (
    UPDATE store_blocks SET retry_after = now() + make_interval(secs => %(cooldown)s)
    WHERE merchant_id = %(m)s AND store_code = %(store)s AND retry_after <= now()
    RETURNING merchant_id, store_code, reason, blocked_at, retry_after, true AS retest
)
SELECT * FROM claimed
UNION ALL
SELECT merchant_id, store_code, reason, blocked_at, retry_after, false
FROM store_blocks WHERE merchant_id = %(m)s AND store_code = %(store)s
  AND NOT EXISTS (SELECT 1 FROM claimed)
"""


# A verify's reading: every label acknowledged for the merchant, with the hash and the
# product of its code's owner now; no row at all (not even the head) when the store is no
# longer the merchant's.
_VERIFY_TARGETS = f"""
SELECT l.pc, l.label_hash, l.version, p.label_hash AS wanted,
       p.source_id IS NOT NULL AS has_product, {PRODUCT_SELECT}
FROM merchants m
LEFT JOIN label_state l ON l.merchant_id = m.merchant_id AND l.acknowledged_at IS NOT NULL
LEFT JOIN LATERAL label_owner(m.merchant_id, l.pc) o ON l.pc IS NOT NULL
LEFT JOIN products p ON p.merchant_id = m.merchant_id AND p.source_system = o.source_system
     AND p.source_id = o.source_id AND p.source_variant_id = o.source_variant_id
WHERE m.merchant_id = %(m)s AND m.store_code = %(store)s
ORDER BY l.pc
"""  # noqa: S608 - the interpolated names are the constant column list above

# Drifted labels stop counting as current: a hash no record has (the stale_labels view lists
# them; versions kept, so no older job gets through), failure class 'drift'. Only where the
# acknowledgement is still the one the verify compared (a job acknowledged since wins) and
# the store still the merchant's (_STORE_IS_CURRENT).
_MARK_DRIFTED = """
UPDATE label_state l SET label_hash = %(invalidated)s, failure_class = 'drift',
       failure_message = d.message, failed_at = now()
FROM jsonb_to_recordset(%(d)s::jsonb) AS d(pc text, label_hash text, version bigint, message text)
WHERE l.merchant_id = %(m)s AND l.pc = d.pc AND l.acknowledged_at IS NOT NULL
  AND l.label_hash IS NOT DISTINCT FROM d.label_hash AND l.version IS NOT DISTINCT FROM d.version
  AND EXISTS (SELECT 1 FROM merchants WHERE merchant_id = %(m)s AND store_code = %(store)s)
"""

_CLAIM_VERIFY = """
INSERT INTO label_verifications (merchant_id, queued_at) VALUES (%(m)s, now())
ON CONFLICT (merchant_id) DO UPDATE SET queued_at = EXCLUDED.queued_at
WHERE label_verifications.queued_at <= now() - make_interval(hours => %(hours)s)
RETURNING true
"""


# _STORE_IS_CURRENT: what a job's store acknowledged counts only while it is the merchant's
# store. A job decided before the merchant moved (still queued) goes to the old store, whose
# acknowledgement must not make the new store's label look current: acknowledge reads the
# merchant row FOR SHARE (waits for a move committing, checks its code); renew checks too.


# The floor is the server's clock in microseconds since 1970 (the server's, not the
# operator's: one clock for every run), compared and set in one statement.
_RAISE_LABEL_VERSIONS = """
SELECT s.last_value, f.floor,
       CASE WHEN s.last_value < f.floor THEN setval('label_versions', f.floor) END
FROM label_versions s,
     (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS floor) f
"""


class PostgresLabelLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, AckedLabel]:
        result = self._db.connection().execute(
            "SELECT pc, label_hash, version FROM label_state"
            " WHERE merchant_id = %s AND pc = ANY(%s) AND acknowledged_at IS NOT NULL",
            (merchant_id, list(pcs)),
        )
        return {pc: AckedLabel(label_hash, version) for pc, label_hash, version in result}

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        if not acks:
            return
        self._db.connection().execute(
            "INSERT INTO label_state (merchant_id, pc, label_hash, version, acknowledged_at)"
            " SELECT %(m)s, a.pc, a.label_hash, a.version, now() FROM jsonb_to_recordset("
            "%(acks)s::jsonb) AS a(pc text, label_hash text, version bigint)"
            # Only while the job's store is still the merchant's (see _STORE_IS_CURRENT).
            " WHERE EXISTS (SELECT 1 FROM merchants"
            " WHERE merchant_id = %(m)s AND store_code = %(store)s FOR SHARE)"
            " ON CONFLICT (merchant_id, pc) DO UPDATE SET label_hash = EXCLUDED.label_hash,"
            " version = EXCLUDED.version, acknowledged_at = EXCLUDED.acknowledged_at,"
            " failure_class = NULL, failure_message = NULL, failed_at = NULL, requeued_at = NULL,"
            " refused_hash = NULL, refused_version = NULL",
            {
                "m": merchant_id,
                "store": store_code,
                "acks": json.dumps(
                    [{"pc": a.pc, "label_hash": a.label_hash, "version": a.version} for a in acks]
                ),
            },
        )

    def renew(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        if not acks:
            return
        self._db.connection().execute(
            "UPDATE label_state l SET version = a.version FROM jsonb_to_recordset("
            "%(acks)s::jsonb) AS a(pc text, version bigint) WHERE l.merchant_id = %(m)s"
            " AND l.pc = a.pc AND (l.version IS NULL OR l.version < a.version)"
            " AND EXISTS (SELECT 1 FROM merchants"  # _STORE_IS_CURRENT
            " WHERE merchant_id = %(m)s AND store_code = %(store)s)",
            {
                "m": merchant_id,
                "store": store_code,
                "acks": json.dumps([{"pc": a.pc, "version": a.version} for a in acks]),
            },
        )

    def record_failures(
        self, merchant_id: str, failures: Sequence[LabelFailure], *, store_code: str | None = None
    ) -> None:
        if not failures:
            return
        rows = json.dumps([_failure_row(f) for f in failures])
        self._db.connection().execute(
            "INSERT INTO label_state AS l (merchant_id, pc, failure_class, failure_message,"
            " failed_at, refused_hash, refused_version) SELECT %(m)s, f.pc, f.failure_class,"
            " f.message, now(), f.refused_hash, CASE WHEN EXISTS (SELECT 1 FROM merchants WHERE"
            " merchant_id = %(m)s AND store_code = %(store)s FOR SHARE) THEN f.refused_version END"
            " FROM jsonb_to_recordset(%(f)s::jsonb) AS f(pc text, failure_class text, message text,"
            " refused_hash text, refused_version bigint) ON CONFLICT (merchant_id, pc) DO UPDATE"
            " SET failure_class = EXCLUDED.failure_class, failed_at = EXCLUDED.failed_at,"
            " failure_message = EXCLUDED.failure_message,"  # another failure keeps a mark:
            " refused_hash = CASE WHEN EXCLUDED.refused_version IS NULL THEN l.refused_hash ELSE"
            " EXCLUDED.refused_hash END, refused_version = coalesce(EXCLUDED.refused_version,"
            " l.refused_version)",
            {"m": merchant_id, "store": store_code, "f": rows},
        )

    def refusals(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, LabelAck]:
        result = self._db.connection().execute(
            "SELECT pc, refused_hash, refused_version FROM label_state WHERE merchant_id = %s"
            " AND pc = ANY(%s) AND refused_version IS NOT NULL",
            (merchant_id, list(pcs)),
        )
        return {pc: LabelAck(pc, label_hash, version) for pc, label_hash, version in result}

    def stale_labels_total(self) -> int:
        row = self._db.connection().execute("SELECT count(*) FROM stale_labels").fetchone()
        return int(row[0]) if row else 0

    def stale_label_details(self, merchant_id: str) -> list[StaleLabel]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT pc, action, name, since, failure_class, failure_message, failed_at"
                " FROM stale_labels WHERE merchant_id = %s ORDER BY pc, action",
                (merchant_id,),
            )
            return [StaleLabel(**row) for row in cur.fetchall()]

    def label_conflicts(self, merchant_id: str) -> list[LabelConflict]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT pc, source_id, name, shown, claims, shown_source_id FROM label_conflicts"
                " WHERE merchant_id = %s ORDER BY pc, NOT shown, source_id",
                (merchant_id,),
            )
            return [LabelConflict(**row) for row in cur.fetchall()]

    def refused_items(self, merchant_id: str) -> list[RefusedItem]:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT source_id AS item_id, barcode AS pc, name, refused_at AS since,"
                " label_hash IS NOT NULL AS label_kept, validation_error AS problem"
                " FROM products WHERE merchant_id = %s AND validation_error IS NOT NULL"
                " ORDER BY source_id, source_variant_id",
                (merchant_id,),
            )
            return [RefusedItem(**row) for row in cur.fetchall()]

    def labels_wanted(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]:
        codes = json.dumps(sorted(set(pcs)))
        result = self._db.connection().execute(_LABELS_WANTED, {"m": merchant_id, "pcs": codes})
        return dict(result.fetchall())

    def advance_label_clock(self, merchant_id: str, *, fence: Fence | None = None) -> int:
        params = {"m": merchant_id, **fence_params(fence)}
        conn = self._db.connection()
        row = conn.execute(ADVANCE_CLOCK, params).fetchone()
        if row is None:  # the fence refused it: nothing written
            raise refused(conn, merchant_id, fence)
        return int(row[0])

    def seen_fences(self, merchant_id: str | None = None) -> dict[str, Fence]:
        rows = self._db.connection().execute(
            "SELECT merchant_id, fence_epoch, fence_generation FROM label_clocks"
            " WHERE fence_epoch IS NOT NULL AND fence_generation IS NOT NULL"
            " AND (%(m)s::text IS NULL OR merchant_id = %(m)s) ORDER BY merchant_id",
            {"m": merchant_id},
        )
        return {m: Fence(epoch, int(generation)) for m, epoch, generation in rows.fetchall()}

    def raise_label_versions(self) -> VersionsRaised:
        # setval is not transactional: it holds from here on, whatever the caller does.
        row = self._db.connection().execute(_RAISE_LABEL_VERSIONS).fetchone()
        assert row is not None  # a sequence has its one row
        return VersionsRaised(int(row[0]), int(row[1]), None if row[2] is None else int(row[2]))

    def repair_candidates(self, merchant_id: str) -> RepairSnapshot:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(_REPAIR_CANDIDATES, {"m": merchant_id})
            rows = cur.fetchall()
        return RepairSnapshot(
            now=rows[0]["now"],
            last_ack=rows[0]["last_ack"],
            clock=rows[0]["clock"],
            candidates=[
                RepairCandidate(
                    pc=row["pc"],
                    product=product_of(row) if row["has_product"] else None,
                    since=row["since"],
                    failure_class=row["failure_class"],
                    failed_at=row["failed_at"],
                    requeued_at=row["requeued_at"],
                )
                for row in rows
                if row["pc"] is not None
            ],
        )

    def mark_requeued(
        self, merchant_id: str, pcs: Sequence[str], *, clear_failures_before: datetime | None
    ) -> None:
        self._db.connection().execute(
            _MARK_REQUEUED, {"m": merchant_id, "pcs": list(pcs), "before": clear_failures_before}
        )

    def check_block(
        self, merchant_id: str, store_code: str, cooldown_seconds: int
    ) -> StoreBlock | None:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(
                _CHECK_BLOCK, {"m": merchant_id, "store": store_code, "cooldown": cooldown_seconds}
            )
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
        # that no product wants stays visible to the self-healing pass as a delete. The
        # versions stay: an older job still cannot replace what Hipoink holds.
        self._db.connection().execute(
            "UPDATE label_state SET label_hash = %s "
            "WHERE merchant_id = %s AND label_hash IS NOT NULL",
            (INVALIDATED_HASH, merchant_id),
        )

    def verify_targets(self, merchant_id: str, store_code: str) -> list[VerifyTarget] | None:
        with self._db.connection().cursor(row_factory=dict_row) as cur:
            cur.execute(_VERIFY_TARGETS, {"m": merchant_id, "store": store_code})
            rows = cur.fetchall()
        if not rows:
            return None
        return [
            VerifyTarget(
                pc=row["pc"],
                label_hash=row["label_hash"],
                version=row["version"],
                wanted=row["wanted"],
                product=product_of(row) if row["has_product"] else None,
            )
            for row in rows
            if row["pc"] is not None
        ]

    def mark_drifted(self, merchant_id: str, store_code: str, drifts: Sequence[Drift]) -> int:
        if not drifts:
            return 0
        marks = [
            {
                "pc": d.pc,
                "label_hash": d.label_hash,
                "version": d.version,
                "message": f"Hipoink holds otherwise than acknowledged: {', '.join(d.fields)}",
            }
            for d in drifts
        ]
        return (
            self._db.connection()
            .execute(
                _MARK_DRIFTED,
                {
                    "m": merchant_id,
                    "store": store_code,
                    "invalidated": INVALIDATED_HASH,
                    "d": json.dumps(marks),
                },
            )
            .rowcount
        )

    def record_verify(self, result: VerifyResult) -> None:
        verify_results.record(self._db.connection(), result)

    def last_verifies(self) -> dict[str, LastVerify]:
        return verify_results.last_verifies(self._db.connection())

    def label_counts(self, merchant_ids: Sequence[str]) -> dict[str, LabelCounts]:
        return label_counts.label_counts(self._db.connection(), merchant_ids)

    def claim_verify(self, merchant_id: str, interval_hours: int) -> bool:
        row = (
            self._db.connection()
            .execute(_CLAIM_VERIFY, {"m": merchant_id, "hours": interval_hours})
            .fetchone()
        )
        return row is not None

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


def _failure_row(failure: LabelFailure) -> dict[str, object]:
    """One failure as ``record_failures`` writes it (the refused record: ``bad_record`` only)."""
    refused = failure.refused if failure.failure_class == "bad_record" else None
    return {
        "pc": failure.pc,
        "failure_class": failure.failure_class,
        "message": failure.message,
        "refused_hash": None if refused is None else refused.label_hash,
        "refused_version": None if refused is None else refused.version,
    }
