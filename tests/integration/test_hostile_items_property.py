"""Property: hostile Clover items never stop a poll, never put a wrong value on a shelf, and
are never silently dropped; every healthy change beside them reaches its label.

Each example is one store (a fresh merchant on one shared local stack: real Postgres, moto,
the poller and sender handlers, both simulators over HTTP) whose catalog mixes

* healthy items, whose price changes between the two polls;
* hostile items, bad from the start, fixed in Clover before the second poll;
* victims, healthy at first, made hostile before the second poll.

Hostile values cover every field the transform reads: wrong types, unicode (NUL, lone
surrogates, which the simulator sends as ``\\ud800`` JSON escapes as a real server could,
noncharacters, control and invisible characters), sizes up to a megabyte, numbers at and
past every bound (0, 10^14 cents, 2^63, thousands of digits, negative, floats, NaN,
booleans) and nested junk. ``deleted`` and ``modifiedTime`` are stamped by Clover itself,
so they only take the values Clover could stamp (booleans; integers of any size).

After each poll: no record failed; every healthy item's label is exactly its new record;
every hostile item is either exactly on its label (``pc``, ``pp``, ``pi`` from what Clover
sent, a cleaned ``pn``), removed because Clover hid or deleted it, or named on its product
(``validation_error`` naming only fields that were made hostile) with its label untouched;
an item without a usable id is counted and has no row; the first poll's ``invalid_items``
is exactly what was refused or rejected. After the second poll, every fixed item is on its
label, and every victim either shows its new version correctly, is removed, or is named
with its old label unchanged (never deleted, never $0.00).

Every other example's second poll checks what its items are stored as before judging
them (the path of a page of many items after the first read: their ids go to Postgres
first), so hostile ids meet that query too.

CI runs 200 fixed (derandomized) examples, about 50 s here: each example costs two polls,
i.e. some 19 round trips to the emulated AWS services, which is what the time goes to.
``HOSTILE_ITEM_EXAMPLES=N`` runs more; ``HOSTILE_ITEM_SHRINK=1`` shrinks a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from devkit.clover_sim import CloverSimulator
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import admin, runtime
from esl_sync.messages import PollRequest
from esl_sync.records import Merchant
from esl_sync.sync import poll

EXAMPLES = int(os.environ.get("HOSTILE_ITEM_EXAMPLES", "200"))
SHRINK = os.environ.get("HOSTILE_ITEM_SHRINK") == "1"
MISSING = object()  # the field is left out of the item
CODE_FIELDS = ("sku", "code", "alternateName")
READ_FIELDS = (
    "name",
    "sku",
    "code",
    "alternateName",
    "price",
    "priceType",
    "unitName",
    "cost",
    "hidden",
    "available",
    "isAgeRestricted",
    "itemGroup",
    "deleted",
    "deletedTime",
)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_counter = itertools.count()

# -- hostile values -------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    " ",
    "\t",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\uffff",
    "\ufdd0",
    "\u200b",
    "\u202e",
    "\x1b[2J",
    "\r\n",
    "\u2028",
    "\u00a0",
    "é",
    "🏳️\u200d🌈",
    "9" * 64,
    "9" * 65,
    "x" * 128,
]
BOUNDS = [
    0,
    1,
    -1,
    10**14 - 1,
    10**14,
    -(10**14),
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**300,
    -(10**300),
    10**4000,
]
big_text = st.builds(
    lambda size, char: char * size,
    st.sampled_from([1_000, 100_000, 1_000_000]),
    st.sampled_from(["x", "\x00", "é", "\ud800"]),
)
short_text = st.text(st.characters(exclude_categories=()), max_size=30)
text = st.one_of(short_text, st.sampled_from(SPECIAL_TEXT))
text = st.integers(0, 39).flatmap(lambda k: big_text if k == 0 else text)  # big: 1 in 40
number = st.one_of(
    st.sampled_from(BOUNDS),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
junk = st.recursive(
    st.none() | st.booleans() | number | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
value = st.one_of(text, number, junk, st.none())
anything = st.one_of(value, st.just(MISSING))


def _code_value(tag: str) -> st.SearchStrategy[Any]:
    """A hostile product code; a non-blank string starts with the item's own tag, so no two
    items share a code (duplicate codes are a separate rule)."""
    tagged = text.map(lambda t: tag + t)
    blank = st.sampled_from(["", " ", "\t\r\n"])
    return st.one_of(tagged, blank, number, junk, st.just(MISSING), st.none())


def _hostile(field_name: str, tag: str) -> st.SearchStrategy[Any]:
    if field_name in CODE_FIELDS:
        return _code_value(tag)
    if field_name == "deleted":
        return st.sampled_from([True, False, None, MISSING])  # Clover sets it: a boolean
    if field_name == "priceType":
        return st.one_of(st.sampled_from(["FIXED", "VARIABLE", "PER_UNIT", "fixed", ""]), anything)
    if field_name == "itemGroup":
        return st.one_of(st.builds(lambda i: {"id": i}, value), anything)
    return anything


# -- catalogs ---------------------------------------------------------------------------------


def _healthy(tag: str, price: int, price_type: str = "FIXED") -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": tag,
        "name": f"Item {tag}",
        "sku": f"SKU-{tag}",
        "price": price,
        "priceType": price_type,
        "cost": price // 2,
        "hidden": False,
        "available": True,
        "isAgeRestricted": False,
    }
    if price_type == "PER_UNIT":
        item["unitName"] = "gal"
    return item


@dataclass
class Hostile:
    """Fields of an item made hostile: ``values`` replace (or, MISSING, drop) its fields."""

    values: dict[str, Any]
    invalid_id: str | None = None  # an id no store can key by (the item cannot be stored)
    modified_time: int | None = None  # a stamp Clover could send on the first read

    def __repr__(self) -> str:  # a failing example stays readable with megabyte values
        return f"Hostile({_short(self.values)}, {_short(self.invalid_id)}, {self.modified_time})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:150]}…({len(text)} chars)…{text[-100:]}"


@dataclass
class Scenario:
    healthy: int
    price_types: list[str]
    hostile: list[Hostile]
    victims: list[Hostile]


@st.composite
def hostile_fields(draw: st.DrawFn, *, allow_bad_id: bool) -> Hostile:
    tag = f"T{next(_counter):06d}"  # only seeds the codes' prefix; ids are given later
    names = draw(st.lists(st.sampled_from(READ_FIELDS), min_size=1, max_size=5, unique=True))
    values = {name: draw(_hostile(name, tag)) for name in names}
    bad_id = None
    if allow_bad_id and draw(st.integers(0, 9)) == 0:
        bad_id = draw(text)
    stamp = None
    if allow_bad_id and draw(st.booleans()):
        stamp = draw(st.one_of(st.sampled_from(BOUNDS), st.integers()))
    return Hostile(values, bad_id, stamp)


scenarios = st.builds(
    Scenario,
    healthy=st.integers(2, 6),
    price_types=st.lists(
        st.sampled_from(["FIXED", "PER_UNIT", "VARIABLE"]), min_size=6, max_size=6
    ),
    hostile=st.lists(hostile_fields(allow_bad_id=True), min_size=1, max_size=8),
    victims=st.lists(hostile_fields(allow_bad_id=False), max_size=5),
)

MEGABYTE_NUL_EXAMPLE = Scenario(
    healthy=3,
    price_types=["FIXED"] * 6,
    hostile=[
        Hostile({"name": "Cola\x00" * 200_000}),
        Hostile({"price": 10**14, "sku": "S\ud800"}),
        Hostile({"price": MISSING}),
        Hostile({"name": "\ud800" * 1_000_000, "itemGroup": {"id": "\x00" * 10}}),
    ],
    victims=[Hostile({"price": None}), Hostile({"cost": 2**63, "name": "é" * 1_000_000})],
)


# -- the stack --------------------------------------------------------------------------------


@dataclass
class Shared:
    stack: LocalStack
    db: psycopg.Connection[dict[str, Any]]

    def rows(self, merchant_id: str) -> dict[str, dict[str, Any]]:
        query = (
            "SELECT source_id, status, validation_error, refused_at, label_hash"
            " FROM products WHERE merchant_id = %s"
        )
        return {r["source_id"]: r for r in self.db.execute(query, (merchant_id,)).fetchall()}


@pytest.fixture(scope="module")
def shared(make_database: Callable[[], str]) -> Iterator[Shared]:
    """One stack for every example; each example is a fresh merchant on it."""
    url = make_database()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        with LocalStack() as stack:
            clover, _ = _sims(stack)
            clover.list_deleted = True  # deleted items listed, flagged: the transform sees them
            clover.visibility_lag_ms = -(2**70)  # items stamped far ahead are listed at once
            with psycopg.connect(url, row_factory=dict_row, autocommit=True) as db:
                yield Shared(stack, db)


def _sims(stack: LocalStack) -> tuple[CloverSimulator, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def _poll(stack: LocalStack, merchant_id: str) -> dict[str, Any]:
    """One poll of the merchant by the poller handler (a poll queue record, as Lambda hands
    it over: the sample event with this merchant), then its label jobs through the label
    queue and the sender; the poll's ``poll finished`` line. Nothing may fail."""
    mark = len(stack.logs)
    event = json.loads((REPO_ROOT / "events" / "poller.json").read_text())
    event["Records"][0]["body"] = PollRequest(merchant_id=merchant_id).to_json()
    answer = stack.invoke("poller", event)
    labels = stack.drain("LabelQueue", "hipoink_sender")
    assert (answer["batchItemFailures"], labels.failures) == ([], 0)
    lines = [json.loads(line) for line in stack.logs[mark:] if line.startswith("{")]
    rejected = [line for line in lines if line.get("message") == "item rejected"]
    assert all("no usable 'id'" in line["error"] for line in rejected), rejected  # no bug
    [finished] = [line for line in lines if line.get("message") == "poll finished"]
    assert finished["status"] == "ok", finished
    return finished


