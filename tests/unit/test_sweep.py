"""When a deletion sweep runs, and when it must remove nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.clover.errors import (
    CloverAuthError,
    CloverBadResponse,
    CloverConnectionError,
    CloverOutOfTime,
    CloverRequestRejected,
    CloverServerError,
    CloverTimeout,
)
from esl_sync.clover.item_types import ID_PATTERN
from esl_sync.observability import metrics
from esl_sync.records import MerchantState
from esl_sync.restore import CATCH_UP_SWEEP
from esl_sync.settings import Settings
from esl_sync.store.state_item import ITEM_ID, state_of
from esl_sync.sync.poll_outcome import PollOutcome
from esl_sync.sync.sweep import (
    ALLOW_DELETIONS,
    LEGACY_CONTINUES,
    ask_for_sweep,
    confirmed_gone,
    continued_after,
    deletions_allowed,
    plan_sweep,
    record_sweep,
    sweep_due,
)
from tests.fakes import MemoryLog

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SETTINGS = Settings.from_values(
    {"clover_cleanup_every_n_polls": 10, "clover_cleanup_interval_hours": 24}
)


def _state(poll_count: int, *, hours_since_sweep: float | None = 1.0) -> MerchantState:
    last_sweep = (
        None
        if hours_since_sweep is None
        else int((NOW - timedelta(hours=hours_since_sweep)).timestamp() * 1000)
    )
    return MerchantState(
        "M1", high_water_ms=NOW_MS, poll_count=poll_count, last_sweep_ms=last_sweep
    )


def test_never_on_a_new_merchants_first_read() -> None:
    """Nothing to compare yet; even the interval's and the n-th poll's rules wait."""
    assert not sweep_due(MerchantState("M1"), SETTINGS, NOW)
    assert not sweep_due(MerchantState("M1", poll_count=0, last_sweep_ms=0), SETTINGS, NOW)


@pytest.mark.parametrize(
    "history",
    [
        {"poll_count": 1},
        {"poll_count": 2, "last_sweep_ms": NOW_MS},  # swept just now, not the n-th poll
        {"last_success_at": NOW - timedelta(minutes=1)},
    ],
)
def test_a_first_read_with_a_history_sweeps(history: dict[str, object]) -> None:
    """A cursor lost (a hand edit, ``resync``, dropped as ahead of Clover) while a poll
    succeeded before: Postgres holds rows to compare with the listing."""
    assert sweep_due(MerchantState("M1", **history), SETTINGS, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(("poll_count", "due"), [(1, False), (8, False), (9, True), (19, True)])
def test_every_nth_poll(poll_count: int, due: bool) -> None:
    assert sweep_due(_state(poll_count), SETTINGS, NOW) is due


@pytest.mark.parametrize(("hours", "due"), [(23.9, False), (24.0, True), (None, True)])
def test_when_the_interval_has_passed_since_the_last_sweep(hours: float | None, due: bool) -> None:
    assert sweep_due(_state(3, hours_since_sweep=hours), SETTINGS, NOW) is due


def _keys(*ids: str) -> set[tuple[str, str]]:
    return {(item_id, "") for item_id in ids}


def test_suspects_are_active_products_clover_did_not_list() -> None:
    plan = plan_sweep(_keys("A", "B", "C", "D", "E"), {"A", "B", "D", "E", "NEW"}, Decimal("0.2"))
    assert plan.suspects == [("C", "")]
    assert plan.active == 5
    assert not plan.refused


def test_nothing_missing_is_nothing_to_do() -> None:
    plan = plan_sweep(_keys("A", "B"), {"A", "B"}, Decimal("0.2"))
    assert (plan.suspects, plan.refused) == ([], False)


@pytest.mark.parametrize(("missing", "refused"), [(2, False), (3, True), (5, True)])
def test_more_than_the_fraction_missing_is_refused(missing: int, refused: bool) -> None:
    active = _keys(*(f"I{n}" for n in range(10)))
    listed = {f"I{n}" for n in range(missing, 10)}
    plan = plan_sweep(active, listed, Decimal("0.2"))
    assert len(plan.suspects) == missing
    assert plan.refused is refused


def test_a_fraction_of_zero_refuses_any_removal() -> None:
    assert plan_sweep(_keys("A", "B"), {"A"}, Decimal("0")).refused


def test_a_few_deletions_are_always_allowed_so_small_stores_can_lose_items() -> None:
    active = [(f"I{i}", "") for i in range(4)]
    listed = {"I0", "I1", "I2"}
    assert plan_sweep(active, listed, Decimal("0.2")).refused
    assert not plan_sweep(active, listed, Decimal("0.2"), always_allowed=3).refused
    assert plan_sweep(active, {"I0"}, Decimal("0.2"), always_allowed=2).refused


def test_a_sweep_requested_by_a_webhook_is_due_until_a_poll_records_it_done() -> None:
    state = _state(3)
    assert not sweep_due(state, SETTINGS, NOW)
    state.sweep_request = "token-1"
    assert sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = "token-1"
    assert not sweep_due(state, SETTINGS, NOW)
    state.sweep_request = "token-2"  # asked again (during or after that poll)
    assert sweep_due(state, SETTINGS, NOW)
    state.high_water_ms, state.poll_count = None, 0  # a first read without history too
    assert sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = "token-2"
    assert not sweep_due(state, SETTINGS, NOW)


@pytest.mark.parametrize("request_", [None, "token-1", "unreadable"])
def test_restore_catch_up_asks_for_a_sweep_by_another_done_whatever_the_request(
    request_: str | None,
) -> None:
    """What the catch-up writes (``sweep_request_done``, in the versioned save) asks for a
    sweep whether or not a webhook ever asked, on a first read too; the sweeping poll
    records the request it read as done."""
    state = MerchantState("M1", sweep_request=request_, sweep_request_done=request_)
    assert not sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = CATCH_UP_SWEEP
    assert state.sweep_requested
    assert sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = state.sweep_request
    assert not sweep_due(state, SETTINGS, NOW)


@pytest.mark.parametrize("cursor", [NOW_MS, None])
@pytest.mark.parametrize(
    ("unreadable", "due"), [(("pending_deletes",), True), (("poll_count",), False), ((), False)]
)
def test_deletions_noted_where_they_cannot_be_read_make_a_sweep_due_even_on_a_first_read(
    cursor: int | None, unreadable: tuple[str, ...], due: bool
) -> None:
    """Only a sweep finds what an unreadable ``pending_deletes`` held; the save that follows
    removes it (:class:`esl_sync.store.dynamo.DynamoStateStore`)."""
    state = _state(3 if cursor is not None else 0)  # the first read: no history either
    state.high_water_ms, state.unreadable = cursor, unreadable
    assert sweep_due(state, SETTINGS, NOW) is due


def test_the_operators_permission_refuses_no_sweep_and_asks_for_one_until_used() -> None:
    active = [(f"I{k}", "") for k in range(10)]
    assert plan_sweep(active, {"I9"}, Decimal("0.2")).refused  # 9 of 10 missing
    allowed = plan_sweep(active, {"I9"}, Decimal("0.2"), permitted=True)
    assert (allowed.refused, len(allowed.suspects)) == (False, 9)  # each still confirmed
    state = _state(1)
    assert deletions_allowed(state) is None
    state.sweep_request = "token-1"
    state.sweep_request_done = f"{ALLOW_DELETIONS}2026-12-03T18:00:00+00:00"
    assert deletions_allowed(state) == datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
    assert sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = state.sweep_request  # the sweep that used it records it
    assert deletions_allowed(state) is None
    assert not sweep_due(state, SETTINGS, NOW)
    state.sweep_request_done = "restore catch-up"  # another request is no permission
    assert deletions_allowed(state) is None


def test_a_permission_that_is_not_as_written_is_none() -> None:
    """A hand-edited ``sweep_request_done`` reads as its default (None): no permission."""
    state = MerchantState("M1", sweep_request_done=f"x{ALLOW_DELETIONS}")
    assert deletions_allowed(state) is None


def test_a_sweep_confirms_the_first_ids_after_where_the_last_poll_stopped() -> None:
    """The refusal judges every suspect; the batch is ``limit`` ids (each with all its
    keys) after ``after``; ``after`` of the plan is the last id confirmed while more wait."""
    active = [*_keys("A", "B", "C", "D", "E"), ("B", "v1"), ("Z", "")]
    plan = plan_sweep(active, {"Z"}, Decimal("0.2"), 10, limit=2)
    assert plan.suspects == [("A", ""), ("B", ""), ("B", "v1"), ("C", ""), ("D", ""), ("E", "")]
    assert (plan.batch, plan.after, plan.refused) == (
        [("A", ""), ("B", ""), ("B", "v1")],
        "B",
        False,
    )
    plan = plan_sweep(active, {"Z"}, Decimal("0.2"), 10, after="B", limit=2)
    assert (plan.batch, plan.after) == ([("C", ""), ("D", "")], "D")
    plan = plan_sweep(active, {"Z"}, Decimal("0.2"), 10, after="D", limit=2)
    assert (plan.batch, plan.after) == ([("E", "")], None)  # the last: the sweep ends
    plan = plan_sweep(active, {"Z"}, Decimal("0.2"), 10, after="C", limit=2)
    assert (plan.batch, plan.after) == ([("D", ""), ("E", "")], None)  # exactly the limit left
    assert len(plan.suspects) == 6  # still judged over all of them
    assert plan_sweep(active, {"Z"}, Decimal("0.2"), after="D", limit=2).refused


def test_the_summary_names_the_confirmed_only_when_bounded() -> None:
    plan = plan_sweep(_keys("A", "B", "C"), set(), Decimal("1"), limit=2)
    assert plan.summary(1, permitted=False, continued=False) == (
        "removed 1 of 3 missing, 2 confirmed"
    )
    whole = plan_sweep(_keys("A", "B"), set(), Decimal("1"), limit=2)
    assert whole.summary(2, permitted=False, continued=False) == "removed 2 of 2 missing"
    assert (
        whole.summary(0, permitted=False, continued=True) == "removed 0 of 2 missing, 2 confirmed"
    )
    assert whole.summary(1, permitted=True, continued=False) == (
        "removed 1 of 2 missing, 2 confirmed (deletions allowed)"
    )


def test_an_unfinished_sweep_keeps_the_request_open_and_any_permission() -> None:
    state = _state(1)
    state.sweep_request = "token-1"
    record_sweep(state, "B")  # the first poll of a sweep asked for
    assert (state.sweep_after, state.sweep_for, state.sweep_request_done) == ("B", "token-1", None)
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == ("B", True)
    record_sweep(state, "D")  # the next poll's
    assert (state.sweep_after, state.sweep_for) == ("D", "token-1")
    record_sweep(state, None)  # the last: the request it served is done
    assert (state.sweep_after, state.sweep_for, state.sweep_request_done) == (None, None, "token-1")
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == (None, False)

    allowed = f"{ALLOW_DELETIONS}2026-12-03T18:00:00+00:00"
    ask_for_sweep(state, allowed)
    record_sweep(state, "C")
    assert (state.sweep_request_done, state.sweep_for) == (allowed, "token-1")
    assert deletions_allowed(state) == datetime(2026, 12, 3, 18, tzinfo=UTC)  # kept
    record_sweep(state, None)  # ended: the permission used up
    assert (deletions_allowed(state), state.sweep_request_done) == (None, "token-1")


def test_a_sweep_under_way_is_due_whatever_the_schedule_and_ends_where_it_began() -> None:
    """A sweep the schedule began (no request open) goes on at the next polls however
    early (``sweep_after`` set), and its end records what was already done: nothing is
    asked for after it."""
    state = _state(3, hours_since_sweep=0)
    state.sweep_request = state.sweep_request_done = "token-1"
    assert not sweep_due(state, SETTINGS, NOW)
    record_sweep(state, "B")
    assert (state.sweep_after, state.sweep_for) == ("B", "token-1")
    assert not state.sweep_requested
    assert sweep_due(state, SETTINGS, NOW)
    record_sweep(state, None)
    assert (state.sweep_after, state.sweep_request_done, state.sweep_requested) == (
        None,
        "token-1",
        False,
    )
    assert not sweep_due(state, SETTINGS, NOW)


def test_a_request_made_while_a_sweep_is_under_way_stays_open_after_it() -> None:
    """The sweep records done the request it served (read when it began), not the one a
    webhook made since: that one asks for a new sweep, from the first id. Before, the
    request the last poll read was recorded done, though the suspects before the id the
    sweep went on after were never read for it."""
    state = _state(1)
    state.sweep_request = "token-1"
    record_sweep(state, "B")
    state.sweep_request = "token-2"  # a webhook, between two polls of the sweep
    record_sweep(state, "D")
    assert state.sweep_for == "token-1"
    record_sweep(state, None)
    assert (state.sweep_request_done, state.sweep_requested) == ("token-1", True)
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == (None, True)
    record_sweep(state, "A")  # the new sweep, from the first id, serves the new request
    assert state.sweep_for == "token-2"
    record_sweep(state, None)
    assert (state.sweep_request_done, state.sweep_requested) == ("token-2", False)


def test_a_command_drops_the_sweep_under_way() -> None:
    """``restore catch-up`` and the permission commands ask for a sweep from the first id:
    the next poll's serves their request, never one a sweep under way half read."""
    state = _state(1)
    record_sweep(state, "B")
    ask_for_sweep(state, CATCH_UP_SWEEP)
    assert (state.sweep_after, state.sweep_for, state.sweep_request_done) == (
        None,
        None,
        CATCH_UP_SWEEP,
    )
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == (None, True)
    record_sweep(state, None)
    assert (state.sweep_request_done, state.sweep_requested) == (None, False)


