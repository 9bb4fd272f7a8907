"""``esl-sync sweep allow-deletions MID``: a merchant that really deleted more of its catalog
than ``CLOVER_MAX_DELETE_FRACTION`` gets its labels off the shelf, once the operator says so.
Real moto, Postgres, the Clover and Hipoink simulators and the CLI.

Before the command, every sweep is refused (labels kept, ``SweepRefused`` each time): the
runbook's ``resync`` only made the next poll a first read, refused again. The command lets
the next sweep past the fraction, each suspect still confirmed by Clover's single-item read
(an item missing from a partial listing but still there stays), once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime

import pytest

from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.sync import poll as poll_module
from esl_sync.sync.sweep import deletions_allowed
from tests.integration.test_poll import emf_metrics, items_without_times, poll_lines, sims

MID = "MALLOWDEL001"
STORE = "STORE-AD"


@pytest.fixture
def sweeping_stack(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStack]:
    """A local stack whose every poll sweeps (``CLOVER_CLEANUP_EVERY_N_POLLS=1``)."""
    monkeypatch.setenv("DATABASE_URL", make_database())
    with ExitStack() as running:
        yield running.enter_context(LocalStack(settings={"CLOVER_CLEANUP_EVERY_N_POLLS": "1"}))


def last_sweep(stack: LocalStack) -> str:
    """What the merchant's last sweep did (a poll that found another running has none)."""
    return [line["sweep"] for line in poll_lines(stack, MID) if line.get("sweep")][-1]


def refused_count(stack: LocalStack) -> int:
    return len(emf_metrics(stack, "SweepRefused"))


def test_a_real_mass_deletion_leaves_the_shelf_once_allowed_and_the_permission_is_used_once(
    sweeping_stack: LocalStack,
) -> None:
    stack = sweeping_stack
    clover, hipoink = sims(stack)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(20))
    stack.run_cycle()
    items = clover.items(MID)
    assert len(hipoink.labels(STORE)) == 20

    # The store deletes 40 % of its catalog; Clover's listing also misses one item that
    # still exists (a partial listing).
    deleted, kept = items[:8], items[10]
    for item in deleted:
        clover.delete_item(MID, item["id"])
    clover.hide_from_listing = {kept["id"]}
    stack.run_cycle()
    assert last_sweep(stack) == "refused: 9 of 20 missing"
    assert refused_count(stack) == 1
    assert len(hipoink.labels(STORE)) == 20  # every label kept

    # The old runbook's answer, resync, makes the next poll a first read that sweeps, and
    # is refused again: the labels never leave the shelf.
    stack.cli("resync", MID)
    stack.drain("PollQueue", "poller")  # the poll resync queued, alone (a cycle's own poll
    # beside it sweeps, and is refused, too, or finds the lease busy: one or two refusals)
    assert last_sweep(stack) == "refused: 9 of 20 missing"
    assert refused_count(stack) == 2
    assert len(hipoink.labels(STORE)) == 20

    out = stack.cli("sweep", "allow-deletions", MID)
    assert out == (
        f"{MID}: its next sweep may remove more than CLOVER_MAX_DELETE_FRACTION, once; each"
        f" item only after Clover confirms it deleted\npoll of {MID} queued\n"
    )
    allowed = runtime.state_store().load(MID)
    assert deletions_allowed(allowed) is not None
    [row] = json.loads(stack.cli("status", "--json"))
    # the time it was allowed
    assert datetime.fromisoformat(row["deletions_allowed"]) == deletions_allowed(allowed)

    result = stack.drain("PollQueue", "poller")  # the poll the command queued
    assert result.failures == 0
    stack.drain("LabelQueue", "hipoink_sender", batch_size=10)

    assert last_sweep(stack) == ("removed 8 of 9 missing, 9 confirmed (deletions allowed)")
    shelf = hipoink.labels(STORE)
    assert all(item["sku"] not in shelf for item in deleted)
    assert kept["sku"] in shelf  # missing from the listing, but Clover's read found it
    assert len(shelf) == 12
    assert refused_count(stack) == 2
    assert deletions_allowed(runtime.state_store().load(MID)) is None  # used up

    # Used once: another mass deletion is judged by the fraction again.
    for item in items[11:16]:
        clover.delete_item(MID, item["id"])
    stack.run_cycle()
    assert last_sweep(stack) == "refused: 6 of 12 missing"
    assert refused_count(stack) == 3
    assert len(hipoink.labels(STORE)) == 12


