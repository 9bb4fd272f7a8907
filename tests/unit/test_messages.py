"""The queue messages without pydantic read and write what the pydantic models did.

The models they replace are kept here as the oracle (the queues' wire format of before):
old code still runs during a deploy and old jobs come back from the dead-letter queues, so
what the old models wrote must parse to the same values, what the new code writes must
validate in the old models to the same values, and a hostile body is refused by both or
by neither, naming the same field."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from esl_sync.events import LabelJobRecord, RefusedLabelMessage
from esl_sync.job_json import text_records_json
from esl_sync.lax import MAX_DEPTH, MAX_INT_DIGITS
from esl_sync.messages import (
    LabelJob,
    LabelVerify,
    MessageRefused,
    PollReason,
    PollRequest,
    label_message,
)

REPO = Path(__file__).resolve().parents[2]


class OldPollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    merchant_id: str = Field(min_length=1, max_length=64)
    reason: PollReason = "schedule"
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("merchant_id")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        """A narrowing of the model of before, on purpose: it took a ``merchant_id``
        holding NUL, whose poll then failed in Postgres on every receive until the dead-
        letter queue (tests/integration/test_poller_refused.py)."""
        if "\x00" in value:
            raise ValueError("holds NUL")
        return value

    @field_validator("requested_at", mode="before")
    @classmethod
    def _no_unix_timestamp(cls, value: object) -> object:
        """The other narrowing, on purpose: pydantic took a number or numeric text here as
        a Unix timestamp (``"20261128"``, which ``iso_text`` draws now and then, read as
        1970-08-23); no writer of the poll queue wrote one, and the new reader refuses it
        (test_requested_at_as_a_unix_timestamp_is_refused_though_pydantic_took_it). Without
        this the property tests below failed on the rare draw of such text."""
        numeric = isinstance(value, str) and UNIX_TEXT.fullmatch(value) is not None
        if numeric or (isinstance(value, int | float) and not isinstance(value, bool)):
            raise ValueError("a Unix timestamp")
        return value


UNIX_TEXT = re.compile(r"[0-9]+(\.[0-9]*)?")
"""Numeric text of the forms ``iso_text`` can draw (digits, a point, digits), which pydantic
read as a Unix timestamp."""


class OldLabelJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    merchant_id: str = Field(min_length=1)
    store_code: str = Field(min_length=1)
    upserts: list[dict[str, Any]] = Field(default_factory=list)
    deletes: list[str] = Field(default_factory=list)
    oldest_change_ms: int | None = None
    version: int | None = Field(None, ge=0, le=2**63 - 1, strict=True)

    @field_validator("merchant_id", "store_code")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        """The narrowing of the job's model, on purpose, as the poll request's: a job whose
        merchant or store held NUL failed in Postgres on every receive until the dead-letter
        queue (tests/integration/test_sender_refused.py)."""
        if "\x00" in value:
            raise ValueError("holds NUL")
        return value


Outcome = tuple[str, Any]


def _old(model: type[BaseModel], text: str | bytes) -> Outcome:
    try:
        return "ok", model.model_validate_json(text).model_dump()
    except ValidationError as error:
        return "refused", {str(e["loc"][0]) if e["loc"] else None for e in error.errors()}


def _new(cls: type[PollRequest] | type[LabelJob], text: str | bytes) -> Outcome:
    try:
        message = cls.parse(text)
    except MessageRefused as refused:
        text, field = str(refused), refused.field
    else:
        return "ok", {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    assert "\n" not in text
    assert len(text) < 200
    return "refused", field


def assert_same(old: Outcome, new: Outcome, *, given: str | bytes = "requested_at") -> None:
    """Both accepted to equal values (``requested_at``'s default, the clock, only if the
    body ``given`` holds one), or both refused naming the same field."""
    assert old[0] == new[0], (old, new)
    if old[0] == "refused":
        assert new[1] in old[1], (old, new)  # pydantic names every bad field, we the first
        return
    olds, news = dict(old[1]), dict(new[1])
    if "requested_at" in olds and "requested_at" not in str(given):
        del olds["requested_at"], news["requested_at"]
    assert _canonical(olds) == _canonical(news)


def _canonical(value: Any) -> Any:
    """Comparable: NaN equal to itself, a datetime with its offset (equal instants may
    differ in offset)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, datetime):
        return (value, value.utcoffset())
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


