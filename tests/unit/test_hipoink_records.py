"""Product → Hipoink record (with the configurable free fields), and error classification."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_sync.hipoink.errors import (
    HipoinkConfigError,
    HipoinkError,
    HipoinkNotFound,
    HipoinkRecordError,
    classify,
)
from esl_sync.hipoink.records import label_hash, parse_extra_fields, to_record
from esl_sync.products import Product, stable_hash
from esl_sync.sync import labels as labels_module
from esl_sync.sync.labels import record_hash


def _product(**changes: object) -> Product:
    fields: dict[str, object] = {
        "merchant_id": "M",
        "source_id": "ITEM1",
        "name": "Regular Unleaded",
        "barcode": "REG",
        "sku": "REG",
        "price": Decimal("3.4"),
        "cost": Decimal("2.9"),
        "price_type": "PER_UNIT",
        "unit": "gal",
        "extra_data": {"unit_cost": "2.90", "is_age_restricted": False, "item_group_id": None},
    }
    return Product.model_validate(fields | changes)


def test_the_base_record() -> None:
    assert to_record(_product()) == {
        "pc": "REG",
        "pn": "Regular Unleaded",
        "pp": "3.40",
        "pi": "ITEM1",
        "pu": "gal",
    }
    fixed = to_record(_product(price_type="FIXED"))
    assert fixed is not None
    assert "pu" not in fixed  # a unit only for items sold per unit
    assert to_record(_product(status="deleted")) is None
    assert to_record(_product(barcode=None)) is None


def test_a_variable_price_is_the_configured_text_never_clovers_price() -> None:
    lottery = _product(price_type="VARIABLE", price=Decimal("0"), unit=None)
    assert _shown_price(lottery) == ""
    assert _shown_price(lottery, variable_price_text="SEE CASHIER") == "SEE CASHIER"
    assert _shown_price(_product(price_type="VARIABLE", price=None)) == ""


def _shown_price(product: Product, **settings: str) -> str:
    record = to_record(product, **settings)
    assert record is not None
    return record["pp"]


def test_a_price_that_is_needed_but_missing_makes_no_record_never_zero() -> None:
    assert to_record(_product(price=None)) is None
    assert to_record(_product(price_type="FIXED", price=None)) is None
    assert to_record(_product(validation_error="item ITEM1: price is missing")) is None


def test_free_fields_come_from_attributes_and_extra_data() -> None:
    mapping = parse_extra_fields("f1=price_type, f2=unit_cost,f3=cost,f4=is_age_restricted")
    record = to_record(_product(), extra_fields=mapping)
    assert record is not None
    assert (record["f1"], record["f2"], record["f3"], record["f4"]) == (
        "PER_UNIT",
        "2.90",
        "2.90",
        "0",
    )
    # An absent value is sent empty, so a cleared value clears the label too.
    empty = to_record(_product(extra_data={}), extra_fields=(("f16", "item_group_id"),))
    assert empty is not None
    assert empty["f16"] == ""


def test_the_label_hash_covers_the_free_fields() -> None:
    plain = label_hash(to_record(_product()))
    mapped = label_hash(to_record(_product(), extra_fields=(("f1", "price_type"),)))
    other = label_hash(to_record(_product(price_type="FIXED"), extra_fields=(("f1", "sku"),)))
    assert len({plain, mapped, other}) == 3


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("f17=sku", "not f1 … f16=SOURCE"),
        ("f1", "not f1 … f16=SOURCE"),
        ("pc=sku", "not f1 … f16=SOURCE"),
        ("f1=raw", "source must be one of"),
        ("f1=sku,f1=cost", "f1 is mapped twice"),
        ("f0=sku", "not f1 … f16=SOURCE"),
        ("f1=", "not f1 … f16=SOURCE"),
        ("f1=sku=cost", "'f1=sku=cost': source must be one of"),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_entry(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_extra_fields(text)


def test_an_empty_mapping_is_no_mapping() -> None:
    assert parse_extra_fields("") == ()
    assert parse_extra_fields(" , ") == ()


def test_empty_entries_are_skipped_and_the_rest_is_read() -> None:
    assert parse_extra_fields(",f1=sku,, f16 = available ,") == (
        ("f1", "sku"),
        ("f16", "available"),
    )


def test_a_bad_source_is_refused_naming_every_source() -> None:
    with pytest.raises(ValueError, match="source must be one of") as refused:
        parse_extra_fields("f2=raw")
    assert str(refused.value) == (
        "'f2=raw': source must be one of sku, cost, currency, price_type, unit, unit_cost,"
        " item_group_id, is_age_restricted, available"
    )


def test_flags_show_as_1_or_0() -> None:
    mapping = (("f1", "is_age_restricted"), ("f2", "available"))
    extra = {"is_age_restricted": True, "available": False}
    record = to_record(_product(extra_data=extra), extra_fields=mapping)
    assert record is not None
    assert (record["f1"], record["f2"]) == ("1", "0")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # configuration: the vendor's documented example and the simulator's messages
        ("sign error", HipoinkConfigError),
        ("app key nobody not found", HipoinkConfigError),
        ("default missing store_code field", HipoinkConfigError),
        ("store S-1 not found", HipoinkConfigError),
        ("f1 must be a JSON array, not a string", HipoinkConfigError),
        ("invalid json", HipoinkConfigError),
        # a record: the message names a product
        ("product 0123: missing field pp", HipoinkRecordError),
        ("product #4: record must be an object", HipoinkRecordError),
        ("product store-1: rejected", HipoinkRecordError),  # a pc that looks like a store
        ("product X not found", HipoinkNotFound),
        # the batch as a whole: split it
        ("too many products (max 50)", HipoinkRecordError),
        ("something nobody documented", HipoinkRecordError),
    ],
)
def test_classify(message: str, expected: type[HipoinkError]) -> None:
    assert classify(message) is expected


_RECORD_KEYS = st.sampled_from(["pc", "pn", "pp", "pi", "pu", *(f"f{n}" for n in range(1, 17))])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(_RECORD_KEYS, st.text(max_size=4)), st.text(max_size=30)))
def test_a_label_hash_is_the_stable_hash_of_its_record(record: dict[str, str]) -> None:
    """The label ledger holds hashes made by ``stable_hash``: the hand-written one agrees
    (any text: quotes, backslashes, control characters, lone surrogates, non-ASCII)."""
    assert label_hash(record) == stable_hash(record)


_ASCII = st.text(st.characters(max_codepoint=127), max_size=30)
_ANY_TEXT = st.one_of(
    _ASCII,  # the fast way's own input: every escape it shares with json, and DEL
    st.text(max_size=30),  # beyond ASCII
    st.text(st.characters(codec=None, categories=["Cs", "Ll", "Cc"]), max_size=8),  # surrogates
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.one_of(_RECORD_KEYS, _ANY_TEXT), _ANY_TEXT))
def test_the_polls_record_hash_is_the_label_hash(record: dict[str, str]) -> None:
    """The poll hashes each label with orjson where its output is the standard library's
    (:func:`esl_sync.sync.labels.record_hash`); the ledger's hashes and the sender's are
    ``label_hash``: the two agree on any record (ASCII, DEL, control characters, text
    beyond ASCII, lone surrogates, in keys and values)."""
    assert record_hash(record) == label_hash(record) == stable_hash(record)


def test_an_ascii_record_is_hashed_the_fast_way_and_any_other_the_standard_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reason ``record_hash`` exists: a label of ASCII text (nearly every one) is hashed
    from orjson's output, without the standard library's way; anything else by it."""
    slow: list[dict[str, str]] = []

    def standard_way(record: dict[str, str]) -> str | None:
        slow.append(record)
        return label_hash(record)

    monkeypatch.setattr(labels_module, "label_hash", standard_way)
    ascii_record = {"pc": "A1", "pn": 'Cola "Zero" \\ 2L\t', "pp": "1.99", "pi": "I1"}
    assert record_hash(ascii_record) == stable_hash(ascii_record)
    assert slow == []
    for other in ({"pc": "A1", "pn": "Café"}, {"pc": "A1", "pn": "\x7f"}, {"pc": "\ud800"}):
        assert record_hash(other) == stable_hash(other)
    assert len(slow) == 3


@pytest.mark.parametrize("character", [chr(code) for code in range(128)] + ["é", "\ud800", "€"])
def test_each_character_hashes_alike_both_ways(character: str) -> None:
    record = {"pc": f"A{character}B", "pn": character, character: "x"}
    assert record_hash(record) == stable_hash(record)


def test_a_label_hash_of_known_records() -> None:
    assert record_hash(None) is None
    assert label_hash(None) is None
    record = {"pp": "3.40", "pc": 'R"\\x00\u00e9\ud800', "f10": "1", "f2": ""}
    assert label_hash(record) == stable_hash(record)
    assert label_hash({}) == stable_hash({})
