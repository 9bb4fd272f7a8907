"""Who is told of each AWS call the library makes: the local stack's IAM recorder, the
bench's counter, tests that count calls, and the X-Ray subsegments of :mod:`esl_sync.tracing`.

The AWS client (:mod:`esl_sync.store.aws_json`, and botocore's clients of the operator's CLI
through :mod:`esl_sync.store.aws`) tells every observer of a call before it is sent; an
observer may return a callable to be told how the call ended. A foundation module of its
own, importing nothing, so that the tracer (foundation) and the stores (adapters) meet here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Finish = Callable[[BaseException | None], None]
Observer = Callable[[str, str, Mapping[str, Any]], Finish | None]
"""Told ``(service, operation, params)`` (``"dynamodb"``, ``"UpdateItem"``, the request)
before a call is sent; may return a callable told the call's error (None: it succeeded)."""

_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Tell ``observer`` of every call from now on (in every thread)."""
    _observers.append(observer)


def unobserve(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def observed() -> bool:
    """Whether anyone listens (a call with no observer pays nothing for them)."""
    return bool(_observers)


def tell(service: str, operation: str, params: Mapping[str, Any]) -> list[Finish]:
    """Tell every observer of a call about to be sent: what each wants told of its end."""
    return [f for o in list(_observers) if (f := o(service, operation, params)) is not None]
