"""Which label work a set of product changes calls for, given which product each touched
code belongs to now (the ``label_owner`` rule, played here by the order of a list)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from devkit.emf import metric_sums, metric_units
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.observability import metrics
from esl_sync.products import Product
from esl_sync.records import LabelOwner, LabelOwners, ProductChange
from esl_sync.settings import load_settings
from esl_sync.sync.labels import LabelPlan, LabelTarget, label_target
from tests.fakes import MemoryLog

VERSION = 41


def _product(source_id: str = "ITEM1", **fields: object) -> Product:
    values: dict[str, object] = {
        "merchant_id": "M1",
        "source_id": source_id,
        "name": "Coca-Cola 20oz",
        "barcode": "049000028911",
        "price": Decimal("2.49"),
    }
    values.update(fields)
    return Product.model_validate(values)


def _target(product: Product) -> LabelTarget:
    record = to_record(product)
    return LabelTarget(record, label_hash(record))


def _owners(products: Sequence[Product]) -> LabelOwners:
    """Each code's owner: the first labelable product in ``products`` that claims it."""
    claimants: dict[str, list[Product]] = {}
    for product in products:
        if product.labelable and product.barcode:
            claimants.setdefault(product.barcode, []).append(product)
    return LabelOwners(VERSION, {pc: LabelOwner.of(ps[0], len(ps)) for pc, ps in claimants.items()})


def _resolve(plan: LabelPlan, products: Sequence[Product]) -> LabelPlan:
    plan.resolve(_owners(products), to_record)
    return plan


def _plan(
    product: Product,
    previous_barcode: str | None,
    previous_hash: str | None,
    others: Sequence[Product] = (),
) -> LabelPlan:
    plan = LabelPlan()
    change = ProductChange(product.key, previous_barcode, previous_hash)
    plan.add([change], {product.key: _target(product)})
    return _resolve(plan, [*others, product])


def test_a_new_product_is_upserted() -> None:
    plan = _plan(_product(), None, None)
    assert list(plan.upserts) == ["049000028911"]
    assert plan.deletes == set()


def test_a_change_the_label_does_not_show_sends_nothing() -> None:
    product = _product()
    plan = _plan(product, "049000028911", _target(product).label_hash)
    assert plan.empty


def test_a_price_change_is_upserted() -> None:
    before = _target(_product(price=Decimal("2.29"))).label_hash
    plan = _plan(_product(), "049000028911", before)
    assert plan.upserts["049000028911"]["pp"] == "2.49"


def test_a_refused_product_leaves_its_label_as_it_is() -> None:
    shown = _target(_product()).label_hash
    refused = _product(barcode=None, price=None, validation_error="item ITEM1: sku is not …")
    target = label_target(refused, load_settings())
    assert (target.record, target.refused) == (None, True)
    plan = LabelPlan()
    plan.add([ProductChange(refused.key, "049000028911", shown)], {refused.key: target})
    assert plan.touched == set()  # no delete of the shown label, no upsert of a 0.00 one


def test_a_refused_product_whose_kept_label_was_dropped_takes_it_off() -> None:
    """Older code labelled an item without a price 0.00; the write dropped that label."""
    zero = label_hash({"pc": "049000028911", "pn": "Coca-Cola 20oz", "pp": "0.00", "pi": "ITEM1"})
    refused = _product(price=None, validation_error="item ITEM1: no price …")
    target = label_target(refused, load_settings())
    plan = LabelPlan()
    dropped = ProductChange(refused.key, "049000028911", zero, label_dropped=True)
    plan.add([dropped], {refused.key: target._replace(changed_ms=5)})
    assert (plan.touched, plan.dropped, plan.changed_ms) == (
        {"049000028911"},
        {"049000028911"},
        {"049000028911": 5},
    )
    _resolve(plan, [])
    assert (plan.upserts, plan.deletes) == ({}, {"049000028911"})
    # Another product claiming the code takes the label over instead.
    other = _product("ITEM2", price=Decimal("1.99"))
    plan = LabelPlan()
    plan.add([dropped], {refused.key: target})
    assert _resolve(plan, [other]).upserts["049000028911"]["pi"] == "ITEM2"
    # A refused product whose label was not dropped still touches nothing.
    plan = LabelPlan()
    plan.add([dropped._replace(label_dropped=False)], {refused.key: target})
    assert (plan.touched, plan.dropped) == (set(), set())


def test_labels_taken_off_refused_items_are_named_once(log: MemoryLog) -> None:
    refused = _product(price=None, validation_error="item ITEM1: no price …")
    plan = LabelPlan()
    change = ProductChange(refused.key, "049000028911", "zero", label_dropped=True)
    plan.add([change], {refused.key: label_target(refused, load_settings())})
    _resolve(plan, [])
    assert len(plan.jobs("M1", "S1", 10)) == 1
    message = (
        "refused items without a price: the 0.00 labels older code gave them are taken off"
        " (or shown by another product with their code)"
    )
    named = [(line["merchant_id"], line["codes"], line["count"]) for line in log.lines(message)]
    assert named == [("M1", ["049000028911"], 1)]


