"""Time left in an invocation: a job that may not finish in it is given back, not started.

Lambda ends an invocation at its timeout mid-call; a job that starts only when its slowest
step still fits either finishes or is handed back to its queue whole (a partial batch
failure), and the next invocation takes it with a full budget.
"""

from __future__ import annotations

from esl_sync.observability import logger
from esl_sync.ports import RemainingTime


class OutOfTime(RuntimeError):
    """Not started: too little time left in this invocation. Retry the message; nothing
    was sent (the sender names the failure on a label job's labels, so one refused on every
    receive and dead-lettered still carries it)."""


def require_time(context: RemainingTime, needed_ms: int, what: str) -> None:
    """Raise :class:`OutOfTime` (and say so in the log) unless ``needed_ms`` are left."""
    left = context.get_remaining_time_in_millis()
    if left < needed_ms:
        logger.warning(
            "not started: too little time left", what=what, left_ms=left, needed_ms=needed_ms
        )
        raise OutOfTime(f"{what} not started: {left} ms left, {needed_ms} ms needed")
