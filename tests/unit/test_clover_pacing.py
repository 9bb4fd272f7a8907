"""RequestPacer: per-key and process-wide rate and concurrency budgets, across threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from esl_sync.clover.pacing import RequestPacer, default_pacer, token_key


class Recorder:
    """Runs paced fake requests and records their start times and in-flight peaks."""

    def __init__(self, pacer: RequestPacer, duration: float = 0.02) -> None:
        self.pacer = pacer
        self.duration = duration
        self.lock = threading.Lock()
        self.starts: dict[str, list[float]] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.total_in_flight = 0
        self.total_peak = 0

    def request(self, key: str) -> None:
        with self.pacer.slot(key):
            with self.lock:
                self.starts.setdefault(key, []).append(time.monotonic())
                self.in_flight[key] = self.in_flight.get(key, 0) + 1
                self.peak[key] = max(self.peak.get(key, 0), self.in_flight[key])
                self.total_in_flight += 1
                self.total_peak = max(self.total_peak, self.total_in_flight)
            time.sleep(self.duration)
            with self.lock:
                self.in_flight[key] -= 1
                self.total_in_flight -= 1


def most_in_any_window(starts: list[float], window: float) -> int:
    ordered = sorted(starts)
    best, low = 0, 0
    for high, moment in enumerate(ordered):
        while ordered[low] <= moment - window:
            low += 1
        best = max(best, high - low + 1)
    return best


def run(recorder: Recorder, keys: list[str], threads: int = 24) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(recorder.request, keys))


def test_concurrency_per_key_and_process() -> None:
    pacer = RequestPacer(token_rps=1000, token_concurrency=3, app_rps=1000, app_concurrency=5)
    recorder = Recorder(pacer, duration=0.03)
    run(recorder, ["a", "b", "c"] * 12)
    assert max(recorder.peak.values()) <= 3
    assert recorder.total_peak <= 5
    assert recorder.total_peak >= 4  # it does run things in parallel
    assert pacer.in_flight() == 0


def test_rate_per_key_in_any_window() -> None:
    pacer = RequestPacer(
        token_rps=4, token_concurrency=10, app_rps=1000, app_concurrency=10, window_seconds=0.2
    )
    recorder = Recorder(pacer, duration=0.001)
    began = time.monotonic()
    run(recorder, ["a"] * 12 + ["b"] * 4)
    # 12 requests at 4 per 0.2 s window need at least two more windows.
    assert time.monotonic() - began >= 0.4
    assert most_in_any_window(recorder.starts["a"], 0.2) <= 4
    assert most_in_any_window(recorder.starts["b"], 0.2) <= 4


def test_rate_process_wide() -> None:
    pacer = RequestPacer(
        token_rps=100, token_concurrency=10, app_rps=5, app_concurrency=10, window_seconds=0.2
    )
    recorder = Recorder(pacer, duration=0.001)
    run(recorder, [f"k{n % 4}" for n in range(15)])
    every = [moment for starts in recorder.starts.values() for moment in starts]
    assert most_in_any_window(every, 0.2) <= 5


def test_pause_holds_one_key_only() -> None:
    pacer = RequestPacer()
    pacer.pause("slow", 0.3)
    began = time.monotonic()
    with pacer.slot("fast"):
        assert time.monotonic() - began < 0.1
    with pacer.slot("slow"):
        assert time.monotonic() - began >= 0.3


def test_pause_everyone() -> None:
    pacer = RequestPacer()
    pacer.pause(None, 0.2)
    began = time.monotonic()
    with pacer.slot("any"):
        assert time.monotonic() - began >= 0.2


def test_idle_keys_are_forgotten() -> None:
    pacer = RequestPacer(window_seconds=0.01, margin_seconds=0)
    for n in range(50):
        with pacer.slot(f"key{n}"):
            pass
    time.sleep(0.02)
    with pacer.slot("last"):
        pass
    assert set(pacer._tokens) <= {"last"}


def test_slot_released_on_error() -> None:
    pacer = RequestPacer(token_concurrency=1)
    with pytest.raises(RuntimeError), pacer.slot("k"):
        raise RuntimeError("boom")
    assert pacer.in_flight("k") == 0


def test_token_key_hides_the_token() -> None:
    secret = "sk-live-abcdef123456"
    key = token_key(secret)
    assert secret not in key
    assert key == token_key(secret)
    assert len(key) == 16
    assert secret not in repr(RequestPacer())


def test_default_pacer_is_shared_and_clover_sized() -> None:
    pacer = default_pacer()
    assert pacer is default_pacer()
    assert (pacer.token_rps, pacer.token_concurrency) == (16, 5)
    assert (pacer.app_rps, pacer.app_concurrency) == (50, 10)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="token_concurrency"):
        RequestPacer(token_concurrency=0)