def test_a_label_target_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPOINK_VARIABLE_PRICE_TEXT", "ASK")
    monkeypatch.setenv("HIPOINK_EXTRA_FIELDS", "f1=price_type")
    target = label_target(_product(price_type="VARIABLE"), load_settings())
    assert target.record is not None
    assert (target.record["pp"], target.record["f1"], target.refused) == ("ASK", "VARIABLE", False)
    assert target.label_hash == label_hash(target.record)


def test_hidden_product_deletes_its_label() -> None:
    shown = _target(_product()).label_hash
    plan = _plan(_product(status="deleted"), "049000028911", shown)
    assert plan.deletes == {"049000028911"}
    assert not plan.upserts


def test_unhidden_product_comes_back() -> None:
    plan = _plan(_product(), "049000028911", None)
    assert list(plan.upserts) == ["049000028911"]


def test_barcode_change_deletes_old_code_and_upserts_new() -> None:
    shown = _target(_product(barcode="OLD")).label_hash
    plan = _plan(_product(barcode="NEW"), "OLD", shown)
    assert plan.deletes == {"OLD"}
    assert list(plan.upserts) == ["NEW"]


def test_product_that_becomes_invalid_loses_its_label() -> None:
    shown = _target(_product()).label_hash
    plan = _plan(
        _product(validation_error="item ITEM1: price must not be negative"), "049000028911", shown
    )
    assert plan.deletes == {"049000028911"}


def test_a_code_wanted_by_another_product_is_not_deleted() -> None:
    hidden, shown = _product("A", status="deleted", barcode="X"), _product("B", barcode="X")
    plan = LabelPlan()
    plan.add(
        [ProductChange(hidden.key, "X", "old"), ProductChange(shown.key, None, None)],
        {hidden.key: _target(hidden), shown.key: _target(shown)},
    )
    jobs = _resolve(plan, [hidden, shown]).jobs("M1", "S1", batch_size=10)
    assert [job.deletes for job in jobs] == [[]]
    assert [r["pi"] for r in jobs[0].upserts] == ["B"]


def test_a_product_leaving_a_code_hands_the_label_to_the_other_claimant() -> None:
    """The other product was not written by this poll: its record is built from its row."""
    staying = _product("B", barcode="X", name="Stays", price=Decimal("1.25"))
    leaving = _product("A", barcode="NEW")
    plan = _plan(leaving, "X", "shown-before", others=[staying])
    assert plan.deletes == set()
    assert plan.upserts["X"] == to_record(staying)
    assert plan.upserts["NEW"]["pi"] == "A"


def test_only_the_owner_of_a_shared_code_is_on_its_label() -> None:
    """A change of the product that does not own the code re-sends the owner's record (the
    ledger drops it as already shown): the label never flips to the other product."""
    owner = _product("A", barcode="DUP", name="First", price=Decimal("1.00"))
    other = _product("B", barcode="DUP", name="Second", price=Decimal("9.99"))
    plan = _plan(other, "DUP", "some-earlier-hash", others=[owner])
    assert plan.upserts == {"DUP": to_record(owner)}
    assert plan.conflicts == {"DUP": 2}
    assert plan.deletes == set()


def test_jobs_carry_the_version_of_the_decision() -> None:
    plan = _plan(_product(), None, None)
    deleted = _plan(_product(status="deleted"), "049000028911", "x")
    assert [j.version for j in plan.jobs("M1", "S1", 10)] == [VERSION]
    assert [(j.deletes, j.version) for j in deleted.jobs("M1", "S1", 10)] == [
        (["049000028911"], VERSION)
    ]


def test_jobs_are_chunked_to_the_batch_size() -> None:
    plan = LabelPlan()
    products = [_product(f"I{i}", barcode=f"{i:04d}") for i in range(5)]
    plan.add(
        [ProductChange(p.key, None, None) for p in products], {p.key: _target(p) for p in products}
    )
    _resolve(plan, products)
    plan.deletes = {"GONE1", "GONE2", "GONE3"}
    jobs = plan.jobs("M1", "S1", batch_size=2)
    assert [len(j.upserts) for j in jobs] == [2, 2, 1, 0, 0]
    assert [len(j.deletes) for j in jobs] == [0, 0, 0, 2, 1]
    assert all(j.store_code == "S1" and j.merchant_id == "M1" for j in jobs)


def test_record_mapping() -> None:
    fuel = _product(
        name="Regular Unleaded",
        barcode="REG",
        price=Decimal("3.5"),  # a product holds at most cents (numeric(14, 2))
        price_type="PER_UNIT",
        unit="gal",
    )
    assert to_record(fuel) == {
        "pc": "REG",
        "pn": "Regular Unleaded",
        "pp": "3.50",
        "pi": "ITEM1",
        "pu": "gal",
    }
    each = to_record(_product(unit="gal"))  # a FIXED price: the unit is not shown
    assert each is not None
    assert "pu" not in each
    assert to_record(_product(barcode=None)) is None
    assert label_hash(None) is None


