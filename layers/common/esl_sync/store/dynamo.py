"""Merchant state and Clover tokens in DynamoDB (one item per merchant).

State writes are conditional on the version read (optimistic concurrency). The poll
lease (``lease_owner``, ``lease_until_ms``) sits beside the version, in its own
conditional writes, so taking it never makes a state write stale. Tokens are
encrypted with the stack's customer-managed KMS key, bound to the merchant id through the
encryption context, so reading the table alone never reveals them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from esl_sync.store.interfaces import MerchantState, StaleStateError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_kms.client import KMSClient

_STATE_FIELDS = (
    "high_water_ms",
    "poll_count",
    "last_sweep_ms",
    "last_success_at",
    "last_failure_at",
    "last_failure_class",
    "last_failure_message",
    "consecutive_failures",
    "auth_state",
)

_LEASE_NAMES = {"#owner": "lease_owner", "#until": "lease_until_ms"}


def _to_attr(value: object) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, datetime):
        return {"S": value.isoformat()}
    return {"S": str(value)}


def _from_attr(name: str, attr: dict[str, Any]) -> object:
    if "NULL" in attr:
        return None
    if "N" in attr:
        return int(attr["N"])
    if "BOOL" in attr:
        return attr["BOOL"]
    value = attr["S"]
    return datetime.fromisoformat(value) if name.endswith("_at") else value


class DynamoStateStore:
    """The :class:`~esl_sync.store.interfaces.StateStore` on one DynamoDB table."""

    def __init__(
        self,
        table_name: str,
        key_id: str | None,
        *,
        dynamodb: DynamoDBClient | None = None,
        kms: KMSClient | None = None,
    ) -> None:
        self._table = table_name
        self._key_id = key_id
        self._dynamodb = dynamodb or boto3.client("dynamodb")
        self._kms = kms

    def load(self, merchant_id: str) -> MerchantState:
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"merchant_id": {"S": merchant_id}}, ConsistentRead=True
        ).get("Item")
        state = MerchantState(merchant_id=merchant_id)
        if not item:
            return state
        state.version = int(item.get("version", {"N": "0"})["N"])
        for name in _STATE_FIELDS:
            if name in item:
                setattr(state, name, _from_attr(name, dict(item[name])))
        return state

    def save(self, state: MerchantState) -> None:
        names = {f"#{i}": name for i, name in enumerate(_STATE_FIELDS)}
        values: dict[str, Any] = {
            f":{i}": _to_attr(getattr(state, name)) for i, name in enumerate(_STATE_FIELDS)
        }
        values[":expected"] = {"N": str(state.version)}
        values[":next"] = {"N": str(state.version + 1)}
        assignments = ", ".join(f"#{i} = :{i}" for i in range(len(_STATE_FIELDS)))
        if not self._conditional_update(
            state.merchant_id,
            f"SET {assignments}, version = :next",
            "attribute_not_exists(version) OR version = :expected",
            values,
            names,
        ):
            raise StaleStateError(
                f"merchant {state.merchant_id}: state changed since version {state.version}"
            )
        state.version += 1

    def acquire_lease(self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int) -> bool:
        return self._conditional_update(
            merchant_id,
            "SET #owner = :owner, #until = :until",
            "attribute_not_exists(#until) OR #until <= :now",
            {
                ":owner": {"S": owner},
                ":until": {"N": str(now_ms + duration_ms)},
                ":now": {"N": str(now_ms)},
            },
            _LEASE_NAMES,
        )

    def release_lease(self, merchant_id: str, owner: str) -> None:
        self._conditional_update(
            merchant_id,
            "REMOVE #owner, #until",
            "#owner = :owner",
            {":owner": {"S": owner}},
            _LEASE_NAMES,
        )

    def _conditional_update(
        self,
        merchant_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str],
    ) -> bool:
        """Apply ``update`` if ``condition`` holds; whether it did."""
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"merchant_id": {"S": merchant_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ExpressionAttributeNames=names,
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def read_token(self, merchant_id: str) -> str | None:
        item = self._dynamodb.get_item(
            TableName=self._table,
            Key={"merchant_id": {"S": merchant_id}},
            ProjectionExpression="token_ciphertext",
            ConsistentRead=True,
        ).get("Item")
        if not item or "token_ciphertext" not in item:
            return None
        plaintext = self._kms_client().decrypt(
            CiphertextBlob=item["token_ciphertext"]["B"],
            EncryptionContext={"merchant_id": merchant_id},
        )["Plaintext"]
        return plaintext.decode()

    def write_token(self, merchant_id: str, token: str) -> None:
        if not self._key_id:
            raise RuntimeError("STATE_KEY_ID is required to store Clover tokens")
        ciphertext = self._kms_client().encrypt(
            KeyId=self._key_id,
            Plaintext=token.encode(),
            EncryptionContext={"merchant_id": merchant_id},
        )["CiphertextBlob"]
        self._dynamodb.update_item(
            TableName=self._table,
            Key={"merchant_id": {"S": merchant_id}},
            UpdateExpression="SET token_ciphertext = :t, auth_state = :ok",
            ExpressionAttributeValues={":t": {"B": ciphertext}, ":ok": {"S": "ok"}},
        )

    def _kms_client(self) -> KMSClient:
        if self._kms is None:
            self._kms = boto3.client("kms")
        return self._kms