def _apply(item: dict[str, Any], hostile: Hostile, *, for_update: bool) -> dict[str, Any]:
    changed = dict(item)
    for name, value in hostile.values.items():
        if value is MISSING:
            changed.pop(name, None)
            if for_update:
                changed[name] = None  # an update cannot drop a field: null reads the same
        else:
            changed[name] = value
    return changed


# -- what the shelf must show -------------------------------------------------------------------


def _record(item: dict[str, Any]) -> dict[str, str]:
    """A healthy item's label, derived from the item alone."""
    variable = item["priceType"] == "VARIABLE"
    record = {
        "pc": item["sku"],
        "pn": item["name"],
        "pp": "" if variable else f"{Decimal(item['price']) / 100:.2f}",
        "pi": item["id"],
    }
    if item["priceType"] == "PER_UNIT":
        record["pu"] = item["unitName"]
    return record


def _shown(label: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in label.items() if k in ("pc", "pn", "pp", "pi", "pu")}


def _removed(raw: dict[str, Any]) -> bool:
    return (
        raw.get("hidden") is True
        or raw.get("deleted") is True
        or raw.get("deletedTime") is not None
    )


def _check_accepted(raw: dict[str, Any], label: dict[str, Any] | None) -> None:
    """An accepted hostile item: its label is what Clover sent, cleaned only in the name."""
    assert label is not None, f"accepted item {raw['id']} has no label"
    code = next(
        raw[f].strip(" \t\r\n\f\v")
        for f in CODE_FIELDS
        if isinstance(raw.get(f), str) and raw[f].strip(" \t\r\n\f\v")
    )
    assert label["pc"] == code
    assert label["pi"] == raw["id"]
    if raw.get("priceType") == "VARIABLE":
        assert label["pp"] == ""
    else:
        price = raw.get("price")
        assert type(price) is int, f"{price!r} on a label as {label['pp']}"
        assert 0 <= price < 10**14, price
        assert label["pp"] == f"{Decimal(price) / 100:.2f}"
    name = label["pn"]
    assert 0 < len(name) <= 127
    assert set(name) <= set(raw["name"]) | {" "}
    assert not {unicodedata.category(c) for c in name} & {"Cc", "Cs", "Zl", "Zp"}


