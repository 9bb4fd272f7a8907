"""What a poll holds in memory: one page of Clover's items at a time, whatever the catalog.

A poll's memory grows with the catalog only where the label decision needs it (the codes
touched, their records and owners: README, "Memory"); the items of a page, their rows and
their changes are written and let go before the next page is read. Watched here through
the real handlers, Postgres and the Clover simulator: each page's items are handed to the
poll as dicts a weak reference can watch, and at every request of the listing the test
counts the items of earlier pages still alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from devkit.catalog import convenience_store_catalog
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.ports import CatalogReader, CatalogReaders
from esl_sync.records import ItemPage


class _Watched(dict[str, Any]):
    """A raw item as the parser makes it, but one a weak reference can watch."""


class _Watch:
    """The process's Clover readers, each page's items handed on as :class:`_Watched`;
    ``alive`` holds, at each list request, the items of earlier pages still referenced."""

    def __init__(self, real: CatalogReaders) -> None:
        self.real = real
        self.refs: list[weakref.ref[_Watched]] = []
        self.alive: list[int] = []

    def merchant(self, *args: Any, **kwargs: Any) -> CatalogReader:
        return _WatchedReader(self.real.merchant(*args, **kwargs), self)


class _WatchedReader:
    def __init__(self, real: CatalogReader, watch: _Watch) -> None:
        self._real, self._watch = real, watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def list_page(self, params: Sequence[tuple[str, str]]) -> ItemPage:
        self._watch.alive.append(sum(ref() is not None for ref in self._watch.refs))
        page = self._real.list_page(params)
        elements = [_Watched(element) for element in page.elements]
        self._watch.refs += [weakref.ref(element) for element in elements]
        return replace(page, elements=elements)


def test_a_first_sync_lets_each_page_of_items_go_before_it_reads_the_next(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    with LocalStack(settings={"CLOVER_PAGE_SIZE": "10"}) as stack:
        stack.add_merchant("MPAGES000001", "tok", "STORE-P", items=convenience_store_catalog(45))
        watches: list[_Watch] = []
        real_deps = runtime.poll_deps

        def watched_deps() -> Any:
            deps = real_deps()
            watches.append(_Watch(deps.clover))
            return replace(deps, clover=watches[-1])

        monkeypatch.setattr(runtime, "poll_deps", watched_deps)
        cycle = stack.run_cycle()

        assert (cycle.polls.records, cycle.polls.failures) == (1, 0)
        (watch,) = [w for w in watches if w.refs]
        assert len(watch.refs) == 45  # five pages read: 10, 10, 10, 10, 5
        assert len(watch.alive) == 5  # the shorter page is the last: no sixth request
        assert watch.alive == [0, 0, 0, 0, 0]  # no earlier page held while one is read
        assert len(stack.products("MPAGES000001")) == 45
