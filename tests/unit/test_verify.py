"""A verify of a merchant's labels against what Hipoink holds (esl_sync.sync.verify): the
listing it reads, the labels it compares, what it marks and when it marks nothing, and what
it tells the operator (docs/architecture.md, "Verifying labels against Hipoink"). Hipoink's
listing and the ledger are the fakes of its ports (tests/fakes.py); how one value compares
with another is tests/unit/test_verify_compare.py."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.deadline import OutOfTime
from esl_sync.hipoink.errors import HipoinkRetryable, HipoinkUnreadable
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.messages import LabelVerify
from esl_sync.observability import metrics
from esl_sync.products import Product
from esl_sync.records import Drift, HeldPage, VerifyResult, VerifyTarget
from esl_sync.settings import Settings
from esl_sync.sync.verify import (
    VerifyDeps,
    VerifyOutcome,
    expected_labels,
    verify_labels,
    verify_result,
)
from tests.fakes import MemoryHeld, MemoryLog, MemoryVerifyLedger

STORE = "STORE-M"
REQUEST = LabelVerify(merchant_id="M", store_code=STORE, reason="sweep")


def _product(pc: str, price: str = "1.00", **fields: object) -> Product:
    return Product.model_validate(
        {
            "merchant_id": "M",
            "source_id": f"ID{pc}",
            "name": f"Item {pc}",
            "barcode": pc,
            "price": Decimal(price),
        }
        | fields
    )


def _label(pc: str, *, version: int = 3, **fields: object) -> VerifyTarget:
    """A label acknowledged with what its product wants now (the one a verify compares)."""
    product = _product(pc, **fields)
    acked = label_hash(to_record(product))
    return VerifyTarget(pc, acked, version, acked, product)


def _deleted(pc: str, *, version: int = 4) -> VerifyTarget:
    """A label acknowledged as deleted, which no product wants."""
    return VerifyTarget(pc, None, version, None, None)


def _held(target: VerifyTarget, **changed: object) -> dict[str, object]:
    """What Hipoink holds for the label: the record acknowledged, ``changed`` as given."""
    assert target.product is not None
    record = to_record(target.product)
    assert record is not None
    return {**record, **changed}


def _labels(n: int, prefix: str = "P") -> list[VerifyTarget]:
    return [_label(f"{prefix}{i:04d}") for i in range(n)]


def _run(
    targets: list[VerifyTarget] | None,
    hipoink: MemoryHeld,
    settings: Settings | None = None,
    before_call: Callable[[], None] | None = None,
) -> tuple[VerifyOutcome, MemoryVerifyLedger]:
    ledger = MemoryVerifyLedger(STORE, targets)
    deps = VerifyDeps(ledger, hipoink, settings or Settings())
    return verify_labels(REQUEST, deps, before_call), ledger


def _pages_asked(hipoink: MemoryHeld) -> list[int]:
    assert {(store, size) for store, _, size in hipoink.calls} <= {(STORE, 100)}
    return [page for _, page, _ in hipoink.calls]


# -- the listing: every page, and only a listing that adds up ------------------------------


def test_the_listing_is_read_a_hundred_a_page_until_a_short_page() -> None:
    labels = _labels(250)
    hipoink = MemoryHeld(STORE, [_held(t) for t in labels], total=None)
    outcome, ledger = _run(labels, hipoink)
    assert hipoink.calls == [(STORE, 1, 100), (STORE, 2, 100), (STORE, 3, 100)]
    assert (outcome.pages, outcome.verified, outcome.drifted, outcome.refused) == (3, 250, [], None)
    assert ledger.marks == [[]]


def test_a_listing_of_whole_pages_ends_with_an_empty_one_unless_the_total_says_so() -> None:
    labels = _labels(200)
    without_total = MemoryHeld(STORE, [_held(t) for t in labels], total=None)
    assert _run(labels, without_total)[0].pages == 3
    assert _pages_asked(without_total) == [1, 2, 3]
    with_total = MemoryHeld(STORE, [_held(t) for t in labels])
    outcome = _run(labels, with_total)[0]
    assert _pages_asked(with_total) == [1, 2]  # the total reached: no third call
    assert (outcome.pages, outcome.verified, outcome.refused) == (2, 200, None)


@pytest.mark.parametrize("total", [151, 300])
def test_a_listing_short_of_its_total_marks_nothing(total: int) -> None:
    labels = _labels(200)
    hipoink = MemoryHeld(STORE, [_held(t) for t in labels[:150]], total=total)
    outcome, ledger = _run(labels, hipoink)
    assert _pages_asked(hipoink) == [1, 2]
    assert outcome.refused == f"product/query listed 150 of a total of {total}"
    assert ledger.marks == []


def test_a_page_that_repeats_the_one_before_marks_nothing() -> None:
    labels = _labels(300)
    hipoink = MemoryHeld(STORE, [_held(t) for t in labels])
    hipoink.answers[3] = HeldPage([_held(t) for t in labels[100:200]], 300)
    outcome, ledger = _run(labels, hipoink)
    assert outcome.refused == "product/query page 3 repeats the page before it"
    assert (outcome.pages, ledger.marks) == (3, [])


def test_two_pages_of_other_systems_products_are_no_repeat() -> None:
    """A page of products without a usable code reads as no codes: twice is no repeat."""
    labels = _labels(10)
    others: list[dict[str, object]] = [{"pn": f"Other {i}"} for i in range(200)]
    hipoink = MemoryHeld(STORE, [*others, *[_held(t) for t in labels]])
    outcome = _run(labels, hipoink)[0]
    assert _pages_asked(hipoink) == [1, 2, 3]
    assert (outcome.refused, outcome.skipped, outcome.verified, outcome.drifted) == (
        None,
        200,
        10,
        [],
    )


def test_products_skipped_count_toward_the_page_and_the_total() -> None:
    """A page of 100 of which some were skipped is a whole page: the next one is read, and
    the skipped ones count toward the reported total."""
    labels = _labels(150)
    held: list[dict[str, object]] = [_held(t) for t in labels]
    for at in (5, 50, 120):
        held.insert(at, {"pn": "another system's"})
    hipoink = MemoryHeld(STORE, held)
    outcome, ledger = _run(labels, hipoink)
    assert _pages_asked(hipoink) == [1, 2]
    assert (outcome.refused, outcome.skipped, outcome.pages, outcome.drifted) == (None, 3, 2, [])
    assert ledger.marks == [[]]


def test_a_listing_that_never_ends_is_refused_after_a_thousand_pages() -> None:
    hipoink = MemoryHeld(STORE)
    hipoink.endless = True
    outcome, ledger = _run(_labels(1), hipoink)
    assert outcome.refused == "product/query lists more than 1000 pages"
    assert _pages_asked(hipoink) == list(range(1, 1001))
    assert (outcome.pages, ledger.marks) == (1000, [])


def test_the_time_left_is_checked_before_each_page() -> None:
    labels = _labels(250)
    hipoink = MemoryHeld(STORE, [_held(t) for t in labels])
    checks: list[int] = []

    def before_call() -> None:
        checks.append(len(hipoink.calls))
        if len(checks) == 3:
            raise OutOfTime("0.9 s left, a call needs 2 s")

    outcome, ledger = _run(labels, hipoink, before_call=before_call)
    assert checks == [0, 1, 2]  # before each call, none after the last one it allowed
    assert _pages_asked(hipoink) == [1, 2]
    assert (outcome.refused, outcome.pages, ledger.marks) == ("0.9 s left, a call needs 2 s", 2, [])


def test_without_a_time_check_every_page_is_read() -> None:
    labels = _labels(120)
    outcome = _run(labels, MemoryHeld(STORE, [_held(t) for t in labels]), before_call=None)[0]
    assert (outcome.pages, outcome.verified, outcome.refused) == (2, 120, None)


# -- which labels are compared --------------------------------------------------------------


def test_stale_and_not_rebuilt_labels_are_counted_not_compared() -> None:
    current = _label("CURRENT")
    stale = VerifyTarget("STALE", "old-hash", 2, current.wanted, _product("STALE"))
    gone = VerifyTarget("GONE", "old-hash", 2, None, None)  # its delete is on its way
    extra = Settings(hipoink_extra_fields=(("f1", "price_type"),))
    not_rebuilt = _label("PLAIN")  # acknowledged without f1: the sender's mapping differs
    targets = [current, stale, gone, not_rebuilt]

    expected, stale_count, not_rebuilt_count = expected_labels(targets, Settings())
    assert (list(expected), stale_count, not_rebuilt_count) == (["CURRENT", "PLAIN"], 2, 0)
    assert expected["CURRENT"] == (current, _held(current))

    expected, stale_count, not_rebuilt_count = expected_labels(targets, extra)
    assert (list(expected), stale_count, not_rebuilt_count) == ([], 2, 2)


def test_a_stale_label_is_not_compared_even_when_it_rebuilds_to_what_was_acknowledged() -> None:
    """The poller's mapping now wants another record (``wanted``); the sender's settings,
    not yet the poller's, rebuild the one acknowledged: still stale, its job is on its way."""
    product = _product("MOVED")
    acked = label_hash(to_record(product))
    target = VerifyTarget("MOVED", acked, 3, "the hash of the poller's new mapping", product)
    assert expected_labels([target], Settings()) == ({}, 1, 0)


