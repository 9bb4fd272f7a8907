"""The keyed page walk: every item changed since a time, read in pages, none skipped.

Clover lists items sorted by ``modifiedTime`` with a ``modifiedTime>=`` filter, ``limit``
and ``offset``; it has no stable cursor. :class:`ItemWalk` pages by key (the last
``modifiedTime`` seen, with an offset only over the items tied at exactly that ms) so a
walk costs one request per page, and keeps these invariants while the catalog changes
under it:

* every item whose ``modifiedTime`` is at or after ``since`` when the walk ends is yielded,
  in the version of that time or a later one (an edit between two requests can shift an
  offset by one; the walk notices the moved item and re-reads every window it may have
  shifted);
* each id is yielded once per version (again only with a newer ``modifiedTime``);
* a page that breaks the documented order or filter, a sorted query Clover refuses
  (HTTP 400), or items that keep moving make the walk fall back to reading every item
  (``fell_back``): slower, never wrong;
* the walk never loops forever: a page past an offset that repeats only items already
  read ends it (with a fallback, or a :class:`~esl_sync.clover.errors.CloverBadResponse`
  when even the complete walk sees it).

The walk is pure logic over :class:`esl_sync.ports.CatalogReader` (one request per
:meth:`~esl_sync.ports.CatalogReader.list_page`); the HTTP client
(:mod:`esl_sync.clover.client`) implements the reader, and the tests drive the walk
through it against the Clover simulator.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Self

from esl_sync.clover.errors import CloverBadResponse, CloverRequestRejected
from esl_sync.ports import CatalogReader
from esl_sync.records import Item

_LOG = logging.getLogger(__name__)

#: How often a walk re-reads ranges an edit may have shifted before it gives up on key
#: paging and falls back to a complete walk.
MAX_REREAD_ROUNDS = 5


class _FallBack(Exception):
    """Key paging cannot be trusted for this walk; read everything instead."""


@dataclass
class _OffsetRead:
    """A list request that skipped ``offset`` items at or above ``low``.

    If one of the skipped items moved away before the request, the request skipped one
    item too many: some item with a ``modifiedTime`` in [``low``, ``first``] (``first``
    being the first time the page returned, or ``high``/unbounded if it was empty).
    """

    low: int
    high: int | None
    first: int | None
    tainted: bool = False

    @property
    def window(self) -> tuple[int, int | None]:
        return (self.low, self.first if self.first is not None else self.high)

    def covers(self, modified_ms: int) -> bool:
        low, high = self.window
        return modified_ms >= low and (high is None or modified_ms <= high)


class ItemWalk(Iterator[list[Item]]):
    """Pages of raw items with ``modifiedTime >= since`` (every item when ``since`` is None).

    Pages are requested lazily as the walk is iterated. Each id is yielded once, again
    only if it comes back with a newer ``modifiedTime``; empty pages are not yielded.

    How it moves: ``filter=modifiedTime>=<ms>``, ``orderBy=modifiedTime ASC``,
    ``limit=page_size``; the next page asks from the last ``modifiedTime`` seen with
    ``offset`` = the number of items already passed at exactly that ms. The walk ends on
    a page shorter than ``limit``. An item edited between two requests moves to the end
    (its ``modifiedTime`` grows), so it is read again there; if it had been counted in an
    offset, that offset skipped one unread item, which lies between the offset's ms and
    the first ms the page returned. When a seen id comes back newer, every offset request
    it may have been counted in is re-read over that window (usually a single ms, offset
    paging, deduplicated), and if such a re-read needed more than one page the tail is
    read again to catch items that moved meanwhile. Every page is verified (times
    non-decreasing, inside the filter); if one is not, or Clover rejects the sorted query
    (400), or re-reads keep finding moved items, the walk sets ``fell_back`` and reads
    every item instead (default order, offset paging, deduplicated; repeated once if an
    id showed up twice with a newer ``modifiedTime``).

    ``clover_time_ms`` is Clover's clock (the ``Date`` of the walk's first response, so
    whole seconds, rounded down); ``max_modified_ms`` the largest ``modifiedTime``
    yielded; ``requests`` the HTTP requests its pages took, retries included.
    """

    def __init__(self, reader: CatalogReader, since_ms: int | None) -> None:
        self._reader = reader
        self._since = since_ms
        self.requests = 0
        self.clover_time_ms: int | None = None
        self._seen: dict[str, int] = {}
        self._offset_reads: list[_OffsetRead] = []
        self._pending: deque[tuple[int, int | None]] = deque()
        self._complete_walk_running = False
        self.fell_back = False
        self.max_modified_ms: int | None = None
        self._pages = self._run()

    def __repr__(self) -> str:
        return (
            f"ItemWalk(merchant_id={self._reader.merchant_id!r}, since_ms={self._since}, "
            f"requests={self.requests}, fell_back={self.fell_back})"
        )

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> list[Item]:
        return next(self._pages)

    # -- the walk --------------------------------------------------------------------

    def _run(self) -> Generator[list[Item]]:
        try:
            yield from self._key_walk()
        except _FallBack as reason:
            self.fell_back = True
            _LOG.warning(
                "clover merchant %s: %s; falling back to a complete walk",
                self._reader.merchant_id,
                reason,
            )
            yield from self._complete_walk()

    def _key_walk(self) -> Generator[list[Item]]:
        tail_low = yield from self._range(self._since, None)
        rounds = 0
        while self._pending:
            rounds += 1
            if rounds > MAX_REREAD_ROUNDS:
                raise _FallBack(f"items kept moving after {MAX_REREAD_ROUNDS} re-reads")
            reread_paged = False
            while self._pending:
                low, high = self._pending.popleft()
                before = len(self._offset_reads)
                _LOG.debug(
                    "clover merchant %s: re-reading modifiedTime %s..%s (an edit shifted offsets)",
                    self._reader.merchant_id,
                    low,
                    "" if high is None else high,
                )
                end = yield from self._range(low, high)
                if high is None:
                    tail_low = _later(tail_low, end)
                elif len(self._offset_reads) > before:
                    reread_paged = True
            if reread_paged:
                # A multi-page re-read used offsets itself; items that moved during it went
                # to the tail: read the tail again so they are seen (and re-read if need be).
                tail_low = yield from self._range(tail_low, None)

    def _range(self, low: int | None, high: int | None) -> Generator[list[Item], None, int | None]:
        """Key-page through ``low <= modifiedTime <= high``; return the last cursor ms."""
        size = self._reader.page_size
        cursor, offset = low, 0
        read_here: set[str] = set()
        while True:
            params: list[tuple[str, str]] = []
            if cursor is not None and high is not None and cursor == high:
                params.append(("filter", f"modifiedTime={cursor}"))
            else:
                if cursor is not None:
                    params.append(("filter", f"modifiedTime>={cursor}"))
                if high is not None:
                    params.append(("filter", f"modifiedTime<={high}"))
            params += [("orderBy", "modifiedTime ASC"), ("limit", str(size))]
            if offset:
                params.append(("offset", str(offset)))
            try:
                elements = self._list(params)
            except CloverRequestRejected as error:
                if error.status == 400:
                    raise _FallBack("Clover rejected the sorted query (HTTP 400)") from None
                raise
            times: list[int] = [element["modifiedTime"] for element in elements]
            _check_sorted(times, cursor, high)
            if offset and cursor is not None:
                self._offset_reads.append(_OffsetRead(cursor, high, times[0] if times else None))
                if len(elements) == size and _ids(elements) <= read_here:
                    raise _FallBack("a page past an offset repeated only items already read")
            read_here |= _ids(elements)
            page = self._accept(elements)
            if page:
                yield page
            if times:
                last = times[-1]
                if len(elements) == size and (cursor is None or last > cursor):
                    _check_order_proven(elements)
                ties = len(times) - bisect.bisect_left(times, last)  # sorted: checked above
                if last == cursor:
                    offset += ties
                else:
                    cursor, offset = last, ties
            if len(elements) < size:
                return cursor
            del elements, page  # not held while the next page is read (nor by the caller)

    def _complete_walk(self) -> Generator[list[Item]]:
        self._complete_walk_running = True
        size = self._reader.page_size
        for round_number in (1, 2):
            changed = False
            this_walk: dict[str, int] = {}
            offset = 0
            while True:
                params: list[tuple[str, str]] = [("limit", str(size))]
                if offset:
                    params.append(("offset", str(offset)))
                elements = self._list(params)
                if offset and len(elements) == size and _ids(elements) <= this_walk.keys():
                    raise self._bad(
                        f"the page at offset {offset} repeats only items already read "
                        "(is 'offset' ignored?)"
                    )
                for element in elements:
                    item_id, modified = element.get("id"), element["modifiedTime"]
                    if isinstance(item_id, str):
                        if item_id in this_walk and modified > this_walk[item_id]:
                            changed = True
                        this_walk[item_id] = max(modified, this_walk.get(item_id, modified))
                page = self._accept(elements)
                if page:
                    yield page
                offset += len(elements)
                if len(elements) < size:
                    break
                del elements, page  # not held while the next page is read
            if not changed:
                return
            if round_number == 1:
                _LOG.info(
                    "clover merchant %s: catalog changed during the complete walk; walking again",
                    self._reader.merchant_id,
                )

    def _list(self, params: list[tuple[str, str]]) -> list[Item]:
        """One page of the listing, every element with an integer ``modifiedTime``."""
        page = self._reader.list_page(params)
        self.requests += page.requests
        if self.clover_time_ms is None:
            self.clover_time_ms = page.clover_time_ms
        for index, element in enumerate(page.elements):
            modified = element.get("modifiedTime")
            if type(modified) is not int and not _is_int(modified):  # an int, nearly always
                raise self._bad(f"elements[{index}].modifiedTime is not an integer")
        return page.elements

    def _bad(self, what: str) -> CloverBadResponse:
        return CloverBadResponse(
            f"GET {self._reader.items_path}: {what}", merchant_id=self._reader.merchant_id
        )

    def _accept(self, elements: list[Item]) -> list[Item]:
        """The elements not yet yielded in this version; notes ids that moved."""
        page: list[Item] = []
        for element in elements:
            item_id = element.get("id")
            modified: int = element["modifiedTime"]
            if not isinstance(item_id, str) or not item_id:
                page.append(element)  # the transform rejects it; the caller counts it
                continue
            previous = self._seen.get(item_id)
            if previous is not None and modified <= previous:
                continue
            self._seen[item_id] = modified
            page.append(element)
            if self.max_modified_ms is None or modified > self.max_modified_ms:
                self.max_modified_ms = modified
            if previous is not None and not self._complete_walk_running:
                self._moved(previous)
        return page

    def _moved(self, old_ms: int) -> None:
        """An item seen at ``old_ms`` changed: re-read every offset it may have shifted."""
        for read in self._offset_reads:
            if not read.tainted and read.covers(old_ms):
                read.tainted = True
                self._pending.append(read.window)


def _check_sorted(times: list[int], low: int | None, high: int | None) -> None:
    previous = low
    for index, value in enumerate(times):
        if previous is not None and value < previous:
            what = "below the filter" if previous == low and index == 0 else "out of order"
            raise _FallBack(f"page not sorted by modifiedTime (elements[{index}] {what})")
        if high is not None and value > high:
            raise _FallBack(f"page not inside the filter (elements[{index}] above {high})")
        previous = value


def _check_order_proven(elements: list[Item]) -> None:
    """A full page that moves the walk's lower bound up must be in ``modifiedTime`` order
    because Clover honoured ``orderBy``, not by chance: whether it does is unconfirmed, and a
    Clover that ignores it lists in its default order, newest created first. A page that is
    in that order too (every ``createdTime`` an integer, none above the one before) could be
    either, and trusting it would skip, for good, every item stamped below its last time
    that the default order lists later; so the walk falls back. A page sorted by
    ``modifiedTime`` whose ``createdTime`` rises anywhere (between two items that have one)
    cannot be in the default order: Clover sorted it, and paging on from its last time is
    sound. Costs no request; a catalog whose items share one ``createdTime`` falls back on
    such pages (safe, counted)."""
    previous: int | None = None
    for element in elements:
        created = element.get("createdTime")
        if not _is_int(created):
            continue  # placed somewhere by the default order: proves nothing either way
        assert isinstance(created, int)  # for mypy: _is_int said so
        if previous is not None and created > previous:
            return
        previous = created
    raise _FallBack(
        "a full page in modifiedTime order is in Clover's default order too (newest created "
        "first): whether orderBy was honoured is not proven"
    )


def _ids(elements: list[Item]) -> set[str]:
    return {item_id for element in elements if isinstance(item_id := element.get("id"), str)}


def _later(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
