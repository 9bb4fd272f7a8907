"""What a warm process keeps between invocations does not reach another invocation's lines.

The local stack runs every function's handler in this one process, warm, as Lambda keeps
an instance between invocations (hours, thousands of invocations). Each log line must name
only its own invocation (``function_request_id``, and for the HTTP functions the API's
``correlation_id``) and only the merchants that invocation was about: a line naming another
request or merchant sends an operator after the wrong one.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from devkit.lambda_runner import ContextFactory, LambdaContext
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, LocalStack
from esl_sync.sync.poll_batch import POLL_WORKER_PREFIX

MERCHANTS = [f"MWARM{k:07d}" for k in range(7)]


@dataclass
class Invocation:
    function: str
    correlation_id: str | None
    merchants: set[str] = field(default_factory=set)


def _merchants_of(event: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for record in event.get("Records", []):
        found.add(json.loads(record["body"])["merchant_id"])
    if isinstance(event.get("body"), str):  # a webhook delivery
        found |= set(json.loads(event["body"]).get("merchants", {}))
    return found


def _record_invocations(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Invocation]:
    """Every invocation by its request id: the function, the API's request id, the merchants."""
    runner = stack.runner
    assert runner is not None
    invoke, seen = runner.invoke, {}

    def recorded(
        function: str, event: dict[str, Any], *, context: ContextFactory | None = None
    ) -> dict[str, Any]:
        made = context or (lambda logical_id: LambdaContext(logical_id))

        def tracked(logical_id: str) -> LambdaContext:
            lambda_context = made(logical_id)
            seen[lambda_context.aws_request_id] = Invocation(
                logical_id,
                event.get("requestContext", {}).get("requestId"),
                _merchants_of(event),
            )
            return lambda_context

        return invoke(function, event, context=tracked)

    monkeypatch.setattr(runner, "invoke", recorded)
    return seen


def test_every_line_names_only_its_own_invocation_and_merchants(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.clover is not None
    for k, merchant in enumerate(MERCHANTS):
        items = [{"name": f"{merchant} {n}", "price": 100 + n, "sku": f"{k}-{n}"} for n in range(3)]
        stack.add_merchant(merchant, f"token-warm-{k:04d}", f"STORE-WARM-{k}", items=items)
    invocations = _record_invocations(stack, monkeypatch)

    for cycle in range(4):
        changed = MERCHANTS[cycle % 3 :: 2]
        for merchant in changed:
            stack.clover.create_item(merchant, name=f"new {cycle}", price=5, sku=f"N{cycle}")
        note = {
            "appId": "A",
            "merchants": {changed[0]: [{"objectId": "I:X", "type": "UPDATE", "ts": 1}]},
        }
        stack.send_webhook(note, CLOVER_WEBHOOK_AUTH)
        stack.run_cycle()

    lines = [json.loads(line) for line in stack.logs]
    lines = [line for line in lines if "_aws" not in line]  # the EMF blobs name no request
    assert {invocations[line["function_request_id"]].function for line in lines} >= {
        "WebhookFunction",
        "DispatcherFunction",
        "PollerFunction",
        "HipoinkSenderFunction",
    }
    for line in lines:
        own = invocations[line["function_request_id"]]
        assert line["function_name"] == own.function, line
        assert line.get("correlation_id") == own.correlation_id, line
        named = {line["merchant_id"]} if "merchant_id" in line else set()
        named |= set(line.get("merchant_ids", []))
        assert named <= own.merchants, line


def _kept(stack: LocalStack) -> dict[str, int]:
    """The size of everything a warm process keeps that could grow with its invocations."""
    from esl_sync import runtime
    from esl_sync.store import aws_json
    from esl_sync.store import secrets as secret_cache

    clover = runtime.clover()
    return {
        "database connections": len(runtime.database()._opened),
        "pacer budgets": len(clover.pacer._tokens),
        "Clover origins": len(clover.origins._origins),
        "AWS clients": len(aws_json._clients),
        "secrets cached": len(secret_cache._cached),
        "token plaintexts": runtime.state_store()._decrypt.cache_info().currsize,
        "poll workers": sum(t.name.startswith(POLL_WORKER_PREFIX) for t in threading.enumerate()),
    }


def test_what_a_warm_process_keeps_does_not_grow_with_its_invocations(
    stack: LocalStack,
) -> None:
    """Bounded by the workers, the merchants and the secrets, never by the invocations."""
    assert stack.clover is not None
    merchants = MERCHANTS[:4]
    for k, merchant in enumerate(merchants):
        stack.add_merchant(merchant, f"token-kept-{k:04d}", f"STORE-KEPT-{k}", items=[])

    def cycles(first: int, count: int) -> None:
        assert stack.clover is not None
        for cycle in range(first, first + count):
            for merchant in merchants:
                stack.clover.create_item(merchant, name=f"n{cycle}", price=cycle, sku=f"K{cycle}")
            note = {"appId": "A", "merchants": {merchants[cycle % 4]: []}}
            stack.send_webhook(note, CLOVER_WEBHOOK_AUTH)
            stack.run_cycle()

    cycles(0, 3)
    warm = _kept(stack)
    cycles(3, 9)

    later = _kept(stack)
    # One connection per thread that used the database: the invoking thread and each poll
    # worker, and a worker opens its own at its first poll, which may come only in a later
    # cycle (how many polls overlap depends on timing): bounded by the workers, not equal.
    connections = later.pop("database connections")
    assert connections <= max(warm["database connections"], later["poll workers"] + 1)
    assert later == {k: v for k, v in warm.items() if k != "database connections"}
    assert warm["token plaintexts"] <= len(merchants)
    assert warm["pacer budgets"] <= len(merchants)