def test_an_allowed_sweep_confirms_a_bounded_number_per_poll_and_keeps_the_permission(
    sweeping_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = sweeping_stack
    clover, hipoink = sims(stack)
    monkeypatch.setattr(poll_module, "MAX_CONFIRMATIONS_PER_POLL", 3)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(10))
    stack.run_cycle()
    for item in clover.items(MID)[:7]:
        clover.delete_item(MID, item["id"])
    stack.cli("sweep", "allow-deletions", MID)
    stack.drain("PollQueue", "poller")
    assert last_sweep(stack) == ("removed 3 of 7 missing, 3 confirmed (deletions allowed)")
    assert deletions_allowed(runtime.state_store().load(MID)) is not None  # kept for the rest

    stack.run_cycle()
    assert last_sweep(stack) == ("removed 3 of 4 missing, 3 confirmed (deletions allowed)")
    stack.run_cycle()
    assert last_sweep(stack) == ("removed 1 of 1 missing, 1 confirmed (deletions allowed)")
    assert deletions_allowed(runtime.state_store().load(MID)) is None
    stack.run_cycle()
    assert last_sweep(stack) == "nothing missing"
    assert len(hipoink.labels(STORE)) == 3
    assert refused_count(stack) == 0


def test_an_unknown_merchant_is_named_exit_2_and_nothing_is_written(stack: LocalStack) -> None:
    code, out, err = stack.run_cli("sweep", "allow-deletions", "MNOSUCH00001")
    assert (code, out, err) == (2, "", "esl-sync: unknown merchant 'MNOSUCH00001'\n")
    assert runtime.state_store().load("MNOSUCH00001").version == 0
    assert stack.queue_depths()["PollQueue"] == 0


def test_a_permission_under_way_can_be_withdrawn(
    sweeping_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first suspects (in order) still exist, missing from a partial listing: the
    first poll confirms them and keeps the permission for the rest (its sweep goes on).
    `withdraw-deletions` ends it (given by mistake, or its polls failing on a suspect's
    read): the next sweep is refused again (reading no item alone)."""
    stack = sweeping_stack
    clover, hipoink = sims(stack)
    monkeypatch.setattr(poll_module, "MAX_CONFIRMATIONS_PER_POLL", 3)
    stack.add_merchant(MID, "tok", STORE, items=items_without_times(10))
    stack.run_cycle()
    items = sorted(clover.items(MID), key=lambda item: item["id"])
    clover.hide_from_listing = {item["id"] for item in items[:3]}  # still in Clover
    for item in items[-2:]:
        clover.delete_item(MID, item["id"])
    stack.cli("sweep", "allow-deletions", MID)
    stack.drain("PollQueue", "poller")  # the poll the command queued
    assert last_sweep(stack) == "removed 0 of 5 missing, 3 confirmed (deletions allowed)"
    assert deletions_allowed(runtime.state_store().load(MID)) is not None  # under way

    out = stack.cli("sweep", "withdraw-deletions", MID)
    assert out == (
        f"{MID}: deletions withdrawn; its next sweep is judged by CLOVER_MAX_DELETE_FRACTION\n"
    )
    assert deletions_allowed(runtime.state_store().load(MID)) is None
    assert json.loads(stack.cli("status", "--json"))[0]["deletions_allowed"] is None
    stack.run_cycle()
    assert last_sweep(stack) == "refused: 5 of 10 missing"
    assert len(hipoink.labels(STORE)) == 10
    assert stack.cli("sweep", "withdraw-deletions", MID) == (
        f"{MID}: no permission to delete waits; nothing written\n"
    )
    code, out, err = stack.run_cli("sweep", "withdraw-deletions", "MNOSUCH00001")
    assert (code, out, err) == (2, "", "esl-sync: unknown merchant 'MNOSUCH00001'\n")
    assert runtime.state_store().load("MNOSUCH00001").version == 0
