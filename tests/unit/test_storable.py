"""What Postgres and Hipoink can take: cleaning, the product code rule, and a Product that
cannot be built with a value a column would refuse."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esl_sync.products import Product
from esl_sync.storable import (
    BIGINT_MAX,
    PC_MAX_LENGTH,
    clean_json,
    clean_text,
    label_text,
    product_code,
)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("plain", "plain"),
        ("a\x00b", "ab"),
        ("\ud800a\udfffb\udc00", "ab"),
        ("x\ufffe\uffff\ufdd0\ufdef\U0001fffe\U0010ffff", "x"),
        ("tab\tnew\nline\x1b\x7f", "tab\tnew\nline\x1b\x7f"),  # storable: kept
        ("émoji 🏳️\u200d🌈 \U0001f600", "émoji 🏳️\u200d🌈 \U0001f600"),
        ("\ufffd\ue000\U000f0000", "\ufffd\ue000\U000f0000"),  # replacement, private use
    ],
)
def test_clean_text_drops_only_what_cannot_be_stored_or_queued(text: str, clean: str) -> None:
    assert clean_text(text) == clean
    clean.encode("utf-8")  # always encodable


_LABEL_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # label_text's definition


@settings(max_examples=500, deadline=None)
@given(
    st.text(
        st.one_of(
            st.characters(codec=None),
            st.sampled_from("\x00\x1f\x7f\x85\xa0\u2028\u2029\u200b\u3000\ufffe\ud800 \t\n"),
        ),
        max_size=40,
    ),
    st.integers(1, 50),
)
def test_label_text_of_printable_text_is_its_definition(text: str, max_length: int) -> None:
    """Printable text skips the regular expressions; anything gives what they would."""
    defined = _LABEL_BREAKS.sub(" ", clean_text(text)).strip()[:max_length].rstrip()
    assert label_text(text, max_length) == defined


def test_label_text_is_one_trimmed_line() -> None:
    assert label_text("  Coke\r\n\r\n20oz\x85can\u2029 ", 127) == "Coke 20oz can"
    assert label_text("\x00\x01\x02", 10) == ""
    assert label_text("abc def", 4) == "abc"  # no trailing space after the cut


@pytest.mark.parametrize(
    ("text", "code", "problem"),
    [
        ("049000028911", "049000028911", None),
        (" 0490\t\r\n", "0490", None),
        ("A B-C/1.2", "A B-C/1.2", None),
        ("Ñandú-1", "Ñandú-1", None),
        ("P" * PC_MAX_LENGTH, "P" * PC_MAX_LENGTH, None),
        ("P" * (PC_MAX_LENGTH + 1), "P" * (PC_MAX_LENGTH + 1), "longer than 64"),
        ("A\x00B", "A\x00B", "holds control"),
        ("A\x1fB", "A\x1fB", "holds control"),
        ("A\u200bB", "A\u200bB", "holds control"),  # zero-width space
        ("A\u202eB", "A\u202eB", "holds control"),  # right-to-left override
        ("A\ud800", "A\ud800", "holds control"),
        ("A\u00a0B", "A\u00a0B", "holds control"),  # no-break space looks like a space
        ("", "", None),
    ],
)
def test_product_code_rule(text: str, code: str, problem: str | None) -> None:
    got, why = product_code(text)
    assert got == code
    assert (why is None) if problem is None else (why is not None and problem in why)


def test_clean_json_keeps_what_is_fine() -> None:
    fine = {"a": [1, 2.5, True, None, "x", {"b": -(10**30)}], "c": {}}
    assert clean_json(fine) == fine


def _product(**fields: Any) -> Product:
    values: dict[str, Any] = {"merchant_id": "M1", "source_id": "I1", "name": "n"}
    return Product.model_validate(values | fields)


def test_a_product_cleans_every_string_it_holds() -> None:
    product = _product(
        name="N\x00ame",
        barcode="B\ud800C",
        sku="S\x00",
        unit="g\uffffal",
        validation_error="item I1: x\x00",
        extra_data={"k\x00": ["v\x00"]},
        raw={"\x00": {"deep\ud800": float("nan")}},
    )
    assert (product.name, product.barcode, product.sku, product.unit) == ("Name", "BC", "S", "gal")
    assert product.validation_error == "item I1: x"
    assert product.extra_data == {"k": ["v"]}
    assert product.raw == {"": {"deep": "nan"}}


@pytest.mark.parametrize(
    "fields",
    [
        {"price": Decimal("1000000000000.00")},  # 10^14 cents: past numeric(14, 2)
        {"cost": Decimal("-0.01")},
        {"price": Decimal("0.001")},
        {"price": Decimal("NaN")},
        {"source_modified_time": BIGINT_MAX + 1},
        {"source_modified_time": -(2**63) - 1},
        {"status": "gone"},
    ],
)
def test_a_product_cannot_hold_what_its_column_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _product(**fields)


def test_the_bounds_themselves_fit() -> None:
    product = _product(
        price=Decimal("999999999999.99"), cost=Decimal("0.00"), source_modified_time=BIGINT_MAX
    )
    assert product.price == Decimal("999999999999.99")
