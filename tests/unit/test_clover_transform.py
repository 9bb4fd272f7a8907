"""Clover item → Product: one row per rule of esl_sync.clover.transform."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from esl_sync.clover import InvalidItem, to_product
from esl_sync.clover.transform import cents_to_dollars
from esl_sync.products import Product

MERCHANT = "MERCHANT00001"


def item(**overrides: Any) -> dict[str, Any]:
    """A valid FIXED-price item; ``overrides`` replace fields (None removes one)."""
    base: dict[str, Any] = {
        "id": "ITEM000000001",
        "name": "Coca-Cola 20oz",
        "sku": "BEV-0001",
        "code": "049000028911",
        "alternateName": "Coke 20",
        "price": 249,
        "priceType": "FIXED",
        "cost": 112,
        "hidden": False,
        "available": True,
        "isRevenue": True,
        "isAgeRestricted": False,
        "modifiedTime": 1_704_067_200_123,
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


@dataclass(frozen=True)
class Row:
    rule: str
    raw: dict[str, Any]
    expect: dict[str, Any] = field(default_factory=dict)  # Product attributes
    extra: dict[str, Any] = field(default_factory=dict)  # extra_data entries
    error: str | None = None  # substring of validation_error; None: no error
    code_fields: tuple[str, ...] = ("sku", "code", "alternateName")


ROWS = [
    Row(
        "cents become exact two-place dollars",
        item(price=349, cost=7),
        {"price": Decimal("3.49"), "cost": Decimal("0.07"), "status": "active"},
        {"unit_cost": "0.07"},
    ),
    Row("whole dollars keep two places", item(price=300), {"price": Decimal("3.00")}),
    Row("zero price is a price", item(price=0, priceType="VARIABLE"), {"price": Decimal("0.00")}),
    Row(
        "no price, no cost",
        item(price=None, cost=None),
        {"price": None, "cost": None},
        {"unit_cost": None},
    ),
    Row(
        "PER_UNIT keeps its unit (fuel per gallon)",
        item(name="Regular Unleaded 87", price=339, priceType="PER_UNIT", unitName="gal"),
        {"price_type": "PER_UNIT", "unit": "gal", "price": Decimal("3.39")},
        {"price_type": "PER_UNIT"},
    ),
    Row(
        "a unit on a FIXED item is not a label unit",
        item(unitName="each"),
        {"price_type": "FIXED", "unit": None},
    ),
    Row("missing priceType is FIXED", item(priceType=None), {"price_type": "FIXED"}),
    Row(
        "hidden item is removed from labels",
        item(hidden=True, isAgeRestricted=True),
        {"status": "deleted"},
        {"removed_because": "hidden", "is_age_restricted": True},
    ),
    Row(
        "deleted flag removes",
        item(deleted=True),
        {"status": "deleted"},
        {"removed_because": "deleted"},
    ),
    Row(
        "deletedTime removes",
        item(deletedTime=1_704_067_300_000),
        {"status": "deleted"},
        {"removed_because": "deleted"},
    ),
    Row(
        "deleted wins over hidden as the reason",
        item(hidden=True, deleted=True),
        {"status": "deleted"},
        {"removed_because": "deleted"},
    ),
    Row("visible item is active", item(), {"status": "active"}, {"available": True}),
    Row("code order: sku first", item(), {"barcode": "BEV-0001", "sku": "BEV-0001"}),
    Row("code order: code when sku is blank", item(sku="  "), {"barcode": "049000028911"}),
    Row(
        "code order: alternateName last",
        item(sku=None, code=""),
        {"barcode": "Coke 20"},
    ),
    Row(
        "code order is configurable",
        item(),
        {"barcode": "049000028911"},
        code_fields=("code", "sku"),
    ),
    Row(
        "no code: stored, not labelable",
        item(sku=None, code=None, alternateName=None),
        {"barcode": None, "status": "active"},
        error="no product code (sku, code, alternateName all empty)",
    ),
    Row(
        "variant is its own product",
        item(id="VARIANT000001", itemGroup={"id": "GROUP00000001"}),
        {"source_id": "VARIANT000001", "source_variant_id": ""},
        {"item_group_id": "GROUP00000001"},
    ),
    Row(
        "negative price",
        item(price=-5),
        {"price": None},
        error="item ITEM000000001: price must not be negative",
    ),
    Row("negative cost", item(cost=-1), {"cost": None}, error="cost must not be negative"),
    Row(
        "name too long",
        item(name="x" * 128),
        {"name": "x" * 128},
        error="item ITEM000000001: name: string should have at most 127 characters",
    ),
    Row("name of 127 is fine", item(name="y" * 127), {"name": "y" * 127}),
    Row("missing name", item(name=None), {"name": ""}, error="item ITEM000000001: name is missing"),
    Row(
        "wrong type: price as string",
        item(price="3.49"),
        {"price": None},
        error="item ITEM000000001: price: input should be a valid integer (got str)",
    ),
    Row(
        "wrong type: float price is not cents",
        item(price=3.49),
        {"price": None},
        error="price: input should be a valid integer",
    ),
    Row(
        "wrong type: boolean price",
        item(price=True),
        error="price: input should be a valid integer",
    ),
    Row("wrong type: hidden as string", item(hidden="yes"), {"status": "active"}, error="hidden:"),
    Row("unknown priceType", item(priceType="WEIRD"), {"price_type": "FIXED"}, error="priceType:"),
    Row("sku over 100", item(sku="S" * 101), error="sku: string should have at most 100"),
    Row("bad itemGroup", item(itemGroup={"id": 7}), {}, {"item_group_id": None}, "itemGroup.id:"),
    Row(
        "several problems are all named",
        item(price=-1, name=None),
        error="item ITEM000000001: name is missing; price must not be negative",
    ),
    Row(
        "unknown fields ignored",
        item(colorCode="#ff0000", options={"elements": []}, priceWithoutVat="x"),
        {"status": "active", "price": Decimal("2.49")},
    ),
    Row(
        "null fields are absent fields",
        item(code=None) | {"code": None, "unitName": None, "itemStock": None, "cost": None},
        {"cost": None},
    ),
    Row(
        "stock quantity may be an integer",
        item(itemStock={"quantity": 12, "modifiedTime": 1}),
        {"status": "active"},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.rule for row in ROWS])
def test_rule(row: Row) -> None:
    product = to_product(row.raw, merchant_id=MERCHANT, code_fields=row.code_fields)
    assert isinstance(product, Product)
    for name, expected in row.expect.items():
        assert getattr(product, name) == expected, name
    for name, expected in row.extra.items():
        assert product.extra_data[name] == expected, name
    if row.error is None:
        assert product.validation_error is None
        assert product.labelable == (product.status == "active")
    else:
        assert product.validation_error is not None
        assert row.error in product.validation_error
        assert not product.labelable


def test_prices_are_decimals_never_floats() -> None:
    product = to_product(item(price=1999, cost=1), merchant_id=MERCHANT)
    assert type(product.price) is Decimal
    assert str(product.price) == "19.99"
    assert type(product.cost) is Decimal
    assert str(product.cost) == "0.01"
    assert cents_to_dollars(123456789) == Decimal("1234567.89")


def test_common_fields() -> None:
    raw = item()
    product = to_product(raw, merchant_id=MERCHANT, currency="CAD")
    assert product.source_system == "clover"
    assert product.merchant_id == MERCHANT
    assert product.source_id == "ITEM000000001"
    assert product.currency == "CAD"
    assert product.raw == raw
    assert product.source_modified_time == 1_704_067_200_123
    assert product.extra_data == {
        "unit_cost": "1.12",
        "price_type": "FIXED",
        "modified_time": 1_704_067_200_123,
        "item_group_id": None,
        "is_age_restricted": False,
        "available": True,
    }


def test_removal_reason_only_when_removed() -> None:
    assert "removed_because" not in to_product(item(), merchant_id=MERCHANT).extra_data


@pytest.mark.parametrize(
    "raw",
    [
        item(id=None),
        item(id=""),
        item(id="   "),
        item(id=12345),
        item(id=["ITEM"]),
    ],
    ids=["missing", "empty", "blank", "integer", "list"],
)
def test_missing_id_raises(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidItem, match="no usable 'id'"):
        to_product(raw, merchant_id=MERCHANT)


def test_not_an_object_raises() -> None:
    with pytest.raises(InvalidItem, match="not a JSON object"):
        to_product(["ITEM"], merchant_id=MERCHANT)  # type: ignore[arg-type]


def test_invalid_item_is_a_value_error() -> None:
    assert issubclass(InvalidItem, ValueError)


def test_catalog_generator_items_all_transform() -> None:
    catalog = pytest.importorskip("devkit.catalog")
    items = catalog.gas_station_catalog(600, seed=3)
    products = [to_product(raw, merchant_id=MERCHANT) for raw in items]
    assert len(products) == 600
    fuel = [p for p in products if p.price_type == "PER_UNIT"]
    assert fuel
    assert all(p.unit for p in fuel)
    assert any(p.status == "deleted" for p in products)
    wrong = [p.validation_error for p in products if p.validation_error and p.status == "active"]
    assert not wrong, wrong[:3]