# -- strategies -------------------------------------------------------------------------------

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "\x00", "M\x00", "\ud800", "a" * 64, "a" * 65, "é" * 64, "😀" * 65]),
    st.text(st.characters(codec="utf-8"), min_size=60, max_size=70),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    hostile_text,
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    )


json_values = st.recursive(json_scalars, _containers, max_leaves=8)
zones = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(min_value=-(24 * 60) + 1, max_value=24 * 60 - 1).map(
        lambda m: timezone(timedelta(minutes=m))
    ),
)
datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones
)
iso_text = st.builds(
    lambda d, sep, t, frac, zone: f"{d}{sep}{t}{frac}{zone}",
    st.sampled_from(
        [
            "2026-11-28",
            "2024-02-29",
            "2023-02-29",
            "0000-01-01",
            "9999-12-31",
            "2026-13-01",
            "2026-1-28",
            "20261128",
            "2026-11-00",
        ]
    ),
    st.sampled_from(["T", "t", " ", "_", "X", "", "  "]),
    st.sampled_from(
        [
            "12:00",
            "12:00:00",
            "23:59:59",
            "24:00:00",
            "12:60:00",
            "12:00:60",
            "1:00:00",
            "12",
            "",
            "00:00:00",
        ]
    ),
    st.sampled_from(["", ".", ".5", ",5", ".1234567", "." + "9" * 30, ".000000", ".x"]),
    st.sampled_from(
        [
            "",
            "Z",
            "z",
            "+00:00",
            "-00:00",
            "+0530",
            "+05:30",
            "-23:59",
            "+24:00",
            "+05:60",
            "+05",
            "\u221205:00",
            " Z",
            "Zz",
            "UTC",
            "+05:30:00",
        ]
    ),
)
lax_int_text = st.text(alphabet="0123456789_+-. \t\n\x0b\x1c\x85\xa0\u3000eEx", max_size=12)


def _writable(value: Any) -> bool:
    """No infinity, no lone surrogate: what neither model would write."""
    text = json.dumps(value, ensure_ascii=False)
    return "Infinity" not in text and not re.search("[\ud800-\udfff]", text)


def test_a_label_job_with_an_infinite_number_is_not_written() -> None:
    """pydantic wrote ``null`` for it, a value the job did not hold; no record the poller
    builds holds a number at all (Hipoink records are text)."""
    job = LabelJob(merchant_id="M", store_code="S", upserts=[{"pp": float("inf")}])
    with pytest.raises(ValueError, match="JSON"):
        job.to_json()


def poll_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "merchant_id": st.one_of(hostile_text, json_scalars),
            "reason": st.one_of(
                st.sampled_from(["schedule", "webhook", "manual", "install", "Manual", " manual"]),
                json_scalars,
            ),
            "requested_at": st.one_of(iso_text, datetimes.map(lambda d: d.isoformat())),
            "extra": json_scalars,
        },
    )


def job_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "merchant_id": st.one_of(hostile_text, json_scalars),
            "store_code": st.one_of(hostile_text, json_scalars),
            "upserts": st.one_of(
                st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=3),
                json_values,
            ),
            "deletes": st.one_of(st.lists(hostile_text, max_size=3), json_values),
            "oldest_change_ms": st.one_of(json_scalars, lax_int_text, st.floats()),
            "version": st.one_of(
                json_scalars, st.sampled_from([0, -1, 2**63 - 1, 2**63, 1.0, "7", True])
            ),
            "Version": json_scalars,
        },
    )


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


# -- the wire, both ways ----------------------------------------------------------------------


@given(
    merchant_id=st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=64
    ),
    reason=st.sampled_from(["schedule", "webhook", "manual", "install"]),
    requested_at=datetimes,
)
def test_a_poll_request_written_by_either_reads_the_same_in_both(
    merchant_id: str, reason: PollReason, requested_at: datetime
) -> None:
    old = OldPollRequest(merchant_id=merchant_id, reason=reason, requested_at=requested_at)
    new = PollRequest(merchant_id=merchant_id, reason=reason, requested_at=requested_at)
    assert new.to_json() == old.model_dump_json()  # the same bytes on the queue
    assert_same(_old(OldPollRequest, old.model_dump_json()), _new(PollRequest, new.to_json()))
    assert PollRequest.parse(old.model_dump_json()) == new