@pytest.mark.parametrize("name", ["sweep_after", "sweep_for"])
@pytest.mark.parametrize("after", [None, "B"])
def test_a_sweep_whose_place_or_request_is_unreadable_starts_over(
    name: str, after: str | None
) -> None:
    """Either attribute edited by hand (read as None and named: ``state_item``): a sweep
    is due and goes on after no id, for the request open now; its save writes both anew."""
    state = _state(3, hours_since_sweep=0)
    state.sweep_request, state.sweep_after, state.sweep_for = "token-2", after, "token-1"
    state.unreadable = (name,)
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == (None, True)
    record_sweep(state, "C")
    assert (state.sweep_after, state.sweep_for) == ("C", "token-2")
    state.unreadable = ("poll_count",)
    assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == ("C", True)


def test_a_hand_edited_sweep_place_reads_as_none_and_is_named() -> None:
    for text in ("", "a b", "Z" * 65, "A\n", "I\x00"):
        state = state_of("M1", {"sweep_after": {"S": text}, "sweep_for": {"S": "t"}})
        assert (state.sweep_after, state.sweep_for, state.unreadable) == (
            None,
            "t",
            ("sweep_after",),
        )
        assert (continued_after(state), sweep_due(state, SETTINGS, NOW)) == (None, True)
    longest = "Z" * 64  # the longest id a product can have (item_types.ID_PATTERN)
    state = state_of("M1", {"sweep_after": {"S": longest}})
    assert (state.sweep_after, state.unreadable) == (longest, ())
    assert ID_PATTERN.pattern == ITEM_ID.pattern