def test_the_label_hash_is_stable_and_follows_what_the_label_shows() -> None:
    """The hash decides whether a label is sent again: the same record always hashes the
    same (across processes: it is stored), and any shown change changes it."""
    record = {"pc": "REG", "pn": "Regular Unleaded", "pp": "3.50", "pi": "ITEM1", "pu": "gal"}
    digest = label_hash(record)
    assert digest == "79ab487a9d5e40c699cef532046cc7db"  # a new scheme re-sends every label
    assert label_hash(dict(reversed(record.items()))) == digest  # key order does not matter
    assert len({digest, *(label_hash(record | {k: record[k] + "x"}) for k in record)}) == 6


def test_a_change_without_a_target_takes_its_label_down() -> None:
    """A product gone from this poll's targets (deleted) shows no label any more."""
    plan = LabelPlan()
    plan.add([ProductChange(("GONE", ""), "OLD", "shown-before")], {})
    assert _resolve(plan, []).deletes == {"OLD"}


def test_a_code_that_never_had_a_label_is_not_deleted() -> None:
    plan = _plan(_product(status="deleted"), "049000028911", None)
    assert (plan.touched, plan.empty) == (set(), True)


def test_a_refused_product_does_not_stop_the_next_change() -> None:
    refused = _product("A", barcode=None, price=None, validation_error="item A: …")
    shown = _product("B", barcode="B1")
    plan = LabelPlan()
    targets = {refused.key: label_target(refused, load_settings()), shown.key: _target(shown)}
    plan.add([ProductChange(refused.key, "A1", "h"), ProductChange(shown.key, None, None)], targets)
    assert plan.touched == {"B1"}


def test_the_record_this_poll_built_is_sent_not_rebuilt() -> None:
    """It was built with the poll's settings (free fields, variable price text)."""
    product = _product()
    built = {"pc": "049000028911", "pn": "Coca-Cola 20oz", "pp": "2.49", "pi": "ITEM1", "f1": "x"}
    plan = LabelPlan()
    plan.add([ProductChange(product.key, None, None)], {product.key: LabelTarget(built, "h")})
    plan.resolve(_owners([product]), lambda p: pytest.fail(f"rebuilt {p.source_id}"))
    assert (plan.upserts, plan.conflicts) == ({"049000028911": built}, {})


def test_each_job_carries_the_oldest_clover_change_it_delivers() -> None:
    """The sender measures change-to-shelf latency from it."""
    products = [
        _product("A", barcode="A1", source_modified_time=3_000),
        _product("B", barcode="B1", source_modified_time=1_000),
        _product("C", barcode="C1"),  # no modifiedTime: not counted
        _product("D", barcode="D1", status="deleted", source_modified_time=2_000),
    ]
    settings = load_settings()
    plan = LabelPlan()
    changes = [ProductChange(p.key, p.barcode, "shown-before") for p in products]
    plan.add(changes, {p.key: label_target(p, settings) for p in products})
    jobs = _resolve(plan, products).jobs("M1", "S1", batch_size=2)
    assert [(len(j.upserts), len(j.deletes), j.oldest_change_ms) for j in jobs] == [
        (2, 0, 1_000),
        (1, 0, None),
        (0, 1, 2_000),
    ]


def test_a_barcode_change_dates_the_delete_of_the_old_code_too() -> None:
    moved = _product(barcode="NEW", source_modified_time=5_000)
    plan = LabelPlan()
    plan.add(
        [ProductChange(moved.key, "OLD", "shown")],
        {moved.key: label_target(moved, load_settings())},
    )
    jobs = _resolve(plan, [moved]).jobs("M1", "S1", batch_size=10)
    assert [(j.deletes, j.oldest_change_ms) for j in jobs] == [([], 5_000), (["OLD"], 5_000)]


def test_conflicts_are_named_and_counted(
    log: MemoryLog, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics.clear_metrics()
    owners = [_product(f"O{i:02d}", barcode=f"C{i:02d}") for i in range(25)]
    others = [_product(f"X{i:02d}", barcode=f"C{i:02d}") for i in range(25)]
    plan = LabelPlan()
    plan.add(
        [ProductChange(p.key, None, None) for p in others], {p.key: _target(p) for p in others}
    )
    _resolve(plan, [*owners, *others])
    metrics.flush_metrics()
    lines = capsys.readouterr().out.splitlines()
    assert (metric_sums(lines), metric_units(lines)) == (
        {"LabelConflicts": 25.0},
        {"LabelConflicts": "Count"},
    )
    [line] = log.lines(
        "product code claimed by more than one product; the label shows the one stored first"
    )
    assert (line["level"], line["merchant_id"], line["conflicts"]) == ("WARNING", "M1", 25)
    assert line["codes"] == {f"C{i:02d}": f"O{i:02d}" for i in range(20)}
