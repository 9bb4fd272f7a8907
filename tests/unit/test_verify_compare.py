"""A verify's comparison of a label with what Hipoink holds (esl_sync.sync.verify): what
counts as the same value, and which fields differ."""

from __future__ import annotations

import pytest

from esl_sync.sync.verify import HELD_AFTER_DELETE, NOT_HELD, drifted_fields, same_value


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("2.50", "2.5"), ("2.50", 2.5), ("3", 3), ("2.50", " 2.50 "), ("", None), ("Item", " Item")],
)
def test_the_same_value_in_another_representation(ours: str, theirs: object) -> None:
    assert same_value(ours, theirs)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("2.75", "2.50"),
        ("1", True),
        ("2.50", [2.5]),
        ("2.50", float("nan")),
        ("2.50", "2_5"),
        ("2.50", "1" * 41),
        ("Item", ""),
        ("0.00", "sNaN"),
    ],
)
def test_a_different_value(ours: str, theirs: object) -> None:
    assert not same_value(ours, theirs)


def test_the_fields_that_differ_in_the_records_order_and_only_those_listed() -> None:
    record = {"pc": "A", "pn": "Name", "pp": "1.00", "pi": "ID", "f1": "x"}
    held = [{"pc": "A", "pn": "Other", "pp": 1, "f1": "y"}]
    assert drifted_fields(record, held, {"pc", "pn", "pp", "f1"}) == ("pn", "f1")
    assert drifted_fields(record, held, {"pc", "pp"}) == ()  # pn, f1 not listed by Hipoink
    twice = [*held, {"pc": "A", "pn": "Name", "pp": "2.00", "f1": "x"}]
    assert drifted_fields(record, twice, {"pc", "pn", "pp", "f1"}) == ("pn", "pp", "f1")
    assert drifted_fields(record, [], {"pc"}) == (NOT_HELD,)
    assert drifted_fields(None, held, {"pc"}) == (HELD_AFTER_DELETE,)
    assert drifted_fields(None, [], {"pc"}) == ()
