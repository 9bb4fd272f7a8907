"""A command's versioned write of a state item, retried while polls win."""

from __future__ import annotations

from dataclasses import replace

import pytest

from esl_sync.records import MerchantState, StaleStateError
from esl_sync.state_rewrite import SAVE_TRIES, rewrite_state
from tests.fakes import MemoryStates


class PollsBetween:
    """Merchant states (:class:`MemoryStates`) where a poll writes the state between each
    of the first ``polls`` loads and their saves."""

    def __init__(self, state: MerchantState, polls: int) -> None:
        self.memory = MemoryStates(state)
        self.states = self.memory.states
        self.polls, self.loads = polls, 0

    def load(self, merchant_id: str) -> MerchantState:
        self.loads += 1
        loaded = self.memory.load(merchant_id)
        if self.polls:
            self.polls -= 1
            polled = self.states[merchant_id]
            self.states[merchant_id] = replace(polled, version=polled.version + 1)
        return loaded

    def save(self, state: MerchantState) -> None:
        self.memory.save(state)


def _done(state: MerchantState) -> bool:
    state.sweep_request_done = "asked"
    return True


@pytest.mark.parametrize("polls", [0, 1, SAVE_TRIES - 1])
def test_the_change_is_saved_once_the_polls_let_it(polls: int) -> None:
    states = PollsBetween(MerchantState("M1", version=3), polls)
    saved = rewrite_state(states, "M1", _done)
    assert saved is not None
    assert (saved.sweep_request_done, saved.version) == ("asked", 4 + polls)
    assert states.states["M1"] == saved
    assert states.loads == polls + 1


def test_a_change_that_finds_nothing_to_write_saves_nothing() -> None:
    states = PollsBetween(MerchantState("M1", version=3), 0)
    assert rewrite_state(states, "M1", lambda state: False) is None
    assert states.states["M1"] == MerchantState("M1", version=3)


def test_a_write_refused_at_every_try_names_the_merchant_and_what_to_do() -> None:
    states = PollsBetween(MerchantState("M1"), SAVE_TRIES)
    with pytest.raises(StaleStateError) as refused:
        rewrite_state(states, "M1", _done)
    assert str(refused.value) == (
        f"merchant M1: its state changed on each of {SAVE_TRIES} tries; run the command again"
    )
    assert states.loads == SAVE_TRIES
    assert states.states["M1"].sweep_request_done is None


def test_the_command_tries_five_times_before_it_gives_up() -> None:
    """Five: each poll writes the state once a poll interval, so a command meets at most a
    poll or two; the number is the operator's wait, and the message says it."""
    assert rewrite_state(PollsBetween(MerchantState("M1"), 4), "M1", _done) is not None
    states = PollsBetween(MerchantState("M1"), 5)
    with pytest.raises(StaleStateError, match="on each of 5 tries"):
        rewrite_state(states, "M1", _done)
    assert states.loads == 5
