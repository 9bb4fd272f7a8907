"""The state table as the app's install flow writes it (:class:`~esl_sync.ports.InstallTokens`).

Two conditional writes on the merchant's item, beside the poll's state and the token
keeper's lock (which the install takes too, so an exchange never overlaps a refresh):

- ``claim_install`` marks one sign-in used: ``oauth_state_issued_ms`` (the issue time of
  its ``state``) may only grow, and only while no tokens were stored after the sign-in
  began (``authorized_ms``). A replayed or double-clicked callback, an older sign-in than
  one already used, or one overtaken by an operator's tokens finds the condition false.
- ``write_installed_tokens`` stores the exchanged pair (sealed by KMS beforehand) as a new
  ``token_generation``, under the same "no tokens since" condition: tokens stored while
  the exchange ran are newer and win.

The function's role may update only these attributes (and the lock's), never read them.
"""

from __future__ import annotations

from esl_sync.store.dynamo import DynamoStateStore

_NOT_AUTHORIZED_SINCE = "(attribute_not_exists(#authorized) OR #authorized < :issued)"


class DynamoInstallStore(DynamoStateStore):
    """:class:`DynamoStateStore` with the install flow's two writes."""

    def claim_install(self, merchant_id: str, *, issued_ms: int, nonce: str) -> bool:
        return self._conditional_update(
            merchant_id,
            "SET #issued = :issued, #nonce = :nonce",
            f"(attribute_not_exists(#issued) OR #issued < :issued) AND {_NOT_AUTHORIZED_SINCE}",
            {":issued": {"N": str(issued_ms)}, ":nonce": {"S": nonce}},
            {
                "#issued": "oauth_state_issued_ms",
                "#nonce": "oauth_state_nonce",
                "#authorized": "authorized_ms",
            },
        )

    def write_installed_tokens(
        self, merchant_id: str, sealed: bytes, *, issued_ms: int, now_ms: int
    ) -> bool:
        return self._conditional_update(
            merchant_id,
            "SET #tokens = :sealed, #auth = :ok, #authorized = :now ADD #generation :one",
            _NOT_AUTHORIZED_SINCE,
            {
                ":sealed": {"B": sealed},
                ":ok": {"S": "ok"},
                ":now": {"N": str(now_ms)},
                ":one": {"N": "1"},
                ":issued": {"N": str(issued_ms)},
            },
            {
                "#tokens": "token_ciphertext",
                "#auth": "auth_state",
                "#authorized": "authorized_ms",
                "#generation": "token_generation",
            },
        )
