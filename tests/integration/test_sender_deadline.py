"""The Hipoink sender stops taking label jobs when its invocation cannot fit another Hipoink
call, and gives the rest back to the queue (a partial batch response), through the real
handler: the Lambda context's remaining time runs down with every Hipoink call made."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.lambda_runner import LambdaContext
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync import runtime

MERCHANTS = [f"MLATE000000{i}" for i in range(1, 5)]
TIMEOUT_MS = int(load_template()["Resources"]["HipoinkSenderFunction"]["Properties"]["Timeout"])
TIMEOUT_MS *= 1000
HIPOINK_CALL_MS = 25_000  # each call takes this long in these tests (HIPOINK_TIMEOUT_SECONDS is 15)


@pytest.fixture
def late_stack(stack: LocalStack) -> LocalStack:
    """Four merchants polled, one label job each waiting in the label queue (four groups)."""
    assert stack.clover is not None
    for i, merchant in enumerate(MERCHANTS):
        items = [
            {"name": f"Item {merchant} {n}", "price": 100 + n, "sku": f"S{i}{n}"} for n in (1, 2)
        ]
        stack.add_merchant(merchant, f"token-{merchant}", f"STORE-{i}", items=items)
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0
    return stack


def _hipoink(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _slow_hipoink(stack: LocalStack) -> Callable[[str], LambdaContext]:
    """Contexts of a 60 s sender in which every Hipoink call takes 25 s."""

    def context(function: str) -> LambdaContext:
        calls_before = _hipoink(stack).request_count()

        def remaining() -> int:
            made = _hipoink(stack).request_count() - calls_before
            return TIMEOUT_MS - made * HIPOINK_CALL_MS

        return LambdaContext(function, timeout_ms=TIMEOUT_MS, remaining=remaining)

    return context


def test_jobs_that_cannot_finish_go_back_to_the_queue_and_arrive_later(
    late_stack: LocalStack,
) -> None:
    stack = late_stack
    hipoink = _hipoink(stack)
    result = stack.drain(
        "LabelQueue", "hipoink_sender", batch_size=10, context=_slow_hipoink(stack)
    )
    # Each invocation fits two calls (60 s - 2 x 25 s = 10 s < 15 s + 5 s): two jobs, then the
    # rest of its batch goes back; the next invocation takes them with a fresh budget.
    assert result.records == 4 + 2
    assert result.failures == 2
    assert result.invocations == 2
    assert hipoink.request_count() == 4, "no call was started without time for it"
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 0
    assert stack.clover is not None
    for i, merchant in enumerate(MERCHANTS):
        assert hipoink.labels(f"STORE-{i}") == expected_labels(stack.clover.items(merchant))
    given_back = [line for line in stack.logs if "too little time left" in line]
    # The first invocation's third and fourth jobs, whichever merchants' they are (the
    # poller's overlapped polls queue the four jobs in no fixed order).
    what = {json.loads(line)["what"] for line in given_back}
    assert len(what) == 2
    assert what <= {f"label job of {m}" for m in MERCHANTS}


def test_an_invocation_with_no_time_starts_no_job_and_loses_none(late_stack: LocalStack) -> None:
    stack = late_stack
    invocations: list[str] = []

    def first_has_no_time(function: str) -> LambdaContext:
        invocations.append(function)
        left = 19_999 if len(invocations) == 1 else TIMEOUT_MS  # one short of 15 s + 5 s
        return LambdaContext(function, remaining=lambda: left)

    result = stack.drain("LabelQueue", "hipoink_sender", context=first_has_no_time)
    # Powertools fails an invocation whose records all failed (SQS then retries them all).
    assert (result.invocations, result.records, result.failures) == (2, 8, 4)
    assert _hipoink(stack).request_count() == 4, "one call per job, all in the second invocation"
    assert stack.queue_depths()["LabelQueue"] == 0
    assert len([line for line in stack.logs if "too little time left" in line]) == 4


def test_a_job_halving_a_refused_batch_makes_no_call_that_would_not_fit(
    stack: LocalStack,
) -> None:
    """A batch Hipoink refuses for one record is halved until the culprit is alone: up to
    2n - 1 calls for one job, while the sender checked the time for one call per job. A
    call that would not fit is not made: the job goes back to its queue and the retry, with
    a whole invocation, sends what is left (the record Hipoink refuses, named)."""
    assert stack.clover is not None
    items = [{"name": f"Item {n}", "price": 100 + n, "sku": f"HALF{n}"} for n in (1, 2)]
    stack.add_merchant(MERCHANTS[0], "token-half", "STORE-HALF", items=items)
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0
    hipoink = _hipoink(stack)
    hipoink.reject_pcs = {"HALF2"}
    invocations: list[int] = []

    def slow_first(function: str) -> LambdaContext:
        invocations.append(1)
        if len(invocations) > 1:
            return LambdaContext(function, timeout_ms=TIMEOUT_MS)
        before = hipoink.request_count()
        return LambdaContext(
            function,
            timeout_ms=TIMEOUT_MS,
            remaining=lambda: TIMEOUT_MS - (hipoink.request_count() - before) * HIPOINK_CALL_MS,
        )

    result = stack.drain("LabelQueue", "hipoink_sender", context=slow_first)

    # 60 s, 25 s a call: the whole batch (refused), then HALF1 alone; HALF2 alone would end
    # past the timeout (10 s left, 15 s + 5 s needed): not made, the job retried.
    assert (result.invocations, result.records, result.failures) == (2, 2, 1)
    assert hipoink.request_count() == 2 + 1  # the retry sends only HALF2 (HALF1 acknowledged)
    assert set(hipoink.labels("STORE-HALF")) == {"HALF1"}
    stale = runtime.label_ledger().stale_label_details(MERCHANTS[0])
    assert [(label.pc, label.failure_class) for label in stale] == [("HALF2", "bad_record")]


def test_a_job_refused_for_time_on_every_receive_is_dead_lettered_with_its_failures_named(
    late_stack: LocalStack,
) -> None:
    """A job never started for want of time (behind slow jobs of other stores on each of
    its receives) is dead-lettered like one Hipoink failed: its labels must carry a named
    failure, or nothing says why they are stale and the poll's heal, which retries failed
    labels, never looks at them (only a sweep, much later, would)."""
    stack = late_stack

    def never_enough(function: str) -> LambdaContext:
        return LambdaContext(function, remaining=lambda: 19_999)  # one short of 15 s + 5 s

    stack.drain("LabelQueue", "hipoink_sender", context=never_enough)
    assert stack.queue_depths()["LabelDeadLetterQueue"] == len(MERCHANTS)
    assert _hipoink(stack).request_count() == 0
    for merchant in MERCHANTS:
        stale = runtime.label_ledger().stale_label_details(merchant)
        assert [(label.failure_class, label.failure_message) for label in stale] == [
            ("retryable", f"label job of {merchant} not started: 19999 ms left, 20000 ms needed")
        ] * 2
        assert runtime.merchants().get(merchant).labels_failing == 2  # type: ignore[union-attr]
    # Counted on every receive that started none: the operator's sign of a sender too tight.
    template = load_template()
    redrive = template["Resources"]["LabelQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    receives = len(MERCHANTS) * int(template["Parameters"]["MaxReceiveCount"]["Default"])
    assert metric_sums(stack.logs)["LabelJobsNotStarted"] == receives