@given(  # with NUL in the merchant or store both refuse (the narrowing; parsed bodies below)
    merchant_id=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    store_code=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    upserts=st.lists(
        st.dictionaries(
            st.text(st.characters(codec="utf-8")),
            st.text(st.characters(codec="utf-8")) | st.none() | st.integers(),
        ),
        max_size=4,
    ),
    deletes=st.lists(st.text(st.characters(codec="utf-8")), max_size=4),
    oldest_change_ms=st.none() | st.integers(),
    version=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)
def test_a_label_job_written_by_either_reads_the_same_in_both(**values: Any) -> None:
    old, new = OldLabelJob(**values), LabelJob(**values)
    assert new.to_json() == old.model_dump_json()
    assert_same(_old(OldLabelJob, new.to_json()), _new(LabelJob, old.model_dump_json()))
    assert LabelJob.parse(old.model_dump_json()) == new


_any_text = st.text(st.characters(exclude_categories=()))  # lone surrogates, NUL, DEL too


@given(
    upserts=st.lists(st.dictionaries(_any_text, _any_text), max_size=4),
    deletes=st.lists(st.text(), max_size=2),  # a code with a lone surrogate: refused when built
    oldest_change_ms=st.none() | st.integers(),
    version=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)
@example(upserts=[{"pc": "1", "pn": "a\ud800"}], deletes=[], oldest_change_ms=None, version=1)
@example(upserts=[], deletes=[], oldest_change_ms=2**64, version=None)
def test_a_job_of_text_records_is_written_as_json_writes_it_or_refused_the_same(
    **values: Any,
) -> None:
    """A job whose records hold only text (every job a poll makes) is written by orjson
    (:mod:`esl_sync.job_json`, issue 15): byte for byte ``json``'s text, and a lone
    surrogate refused by name as before (an integer past 64 bits: ``json``'s text)."""
    job = LabelJob(merchant_id="M", store_code="S", **values)
    fields = {"merchant_id": "M", "store_code": "S", **values}
    fields = {name: fields[name] for name in [f.name for f in dataclasses.fields(job)]}
    expected = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if re.search("[\ud800-\udfff]", expected):
        with pytest.raises(MessageRefused, match="not valid Unicode text"):
            job.to_json()
        assert text_records_json(fields, job.upserts) is None
    else:
        assert job.to_json() == expected
        if abs(values["oldest_change_ms"] or 0) < 2**63:  # orjson wrote it
            assert text_records_json(fields, job.upserts) == expected


def test_a_job_with_a_record_not_all_text_is_left_to_json() -> None:
    """A float (orjson spells some otherwise), an integer, None, a nested value, or a record
    that is a dict subclass: ``json`` writes the job, as before."""
    for record in [{"pp": 1e-05}, {"pp": 5}, {"pp": None}, {"pp": ["1"]}, OrderedDict(pp="1")]:
        job = LabelJob(merchant_id="M", store_code="S", upserts=[{"pc": "1"}, record])
        assert text_records_json({"upserts": job.upserts}, job.upserts) is None
        assert job.to_json() == json.dumps(
            dataclasses.asdict(job), ensure_ascii=False, separators=(",", ":")
        )


@given(
    upserts=st.lists(
        st.dictionaries(st.text(max_size=3), json_values.filter(_writable)), max_size=3
    )
)
def test_floats_in_a_label_jobs_records_read_back_the_same_in_both(
    upserts: list[dict[str, Any]],
) -> None:
    """pydantic spells some floats otherwise (``1e-7`` for ``1e-07``): the values agree.
    A record that holds no number (what the poller sends) is written byte for byte the
    same (the test above)."""
    new = LabelJob(merchant_id="M", store_code="S", upserts=upserts)
    assert OldLabelJob.model_validate_json(new.to_json()).upserts == upserts
    old = OldLabelJob(merchant_id="M", store_code="S", upserts=upserts)
    assert LabelJob.parse(old.model_dump_json()).upserts == upserts


