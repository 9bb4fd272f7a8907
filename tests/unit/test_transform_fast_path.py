"""The transform's fast path agrees with pydantic's full validation on any item.

An item whose fields all have their exact types is read without building a ``CloverItem``
(:func:`esl_sync.clover.item_types.plain_fields`), and a product without a problem is built
without validating it again (``Product.model_construct``). Both are shortcuts only: these
tests feed hostile items (NUL, lone surrogates, noncharacters, huge and negative numbers,
wrong types, booleans where integers go, ``str`` subclasses, megabyte text) and check that
the shortcut accepts nothing pydantic would refuse or change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit.catalog import gas_station_catalog
from esl_sync.clover.item_types import READ_FIELDS, plain_fields
from esl_sync.clover.items import CloverItem
from esl_sync.clover.transform import to_product
from esl_sync.products import Product

HOSTILE_TEXT = ["", " ", "a\x00b", "\ud800", "x\udfffy", "\ufffe", "\ufdd0", "é", "\n\t", "9" * 70]


class Text(str):
    """A ``str`` subclass: pydantic's strict mode takes it; the fast path leaves it to it."""


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**14, 10**5000, -1]),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from(["FIXED", "VARIABLE", "PER_UNIT", "fixed"]),
    st.builds(Text, st.text(max_size=5)),
    st.dictionaries(st.sampled_from(["id", "x"]), st.sampled_from(["GROUP1", "", "a b", 7])),
    st.lists(st.integers(), max_size=2),
)
FIELDS = [*CloverItem.model_fields, "deletedTime", "isRevenue"]


def test_the_fields_read_without_the_model_are_the_model_s() -> None:
    """The product code's fields are read from the model's reading when it reads them."""
    assert frozenset(CloverItem.model_fields) == READ_FIELDS


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    """A catalog item with some fields replaced, removed or nulled."""
    base = dict(draw(st.sampled_from(CATALOG)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if name == "id":
            continue
        base[name] = draw(values)
    return base


CATALOG = gas_station_catalog(40, seed=7)


@settings(max_examples=400, deadline=None)
@given(items())
def test_plain_fields_accept_only_what_strict_pydantic_reads_the_same(raw: dict[str, Any]) -> None:
    if not plain_fields(raw):
        return
    read = CloverItem.model_validate(raw).model_dump()
    group = read.pop("itemGroup")  # the transform reads its id alone
    assert (group["id"] if group else None) == (raw["itemGroup"]["id"] if group else None)
    for name, value in read.items():
        assert value == raw.get(name), name
        assert type(value) is type(raw.get(name)), name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", True),  # a bool where an integer goes
        ("cost", False),
        ("modifiedTime", 1.0),
        ("price", "349"),
        ("name", 12),
        ("name", Text("Coke")),  # left to pydantic, which takes it
        ("hidden", 0),
        ("priceType", "fixed"),
        ("priceType", 1),
        ("itemGroup", {"id": "a b"}),
        ("itemGroup", {"id": 7}),
        ("itemGroup", "GROUP1"),
        ("itemGroup", {}),
    ],
)
def test_plain_fields_leave_wrong_or_unusual_types_to_pydantic(field: str, value: Any) -> None:
    raw = dict(CATALOG[0], **{field: value})
    assert not plain_fields(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a\x00b"),  # cleaning is the transform's, not a type error
        ("name", "\ud800"),
        ("price", 10**5000),  # ranges are the transform's too
        ("price", -1),
        ("itemGroup", {"id": "GROUP1", "name": "\x00"}),
        ("isRevenue", "junk"),  # a field the transform does not read
    ],
    ids=["nul", "surrogate", "huge", "negative", "group-extra", "unread"],
)
def test_plain_fields_take_hostile_values_of_the_right_type(field: str, value: Any) -> None:
    assert plain_fields(dict(CATALOG[0], **{field: value}))


@settings(max_examples=400, deadline=None)
@given(items())
def test_a_product_is_what_full_validation_makes_of_it(raw: dict[str, Any]) -> None:
    product = to_product(raw, merchant_id="MERCHANT00001")
    validated = Product.model_validate(product.model_dump())
    assert validated.model_dump() == product.model_dump()
    assert validated.content_hash == product.content_hash


def test_a_plain_item_takes_the_fast_path_with_the_same_product() -> None:
    raw = next(i for i in CATALOG if i.get("priceType") == "PER_UNIT")
    product = to_product(raw, merchant_id="MERCHANT00001")
    assert product.raw is raw  # neither copied nor walked
    assert product.validation_error is None
    assert product.unit == "gal"
    assert isinstance(product.price, Decimal)
    assert Product.model_validate(product.model_dump()) == product


@pytest.mark.parametrize("merchant_id", ["M\x00X", "M\ud800X", "M\ufffeX"])
def test_caller_text_that_is_not_plain_is_cleaned_by_full_validation(merchant_id: str) -> None:
    product = to_product(CATALOG[0], merchant_id=merchant_id, currency="US\x00D")
    assert product.merchant_id == "MX"
    assert product.currency == "USD"
