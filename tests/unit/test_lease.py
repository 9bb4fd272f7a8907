"""The poll lease (esl_sync.sync.lease): one poll per merchant at a time, with the state,
the sealed tokens and the fence read in the same write, given back however the poll ends,
and a failure to give it back logged, never the poll's failure. The state table is the fake
of its port (tests/fakes.py MemoryStates); the real one is tests/integration/test_poll*.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.credentials import SealedTokens
from esl_sync.observability import metrics
from esl_sync.records import Fence, MerchantState
from esl_sync.sync.lease import merchant_lease
from tests.fakes import MemoryLog, MemoryStates

NOW_MS = 1_767_000_000_000
LEASE_MS = 330_000  # the poller's timeout (300 s) and half a minute


def _states() -> MemoryStates:
    states = MemoryStates(MerchantState("M", version=4, poll_count=9))
    states.sealed = SealedTokens(b"sealed", generation=2)
    states.fence = Fence("epoch-1", 12)
    return states


def test_a_lease_reads_the_state_tokens_and_fence_and_holds_the_merchant_330_seconds() -> None:
    states = _states()
    with merchant_lease(states, "M", now_ms=NOW_MS) as lease:
        assert lease is not None
        assert (lease.merchant_id, lease.state, lease.sealed, lease.fence) == (
            "M",
            MerchantState("M", version=4, poll_count=9),
            SealedTokens(b"sealed", generation=2),
            Fence("epoch-1", 12),
        )
        assert states.leases == {"M": (lease.owner, NOW_MS + LEASE_MS)}
        with merchant_lease(states, "M", now_ms=NOW_MS + LEASE_MS - 1) as second:
            assert second is None  # held to its last millisecond
        assert states.releases == []  # a poll that found it held gives nothing back


def test_each_lease_has_an_owner_of_its_own() -> None:
    states = _states()
    owners = []
    for _ in range(2):  # the first one given back on its way out
        with merchant_lease(states, "M", now_ms=NOW_MS) as lease:
            assert lease is not None
            owners.append(lease.owner)
    assert len(set(owners)) == 2
    assert [len(owner) for owner in owners] == [32, 32]


def test_the_state_write_gives_the_lease_back_in_the_same_call() -> None:
    states = _states()
    with merchant_lease(states, "M", now_ms=NOW_MS) as lease:
        assert lease is not None
        lease.state.poll_count += 1
        lease.save_and_release(states)
        assert states.leases == {}
    assert states.releases == []  # two DynamoDB calls for a poll: no third
    assert states.load("M").poll_count == 10
    with merchant_lease(states, "M", now_ms=NOW_MS) as next_poll:
        assert next_poll is not None


def test_a_poll_that_ends_without_its_state_write_gives_the_lease_back() -> None:
    states = _states()
    with merchant_lease(states, "M", now_ms=NOW_MS) as lease:
        assert lease is not None
    assert (states.leases, states.releases) == ({}, [lease.owner])


def test_a_poll_that_fails_gives_the_lease_back_and_its_own_error_stands() -> None:
    states = _states()
    states.release_errors = [ConnectionError("first"), ConnectionError("second")]

    def failing_poll() -> None:
        with merchant_lease(states, "M", now_ms=NOW_MS):
            raise RuntimeError("Clover down")

    with pytest.raises(RuntimeError, match="Clover down"):
        failing_poll()
    [(owner, _)] = states.leases.values()  # not given back: it expires by itself
    assert states.releases == [owner, owner]


def _metrics(capsys: pytest.CaptureFixture[str], run: Callable[[], object]) -> dict[str, float]:
    metrics.clear_metrics()
    run()
    metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert set(metric_units(lines).values()) <= {"Count"}
    return metric_sums(lines)


def _poll(states: MemoryStates) -> None:
    with merchant_lease(states, "M", now_ms=NOW_MS):
        pass


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_giving_back_is_tried_again_once_and_quietly(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    states = _states()
    states.release_errors = [ConnectionError("DynamoDB unreachable")]
    assert _metrics(capsys, lambda: _poll(states)) == {}
    assert len(states.releases) == 2
    assert states.leases == {}
    assert log.messages == []


def test_a_lease_not_given_back_is_one_warning_and_one_count_never_the_polls_failure(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    states = _states()
    states.release_errors = [ConnectionError("first"), TimeoutError("x" * 400)]
    assert _metrics(capsys, lambda: _poll(states)) == {"LeaseReleaseFailures": 1.0}
    assert len(states.releases) == 2
    [line] = log.lines("poll lease not given back; it expires by itself")
    assert line == {
        "level": "WARNING",
        "merchant_id": "M",
        "expires_in_seconds": 330,
        "error": ("TimeoutError: " + "x" * 400)[:300],
    }
    assert type(line["expires_in_seconds"]) is int  # the log shows 330, not 330.0
    assert log.messages == ["poll lease not given back; it expires by itself"]