def _check_refused(
    raw: dict[str, Any], row: dict[str, Any], hostile: Hostile, old: dict[str, str] | None
) -> None:
    """A refused item is named, by the fields made hostile only, and its label untouched."""
    error = row["validation_error"]
    assert error.startswith(f"item {raw['id']}: "), error
    stamped = {"modifiedTime"} if hostile.modified_time is not None else set()
    made_hostile = set(hostile.values) | stamped
    for problem in error.removeprefix(f"item {raw['id']}: ").split("; "):
        if problem.startswith("no product code"):
            assert made_hostile & set(CODE_FIELDS), problem
        elif problem.startswith("price is missing"):
            assert made_hostile & {"price", "priceType"}, problem
        else:
            named = re.match(r"[A-Za-z]+", problem)
            assert named is not None, problem
            assert named.group() in made_hostile, (problem, made_hostile)
    assert row["refused_at"] is not None
    if old is not None:
        assert row["label_hash"] is not None  # the label keeps its last accepted version


def _check_hostile(
    labels: dict[str, dict[str, Any]],
    raw: dict[str, Any],
    hostile: Hostile,
    rows: dict[str, dict[str, Any]],
    old: dict[str, str] | None,
) -> bool:
    """Check one hostile item (with a usable id) after a poll; True when it was refused."""
    by_item = {label["pi"]: label for label in labels.values()}
    assert sum(label["pi"] == raw["id"] for label in labels.values()) <= 1
    row = rows[raw["id"]]
    if _removed(raw):
        assert row["status"] == "deleted"
        assert row["validation_error"] is None
        assert raw["id"] not in by_item
        return False
    if row["validation_error"] is not None:
        _check_refused(raw, row, hostile, old)
        if old is None:
            assert raw["id"] not in by_item
        else:
            assert raw["id"] in by_item, "a refused item's label was deleted"
            assert _shown(by_item[raw["id"]]) == old, "a refused item changed its label"
        return True
    _check_accepted(raw, by_item.get(raw["id"]))
    return False


