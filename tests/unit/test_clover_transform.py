"""Clover item → Product: one row per rule of esl_sync.clover.transform."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_sync.clover import transform
from esl_sync.clover.item_types import ID_PATTERN
from esl_sync.clover.transform import InvalidItem, cents_to_dollars, item_fields, to_product
from esl_sync.products import Product
from esl_sync.storable import MONEY_MAX_CENTS

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


MEGABYTE = 1_000_000

ROWS = [
    Row(
        "cents become exact two-place dollars",
        item(price=349, cost=7),
        {"price": Decimal("3.49"), "cost": Decimal("0.07"), "status": "active"},
        {"unit_cost": "0.07"},
    ),
    Row("whole dollars keep two places", item(price=300), {"price": Decimal("3.00")}),
    Row("zero price is a price", item(price=0), {"price": Decimal("0.00")}),
    Row(
        "VARIABLE needs no price, and no cost is fine",
        item(price=None, cost=None, priceType="VARIABLE"),
        {"price": None, "cost": None, "price_type": "VARIABLE"},
        {"unit_cost": None},
    ),
    Row("VARIABLE keeps a price it has", item(price=0, priceType="VARIABLE"), {"price": 0}),
    Row(
        "FIXED without a price is refused, never $0.00",
        item(price=None),
        {"price": None},
        error="item ITEM000000001: price is missing (a FIXED item needs one)",
    ),
    Row(
        "FIXED with a null price is refused",
        item() | {"price": None},
        error="price is missing (a FIXED item needs one)",
    ),
    Row(
        "no priceType means FIXED, so a price is needed",
        item(price=None, priceType=None),
        error="price is missing (a FIXED item needs one)",
    ),
    Row(
        "PER_UNIT without a price is refused",
        item(price=None, priceType="PER_UNIT", unitName="gal"),
        error="price is missing (a PER_UNIT item needs one)",
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
    Row(
        "a unit is label text: control characters become spaces, cut at 64",
        item(priceType="PER_UNIT", unitName="\x00g\nal" + "x" * 100),
        {"unit": ("g al" + "x" * 100)[:64]},
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
        "any deletedTime removes (as the client's listing reads it)",
        item(deletedTime="yesterday"),
        {"status": "deleted"},
        {"removed_because": "deleted"},
    ),
    Row(
        "deleted wins over hidden as the reason",
        item(hidden=True, deleted=True),
        {"status": "deleted"},
        {"removed_because": "deleted"},
    ),
    Row(
        "a removed item is never refused; what cannot be stored is left out",
        item(hidden=True, price=10**14, cost=-1, sku="BAD\x01", modifiedTime=2**64),
        {"status": "deleted", "price": None, "cost": None, "barcode": None},
        {"removed_because": "hidden", "modified_time": None},
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
        "a pasted code loses the spaces and line breaks at its ends",
        item(sku=" BEV-0001\r\n"),
        {"barcode": "BEV-0001"},
    ),
    Row("a code of 64 characters is fine", item(sku="S" * 64), {"barcode": "S" * 64}),
    Row(
        "a code over 64 characters is refused, not cut",
        item(sku="S" * 65),
        {"barcode": None},
        error="sku is not a usable product code: longer than 64 characters (65)",
    ),
    Row(
        "a code with a control character is refused, not skipped to the next field",
        item(sku="BEV\x010001"),
        {"barcode": None},
        error="sku is not a usable product code: holds control characters",
    ),
    Row("a code with NUL is refused", item(code="0490\x00", sku=None), error="code is not a us"),
    Row("a code with a lone surrogate is refused", item(sku="BEV\ud800"), error="sku is not a us"),
    Row("a code with an invisible character is refused", item(sku="BEV\u200b"), error="sku is"),
    Row("a code of unicode letters is fine", item(sku="CAFÉ-Ñ1"), {"barcode": "CAFÉ-Ñ1"}),
    Row(
        "a code of the wrong type is named once",
        item(sku=12345),
        {"barcode": None},
        error="item ITEM000000001: sku: input should be a valid string (got int)",
    ),
    Row(
        "a configured code field outside the model must be text",
        item(upc=49000028911),
        error="upc: not text (got int)",
        code_fields=("upc", "sku"),
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
        "the largest price numeric(14,2) holds",
        item(price=10**14 - 1, cost=10**14 - 1),
        {"price": Decimal("999999999999.99"), "cost": Decimal("999999999999.99")},
    ),
    Row(
        "a price of 10^14 cents is refused",
        item(price=10**14),
        {"price": None},
        error="price is out of range (100000000000000, at most 99999999999999)",
    ),
    Row("a cost of 10^14 cents is refused", item(cost=10**14), error="cost is out of range"),
    Row(
        "a price of 2^63 (past bigint) is refused",
        item(price=2**63),
        error="price is out of range (9223372036854775808,",
    ),
    Row(
        "a price of 4,000 digits is refused, named by its length",
        item(price=10**3999),
        error="price is out of range (a number of about 4000 digits,",
    ),
    Row(
        "a negative price of 300 digits",
        item(price=-(10**300)),
        error="price must not be negative",
    ),
    Row(
        "the last bigint millisecond is a time",
        item(modifiedTime=2**63 - 1),
        {"source_modified_time": 2**63 - 1},
    ),
    Row(
        "a modifiedTime past bigint is refused",
        item(modifiedTime=2**63),
        {"source_modified_time": None},
        error="modifiedTime is out of range (9223372036854775808, 0 to 9223372036854775807)",
    ),
    Row("a negative modifiedTime is refused", item(modifiedTime=-1), error="modifiedTime is out"),
    Row(
        "a name over 127 is cut, not refused (the price matters more)",
        item(name="x" * 128),
        {"name": "x" * 127},
    ),
    Row("name of 127 is fine", item(name="y" * 127), {"name": "y" * 127}),
    Row(
        "a megabyte name is cut to 127",
        item(name="z" * MEGABYTE),
        {"name": "z" * 127, "status": "active"},
    ),
    Row("missing name", item(name=None), {"name": ""}, error="item ITEM000000001: name is missing"),
    Row("blank name", item(name=" \t "), error="item ITEM000000001: name is missing"),
    Row(
        "a name of nothing storable is missing",
        item(name="\x00\ud800\uffff"),
        error="name is missing",
    ),
    Row("NUL is dropped from a name", item(name="Coca\x00-Cola"), {"name": "Coca-Cola"}),
    Row("lone surrogates are dropped", item(name="Coca\udc00-Cola\ud800"), {"name": "Coca-Cola"}),
    Row("noncharacters are dropped", item(name="Coca\ufffe-Cola\U0010ffff"), {"name": "Coca-Cola"}),
    Row(
        "control characters and line breaks become one space",
        item(name="Coke\r\n20oz\x1b[31m\u2028can"),
        {"name": "Coke 20oz [31m can"},
    ),
    Row(
        "emoji sequences and accents are kept",
        item(name="Crème brûlée 🏳️\u200d🌈"),
        {"name": "Crème brûlée 🏳️\u200d🌈"},
    ),
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
    Row("wrong type: whole float", item(price=349.0), error="price: input should be a valid int"),
    Row("wrong type: NaN", item(price=float("nan")), error="price: input should be a valid int"),
    Row(
        "wrong type: boolean price",
        item(price=True),
        error="price: input should be a valid integer",
    ),
    Row("wrong type: list price", item(price=[349]), error="price: input should be a valid int"),
    Row("wrong type: name as number", item(name=7), error="name: input should be a valid string"),
    Row("wrong type: hidden as string", item(hidden="yes"), {"status": "active"}, error="hidden:"),
    Row("wrong type: hidden as 1", item(hidden=1), {"status": "active"}, error="hidden:"),
    Row("unknown priceType", item(priceType="WEIRD"), {"price_type": "FIXED"}, error="priceType:"),
    Row("bad itemGroup", item(itemGroup={"id": 7}), {}, {"item_group_id": None}, "itemGroup.id:"),
    Row(
        "an itemGroup id with NUL is not a Clover id",
        item(itemGroup={"id": "G\x00"}),
        error="itemGroup.id: not a Clover id (got str)",
    ),
    Row("itemGroup of the wrong type", item(itemGroup="G1"), error="itemGroup:"),
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
        "fields the transform does not read refuse nothing",
        item(isRevenue="maybe", itemStock={"quantity": "lots"}, tags=[None, {"x": float("inf")}]),
        {"status": "active"},
    ),
    Row(
        "one field of the wrong type leaves the item's other fields as they are",
        item(hidden="yes", isAgeRestricted=True),
        {
            "name": "Coca-Cola 20oz",
            "barcode": "BEV-0001",
            "sku": "BEV-0001",
            "price": Decimal("2.49"),
            "cost": Decimal("1.12"),
            "source_modified_time": 1_704_067_200_123,
        },
        {"is_age_restricted": True, "available": True},
        error="item ITEM000000001: hidden: input should be a valid boolean (got str)",
    ),
    Row(
        "a name of the wrong type is named once, not also as missing",
        item(name=7),
        {"name": ""},
        error="item ITEM000000001: name: input should be a valid string (got int)",
    ),
    Row(
        "a price of the wrong type is named once, not also as missing",
        item(price="2.49"),
        error="item ITEM000000001: price: input should be a valid integer (got str)",
    ),
    Row(
        "a configured code field outside the model gives the code",
        item(upc="0049000028911"),
        {"barcode": "0049000028911", "sku": "BEV-0001"},
        code_fields=("upc", "sku"),
    ),
    Row(
        "a configured code field the item lacks is skipped",
        item(),
        {"barcode": "BEV-0001"},
        code_fields=("upc", "sku"),
    ),
    Row(
        "a stored sku is cut to Clover's 100 characters (too long for a code: refused)",
        item(sku="S" * 150),
        {"sku": "S" * 100, "barcode": None},
        error="sku is not a usable product code: longer than 64 characters (150)",
    ),
    Row(
        "an itemGroup without an id names the missing id",
        item(itemGroup={}),
        {"name": "Coca-Cola 20oz"},
        error="item ITEM000000001: itemGroup.id is missing",
    ),
    Row("a modifiedTime of 0 is a time", item(modifiedTime=0), {"source_modified_time": 0}),
    Row(
        "a huge negative modifiedTime is named by its sign and length",
        item(modifiedTime=-(10**300)),
        error="modifiedTime is out of range (minus a number of about 301 digits, 0 to",
    ),
    Row(
        "a price of 2^127 - 1 is printed whole",
        item(price=2**127 - 1),
        error="price is out of range (170141183460469231731687303715884105727, at most",
    ),
    Row(
        "a price of 2^127 is named by its length",
        item(price=2**127),
        error="price is out of range (a number of about 39 digits, at most",
    ),
    Row(
        "null fields are absent fields",
        item(code=None) | {"code": None, "unitName": None, "itemStock": None, "cost": None},
        {"cost": None},
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


_EDGE_CENTS = [0, 1, 5, 9, 10, 99, 100, 101, 1999, 10**12 + 7, MONEY_MAX_CENTS - 1, MONEY_MAX_CENTS]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(_EDGE_CENTS), st.integers(0, MONEY_MAX_CENTS)))
def test_an_amount_is_exactly_the_decimal_cents_to_dollars_makes(cents: int) -> None:
    """The transform's amounts (a multiplication, remembered: issue 15) have
    cents_to_dollars' digits and exponent, not only its value, and their text, made once,
    is what the Decimal writes (``str``, ``:.2f``): it goes into rows and labels. Asked
    twice: the amount made, then the one remembered."""
    for _ in range(2):
        fields = item_fields(item(price=cents, cost=cents))
        for amount, text in ((fields.price, fields.price_text), (fields.cost, fields.cost_text)):
            assert amount is not None
            assert amount.as_tuple() == cents_to_dollars(cents).as_tuple()
            assert text == str(amount) == f"{cents // 100}.{cents % 100:02d}" == f"{amount:.2f}"
        assert fields.extra_data["unit_cost"] == fields.cost_text


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.sampled_from([-1, MONEY_MAX_CENTS + 1, 10**40, -(10**40), True, False, 1.0, "1"]),
        st.integers(),
    )
)
def test_an_amount_out_of_range_or_of_another_type_has_no_text(cents: Any) -> None:
    """No price, no text: a refused or absent amount is None, and so is its text."""
    fields = item_fields(item(price=cents, cost=cents, priceType="VARIABLE"))
    if fields.price is None:
        assert fields.price_text is None
        assert fields.cost_text is None
        assert fields.extra_data["unit_cost"] is None
    else:
        assert fields.price_text == str(fields.price) == f"{fields.price:.2f}"


def test_remembered_amounts_start_anew_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The remembered amounts are bounded: past the limit they start anew, and each amount
    is still its own."""
    monkeypatch.setattr(transform, "_AMOUNTS", {})
    monkeypatch.setattr(transform, "_AMOUNTS_KEPT", 3)
    for cents in [*range(10), *range(10)]:
        fields = item_fields(item(price=cents, cost=cents + 1))
        assert (fields.price_text, fields.cost_text) == (
            f"0.{cents:02d}",
            f"0.{cents + 1:02d}",
        )
        assert len(transform._AMOUNTS) <= 3