def test_a_label_is_rebuilt_with_the_senders_extra_fields_and_variable_price_text() -> None:
    settings = Settings(
        hipoink_extra_fields=(("f1", "price_type"),), hipoink_variable_price_text="ASK"
    )
    product = _product("VAR", price_type="VARIABLE")
    record = to_record(product, extra_fields=(("f1", "price_type"),), variable_price_text="ASK")
    assert record == {"pc": "VAR", "pn": "Item VAR", "pp": "ASK", "pi": "IDVAR", "f1": "VARIABLE"}
    acked = label_hash(record)
    target = VerifyTarget("VAR", acked, 5, acked, product)
    assert expected_labels([target], settings) == ({"VAR": (target, record)}, 0, 0)
    assert expected_labels([target], Settings())[1:] == (0, 1)


def test_a_label_acknowledged_as_deleted_is_compared_as_not_to_be_held() -> None:
    deleted = _deleted("GONE")
    assert expected_labels([deleted], Settings()) == ({"GONE": (deleted, None)}, 0, 0)
    unlabelable = _product("HIDDEN", status="deleted")  # a product, but on no label
    hidden = VerifyTarget("HIDDEN", None, 4, None, unlabelable)
    assert expected_labels([hidden], Settings()) == ({"HIDDEN": (hidden, None)}, 0, 0)