# -- the property -------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Shrinking replays polls for minutes: on for debugging only (HOSTILE_ITEM_SHRINK=1).
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
)
@example(scenario=MEGABYTE_NUL_EXAMPLE)
@given(scenario=scenarios)
def test_hostile_items_never_stop_a_poll_nor_reach_a_label_wrong(
    shared: Shared, scenario: Scenario
) -> None:
    stack = shared.stack
    clover, hipoink = _sims(stack)
    n = next(_counter)
    merchant, store = f"MPROP{n:07d}", f"S-PROP-{n}"
    tag = f"P{n:07d}"
    types = scenario.price_types
    healthy = [
        _healthy(f"{tag}H{k}", 100 + k, types[k % len(types)]) for k in range(scenario.healthy)
    ]
    victims = [_healthy(f"{tag}V{k}", 500 + k, types[-1 - k]) for k in range(len(scenario.victims))]
    hostile = []
    for k, bad in enumerate(scenario.hostile):
        item = _apply(_healthy(f"{tag}X{k}", 900 + k), bad, for_update=False)
        if bad.invalid_id is not None:
            item["id"] = f"{tag}X{k}{bad.invalid_id}"  # unusable, unless the text happens to be
        if bad.modified_time is not None:
            item["modifiedTime"] = bad.modified_time
        hostile.append(item)
    clover.add_merchant(merchant, f"tok-{merchant}", [*healthy, *victims, *hostile])
    hipoink.add_store(store)
    admin.add_merchant(
        runtime.merchants(), runtime.state_store(), _merchant(merchant, store), f"tok-{merchant}"
    )

    # Every other example, the second poll checks what its page's items are stored as
    # (which a poll does for a page of SKIP_CHECK_MIN_ITEMS items or more after the first
    # read), sending their ids to Postgres before any item is judged.
    stored_check = patch.object(poll, "SKIP_CHECK_MIN_ITEMS", 1 if n % 2 else 10**9)

    # First poll: the healthy and future victims are on the shelf; each hostile is judged.
    first = _poll(stack, merchant)
    rows = shared.rows(merchant)
    labels = hipoink.labels(store)
    for item in [*healthy, *victims]:
        assert _shown(labels[item["sku"]]) == _record(item)
    refused = 0
    invalid = 0
    unread: set[str] = set()  # ids that cannot be stored, or that Clover does not list
    for item, bad in zip(hostile, scenario.hostile, strict=True):
        served = clover.item(merchant, item["id"])
        assert served is not None
        if served["modifiedTime"] > clover.clock_ms() - clover.visibility_lag_ms:
            assert served["id"] not in rows  # stamped too far ahead: Clover does not list it
            unread.add(item["id"])
        elif not _ID.fullmatch(item["id"]):
            assert item["id"] not in rows  # counted (below) and logged, never stored
            unread.add(item["id"])
            invalid += 1
        else:
            refused += _check_hostile(labels, served, bad, rows, None)
    assert first["invalid_items"] == refused + invalid
    assert len(rows) == len(healthy) + len(victims) + len(hostile) - len(unread)

    # Between polls: healthy prices change, the hostile are fixed, the victims go bad.
    before = {item["id"]: _shown(labels[item["sku"]]) for item in victims}
    for item in healthy:
        item.update(clover.update_item(merchant, item["id"], price=item["price"] + 1000))
    fixed = []
    for k, item in enumerate(hostile):
        if item["id"] not in unread and item.get("deleted") is not True:  # not undeletable
            repaired = _healthy(item["id"], 700 + k)
            repaired |= {f: None for f in READ_FIELDS if f not in repaired}
            fixed.append(clover.update_item(merchant, item["id"], **_without_id(repaired)))
    spoiled = []
    for item, bad in zip(victims, scenario.victims, strict=True):
        update = _apply({}, bad, for_update=True)
        spoiled.append(clover.update_item(merchant, item["id"], **update))

    with stored_check:
        second = _poll(stack, merchant)
    rows = shared.rows(merchant)
    labels = hipoink.labels(store)
    for item in healthy:
        assert _shown(labels[item["sku"]]) == _record(item), "a healthy change was held back"
    for item in fixed:
        assert rows[item["id"]]["validation_error"] is None
        assert rows[item["id"]]["refused_at"] is None
        assert _shown(labels[item["sku"]]) == _record(item), "a fixed item was not picked up"
    refused = 0
    for item, bad in zip(spoiled, scenario.victims, strict=True):
        refused += _check_hostile(labels, item, bad, rows, before[item["id"]])
    # The overlap window re-reads the bad ids too (unless stamped long ago).
    assert refused <= second["invalid_items"] <= refused + invalid
    known = {row["source_id"] for row in rows.values()}
    assert {label["pi"] for label in labels.values()} <= known


def _without_id(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "id"}


def _merchant(merchant_id: str, store: str) -> Merchant:
    return Merchant(merchant_id=merchant_id, store_code=store)
