"""Every merchant id the state table holds (``esl-sync restore catch-up``: a merchant whose
state item outlived its ``merchants`` row, registered after the database's backup).

Nothing else lists the table: a Scan reads every item (its read units are the table's size,
once per run of the command), and asks back only the key, never token material.
"""

from __future__ import annotations

from typing import Any

from esl_sync.store import aws_json
from esl_sync.store.aws_json import Caller

RESERVED_PREFIX = "#"
"""Keys of the table's reserved items (``#clover-webhook``); no merchant id starts so."""


class DynamoStateItems:
    """The :class:`~esl_sync.merchant_ports.StateItems` of one DynamoDB table."""

    def __init__(self, table_name: str, *, dynamodb: Caller | None = None) -> None:
        self._table = table_name
        self._dynamodb: Caller = dynamodb or aws_json.client("dynamodb")

    def state_item_ids(self) -> list[str]:
        found: list[str] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "#id",
            "ExpressionAttributeNames": {"#id": "merchant_id"},
        }
        while True:
            answer = self._dynamodb.call("Scan", request)
            for item in answer.get("Items", []):
                merchant_id = item.get("merchant_id", {}).get("S")
                if isinstance(merchant_id, str) and not merchant_id.startswith(RESERVED_PREFIX):
                    found.append(merchant_id)
            last = answer.get("LastEvaluatedKey")
            if not last:
                return sorted(found)
            request["ExclusiveStartKey"] = last