# -- what it marks --------------------------------------------------------------------------


def test_drifted_labels_are_marked_with_the_acknowledgement_they_contradict() -> None:
    same, edited, missing = _label("SAME"), _label("EDITED", version=8), _label("MISSING")
    kept, deleted = _deleted("KEPT", version=9), _deleted("DELETED")
    labels = [same, edited, missing, kept, deleted, *_labels(6)]
    held = [
        _held(same),
        _held(edited, pp="9.99", pn=" Item EDITED "),  # trimmed: the name is the same
        {"pc": "KEPT", "pn": "Item KEPT"},
        *[_held(t) for t in labels[5:]],
    ]
    outcome, ledger = _run(labels, MemoryHeld(STORE, held))
    assert ledger.marks == [
        [
            Drift("EDITED", ("pp",), edited.label_hash, 8),
            Drift("MISSING", ("not held",), missing.label_hash, 3),
            Drift("KEPT", ("held though deleted",), None, 9),
        ]
    ]
    assert (outcome.verified, outcome.drifted, outcome.marked) == (
        11,
        ["EDITED", "MISSING", "KEPT"],
        3,
    )


def test_only_labels_still_as_compared_count_as_marked() -> None:
    labels = _labels(6)
    held = [_held(t, pn="Edited in the console") for t in labels[:2]]
    held += [_held(t) for t in labels[2:]]
    ledger = MemoryVerifyLedger(STORE, labels)
    ledger.changed_since = {labels[0].pc}  # acknowledged anew while the verify read
    outcome = verify_labels(REQUEST, VerifyDeps(ledger, MemoryHeld(STORE, held), Settings()))
    assert (outcome.drifted, outcome.marked) == (["P0000", "P0001"], 1)


def test_a_field_no_held_product_carries_is_not_compared() -> None:
    """Hipoink's listing does not report ``pi``: no label drifted for want of it."""
    labels = _labels(3)
    held = [{k: v for k, v in _held(t).items() if k != "pi"} for t in labels]
    held[1]["pp"] = "2.00"
    outcome, ledger = _run(labels, MemoryHeld(STORE, held))
    assert ledger.marks == [[Drift("P0001", ("pp",), labels[1].label_hash, 3)]]
    assert outcome.drifted == ["P0001"]


def test_codes_hipoink_holds_that_the_ledger_does_not_know_are_counted_never_marked() -> None:
    labels = _labels(2)
    stale = VerifyTarget("STALE", "old-hash", 2, "new-hash", _product("STALE"))
    held = [*[_held(t) for t in labels], {"pc": "ZZ-THEIRS"}, {"pc": "AA-THEIRS"}]
    held.append(_held(_label("STALE")))
    outcome, ledger = _run([*labels, stale], MemoryHeld(STORE, held))
    assert outcome.unknown_codes == ["AA-THEIRS", "ZZ-THEIRS"]  # the stale label is ours
    assert (outcome.stale, outcome.drifted, ledger.marks) == (1, [], [[]])