@pytest.mark.parametrize(
    ("done", "allowed"),
    [
        (f"sweep{LEGACY_CONTINUES}B", None),
        (
            f"{ALLOW_DELETIONS}2026-12-03T18:00:00+00:00{LEGACY_CONTINUES}C",
            datetime(2026, 12, 3, 18, tzinfo=UTC),
        ),
        (f"restore catch-up{LEGACY_CONTINUES}D", None),
    ],
)
def test_a_sweep_older_code_left_under_way_starts_over_and_keeps_its_permission(
    done: str, allowed: datetime | None
) -> None:
    """Code before ``sweep_after`` wrote ``<what it was> continues after <id>`` as
    ``sweep_request_done``: still a request, so the next poll sweeps, from the first id (the
    id is not read), under the permission in front of it if any; its end records the
    request done and uses the permission up."""
    item = {"sweep_request": {"S": "t"}, "sweep_request_done": {"S": done}}
    state = state_of("M1", item)
    assert (deletions_allowed(state), continued_after(state)) == (allowed, None)
    assert sweep_due(state, SETTINGS, NOW)
    record_sweep(state, "E")
    assert (state.sweep_after, state.sweep_for, state.sweep_request_done) == ("E", "t", done)
    assert deletions_allowed(state) == allowed  # kept while it sweeps
    record_sweep(state, None)
    assert (state.sweep_request_done, deletions_allowed(state)) == ("t", None)
    assert not sweep_due(state, SETTINGS, NOW)


