"""The poll's hot path writes what the long way through ``Product`` writes, on any item.

A clean item (no problem, raw item storable as it is) is written without a model
(:mod:`esl_sync.sync.item_rows`); these tests feed the hostile items of
``test_transform_fast_path`` (NUL, lone surrogates, noncharacters, huge and negative numbers,
wrong types, ``str`` subclasses, …) under several mappings, and check that the row the
statement reads, the label record and hash, and the refusal are the long way's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from esl_sync.clover.transform import InvalidItem, item_fields, to_product
from esl_sync.settings import Settings
from esl_sync.storable import json_text
from esl_sync.sync import item_rows
from esl_sync.sync.item_rows import ItemRow, item_row, product_row
from esl_sync.sync.labels import label_target
from esl_sync.sync.raw_keys import mapping_seed, raw_key
from tests.unit.test_transform_fast_path import items

MERCHANT = "MERCHANT00001"
MAPPINGS = [
    Settings(),
    Settings(
        clover_product_code_fields=("code", "upc"),
        hipoink_extra_fields=(("f1", "price_type"), ("f2", "unit_cost"), ("f10", "available")),
        hipoink_variable_price_text="ask",
    ),
    Settings(hipoink_extra_fields=(("f3", "sku"), ("f4", "cost"), ("f5", "is_age_restricted"))),
]


def _made(raw: Any, mapping: Settings) -> ItemRow:
    text, storable = json_text(raw)
    key = raw_key(mapping_seed(mapping), text) if text is not None else None
    return item_row(
        raw, text=text, storable=storable, key=key, merchant_id=MERCHANT, settings=mapping
    )


def _long_way(raw: Any, mapping: Settings) -> ItemRow:
    """What the poll wrote before the hot path: a Product per item."""
    text, storable = json_text(raw)
    key = raw_key(mapping_seed(mapping), text) if text is not None else None
    product = to_product(raw, merchant_id=MERCHANT, code_fields=mapping.clover_product_code_fields)
    target = label_target(product, mapping)
    row = product_row(product, target.label_hash, key, text if storable else None)
    return ItemRow(row, target, product.validation_error)


def _assert_same(made: ItemRow, expected: ItemRow) -> None:
    assert made.row.key == expected.row.key
    assert made.row.label_hash == expected.row.label_hash
    assert json.loads(made.row.row_json) == json.loads(expected.row.row_json)
    assert made.target == expected.target
    assert made.refusal == expected.refusal


@settings(max_examples=300, deadline=None)
@given(items(), st.sampled_from(MAPPINGS))
def test_the_hot_path_writes_what_a_product_would(raw: dict[str, Any], mapping: Settings) -> None:
    _assert_same(_made(raw, mapping), _long_way(raw, mapping))


@pytest.mark.parametrize("mapping", MAPPINGS, ids=["default", "free-fields", "more-fields"])
def test_a_catalog_is_written_without_a_model(
    mapping: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = gas_station_catalog(300, seed=5) + convenience_store_catalog(300, seed=5)
    expected = [_long_way(raw, mapping) for raw in catalog]

    def no_model(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a clean item took the long way")

    monkeypatch.setattr(item_rows, "product_of", no_model)
    for raw, want in zip(catalog, expected, strict=True):
        made = _made(raw, mapping)
        _assert_same(made, want)
        # Byte for byte, key order included: the row's JSON is the long way's text.
        assert made.row.row_json == want.row.row_json
        assert list(made.target.record or {}) == list(want.target.record or {})


@pytest.mark.parametrize(
    ("change", "refusal", "stored_raw"),
    [
        (
            {"price": None},
            "item ITEM000000001: price is missing (a FIXED item needs one)",
            {"id": "ITEM000000001", "name": "Cola", "sku": "BEV-1"},
        ),
        (  # raw not storable as it is: cleaned the long way
            {"name": "Cola\x00"},
            None,
            {"id": "ITEM000000001", "name": "Cola", "price": 249, "sku": "BEV-1"},
        ),
        (
            {"note": "\ud800"},
            None,
            {"id": "ITEM000000001", "name": "Cola", "price": 249, "sku": "BEV-1", "note": ""},
        ),
        (
            {"price": "2.49"},
            "item ITEM000000001: price: input should be a valid integer (got str)",
            {"id": "ITEM000000001", "name": "Cola", "price": "2.49", "sku": "BEV-1"},
        ),
    ],
    ids=["refused", "nul", "surrogate", "wrong-type"],
)
def test_an_item_with_a_problem_takes_the_long_way(
    change: dict[str, Any], refusal: str | None, stored_raw: dict[str, Any]
) -> None:
    raw = {"id": "ITEM000000001", "name": "Cola", "price": 249, "sku": "BEV-1"} | change
    raw = {name: value for name, value in raw.items() if value is not None}
    made = _made(raw, MAPPINGS[0])
    _assert_same(made, _long_way(raw, MAPPINGS[0]))
    assert made.refusal == refusal
    assert json.loads(made.row.row_json)["raw"] == stored_raw
    assert made.row.row_json.count('"raw":') == 1
    text, storable = json_text(raw)
    if storable:  # the poll's one serialization of the item, embedded as it is
        assert text is not None
        assert made.row.row_json.endswith(f',"raw":{text}}}')


def test_the_row_of_a_clean_item() -> None:
    raw = {
        "id": "FUEL00000001",
        "name": 'Diesel "Premium" \\ café',
        "price": 429,
        "priceType": "PER_UNIT",
        "unitName": "gal",
        "cost": 5,
        "sku": "F-1",
        "itemGroup": {"id": "GROUP1"},
        "isAgeRestricted": False,
        "modifiedTime": 1_704_067_200_123,
    }
    made = _made(raw, MAPPINGS[0])
    assert made.refusal is None
    assert made.target.record == {
        "pc": "F-1",
        "pn": 'Diesel "Premium" \\ café',
        "pp": "4.29",
        "pi": "FUEL00000001",
        "pu": "gal",
    }
    row = json.loads(made.row.row_json)
    key = raw_key(mapping_seed(MAPPINGS[0]), json_text(raw)[0] or "")
    assert row == {
        "source_system": "clover",
        "source_id": "FUEL00000001",
        "source_variant_id": "",
        "name": 'Diesel "Premium" \\ café',
        "barcode": "F-1",
        "sku": "F-1",
        "price": "4.29",
        "cost": "0.05",
        "currency": "USD",
        "price_type": "PER_UNIT",
        "unit": "gal",
        "status": "active",
        "extra_data": {
            "unit_cost": "0.05",
            "price_type": "PER_UNIT",
            "modified_time": 1_704_067_200_123,
            "item_group_id": "GROUP1",
            "is_age_restricted": False,
            "available": None,
        },
        "source_modified_time": 1_704_067_200_123,
        "validation_error": None,
        "content_hash": f"{key}:{made.row.label_hash}",
        "label_hash": made.row.label_hash,
        "raw": raw,
    }
    assert made.row.key == ("FUEL00000001", "")


def test_the_label_and_row_show_the_amount_texts_the_transform_made() -> None:
    """A clean item's money is written once, by the transform (``price_text``,
    ``cost_text``: issue 15), and the label and the row show those very texts (here made
    distinguishable: the two are always ``str`` of the amounts, see test_clover_transform)."""
    raw = {"id": "ITEM000000001", "name": "Cola", "price": 249, "cost": 112, "sku": "BEV-1"}
    fields = item_fields(raw)._replace(price_text="P", cost_text="C")
    assert label_target(fields, MAPPINGS[0]).record == {
        "pc": "BEV-1",
        "pn": "Cola",
        "pp": "P",
        "pi": "ITEM000000001",
    }
    row = json.loads(item_rows.fields_json(fields, "k:h", "h", "{}"))
    assert (row["price"], row["cost"]) == ("P", "C")


def test_an_item_without_a_usable_id_is_rejected() -> None:
    with pytest.raises(InvalidItem, match="no usable 'id'"):
        _made({"id": "a b", "name": "x", "price": 1, "sku": "s"}, MAPPINGS[0])


_MODELS_LOADED = """
import sys
from esl_sync.settings import Settings
from esl_sync.storable import json_text
from esl_sync.store import label_owners, postgres
from esl_sync.sync import heal, item_rows, labels, poll, raw_keys
from devkit.catalog import gas_station_catalog

mapping = Settings()
seed = raw_keys.mapping_seed(mapping)
models = ("esl_sync.products", "esl_sync.clover.items")
for raw in [*gas_station_catalog(20, seed=3), *sys.argv[1:]]:
    raw = raw if isinstance(raw, dict) else {"id": "I1", "name": "Cola", "price": raw}
    text, storable = json_text(raw)
    item_rows.item_row(raw, text=text, storable=storable, key=raw_keys.raw_key(seed, text),
                       merchant_id="M1", settings=mapping)
print(*(name in sys.modules for name in models))
"""


@pytest.mark.parametrize(
    ("unclean", "loaded"),
    [([], "False False"), (["1.99"], "True True")],  # a price as text: refused, by the model
)
def test_a_poll_of_clean_items_builds_and_loads_no_model(unclean: list[str], loaded: str) -> None:
    """The models (and pydantic's validators) load only when an item is not clean: an
    ordinary poll starts without them (issue 15: ≈ 110 ms of a cold start). Settings still
    is pydantic (its own change), so pydantic itself is not checked here."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MODELS_LOADED, *unclean],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "LAMBDA_TASK_ROOT": "/var/task"},
    )
    assert done.stdout.split() == loaded.split()
