"""What outside systems may send, as hypothesis strategies, and the check that text kept
of it is storable: shared by the tests of the clients that read it."""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HOSTILE_TEXT = st.text(st.characters(exclude_categories=()))
"""Any text, lone surrogates, NUL, controls and noncharacters included."""

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
"""Any value Python's ``json`` reads from a server's answer (NaN and huge integers too)."""

_NOT_ONE_STORABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def assert_one_storable_line(text: str) -> None:
    """``text`` is one non-empty trimmed line Postgres can store: no NUL, control or line
    break, no lone surrogate."""
    assert text
    assert text == text.strip()
    assert not _NOT_ONE_STORABLE_LINE.search(text)


def model_settings(explore_env: str, examples: int, steps: int, *allowed: HealthCheck) -> settings:
    """A model test's settings (the state machines over the real stack): ``examples`` fixed
    examples of ``steps`` steps that every run replays the same (CI stays reproducible and
    within its time); ``explore_env=N`` in the environment explores N random examples
    instead, shrinking a failure (nothing saved between runs either way)."""
    explore = int(os.environ.get(explore_env, "0"))
    return settings(
        max_examples=explore or examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        derandomize=not explore,
        suppress_health_check=list(allowed),
    )