def test_the_texts_are_as_the_readme_and_the_runbook_write_them() -> None:
    """``sweep_request_done`` as an operator reads it in the state table: the permission,
    and older code's sweep under way with a permission in front of its marker."""
    state = MerchantState("M1", sweep_request="t")
    state.sweep_request_done = "allow deletions 2026-12-03T18:00:00+00:00"
    assert deletions_allowed(state) == datetime(2026, 12, 3, 18, tzinfo=UTC)
    state.sweep_request_done = "allow deletions 2026-12-03T18:00:00+00:00 continues after C"
    assert (deletions_allowed(state), continued_after(state)) == (
        datetime(2026, 12, 3, 18, tzinfo=UTC),
        None,
    )


def test_a_poll_confirms_500_suspects_by_default() -> None:
    active = [(f"I{k:04d}", "") for k in range(501)]
    plan = plan_sweep(active, set(), Decimal("1"))
    assert (len(plan.batch), plan.after) == (500, "I0499")
    assert plan_sweep(active[:500], set(), Decimal("1")).after is None


@pytest.mark.parametrize(
    "done",
    [
        ALLOW_DELETIONS,  # no time: status showed an empty cell ("" in --json), yet allowed
        f"{ALLOW_DELETIONS}garbage",
        f"{ALLOW_DELETIONS}\x00\x1b[2J" + "x" * 480,
        f"{ALLOW_DELETIONS}2026-12-03T18:00:00",  # no offset: not what the command writes
        f"{ALLOW_DELETIONS}2026-12-03T18:00:00+00:00 and more",
        f"{ALLOW_DELETIONS}\u0662\u0660\u0662\u0666-12-03T18:00:00+00:00",  # other digits
    ],
)
def test_a_hand_edited_permission_is_none_but_still_asks_for_a_sweep(done: str) -> None:
    state = _state(1)
    state.sweep_request_done = done
    assert deletions_allowed(state) is None
    assert sweep_due(state, SETTINGS, NOW)  # a request all the same: judged by the fraction


