"""A verify's comparison of a label with what Hipoink holds (esl_sync.sync.verify): what
counts as the same value, and which fields differ."""

from __future__ import annotations

import pytest

from esl_sync.records import UNREADABLE
from esl_sync.sync.verify import HELD_AFTER_DELETE, NOT_HELD, drifted_fields, same_value

FORTY = "1" * 37 + ".00"  # 40 characters: the longest number compared by value
FORTY_ONE = "1" * 38 + ".00"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("2.50", "2.5"),
        ("2.50", 2.5),
        ("3", 3),
        ("2.50", " 2.50 "),
        (" 2.50", "2.50 "),
        ("", None),
        ("  ", None),
        ("Item", " Item"),
        ("+2.5", "2.50"),
        ("-0", "0.00"),
        (".5", "0.50"),
        ("5.", "5"),
        (FORTY, FORTY[:-3]),
        (FORTY[:-3], FORTY),
        ("1" * 41, "1" * 41),  # the same text, however long
    ],
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
        ("0.00", None),
        ("100", "1e2"),  # no exponents: Hipoink shows the text
        ("3", "\u0663"),  # ARABIC-INDIC DIGIT THREE: a Decimal, but not what the label shows
        ("True", True),  # a boolean is no text, whatever it prints as
        ("[1]", [1]),
        ("{}", {}),
        ("x", UNREADABLE),  # what a held value no label holds reads as
        ("", UNREADABLE),
        # Longer than 40 characters: compared as text only (Decimal's cost is bounded).
        (FORTY_ONE, FORTY_ONE[:-3]),
        (FORTY_ONE[:-3], FORTY_ONE),
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
    assert drifted_fields(record, [], {"pc"}) == (NOT_HELD,) == ("not held",)
    assert drifted_fields(None, held, {"pc"}) == (HELD_AFTER_DELETE,) == ("held though deleted",)
    assert drifted_fields(None, [], {"pc"}) == ()
