"""A call a test gives a bounded time, on a thread of its own: a call that would hang (a
wait it should not make, an answer that drips) fails the test with a message instead of
hanging the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable


def raised_within(seconds: float, call: Callable[[], object], still: str) -> BaseException:
    """What ``call`` raised within ``seconds``; the test fails with ``still`` if it is
    still running by then, or with "returned" if it raised nothing."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            raised.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(seconds)
    assert not runner.is_alive(), still
    assert raised, "returned"
    return raised[0]