def _reader(answers: dict[str, object]) -> Callable[[str], Mapping[str, object] | None]:
    """A single-item read answering each id as ``answers`` says: an item, None (404), or an
    exception raised."""

    def read(item_id: str) -> Mapping[str, object] | None:
        answer = answers[item_id]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    return read


def test_a_suspect_is_gone_on_a_404_or_a_deleted_flag_and_kept_when_its_read_is_refused() -> None:
    answers: dict[str, object] = {
        "A": None,  # 404
        "B": {"id": "B", "deleted": True},
        "C": {"id": "C", "name": "still there"},
        "D": CloverRequestRejected("GET /items/D: HTTP 410", merchant_id="M", status=410),
        "E": CloverServerError("GET /items/E: HTTP 500", merchant_id="M", status=500),
        "F": CloverBadResponse("GET /items/F: not JSON", merchant_id="M"),
        "G": None,  # read after the refused ones: the sweep goes on
    }
    assert confirmed_gone(_reader(answers), sorted(answers), "M") == {"A", "B", "G"}


@pytest.mark.parametrize(
    "error",
    [
        CloverTimeout("GET /items/A: timed out", merchant_id="M"),
        CloverOutOfTime("GET /items/A: no time left", merchant_id="M"),
        CloverAuthError("GET /items/A: HTTP 401", merchant_id="M", status=401),
        CloverConnectionError("GET /items/A: reset", merchant_id="M"),
    ],
)
def test_a_failure_that_is_the_polls_not_the_items_still_fails_it(error: Exception) -> None:
    with pytest.raises(type(error)):
        confirmed_gone(_reader({"A": error}), ["A"], "M")


