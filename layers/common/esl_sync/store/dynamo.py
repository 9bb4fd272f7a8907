"""Merchant state and Clover tokens in DynamoDB (one item per merchant).

State writes are conditional on the version read (optimistic concurrency). The poll
lease (``lease_owner``, ``lease_until_ms``) sits beside the version, in its own
conditional writes, so taking it never makes a state write stale; so do the token refresh
lock and the webhook's poll window. A poll makes two calls: the write that takes its lease
returns the item (state, sealed tokens and the lease's fencing token: ``take_lease``), and
its state write gives the lease back (``save(…, release_lease=owner)``). Tokens (one JSON
blob: a plain token or a v2 pair) are encrypted with the stack's customer-managed KMS key,
bound to the merchant id through the encryption context, so reading the table alone never
reveals them; ``token_generation`` counts the writes of new tokens and guards every change
of them and of ``auth_state``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from esl_sync.credentials import CloverTokens, SealedTokens, StoredTokens
from esl_sync.merchant_ports import FenceCount
from esl_sync.ports import StaleStateError
from esl_sync.records import Fence, Leased, MerchantState, VerificationCode
from esl_sync.store import aws_json
from esl_sync.store.aws_json import AwsError, Caller
from esl_sync.store.state_batch import read_states, unprocessed_backoff
from esl_sync.store.state_item import (
    CODE_SLOT,
    FENCE_NAMES,
    LEASE_NAMES,
    UNTIL_PASSED,
    fence_count,
    fence_of,
    lease_taking,
    saved_fields,
    sealed_of,
    state_of,
    to_attr,
    until_values,
    verification_codes_of,
)

_REFRESH_LOCK_NAMES = {"#owner": "refresh_lock_owner", "#until": "refresh_lock_until_ms"}
_GENERATION_NAMES = {"#generation": "token_generation"}
_WINDOW_NAMES = {"#until": "webhook_poll_until_ms"}
WEBHOOK_ITEM_KEY = "#clover-webhook"
"""The reserved item holding the last webhook verification codes (no merchant id starts
with '#'; nothing lists the table, so no poll ever sees it)."""


def _generation_is(generation: int) -> tuple[str, dict[str, Any]]:
    """The condition "the stored tokens are still of ``generation``" (0: written before
    generations were counted, or never)."""
    if generation == 0:
        return "attribute_not_exists(#generation)", {}
    return "#generation = :generation", {":generation": {"N": str(generation)}}


class DynamoStateStore:
    """The :class:`~esl_sync.ports.StateStore` on one DynamoDB table."""

    def __init__(
        self,
        table_name: str,
        key_id: str | None,
        *,
        dynamodb: Caller | None = None,
        kms: Caller | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table_name
        self._sleep = sleep  # tests replace it: no waiting
        self._key_id = key_id
        self._dynamodb: Caller = dynamodb or aws_json.client("dynamodb")
        self._kms = kms
        # Every write encrypts anew, so a ciphertext names one version of one merchant's
        # tokens: its plaintext can be kept for the life of the process, which spares a
        # KMS call (and its price) on every poll of every merchant.
        self._decrypt = lru_cache(maxsize=4096)(self._decrypt_uncached)

    def load(self, merchant_id: str) -> MerchantState:
        item = self._on_item("GetItem", merchant_id, ConsistentRead=True).get("Item")
        return state_of(merchant_id, item)

    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        """Many merchants' state without their token material (:func:`read_states`)."""
        return read_states(self._dynamodb, self._table, merchant_ids, self._sleep)

    unprocessed_backoff = staticmethod(unprocessed_backoff)

    def save(self, state: MerchantState, *, release_lease: str | None = None) -> None:
        fields = saved_fields(state)  # an unreadable sweep place kept: KEPT_UNREADABLE
        names = {f"#{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {f":{i}": to_attr(getattr(state, n)) for i, n in enumerate(fields)}
        values[":expected"] = {"N": str(state.version)}
        values[":next"] = {"N": str(state.version + 1)}
        assignments = ", ".join(f"#{i} = :{i}" for i in range(len(fields)))
        update = f"SET {assignments}, version = :next"
        condition = "(attribute_not_exists(version) OR version = :expected)"
        if "version" in state.unreadable:
            # A version nobody can read (edited by hand) could never match: this write
            # replaces it. Polls still exclude each other through the lease they release.
            condition = "attribute_exists(version)"
            del values[":expected"]
        settled = state.settled_deletes
        if settled:
            names["#pending"] = "pending_deletes"
            values[":settled"] = {"SS": sorted(settled)}
            update += " DELETE #pending :settled"
        removed: list[str] = []
        if "pending_deletes" in state.unreadable and state.swept:  # edited by hand: no
            # webhook adds to it, and this poll swept (sweep_due), finding what it held; a
            # save that did not sweep (a failed poll's) leaves it, still asking for one.
            names["#pending"] = "pending_deletes"
            removed.append("#pending")
        if release_lease is not None:  # the poll's last write gives its lease back too
            names |= LEASE_NAMES
            values[":owner"] = {"S": release_lease}
            removed += ["#owner", "#until"]
            condition += " AND #owner = :owner"
        if removed:
            update += f" REMOVE {', '.join(removed)}"
        if not self._conditional_update(state.merchant_id, update, condition, values, names):
            raise StaleStateError(
                f"merchant {state.merchant_id}: state changed since version {state.version}"
                + (" or the poll lease was lost" if release_lease is not None else "")
            )
        state.version += 1
        state.pending_deletes -= settled
        state.settled_deletes = frozenset()

    def take_lease(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> Leased | None:
        """One conditional write takes the lease and its fencing token (:func:`lease_taking`)
        and returns the whole item (DynamoDB charges the write, not the read): the state,
        the sealed tokens and the fence. A fence edited by hand (DynamoDB cannot count it,
        or it reads as none) costs one more write, which starts a new epoch."""
        taking = lease_taking(owner, now_ms, duration_ms)
        try:
            item = self._update_if(merchant_id, *taking, returns="ALL_NEW")
        except AwsError as error:
            if error.code != "ValidationException":  # ADD on a number of another type
                raise
            item = {}
        if item is not None and fence_of(item) is None:
            anew = lease_taking(owner, now_ms, duration_ms, new_epoch=True)
            item = self._update_if(merchant_id, *anew, returns="ALL_NEW")
        if item is None:
            return None
        return Leased(state_of(merchant_id, item), sealed_of(item), fence_of(item))

    def raise_lease_generation(self, merchant_id: str, seen: Fence) -> FenceCount:
        """See :class:`esl_sync.merchant_ports.FenceCounter`. A lease taken meanwhile is
        ordered by DynamoDB against this write: before it, its lower generation stays
        refused by Postgres; after it, it counts on from ``seen``. A count edited by hand
        is raised too if it is a number (a fraction) or missing (the lease's ``ADD`` would
        start it at 1 in this epoch); one of another type is left (the next lease starts a
        new epoch), compared only once it is a number (moto fails comparing it). A refused
        write returns the item it found (``ALL_OLD``), which says why (:func:`fence_count`)."""
        try:
            answer = self._on_item(
                "UpdateItem",
                merchant_id,
                UpdateExpression="SET #count = :seen",
                ConditionExpression="#epoch = :epoch AND (attribute_not_exists(#count)"
                " OR (attribute_type(#count, :number) AND #count < :seen))",
                ExpressionAttributeValues={
                    ":epoch": {"S": seen.epoch},
                    ":seen": {"N": str(seen.generation)},
                    ":number": {"S": "N"},
                },
                ExpressionAttributeNames=FENCE_NAMES,
                ReturnValues="UPDATED_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except AwsError as error:
            if error.code != "ConditionalCheckFailedException":
                raise
            return fence_count(error.item, seen)
        stored = answer.get("Attributes", {}).get("lease_generation", {}).get("N", "none")
        return FenceCount("raised", str(stored))

    def release_lease(self, merchant_id: str, owner: str) -> None:
        self._release(merchant_id, LEASE_NAMES, owner)

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        return self._acquire(merchant_id, _REFRESH_LOCK_NAMES, owner, now_ms, duration_ms)

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None:
        self._release(merchant_id, _REFRESH_LOCK_NAMES, owner)

    def _acquire(
        self,
        merchant_id: str,
        names: dict[str, str],
        owner: str,
        now_ms: int,
        duration_ms: int,
    ) -> bool:
        """Take the lock named by ``names`` if it is free or expired, or its time is not a
        number or lies past any such lock (:data:`UNTIL_PASSED`): whether taken."""
        return self._conditional_update(
            merchant_id,
            "SET #owner = :owner, #until = :until",
            UNTIL_PASSED,
            {":owner": {"S": owner}} | until_values(names["#until"], now_ms, duration_ms),
            names,
        )

    def _release(self, merchant_id: str, names: dict[str, str], owner: str) -> None:
        """Give the lock up if ``owner`` still holds it."""
        self._conditional_update(
            merchant_id, "REMOVE #owner, #until", "#owner = :owner", {":owner": {"S": owner}}, names
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
        return self._update_if(merchant_id, update, condition, values, names) is not None

    def _update_if(
        self,
        merchant_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str],
        *,
        returns: Literal["NONE", "ALL_NEW", "UPDATED_OLD"] = "NONE",
    ) -> Mapping[str, Any] | None:
        """Apply ``update`` if ``condition`` holds: the item as written (``returns``), or
        None when the condition did not hold."""
        try:
            answer = self._on_item(
                "UpdateItem",
                merchant_id,
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ExpressionAttributeNames=names,
                ReturnValues=returns,
            )
        except AwsError as error:
            if error.code == "ConditionalCheckFailedException":
                return None
            raise
        written: Mapping[str, Any] = answer.get("Attributes", {})
        return written

    def _on_item(self, operation: str, merchant_id: str, **params: Any) -> dict[str, Any]:
        """``operation`` on one merchant's item (``params`` besides the table and key)."""
        key = {"merchant_id": {"S": merchant_id}}
        return self._dynamodb.call(operation, {"TableName": self._table, "Key": key, **params})

    def load_tokens(self, merchant_id: str) -> StoredTokens | None:
        item = self._on_item(
            "GetItem",
            merchant_id,
            ProjectionExpression="token_ciphertext, token_generation, auth_state,"
            " authorized_ms, app_uninstalled_ms",
            ConsistentRead=True,
        ).get("Item")
        sealed = sealed_of(item)
        return None if sealed is None else self.open_tokens(merchant_id, sealed)

    def open_tokens(self, merchant_id: str, sealed: SealedTokens) -> StoredTokens:
        plaintext = self._decrypt(merchant_id, sealed.ciphertext)
        return StoredTokens(
            tokens=CloverTokens.stored(plaintext),
            generation=sealed.generation,
            needs_reauth=sealed.needs_reauth,
            uninstalled=sealed.uninstalled,
        )

    def write_token(self, merchant_id: str, token: str | CloverTokens) -> int:
        tokens = CloverTokens.plain(token) if isinstance(token, str) else token
        return self.write_sealed_tokens(merchant_id, self.seal_tokens(merchant_id, tokens))

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        return self._encrypt(merchant_id, tokens)

    def write_sealed_tokens(self, merchant_id: str, sealed: bytes) -> int:
        """New tokens: a new generation, auth ``ok``, authorized now (``authorized_ms``,
        against which an uninstall hint and an install's sign-in are compared)."""
        answer = self._on_item(
            "UpdateItem",
            merchant_id,
            UpdateExpression="SET token_ciphertext = :t, auth_state = :ok, authorized_ms = :now"
            " ADD #generation :one",
            ExpressionAttributeNames=_GENERATION_NAMES,
            ExpressionAttributeValues={
                ":t": {"B": sealed},
                ":ok": {"S": "ok"},
                ":now": {"N": str(time.time_ns() // 1_000_000)},
                ":one": {"N": "1"},
            },
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["token_generation"]["N"])

    def replace_tokens(
        self, merchant_id: str, tokens: CloverTokens, *, generation: int
    ) -> int | None:
        condition, values = _generation_is(generation)
        values[":t"] = {"B": self._encrypt(merchant_id, tokens)}
        values[":next"] = {"N": str(generation + 1)}
        written = self._conditional_update(
            merchant_id,
            "SET token_ciphertext = :t, #generation = :next",
            condition,
            values,
            _GENERATION_NAMES,
        )
        return generation + 1 if written else None

    def mark_needs_reauth(self, merchant_id: str, *, generation: int) -> bool:
        condition, values = _generation_is(generation)
        values[":reauth"] = {"S": "needs_reauth"}
        return self._conditional_update(
            merchant_id, "SET auth_state = :reauth", condition, values, _GENERATION_NAMES
        )

    # -- webhook hints (the webhook function's only writes; no tokens) ------------------

    def record_verification_code(self, received: VerificationCode, *, keep: int) -> None:
        """Two writes and no read (the webhook may not read the table): an atomic counter
        numbers the code, which goes to slot ``number % keep`` unless a newer one is there
        already; so concurrent handshakes each keep theirs and the oldest is replaced."""
        counted = self._on_item(
            "UpdateItem",
            WEBHOOK_ITEM_KEY,
            UpdateExpression="ADD codes_received :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        number = int(counted["Attributes"]["codes_received"]["N"])
        entry = {
            "n": {"N": str(number)},
            "code": {"S": received.code},
            "received_at": {"S": received.received_at.isoformat()},
            "source_ip": {"S": received.source_ip} if received.source_ip else {"NULL": True},
        }
        self._conditional_update(
            WEBHOOK_ITEM_KEY,
            "SET #slot = :entry REMOVE verification_code, verification_received_at",
            "attribute_not_exists(#slot) OR #slot.#n < :n",
            {":entry": {"M": entry}, ":n": {"N": str(number)}},
            {"#slot": f"{CODE_SLOT}{number % keep}", "#n": "n"},
        )

    def verification_codes(self) -> list[VerificationCode]:
        item = self._on_item(
            "GetItem",
            WEBHOOK_ITEM_KEY,
            ConsistentRead=True,
        ).get("Item")
        return verification_codes_of(item or {})

    def claim_webhook_poll(self, merchant_id: str, *, now_ms: int, window_ms: int) -> bool:
        return self._conditional_update(
            merchant_id,
            "SET #until = :until",
            UNTIL_PASSED,
            until_values(_WINDOW_NAMES["#until"], now_ms, window_ms),
            _WINDOW_NAMES,
        )

    def release_webhook_poll(self, merchant_id: str, *, until_ms: int) -> None:
        """Only the claim it made: a later one (after that window) is another delivery's."""
        values = {":until": {"N": str(until_ms)}}
        self._conditional_update(
            merchant_id, "REMOVE #until", "#until = :until", values, _WINDOW_NAMES
        )

    def add_pending_deletes(self, merchant_id: str, item_ids: Iterable[str], *, limit: int) -> bool:
        ids = sorted(set(item_ids))
        if not ids:
            return True
        if len(ids) <= limit and self._conditional_update(
            merchant_id,
            "ADD #pending :ids",
            # A set only: DynamoDB refuses to ADD one to a hand-edited other type.
            "attribute_not_exists(#pending)"
            " OR (attribute_type(#pending, :set) AND size(#pending) <= :room)",
            {
                ":ids": {"SS": ids},
                ":room": {"N": str(limit - len(ids))},
                ":set": {"S": "SS"},
            },
            {"#pending": "pending_deletes"},
        ):
            return True
        self._on_item(
            "UpdateItem",
            merchant_id,
            UpdateExpression="SET sweep_request = :token",
            ExpressionAttributeValues={":token": {"S": uuid.uuid4().hex}},
        )
        return False

    def record_uninstall(self, merchant_id: str, *, ts_ms: int) -> None:
        self._conditional_update(
            merchant_id,
            "SET #at = :ts",
            "attribute_not_exists(#at) OR #at < :ts",
            {":ts": {"N": str(ts_ms)}},
            {"#at": "app_uninstalled_ms"},
        )

    def _encrypt(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        if not self._key_id:
            raise RuntimeError("STATE_KEY_ID is required to store Clover tokens")
        sealed: bytes = self._kms_client().call(
            "Encrypt",
            dict(
                KeyId=self._key_id,
                Plaintext=tokens.secret_json().encode(),
                EncryptionContext={"merchant_id": merchant_id},
            ),
        )["CiphertextBlob"]  # bytes: aws_json decodes KMS's base64 blobs
        return sealed

    def _decrypt_uncached(self, merchant_id: str, ciphertext: bytes) -> bytes:
        plaintext: bytes = self._kms_client().call(
            "Decrypt",
            dict(CiphertextBlob=ciphertext, EncryptionContext={"merchant_id": merchant_id}),
        )["Plaintext"]
        return plaintext

    def _kms_client(self) -> Caller:
        if self._kms is None:  # two threads may both ask: one client (aws_json.client locks)
            self._kms = aws_json.client("kms")
        return self._kms