def test_the_sample_events_and_the_forms_pydantic_wrote_read_the_same() -> None:
    for moment in (
        "2026-11-28T12:00:00Z",
        "2026-11-28T12:00:00+00:00",
        "2026-11-28T12:00:00.123456Z",
        "2026-11-28T12:00:00.5-05:30",
    ):
        body = f'{{"merchant_id": "M", "reason": "webhook", "requested_at": "{moment}"}}'
        assert_same(_old(OldPollRequest, body), _new(PollRequest, body))
    for name, cls, old_model in (
        ("poller", PollRequest, OldPollRequest),
        ("hipoink_sender", LabelJob, OldLabelJob),
    ):
        event = json.loads((REPO / "events" / f"{name}.json").read_text())
        body = event["Records"][0]["body"]
        assert_same(_old(old_model, body), _new(cls, body))


# -- hostile bodies ---------------------------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=poll_bodies())
@example(body={"merchant_id": "M", "merchant_id ": "N"})
def test_a_hostile_poll_request_is_valid_for_both_or_neither(body: dict[str, Any]) -> None:
    text = _json(body)
    assert_same(_old(OldPollRequest, text), _new(PollRequest, text), given=text)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=job_bodies())
@example(body={"merchant_id": "M", "store_code": "S", "oldest_change_ms": -(2.0**63)})
@example(body={"merchant_id": "M", "store_code": "S", "oldest_change_ms": 2.0**63 - 1024})
@example(body={"merchant_id": "M", "store_code": "S", "oldest_change_ms": "\x1c1"})
@example(body={"merchant_id": "M", "store_code": "S", "upserts": [{"a": float("nan")}]})
def test_a_hostile_label_job_is_valid_for_both_or_neither(body: dict[str, Any]) -> None:
    assert_same(_old(OldLabelJob, _json(body)), _new(LabelJob, _json(body)))


@given(moment=iso_text)
@example(moment="2026112812")  # numeric: the narrowing (OldPollRequest._no_unix_timestamp)
@example(moment="20261128.5")
def test_requested_at_reads_every_iso_form_as_pydantic_did(moment: str) -> None:
    body = _json({"merchant_id": "M", "requested_at": moment})
    assert_same(_old(OldPollRequest, body), _new(PollRequest, body))


@given(text=lax_int_text)
@example(text="9" * (MAX_INT_DIGITS + 1))
@example(text="9" * MAX_INT_DIGITS)
def test_oldest_change_ms_reads_integer_text_as_pydantic_did(text: str) -> None:
    body = _json({"merchant_id": "M", "store_code": "S", "oldest_change_ms": text})
    old, new = _old(OldLabelJob, body), _new(LabelJob, body)
    if AFTER_ZEROS.match(text):  # the narrowing below
        assert new == ("refused", "oldest_change_ms")
        return
    assert_same(old, new)


# A sign or a run of underscores after leading zeros (esl_sync.lax.integer_text).
AFTER_ZEROS = re.compile("[\\s\x85\xa0\u3000]*0[0_]*([-+]|_(?=_))")


