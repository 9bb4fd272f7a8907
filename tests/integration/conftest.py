"""Fixtures of the integration tests (the session's Postgres is in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkit.local_stack import LocalStack

StackFactory = Callable[..., LocalStack]


@pytest.fixture
def make_stack(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[StackFactory]:
    """Local stacks on fresh databases, each with the given settings (environment names)."""
    stacks: list[LocalStack] = []

    def start(**settings: str) -> LocalStack:
        monkeypatch.setenv("DATABASE_URL", make_database())
        stacks.append(LocalStack(settings=settings).__enter__())
        return stacks[-1]

    yield start
    for stack in reversed(stacks):
        stack.__exit__(None, None, None)


@pytest.fixture
def transformed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the raw items the poll transforms (``item_row``), in order: what a skip
    before the transform (:mod:`esl_sync.sync.raw_keys`) saves shows as ids missing here."""
    from esl_sync.sync import poll as poll_module

    ids: list[str] = []
    real = poll_module.item_row

    def counted(raw: Any, **kwargs: Any) -> Any:
        ids.append(raw["id"])
        return real(raw, **kwargs)

    monkeypatch.setattr(poll_module, "item_row", counted)
    return ids
