"""The dispatcher's choices, with in-memory stand-ins for Postgres and SQS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from esl_sync.messages import PollRequest
from esl_sync.records import Merchant, MerchantState
from esl_sync.settings import Settings
from esl_sync.sync.dispatch import DispatchDeps, DispatchOutcome, dispatch, is_due

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Directory:
    def __init__(self, merchants: list[Merchant]) -> None:
        self.merchants = merchants

    def get(self, merchant_id: str) -> Merchant | None:
        return next((m for m in self.merchants if m.merchant_id == merchant_id), None)

    def all(self, *, active_only: bool = False) -> list[Merchant]:
        return [m for m in self.merchants if m.active or not active_only]

    def save(self, merchant: Merchant) -> None:
        raise AssertionError("the dispatcher never writes merchants")


class States:
    def __init__(self, **states: MerchantState) -> None:
        self.states = states

    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        return {m: self.states.get(m, MerchantState(merchant_id=m)) for m in merchant_ids}


class Ledger:
    def stale_labels_total(self) -> int:
        return 7


class Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[PollRequest, int]] = []

    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        self.sent += list(zip(requests, delays or [0] * len(requests), strict=True))


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def _dispatch(directory: Directory, queue: Queue, settings: Settings) -> DispatchOutcome:
    return dispatch(DispatchDeps(directory, queue, States(), Ledger(), settings), now=NOW)


def test_one_request_per_active_merchant_with_a_store_code() -> None:
    directory = Directory(
        [
            Merchant("A", "S-A"),
            Merchant("B", None),
            Merchant("C", "S-C", active=False),
            Merchant("D", "S-D"),
        ]
    )
    queue = Queue()
    outcome = _dispatch(directory, queue, _settings())
    assert [r.merchant_id for r, _ in queue.sent] == ["A", "D"]
    assert all(r.reason == "schedule" and r.requested_at == NOW for r, _ in queue.sent)
    assert outcome.skipped == {"B": "no Hipoink store code"}


def test_disabled_sync_dispatches_nothing() -> None:
    queue = Queue()
    outcome = _dispatch(
        Directory([Merchant("A", "S")]), queue, _settings(clover_sync_enabled=False)
    )
    assert not outcome.enabled
    assert queue.sent == []


def test_delays_are_stable_and_spread_within_the_window() -> None:
    merchants = [Merchant(f"M{i:04d}", "S") for i in range(200)]
    first, second = Queue(), Queue()
    _dispatch(Directory(merchants), first, _settings())
    _dispatch(Directory(merchants), second, _settings())
    delays = [d for _, d in first.sent]
    assert delays == [d for _, d in second.sent]
    assert all(0 <= d < 240 for d in delays)
    assert len(set(delays)) > 100  # spread, not bunched


@pytest.mark.parametrize("own", [None, 60, 300])
def test_a_merchant_at_or_below_the_interval_is_always_due(own: int | None) -> None:
    assert is_due(Merchant("M", "S", poll_interval_seconds=own), 300, NOW)


def test_a_merchant_with_a_longer_interval_is_due_once_per_its_interval() -> None:
    merchant = Merchant("M", "S", poll_interval_seconds=900)
    ticks = [datetime.fromtimestamp(NOW.timestamp() + 300 * k, UTC) for k in range(9)]
    assert sum(is_due(merchant, 300, t) for t in ticks) == 3