def test_the_suspects_clover_refused_are_named_and_counted(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each kept suspect is named (the first 20, each error's class and message cut to 200
    characters) in one warning, and all are counted; a sweep whose reads all answered says
    nothing of it."""
    said = "sweep: items whose read Clover refused are kept until a later sweep"
    answers: dict[str, object] = {
        f"U{n:02d}": CloverRequestRejected(f"HTTP 410 {'x' * n * 20}", merchant_id="M", status=410)
        for n in range(21)
    }
    answers["G"] = None
    metrics.clear_metrics()
    try:
        assert confirmed_gone(_reader(answers), sorted(answers), "M1") == {"G"}
        assert confirmed_gone(_reader({"A": None}), ["A"], "M2") == {"A"}
    finally:
        metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert (metric_sums(lines), metric_units(lines)) == (
        {"SweepReadsFailed": 21},
        {"SweepReadsFailed": "Count"},
    )
    [line] = log.lines(said)
    assert (line["level"], line["merchant_id"], line["count"]) == ("WARNING", "M1", 21)
    expected = {
        f"U{n:02d}": f"CloverRequestRejected: merchant M: HTTP 410 {'x' * n * 20}"[:200]
        for n in range(20)
    }
    assert line["unread"] == expected
    assert len(expected["U19"]) == 200


def test_a_permission_used_up_is_none() -> None:
    """The sweep that used it recorded its request done: the permission text is then the
    request and the done marker both, no sweep asked, no permission."""
    text = f"{ALLOW_DELETIONS}2026-12-03T18:00:00+00:00"
    state = MerchantState("M1", sweep_request=text, sweep_request_done=text)
    assert not state.sweep_requested
    assert deletions_allowed(state) is None


def test_a_refused_sweep_says_so_in_the_text_the_outcome_reads() -> None:
    plan = plan_sweep(_keys("A", "B", "C", "D"), {"D"}, Decimal("0.2"))
    assert plan.refused
    assert plan.refusal() == "refused: 3 of 4 missing"
    assert PollOutcome("M", "schedule", sweep=plan.refusal()).sweep_refused


def test_a_sweeping_poll_says_it_swept_so_its_save_may_drop_what_asked_for_it() -> None:
    """``swept`` is what lets the save remove an unreadable ``pending_deletes`` (the sweep
    found what it held); a poll that failed before it swept leaves it, still asking."""
    state = _state(1)
    state.unreadable = ("pending_deletes",)
    assert sweep_due(state, SETTINGS, NOW)
    assert not state.swept
    record_sweep(state, "B")
    assert state.swept
    ended = _state(1)
    record_sweep(ended, None)
    assert ended.swept


@pytest.mark.parametrize("write", ["record_sweep", "ask_for_sweep"])
def test_what_writes_the_sweeps_place_anew_makes_it_readable_again(write: str) -> None:
    """An unreadable ``sweep_after``/``sweep_for`` is left as stored by a save (a failed
    poll's); what writes the place anew takes them out of ``unreadable``, so its save writes
    them, and leaves every other unreadable attribute named."""
    state = _state(1)
    state.unreadable = ("sweep_after", "pending_deletes", "sweep_for")
    if write == "record_sweep":
        record_sweep(state, "B")
    else:
        ask_for_sweep(state, CATCH_UP_SWEEP)
    assert state.unreadable == ("pending_deletes",)