@settings(max_examples=300)
@given(text=st.one_of(st.text(max_size=60), st.binary(max_size=60)))
@example(text='{"merchant_id":"M"} x')
@example(text='\ufeff{"merchant_id":"M"}')
@example(text=b'{"merchant_id":"\xff"}')
@example(text='{"merchant_id":"\ud800"}')
@example(text='{"merchant_id":"\\ud800"}')
@example(text='{"merchant_id":"\\\\ud800"}')
@example(text='{"merchant_id":"\\ud83d\\ude00"}')
@example(text='{"merchant_id":"M","requested_at":NaN}')
@example(text=' {"merchant_id":"M"}\n')
@example(text='{"merchant_id":"M"}\x0c')
@example(text='{"merchant_id":"M","merchant_id":""}')
def test_any_text_is_refused_by_both_or_neither(text: str | bytes) -> None:
    assert_same(_old(OldPollRequest, text), _new(PollRequest, text), given=text)
    job = text if isinstance(text, str) else text.decode("latin-1")
    assert_same(_old(OldLabelJob, job), _new(LabelJob, job))


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 5000])
@pytest.mark.parametrize("innermost", ["[]", "{}", "1", '"x"', "[1]", '{"a":null}'])
@pytest.mark.parametrize("container", ["[]", '{"a":}'])
def test_nesting_is_refused_where_pydantic_refused_it(
    depth: int, innermost: str, container: str
) -> None:
    """``depth`` is the innermost value's, counted from the body's 1 (``MAX_DEPTH``, from 0,
    counts the containers around a value): the body, ``upserts``, a record, ``"a"``: 4."""
    opening, closing = ("[", "]") if container == "[]" else ('{"a":', "}")
    inner = opening * (depth - 4) + innermost + closing * (depth - 4)
    body = '{"merchant_id":"M","store_code":"S","upserts":[{"a":' + inner + "}]}"
    assert_same(_old(OldLabelJob, body), _new(LabelJob, body))


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS, MAX_INT_DIGITS + 1])
def test_integers_are_as_long_as_pydantic_allowed(digits: int) -> None:
    for where in ('"oldest_change_ms":{}', '"upserts":[{{"a":-{}}}]'):
        body = '{"merchant_id":"M","store_code":"S",' + where.format("9" * digits) + "}"
        assert_same(_old(OldLabelJob, body), _new(LabelJob, body))


def test_a_refusal_names_the_field_in_one_short_line_and_never_the_value() -> None:
    huge = "x" * 2**20
    with pytest.raises(MessageRefused, match=r"^poll request: merchant_id: longer than 64") as e:
        PollRequest.parse(json.dumps({"merchant_id": huge}))
    assert e.value.field == "merchant_id"
    assert len(str(e.value)) < 80
    with pytest.raises(MessageRefused) as e:
        LabelJob.parse(json.dumps({"merchant_id": "M", "store_code": "S", huge: 1}))
    assert e.value.field == huge
    assert len(str(e.value)) < 120
    assert "x" * 50 not in str(e.value)
    with pytest.raises(MessageRefused, match=r"^label job: version: not an integer$"):
        LabelJob.parse('{"merchant_id":"M","store_code":"S","version":"7"}')
    with pytest.raises(MessageRefused, match=r"^poll request: not valid JSON$"):
        PollRequest.parse('{"merchant_id": "' + huge)
    with pytest.raises(MessageRefused, match=r"^poll request: '\\x1b\[31m': not a field"):
        PollRequest.parse('{"merchant_id": "M", "\\u001b[31m": 1}')


def test_requested_at_as_a_unix_timestamp_is_refused_though_pydantic_took_it() -> None:
    """The one narrowing, on purpose: no writer of the poll queue ever wrote a number here
    (every one wrote pydantic's ISO text) and nothing reads the field."""
    for stamp in ("1700000000", '"1700000000"', "1700000000.5", "-1"):
        body = f'{{"merchant_id":"M","requested_at":{stamp}}}'
        assert TypeAdapter(datetime).validate_json(stamp) is not None  # pydantic took it
        assert _new(PollRequest, body) == ("refused", "requested_at")
        assert _old(OldPollRequest, body) == ("refused", {"requested_at"})  # the oracle too


