"""The label ledger's numbers for ``esl-sync status``, for every merchant it shows in one
statement: a fleet of 500 merchants is one round trip to Postgres, not 1,500 (a count of
stale labels, the refused items and the conflicting codes, each per merchant).

Each number is the one :class:`esl_sync.store.label_ledger.PostgresLabelLedger` gives a
single merchant (``len(stale_label_details)``, ``len(refused_items)``, the distinct codes of
``label_conflicts``), read by the same views, each filtered by the merchant as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from esl_sync.records import LabelCounts

if TYPE_CHECKING:
    import psycopg

# The ids as one JSON text (as the ledger sends its codes); each count a subquery by the
# merchant, so Postgres reads each merchant's rows as the per-merchant statements did.
_LABEL_COUNTS = """
SELECT m.merchant_id,
       (SELECT count(*) FROM stale_labels s WHERE s.merchant_id = m.merchant_id),
       (SELECT count(*) FROM products p
        WHERE p.merchant_id = m.merchant_id AND p.validation_error IS NOT NULL),
       (SELECT count(DISTINCT c.pc) FROM label_conflicts c WHERE c.merchant_id = m.merchant_id)
FROM (SELECT DISTINCT jsonb_array_elements_text(%s::jsonb) AS merchant_id) m
"""


def label_counts(
    conn: psycopg.Connection[Any], merchant_ids: Sequence[str]
) -> dict[str, LabelCounts]:
    if not merchant_ids:
        return {}
    rows = conn.execute(_LABEL_COUNTS, (json.dumps(list(merchant_ids)),)).fetchall()
    return {
        merchant_id: LabelCounts(int(stale), int(refused), int(conflicts))
        for merchant_id, stale, refused, conflicts in rows
    }