def test_a_code_hipoink_lists_twice_drifted_if_either_differs() -> None:
    labels = _labels(2)
    held = [_held(t) for t in labels] + [_held(labels[0], pp="5.00")]
    outcome = _run(labels, MemoryHeld(STORE, held))[0]
    assert outcome.drifted == ["P0000"]


def test_a_store_no_longer_the_merchants_is_not_read() -> None:
    hipoink = MemoryHeld(STORE, [{"pc": "A"}])
    outcome, ledger = _run(None, hipoink)
    assert outcome.refused == f"store {STORE} is no longer the merchant's"
    assert (hipoink.calls, ledger.marks) == ([], [])


# -- the drift guard: an answer read wrong looks like everything drifted --------------------


@pytest.mark.parametrize(
    ("labels", "drifted", "fraction", "marked"),
    [
        (10, 5, "0.5", True),  # half of those compared
        (10, 6, "0.5", False),
        (4, 3, "0", True),  # three always
        (4, 4, "0.5", False),  # over three and over half
        (3, 3, "0.5", True),
        (10, 10, "1", True),
        (100, 11, "0.1", False),
        (100, 10, "0.1", True),
    ],
)
def test_more_drifted_than_the_fraction_allows_marks_nothing(
    labels: int, drifted: int, fraction: str, marked: bool
) -> None:
    targets = _labels(labels)
    held = [_held(t, pn="Edited") for t in targets[:drifted]]
    held += [_held(t) for t in targets[drifted:]]
    settings = Settings(label_verify_max_drift_fraction=Decimal(fraction))
    outcome, ledger = _run(targets, MemoryHeld(STORE, held), settings)
    assert len(outcome.drifted) == drifted
    if marked:
        assert (outcome.refused, outcome.marked, len(ledger.marks[0])) == (None, drifted, drifted)
    else:
        assert outcome.refused == (
            f"{drifted} of {labels} labels differ, more than LABEL_VERIFY_MAX_DRIFT_FRACTION"
            " allows: an answer read wrong? nothing marked"
        )
        assert (outcome.marked, ledger.marks) == (0, [])


# -- refusals are caught and named ----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        HipoinkUnreadable("product/query page 2: answer has no list of products (data)"),
        HipoinkRetryable("product/query: HTTP 503"),
    ],
)
def test_a_hipoink_error_on_any_page_marks_nothing_and_is_named(error: Exception) -> None:
    labels = _labels(150)
    hipoink = MemoryHeld(STORE, [_held(t) for t in labels])
    hipoink.answers[2] = error
    outcome, ledger = _run(labels, hipoink)
    assert (outcome.refused, outcome.pages, ledger.marks) == (str(error), 1, [])


def test_any_other_error_is_no_refusal_it_propagates() -> None:
    hipoink = MemoryHeld(STORE)
    hipoink.answers[1] = ValueError("a bug")
    with pytest.raises(ValueError, match="a bug"):
        _run(_labels(1), hipoink)


# -- what the operator sees -----------------------------------------------------------------


def _metrics(capsys: pytest.CaptureFixture[str], run: Callable[[], object]) -> dict[str, float]:
    metrics.clear_metrics()
    run()
    metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert set(metric_units(lines).values()) == {"Count"}
    return metric_sums(lines)


