"""The poller starts no Clover request that could not be answered before its invocation
ends: a poll that runs out of time fails by name (its failure recorded, its lease given
back, its record retried) instead of being cut off by Lambda's timeout, which reports no
poll of the batch, records nothing and leaves the merchant leased. Through the real
handler: the Lambda context's remaining time runs down with every Clover request made."""

from __future__ import annotations

import json
from collections.abc import Callable

from devkit.catalog import convenience_store_catalog
from devkit.lambda_runner import LambdaContext
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync import runtime

MERCHANT = "MSLOWCLOVER1"
STORE = "STORE-SLOW"
TIMEOUT_MS = 1000 * int(load_template()["Resources"]["PollerFunction"]["Properties"]["Timeout"])
CLOVER_REQUEST_MS = 55_000  # what each Clover request takes in this test's clock


def _slow_clover_once(stack: LocalStack) -> Callable[[str], LambdaContext]:
    """The first poller invocation's context: every Clover request takes 55 s of its
    300 s. Later invocations have their whole time (Clover is fast again)."""
    assert stack.clover is not None
    clover = stack.clover
    invocations: list[int] = []

    def context(function: str) -> LambdaContext:
        invocations.append(1)
        if len(invocations) > 1:
            return LambdaContext(function, timeout_ms=TIMEOUT_MS)
        before = clover.request_count()

        def remaining() -> int:
            return TIMEOUT_MS - (clover.request_count() - before) * CLOVER_REQUEST_MS

        return LambdaContext(function, timeout_ms=TIMEOUT_MS, remaining=remaining)

    return context


def test_a_poll_out_of_time_fails_by_name_and_its_retry_completes(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(CLOVER_PAGE_SIZE="5")
    assert stack.clover is not None
    assert stack.hipoink is not None
    stack.add_merchant(MERCHANT, "tok-slow", STORE, items=convenience_store_catalog(27, seed=3))
    stack.dispatch()
    mark = len(stack.logs)

    result = stack.drain("PollQueue", "poller", batch_size=1, context=_slow_clover_once(stack))

    # 300 s: five requests of 55 s each fit (each needs its answer's deadline, three 10 s
    # timeouts, and the poll's closing margin after it); the sixth page would have been cut
    # off. The fifth page's writes still have 20 s (their statements wait at most until 5 s
    # before the end: poll_batch.REPORTING_MS).
    first = [json.loads(line) for line in stack.logs[mark:] if '"poll finished"' in line]
    assert first[0]["status"] == "failed"
    assert first[0]["detail"].startswith("CloverOutOfTime")
    assert first[0]["clover_requests"] == 5
    assert (result.records, result.failures) == (2, 1)  # the retry, with its whole time
    assert first[1]["status"] == "ok"
    state = runtime.state_store().load(MERCHANT)
    assert state.last_failure_class == "CloverOutOfTime"
    assert state.consecutive_failures == 0  # the retry succeeded
    stack.drain("LabelQueue", "hipoink_sender")
    from devkit.demo import expected_labels

    assert stack.hipoink.labels(STORE) == expected_labels(stack.clover.items(MERCHANT))