def test_an_amount_asked_again_is_the_one_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes an amount cheap (issue 15): asked again, it is the same Decimal and text,
    not made anew, and every amount below the bound is kept (none dropped early)."""
    monkeypatch.setattr(transform, "_AMOUNTS", {})
    first = [item_fields(item(price=cents, cost=cents + 1)) for cents in range(10)]
    assert sorted(transform._AMOUNTS) == list(range(11))
    again = [item_fields(item(price=cents, cost=cents + 1)) for cents in range(10)]
    for made, remembered in zip(first, again, strict=True):
        assert remembered.price is made.price
        assert remembered.price_text is made.price_text
        assert remembered.cost is made.cost
    assert transform._AMOUNTS[3] == (first[3].price, "0.03")


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
        item(id="ITEM\x00"),
        item(id="ITEM\ud800"),
        item(id=" ITEM000000001"),
        item(id="ITEM/../x"),
        item(id="I" * 65),
        item(id="I" * MEGABYTE),
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "integer",
        "list",
        "NUL",
        "surrogate",
        "space",
        "path",
        "65 chars",
        "megabyte",
    ],
)
def test_missing_id_raises(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidItem, match="no usable 'id'"):
        to_product(raw, merchant_id=MERCHANT)


def test_not_an_object_raises() -> None:
    with pytest.raises(InvalidItem, match=r"^item is not a JSON object but list$"):
        to_product(["ITEM"], merchant_id=MERCHANT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "got"),
    [
        (item(id=None), "missing"),
        (item(id=12345), "int"),
        (item(id=""), "a string of 0 characters"),
    ],
)
def test_an_unusable_id_is_described(raw: dict[str, Any], got: str) -> None:
    with pytest.raises(InvalidItem) as raised:
        to_product(raw, merchant_id=MERCHANT)
    assert str(raised.value) == (
        f"item has no usable 'id' (1 to 64 letters, digits, '_' or '-'); got {got}"
    )


def test_any_mapping_is_an_item() -> None:
    """Not only a dict: the transform takes a Mapping (a read-only view, for instance)."""
    product = to_product(MappingProxyType(item()), merchant_id=MERCHANT)
    assert (product.validation_error, product.barcode) == (None, "BEV-0001")


def test_the_currency_is_usd_unless_told() -> None:
    assert to_product(item(), merchant_id=MERCHANT).currency == "USD"


def _no_code_error(length: int) -> str | None:
    """The refusal of an item without a product code, whose one code field has a name that
    makes the message ``length`` characters long."""
    frame = len("item ITEM000000001: no product code ( all empty)")
    field = "f" * (length - frame)
    raw = item(sku=None, code=None, alternateName=None)
    return to_product(raw, merchant_id=MERCHANT, code_fields=(field,)).validation_error


def test_the_refusal_is_cut_at_1000_characters() -> None:
    """validation_error is shown in `esl-sync status` and stored; 1,000 characters hold
    every problem an item can have several times over."""
    whole = _no_code_error(1000)
    assert whole is not None
    assert (len(whole), whole[-3:]) == (1000, "ty)")
    cut = _no_code_error(1001)
    assert cut is not None
    assert (len(cut), cut[-6:]) == (1000, " empt…")


def test_invalid_item_is_a_value_error() -> None:
    assert issubclass(InvalidItem, ValueError)


def test_a_rejected_id_is_described_not_echoed() -> None:
    with pytest.raises(InvalidItem) as raised:
        to_product(item(id="\x1b[2J" + "I" * MEGABYTE), merchant_id=MERCHANT)
    assert str(raised.value).endswith(f"got a string of {MEGABYTE + 4} characters")


def test_an_id_of_64_letters_digits_dashes_and_underscores_is_usable() -> None:
    assert to_product(item(id="A-b_9" * 12 + "abcd"), merchant_id=MERCHANT).source_id


_ID_CHARACTERS = st.sampled_from([*"Az09_-é²٣\n \x00ǅ", "\ud800"])


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(_ID_CHARACTERS, max_size=70),
        st.builds(
            lambda n, tail: "A" * n + tail, st.integers(0, 66), st.text(_ID_CHARACTERS, max_size=2)
        ),
    )
)
def test_an_id_is_usable_exactly_when_the_pattern_matches_it(item_id: str) -> None:
    """Clover's ids (ASCII letters and digits) are told without the regex (issue 15): the
    same ids are usable as by ``ID_PATTERN`` alone (lengths 0, 64, 65, non-ASCII digits and
    letters, a line break, NUL, a lone surrogate)."""
    usable = ID_PATTERN.fullmatch(item_id) is not None
    try:
        fields = item_fields(item(id=item_id))
    except InvalidItem:
        assert not usable
    else:
        assert usable
        assert fields.source_id == item_id


def test_every_stored_string_of_raw_is_cleaned_keys_and_nesting_included() -> None:
    raw = item(
        name="Coca\x00Cola",
        tags={"elements": [{"na\x00me": "Soda\ud800", "deep": [["\uffff", "ok\x00"]]}]},
        **{"weird\udfffKey": {"\x00": None}},
    )
    product = to_product(raw, merchant_id=MERCHANT)
    assert product.raw["name"] == "CocaCola"
    assert product.raw["tags"] == {"elements": [{"name": "Soda", "deep": [["", "ok"]]}]}
    assert product.raw["weirdKey"] == {"": None}
    assert "\x00" not in json.dumps(product.model_dump(mode="json"))


def test_raw_keeps_what_jsonb_cannot_hold_as_text() -> None:
    nested: Any = "bottom"
    for _ in range(100):
        nested = [nested]
    raw = item(
        ratio=float("nan"),
        big=float("-inf"),
        huge=10**5000 if _int_digits_allowed(5000) else 2**20_000,
        nested=nested,
        note="n" * MEGABYTE,
    )
    product = to_product(raw, merchant_id=MERCHANT)
    assert product.raw["ratio"] == "nan"
    assert product.raw["big"] == "-inf"
    assert product.raw["huge"].startswith("(an integer of about ")
    assert json.dumps(product.raw["nested"]).count("[") == 31  # with raw itself: 32 levels
    assert "nested deeper than 32 levels" in json.dumps(product.raw["nested"])
    assert product.raw["note"].endswith(f"…({MEGABYTE - 4096} more characters)")
    json.dumps(product.raw, allow_nan=False)  # what Postgres would refuse is gone


def _int_digits_allowed(digits: int) -> bool:
    limit = sys.get_int_max_str_digits()
    return limit == 0 or digits <= limit


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


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        (item(name=7), "item ITEM000000001: name: input should be a valid string (got int)"),
        (
            item(price="2.49"),
            "item ITEM000000001: price: input should be a valid integer (got str)",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_named_once(raw: dict[str, Any], refusal: str) -> None:
    """Not also as missing: the operator reads what to fix."""
    assert to_product(raw, merchant_id=MERCHANT).validation_error == refusal


def test_a_raw_item_storable_as_it_is_is_kept_uncopied_and_anything_else_cleaned() -> None:
    """The poll's pages hold thousands of items: one that needs no cleaning is neither
    copied nor walked again (whether the caller says so or it is found out here)."""
    raw = {"id": "ITEM1", "name": "Cola", "price": 199, "sku": "049000000443"}
    assert to_product(raw, merchant_id="M").raw is raw
    assert to_product(raw, merchant_id="M", storable=True).raw is raw
    told_not = to_product(raw, merchant_id="M", storable=False).raw
    assert told_not == raw
    assert told_not is not raw
    dirty = {**raw, "note": "a\x00b"}
    product = to_product(dirty, merchant_id="M")
    assert product.raw == {**raw, "note": "ab"}
    assert dirty["note"] == "a\x00b"  # the caller's item is left alone


def test_a_refused_item_keeps_its_storable_raw_item_uncopied_too() -> None:
    raw = {"id": "ITEM2", "name": "Cola", "sku": "049000000443"}  # no price: refused
    product = to_product(raw, merchant_id="M")
    assert product.validation_error == "item ITEM2: price is missing (a FIXED item needs one)"
    assert product.raw is raw


def test_a_code_field_outside_the_model_is_read_from_an_item_read_the_long_way() -> None:
    """An item with a wrong-typed field is read by pydantic; a configured code field that
    CloverItem does not know still comes from the raw item."""
    raw = {"id": "ITEM3", "name": "Cola", "price": "199", "upc": "0123456789012"}
    product = to_product(raw, merchant_id="M", code_fields=("upc",))
    assert product.barcode == "0123456789012"
    assert (
        product.validation_error == "item ITEM3: price: input should be a valid integer (got str)"
    )