def test_a_sign_after_leading_zeros_is_refused_though_pydantic_took_it() -> None:
    """The other narrowing: pydantic read ``"0-9"`` as -9 (it drops leading zeros before it
    looks for a sign), ``"0__9"`` as 9; no writer ever wrote ``oldest_change_ms`` as text."""
    for text in ("0-9", "00-0", "0_0-0", "0-0.0", "0__9", "00__0"):
        body = f'{{"merchant_id":"M","store_code":"S","oldest_change_ms":"{text}"}}'
        assert _old(OldLabelJob, body)[0] == "ok"
        assert _new(LabelJob, body) == ("refused", "oldest_change_ms")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"merchant_id": ""}, "merchant_id"),
        ({"merchant_id": "a" * 65}, "merchant_id"),
        ({"merchant_id": b"M"}, "merchant_id"),
        ({"merchant_id": "M\ud800"}, "merchant_id"),
        ({"merchant_id": "M", "reason": "Manual"}, "reason"),
        ({"merchant_id": "M", "requested_at": "2026-11-28T12:00:00Z"}, "requested_at"),
    ],
)
def test_a_poll_request_built_from_wrong_values_names_the_field(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(MessageRefused) as refused:
        PollRequest(**values)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"store_code": ""}, "store_code"),
        ({"upserts": {}}, "upserts"),
        ({"upserts": [("a", 1)]}, "upserts"),
        ({"upserts": [{1: "a"}]}, "upserts"),
        ({"deletes": "ab"}, "deletes"),
        ({"deletes": ["a", 1]}, "deletes"),
        ({"oldest_change_ms": "5"}, "oldest_change_ms"),
        ({"version": True}, "version"),
        ({"version": 5.0}, "version"),
        ({"version": -1}, "version"),
        ({"version": 2**63}, "version"),
    ],
)
def test_a_label_job_built_from_wrong_values_names_the_field(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(MessageRefused) as refused:
        LabelJob(**{"merchant_id": "M", "store_code": "S", **values})
    assert refused.value.field == field


def test_messages_are_frozen_and_keyword_only_with_the_old_defaults() -> None:
    request = PollRequest(merchant_id="M")
    assert request.reason == "schedule"
    assert request.requested_at.tzinfo is UTC
    assert datetime.now(UTC) - request.requested_at < timedelta(minutes=1)
    job = LabelJob(merchant_id="M", store_code="S", deletes=("a", "b"))
    assert (job.upserts, job.deletes, job.oldest_change_ms, job.version) == (
        [],
        ["a", "b"],
        None,
        None,
    )
    assert job.size == 2
    with pytest.raises(AttributeError):
        job.version = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        PollRequest("M")  # type: ignore[misc]


WATCH = """
import builtins, sys
importers = set()
_import = builtins.__import__

def _watching(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] == "pydantic":
        importers.add((globals or {}).get("__name__", "?"))
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = _watching
import json
import esl_sync.messages
alone = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
import esl_sync.sync.poll_batch
import esl_sync.events  # the control: it does import pydantic
print(json.dumps([alone, sorted(importers)]))
"""


def test_the_messages_and_the_poll_batch_do_not_import_pydantic() -> None:
    """``esl_sync.messages`` loads none of it; ``esl_sync.sync.poll_batch`` imports none of it
    itself (what its neighbours still load is their own part of issue 15)."""
    answer = subprocess.run(
        [sys.executable, "-c", WATCH], capture_output=True, text=True, check=True
    ).stdout
    alone, importers = json.loads(answer)
    assert alone == []
    assert "esl_sync.messages" not in importers
    assert "esl_sync.sync.poll_batch" not in importers
    assert "esl_sync.events" in importers  # the control: the watch sees an importer


@given(
    upserts=st.lists(st.sampled_from(["A", "B", "C"]), max_size=12),
    deletes=st.lists(st.sampled_from(["D", "E"]), max_size=12),
)
def test_a_jobs_halves_applied_in_turn_do_what_it_does(
    upserts: list[str], deletes: list[str]
) -> None:
    """Halved (a job past a queue message's limit): every upsert before every delete, each
    in its order, the version and oldest change kept; neither half empty when it had two."""
    records = [{"pc": pc, "pn": f"n{i}"} for i, pc in enumerate(upserts)]
    job = LabelJob(
        merchant_id="M1",
        store_code="S1",
        upserts=records,
        deletes=deletes,
        version=7,
        oldest_change_ms=5,
    )
    first, second = job.halves()
    assert first.upserts + second.upserts == records
    assert first.deletes + second.deletes == deletes
    assert not (first.deletes and second.upserts)  # deletes stay after every upsert
    assert abs(first.size - second.size) <= 1
    if job.size >= 2:
        assert first.size > 0
        assert second.size > 0
    for half in (first, second):
        assert (half.merchant_id, half.store_code, half.version, half.oldest_change_ms) == (
            "M1",
            "S1",
            7,
            5,
        )


# -- the label queue's verify requests ----------------------------------------------------------


def verify_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """A verify request, a job, or a mix of both, any field hostile."""
    return st.fixed_dictionaries(
        {},
        optional={
            "verify": st.one_of(st.just("labels"), hostile_text, json_scalars),
            "merchant_id": st.one_of(st.just("MVERIFY00001"), hostile_text, json_scalars),
            "store_code": st.one_of(st.just("STORE-1"), hostile_text, json_scalars),
            "reason": st.one_of(st.sampled_from(["manual", "sweep"]), hostile_text, json_scalars),
            "upserts": st.one_of(st.just([]), json_values),
            "version": json_scalars,
        },
    )


@given(body=verify_bodies())
def test_a_hostile_label_queue_message_is_a_job_a_verify_or_a_named_refusal(
    body: dict[str, Any],
) -> None:
    """Whatever the label queue carries: a job, a verify, or a refusal naming its field in
    one short line without its value; never another exception, and a body that says
    ``"verify": "labels"`` is never read as a job (nor a verify without it)."""
    try:
        message = label_message(_json(body))
    except MessageRefused as refused:
        text = str(refused)
        assert "\n" not in text
        assert len(text) < 200
        for value in body.values():
            if isinstance(value, str) and len(value) > 8 and value not in ("MVERIFY00001",):
                assert value not in text
        return
    if isinstance(message, LabelVerify):
        assert body.get("verify") == "labels"
        assert LabelVerify.parse(message.to_json()) == message
    else:
        assert "verify" not in body
        assert LabelJob.parse(message.to_json()) == message


_SQS_RECORD = json.loads(
    (Path(__file__).parents[2] / "events" / "hipoink_sender.json").read_text(encoding="utf-8")
)["Records"][0]


@given(body=st.one_of(verify_bodies().map(_json), st.text(max_size=80)))
def test_a_label_queue_record_never_fails_its_model_it_holds_a_message_or_a_refusal(
    body: str,
) -> None:
    """The sender's record model reads any body, never raising (a raise failed the record
    inside Powertools' parser at debug level, holding its message group until the
    dead-letter queue): a job, a verify, or a refusal whose reason is one short line and
    whose merchant, if shown, is plain ASCII of at most 64 characters."""
    record = LabelJobRecord.model_validate({**_SQS_RECORD, "body": body})
    if isinstance(record.body, RefusedLabelMessage):
        with pytest.raises(MessageRefused, match=re.escape(record.body.reason)):
            label_message(body)
        assert "\n" not in record.body.reason
        merchant = record.body.merchant_id
        assert merchant is None or re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", merchant, re.ASCII)
    else:
        assert record.body == label_message(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"verify": "labels", "merchant_id": "M\x00", "store_code": "S"}, "merchant_id"),
        ({"verify": "labels", "merchant_id": "M", "store_code": "\ud800"}, None),  # not JSON
        ({"verify": "labels", "merchant_id": "M", "store_code": "S\x00"}, "store_code"),
        ({"verify": "labels", "merchant_id": "M", "store_code": "S" * 65}, "store_code"),
        ({"verify": "labels", "merchant_id": "M" * 65, "store_code": "S"}, "merchant_id"),
        ({"verify": "labels", "merchant_id": 7, "store_code": "S"}, "merchant_id"),
        ({"verify": "labels", "store_code": "S"}, "merchant_id"),
        ({"verify": "LABELS", "merchant_id": "M", "store_code": "S"}, "verify"),
        ({"verify": "labels", "merchant_id": "M", "store_code": "S", "reason": "cron"}, "reason"),
        ({"verify": "labels", "merchant_id": "M", "store_code": "S", "upserts": []}, "upserts"),
    ],
)
def test_a_verify_request_with_a_bad_field_is_refused_by_that_field(
    body: dict[str, Any], field: str | None
) -> None:
    text = json.dumps(body)  # a lone surrogate goes as its escape, as SQS could carry it
    with pytest.raises(MessageRefused) as refused:
        label_message(text)
    assert refused.value.field == field


def test_a_record_that_is_a_dict_subclass_is_never_written_by_orjson() -> None:
    """``json`` writes what a dict subclass's ``items()`` says, orjson what the dict holds:
    so only plain dicts go to orjson (a record read back from a foreign message may be
    anything ``json`` accepts)."""

    class Shown(dict[str, str]):
        def items(self) -> Any:
            return [("pc", "shown")]

    records: list[dict[str, Any]] = [Shown(pc="held")]
    assert json.dumps(records[0]) == '{"pc": "shown"}'  # what json writes of it
    assert text_records_json({"upserts": records}, records) is None
