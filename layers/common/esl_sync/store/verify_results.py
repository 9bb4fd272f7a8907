"""What each merchant's last label verify found, in Postgres (``label_verify_results``,
migration 0008): written by the sender after each verify, read by ``esl-sync status``.

One row per merchant, the last verify whoever asked for it; the refusals in a row and when
the last verify that was not refused ended are kept across refusals, so a store whose every
verify is refused (an answer format read wrong) shows since when.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from esl_sync.records import LastVerify, VerifyResult

if TYPE_CHECKING:
    import psycopg

# One statement. A merchant not registered (a request queued before it was removed by hand)
# inserts nothing, rather than failing on the foreign key.
_RECORD = """
INSERT INTO label_verify_results AS v (merchant_id, store_code, requested_by, verified_at,
    compared, drifted, marked, unknown_codes, skipped_products, refused, refused_in_a_row,
    completed_at)
SELECT m.merchant_id, %(store_code)s, %(requested_by)s, now(), %(compared)s, %(drifted)s,
    %(marked)s, %(unknown_codes)s, %(skipped_products)s, %(refused)s::text,
    CASE WHEN %(refused)s::text IS NULL THEN 0 ELSE 1 END,
    CASE WHEN %(refused)s::text IS NULL THEN now() END
FROM merchants m WHERE m.merchant_id = %(merchant_id)s
ON CONFLICT (merchant_id) DO UPDATE SET store_code = EXCLUDED.store_code,
    requested_by = EXCLUDED.requested_by, verified_at = EXCLUDED.verified_at,
    compared = EXCLUDED.compared, drifted = EXCLUDED.drifted, marked = EXCLUDED.marked,
    unknown_codes = EXCLUDED.unknown_codes, skipped_products = EXCLUDED.skipped_products,
    refused = EXCLUDED.refused,
    refused_in_a_row = CASE WHEN EXCLUDED.refused IS NULL THEN 0
                            ELSE v.refused_in_a_row + 1 END,
    completed_at = coalesce(EXCLUDED.completed_at, v.completed_at)
"""

_RESULT_FIELDS = tuple(VerifyResult.__dataclass_fields__)


def record(conn: psycopg.Connection[Any], result: VerifyResult) -> None:
    conn.execute(_RECORD, asdict(result))


def last_verifies(conn: psycopg.Connection[Any]) -> dict[str, LastVerify]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {', '.join(_RESULT_FIELDS)}, verified_at, refused_in_a_row, completed_at"  # noqa: S608 - the constant field names
            " FROM label_verify_results ORDER BY merchant_id"
        )
        return {
            row["merchant_id"]: LastVerify(
                result=VerifyResult(**{name: row[name] for name in _RESULT_FIELDS}),
                verified_at=row["verified_at"],
                refused_in_a_row=row["refused_in_a_row"],
                completed_at=row["completed_at"],
            )
            for row in cur.fetchall()
        }
