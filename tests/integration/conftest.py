"""Fixtures of the integration tests (the session's Postgres is in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