def test_a_verify_logs_what_it_found_and_counts_it(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = _labels(60)
    stale = [VerifyTarget(f"S{i}", "old", 1, "new", _product(f"S{i}")) for i in range(2)]
    held = [_held(t, pp="0.50") for t in labels[:25]] + [_held(t) for t in labels[25:]]
    held += [{"pc": f"U{i:02d}"} for i in range(22)] + [{"pn": "no code"}]
    ledger = MemoryVerifyLedger(STORE, [*labels, *stale])
    ledger.changed_since = {labels[0].pc}
    deps = VerifyDeps(ledger, MemoryHeld(STORE, held), Settings())

    sums = _metrics(capsys, lambda: verify_labels(REQUEST, deps))

    assert sums == {"LabelsVerified": 60.0, "LabelsDrifted": 24.0}
    [line] = log.lines("labels verified against Hipoink")
    assert line == {
        "level": "INFO",
        "merchant_id": "M",
        "store_code": STORE,
        "reason": "sweep",
        "verified": 60,
        "drifted": 25,
        "drifted_codes": [t.pc for t in labels[:20]],
        "marked": 24,
        "stale": 2,
        "not_rebuilt": 0,
        "unknown_codes": 22,
        "unknown_codes_named": [f"U{i:02d}" for i in range(20)],
        "skipped_products": 1,
        "pages": 1,
    }
    assert log.messages == ["labels verified against Hipoink"]


def test_labels_not_rebuilt_make_the_line_a_warning(log: MemoryLog) -> None:
    """The sender's mapping settings are not the poller's: the verify compares less."""
    labels = _labels(2)
    settings = Settings(hipoink_extra_fields=(("f1", "price_type"),))
    outcome = _run(labels, MemoryHeld(STORE, [_held(t) for t in labels]), settings)[0]
    [line] = log.lines("labels verified against Hipoink")
    assert (line["level"], line["not_rebuilt"], line["verified"]) == ("WARNING", 2, 0)
    assert (outcome.not_rebuilt, outcome.refused) == (2, None)


def test_a_refused_verify_says_why_and_counts_only_the_refusal(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = _labels(5)
    hipoink = MemoryHeld(STORE, [_held(t, pn="x") for t in labels])
    sums = _metrics(capsys, lambda: _run(labels, hipoink))
    assert sums == {"LabelVerifyRefused": 1.0}
    [line] = log.lines("label verify refused: nothing marked")
    assert line["level"] == "ERROR"
    assert line["refused"] == (
        "5 of 5 labels differ, more than LABEL_VERIFY_MAX_DRIFT_FRACTION allows:"
        " an answer read wrong? nothing marked"
    )
    assert (line["merchant_id"], line["store_code"], line["drifted"], line["marked"]) == (
        "M",
        STORE,
        5,
        0,
    )
    assert log.messages == ["label verify refused: nothing marked"]


# -- what the sender records for `esl-sync status` -------------------------------------------


def test_a_completed_verify_is_recorded_with_its_counts_and_no_refusal() -> None:
    labels = _labels(6)
    held = [_held(t, pp="7.00") for t in labels[:2]] + [_held(t) for t in labels[2:]]
    held += [{"pc": f"U{i}"} for i in range(3)] + [{"pn": "no code"}]
    ledger = MemoryVerifyLedger(STORE, labels, merchant_id="M2")
    ledger.changed_since = {labels[0].pc}  # acknowledged anew meanwhile: not marked
    request = LabelVerify(merchant_id="M2", store_code=STORE, reason="manual")

    outcome = verify_labels(request, VerifyDeps(ledger, MemoryHeld(STORE, held), Settings()))

    assert verify_result(outcome) == VerifyResult(
        merchant_id="M2",
        store_code=STORE,
        requested_by="manual",
        compared=6,
        drifted=2,
        marked=1,
        unknown_codes=3,
        skipped_products=1,
        refused=None,
    )


def test_a_refused_verify_is_recorded_with_its_reason_as_said() -> None:
    labels = _labels(5)
    outcome = _run(labels, MemoryHeld(STORE, [_held(t, pn="x") for t in labels]))[0]
    assert verify_result(outcome) == VerifyResult(
        merchant_id="M",
        store_code=STORE,
        requested_by="sweep",
        compared=5,
        drifted=5,
        marked=0,
        unknown_codes=0,
        skipped_products=0,
        refused="5 of 5 labels differ, more than LABEL_VERIFY_MAX_DRIFT_FRACTION allows:"
        " an answer read wrong? nothing marked",
    )


def test_a_hostile_refusal_is_recorded_as_one_clean_line_of_two_hundred_characters() -> None:
    """Hipoink's error text is quoted in the refusal: NUL and a lone surrogate go (Postgres
    refuses them), a line break or terminal escape becomes a space, and the start is kept."""
    said = " \x1b[2JHipoink said:\x00 \ud800 bad\r\nrequest " + "é" * 400 + "END"
    outcome = VerifyOutcome("M", STORE, "sweep", refused=said)
    assert verify_result(outcome).refused == ("[2JHipoink said:  bad request " + "é" * 400)[:200]


@pytest.mark.parametrize("said", ["", " \n\x00\x1b\t ", "\ud800\u2028"])
def test_a_refusal_with_nothing_printable_is_recorded_as_refused(said: str) -> None:
    outcome = VerifyOutcome("M", STORE, "sweep", refused=said)
    assert verify_result(outcome).refused == "refused"
