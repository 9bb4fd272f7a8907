"""The JSON carried by the two queues, validated on both sides.

Plain frozen dataclasses and the standard library's ``json``, not pydantic models: the
poller reads a poll request on every invocation, and pydantic's import and first model
cost ≈ 110 ms of a ≈ 320 ms cold start (issue 15). The wire format is the one the
pydantic models of before wrote and read, both ways, because old code runs beside new
code during a deploy and old messages come back from the dead-letter queues:

- :meth:`to_json` writes what ``model_dump_json()`` wrote (compact, fields in order,
  non-ASCII as is, ``requested_at`` as ``2026-11-28T12:00:00.123456Z``);
- :meth:`parse` accepts what the models accepted from JSON, to the same values, and
  refuses what they refused, naming the field (:class:`MessageRefused`). Per field, as
  pydantic had it: text is strict (a JSON string, length in code points), ``reason`` one
  of four exact words, ``version`` a strict integer in a Postgres bigint's range,
  ``oldest_change_ms`` a lax integer (``"5"``, ``5.0``, ``true``), ``requested_at`` an
  ISO 8601 date-time. The JSON itself is refused where pydantic's parser refused it:
  invalid UTF-8 or lone surrogates, nesting deeper than its limit, integers of more than
  4,300 digits. Three narrowings, on purpose, of forms no writer of these queues ever
  produced: a poll request's ``merchant_id`` or a label job's ``merchant_id`` or
  ``store_code`` holding NUL (Postgres refuses it, so the message failed on every
  receive), ``requested_at`` as a Unix timestamp (a number or a
  numeric string; nothing reads the field), and ``oldest_change_ms`` as text with a sign
  or a run of underscores after leading zeros (``"0-9"``, ``"0__9"``, which pydantic read
  as -9 and 9: the rule of :func:`esl_sync.lax.integer_text`). tests/unit/test_messages.py
  holds the old models as the oracle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import chain, repeat
from typing import Any, ClassVar, Literal, get_args

from esl_sync import lax
from esl_sync.job_json import text_records_json
from esl_sync.lax import Problem

PollReason = Literal["schedule", "webhook", "manual", "install"]
POLL_REASONS: frozenset[str] = frozenset(get_args(PollReason))


class NotQueued(RuntimeError):
    """A send that failed after the queue took some of its messages: ``queued`` holds
    their positions in the send; the others may or may not have been queued."""

    def __init__(self, message: str, queued: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.queued = queued


class MessageRefused(ValueError):
    """A queue message that is not a valid one: ``field`` names what is wrong (``None``:
    the body as a whole). The text is one line and never quotes a value."""

    def __init__(self, kind: str, field: str | None, problem: str) -> None:
        self.field = field
        where = f"{kind}: {_shown_name(field)}: " if field is not None else f"{kind}: "
        super().__init__(where + problem)


@dataclass(frozen=True, kw_only=True, slots=True)
class PollRequest:
    """Poll queue: "poll this merchant now"."""

    KIND: ClassVar[str] = "poll request"

    merchant_id: str
    reason: PollReason = "schedule"
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        # NUL too (a narrowing of the pydantic model of before): Postgres refuses it in the
        # merchant's lookup, which failed the poll on every receive until the dead-letter
        # queue, its log line quoting the body's text, instead of refusing it by name.
        if "\x00" in _text(self.KIND, "merchant_id", self.merchant_id, most=64):
            raise MessageRefused(self.KIND, "merchant_id", "holds NUL")
        _reason(self.KIND, self.reason)
        if not isinstance(self.requested_at, datetime):
            raise MessageRefused(self.KIND, "requested_at", "not a date-time")

    @classmethod
    def parse(cls, text: str | bytes) -> PollRequest:
        """The request a poll queue message holds, or :class:`MessageRefused`."""
        body = _object(cls.KIND, text, _POLL_FIELDS)
        values: dict[str, Any] = {"merchant_id": body.get("merchant_id", _MISSING)}
        if "reason" in body:
            values["reason"] = body["reason"]
        if "requested_at" in body:
            values["requested_at"] = _datetime(cls.KIND, "requested_at", body["requested_at"])
        if values["merchant_id"] is _MISSING:
            raise MessageRefused(cls.KIND, "merchant_id", "missing")
        return cls(**values)

    def to_json(self) -> str:
        return _dumps(
            {
                "merchant_id": self.merchant_id,
                "reason": self.reason,
                "requested_at": _iso(self.requested_at),
            }
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelJob:
    """Label queue: what one store's labels must show, in the order it was produced.

    ``upserts`` are complete Hipoink product records; ``deletes`` are product codes.
    Deletes are applied after upserts, so a code both upserted and deleted ends deleted.

    ``version`` is the merchant's label clock when the job was decided: the sender skips a
    label whose acknowledged version is newer, so a replayed, redriven or late job never
    puts an older value back. Jobs queued before versions existed have none and count as
    older than any version (they still deliver where no versioned label was acknowledged).
    ``oldest_change_ms`` is Clover's modifiedTime of the oldest change in the job (latency).
    """

    KIND: ClassVar[str] = "label job"
    MAX_VERSION: ClassVar[int] = 2**63 - 1  # a Postgres bigint, like the sequence it comes from

    merchant_id: str
    store_code: str
    upserts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    oldest_change_ms: int | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        kind = self.KIND
        # NUL too (a narrowing, as for the other two): Postgres refuses it in the ledger's
        # reads, which failed the job on every receive instead of refusing it by name.
        for name, value in (("merchant_id", self.merchant_id), ("store_code", self.store_code)):
            if "\x00" in _text(kind, name, value):
                raise MessageRefused(kind, name, "holds NUL")
        upserts, deletes = self.upserts, self.deletes
        if not isinstance(upserts, list | tuple):
            raise MessageRefused(kind, "upserts", "not a list")
        if not all(map(isinstance, upserts, repeat(dict))) or not all(
            map(isinstance, chain.from_iterable(upserts), repeat(str))  # C: ≈ 0.2 µs a record less
        ):
            raise MessageRefused(kind, "upserts", "not a list of objects with text keys")
        if not isinstance(deletes, list | tuple):
            raise MessageRefused(kind, "deletes", "not a list")
        for code in deletes:
            _text(kind, "deletes", code, least=0)
        if isinstance(upserts, tuple):  # pydantic took any sequence and kept a list
            object.__setattr__(self, "upserts", list(upserts))
        if isinstance(deletes, tuple):
            object.__setattr__(self, "deletes", list(deletes))
        oldest = self.oldest_change_ms
        if oldest is not None and (isinstance(oldest, bool) or not isinstance(oldest, int)):
            raise MessageRefused(kind, "oldest_change_ms", "not an integer")
        _version(kind, self.version)

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.deletes)

    def halves(self) -> tuple[LabelJob, LabelJob]:
        """Two jobs that, applied in turn, do what this one does (a job too large for one
        queue message): its upserts then its deletes, cut in the middle, with this job's
        version and oldest change."""
        changes: list[tuple[bool, Any]] = [(True, r) for r in self.upserts]
        changes += [(False, pc) for pc in self.deletes]
        middle = len(changes) // 2
        first, second = changes[:middle], changes[middle:]
        return (
            replace(
                self,
                upserts=[c for upsert, c in first if upsert],
                deletes=[c for upsert, c in first if not upsert],
            ),
            replace(
                self,
                upserts=[c for upsert, c in second if upsert],
                deletes=[c for upsert, c in second if not upsert],
            ),
        )

    @classmethod
    def parse(cls, text: str | bytes) -> LabelJob:
        """The job a label queue message holds, or :class:`MessageRefused`."""
        body = _object(cls.KIND, text, _JOB_FIELDS)
        for name in ("merchant_id", "store_code"):
            if name not in body:
                raise MessageRefused(cls.KIND, name, "missing")
        values = dict(body)
        if "oldest_change_ms" in body:
            values["oldest_change_ms"] = _lax_int(
                cls.KIND, "oldest_change_ms", body["oldest_change_ms"]
            )
        return cls(**values)

    def to_json(self) -> str:
        return _dumps(
            {
                "merchant_id": self.merchant_id,
                "store_code": self.store_code,
                "upserts": self.upserts,
                "deletes": self.deletes,
                "oldest_change_ms": self.oldest_change_ms,
                "version": self.version,
            },
            self.upserts,
        )


VerifyReason = Literal["sweep", "manual"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelVerify:
    """Label queue: "verify merchant M's labels against what store S holds in Hipoink"
    (:mod:`esl_sync.sync.verify`). In the merchant's message group, so it runs after every
    job queued before it. ``reason``: ``sweep`` (queued by a poll) or ``manual`` (the
    operator's ``esl-sync labels verify``). On the wire it is told from a job by its
    ``"verify": "labels"`` (a field no job has: code from before it refuses it by name)."""

    KIND: ClassVar[str] = "label verify"

    merchant_id: str
    store_code: str
    reason: VerifyReason = "manual"

    def __post_init__(self) -> None:
        # NUL too (no pydantic model to stay equal to): Postgres refuses it in the ledger's
        # query, which failed the record on every receive instead of refusing it by name.
        for name, value in (("merchant_id", self.merchant_id), ("store_code", self.store_code)):
            if "\x00" in _text(self.KIND, name, value, most=64):
                raise MessageRefused(self.KIND, name, "holds NUL")
        if not isinstance(self.reason, str) or self.reason not in ("sweep", "manual"):
            raise MessageRefused(self.KIND, "reason", "not one of manual, sweep")

    @classmethod
    def parse(cls, text: str | bytes) -> LabelVerify:
        body = _object(cls.KIND, text, _VERIFY_FIELDS)
        if body.get("verify") != "labels":
            raise MessageRefused(cls.KIND, "verify", "not labels")
        for name in ("merchant_id", "store_code"):
            if name not in body:
                raise MessageRefused(cls.KIND, name, "missing")
        return cls(**{k: v for k, v in body.items() if k != "verify"})

    def to_json(self) -> str:
        return _dumps(
            {
                "verify": "labels",
                "merchant_id": self.merchant_id,
                "store_code": self.store_code,
                "reason": self.reason,
            }
        )


LabelMessage = LabelJob | LabelVerify
"""What the label queue carries."""


def label_message(text: str | bytes) -> LabelMessage:
    """What a label queue message holds: a job, or a verify request (told by its
    ``verify`` field); a refusal names the field as the job's parser or the verify's does.
    A job is parsed once, as before: only a body the job refuses for a field it does not
    know is read again, as a verify."""
    try:
        return LabelJob.parse(text)
    except MessageRefused as refused:
        if refused.field != "verify":
            if refused.field is None or refused.field in _JOB_FIELDS:
                raise
            body = _object(LabelJob.KIND, text, _JOB_FIELDS | _VERIFY_FIELDS)
            if "verify" not in body:
                raise
        return LabelVerify.parse(text)


def merchant_named(body: str) -> str | None:
    """The ``merchant_id`` a refused message's body names, for its refusal's log line: when
    the body is JSON text of an object naming one as plain ASCII of at most 64 characters
    (anything else is not shown, and the body never is)."""
    try:
        document = lax.json_document(body)
    except lax.Refused:
        return None
    merchant = document.get("merchant_id") if isinstance(document, dict) else None
    if isinstance(merchant, str) and _MERCHANT_SHOWN.fullmatch(merchant):
        return merchant
    return None


_MERCHANT_SHOWN = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_MISSING: Any = object()
_POLL_FIELDS = frozenset(("merchant_id", "reason", "requested_at"))
_JOB_FIELDS = frozenset(
    ("merchant_id", "store_code", "upserts", "deletes", "oldest_change_ms", "version")
)
_VERIFY_FIELDS = frozenset(("verify", "merchant_id", "store_code", "reason"))


# -- the JSON ---------------------------------------------------------------------------------


def _object(kind: str, text: str | bytes, fields: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object (what pydantic's parser took: :mod:`esl_sync.lax`) with
    only known fields (the models' ``extra="forbid"``)."""
    try:
        body = lax.json_document(text)
    except lax.Refused as refused:
        raise MessageRefused(kind, None, _SAID[refused.problem]) from None
    if not isinstance(body, dict):
        raise MessageRefused(kind, None, "not a JSON object")
    extra = next((name for name in body if name not in fields), None)
    if extra is not None:
        raise MessageRefused(kind, extra, "not a field of this message")
    return body


_SAID = {
    Problem.NOT_TEXT: "not text",
    Problem.NOT_UTF8: "not UTF-8 text",
    Problem.NOT_UNICODE: "not valid Unicode text",
    Problem.SYNTAX: "not valid JSON",
    Problem.NUMBER_TOO_LONG: "not valid JSON",
    Problem.TOO_DEEP: "not valid JSON (nested too deeply)",
    Problem.LONE_SURROGATE: "not valid JSON (a lone surrogate)",
    Problem.NOT_AN_INTEGER: "not an integer",
    Problem.UNPARSABLE: "not an integer",
    Problem.NOT_FINITE: "not a finite number",
    Problem.FRACTION: "not a whole number",
    Problem.TOO_LONG: "too large",
}
"""Each problem in this module's short words."""


def _dumps(values: dict[str, Any], records: list[dict[str, Any]] | None = None) -> str:
    """Compact JSON, non-ASCII as is: byte for byte what pydantic wrote for these fields
    (it differed only in how floats inside ``upserts`` are spelled, read back the same).
    ``records``: a job's upserts, written by orjson when that is exact (:mod:`.job_json`)."""
    if records is not None and (fast := text_records_json(values, records)) is not None:
        return fast
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if lax.has_lone_surrogate(text):
        raise MessageRefused("message", None, "not valid Unicode text")
    return text


# -- the fields -------------------------------------------------------------------------------


def _text(kind: str, name: str, value: object, *, least: int = 1, most: int | None = None) -> str:
    if not isinstance(value, str):
        raise MessageRefused(kind, name, "not text")
    if lax.has_lone_surrogate(value):
        raise MessageRefused(kind, name, "not valid Unicode text")
    if len(value) < least:
        raise MessageRefused(kind, name, "empty")
    if most is not None and len(value) > most:
        raise MessageRefused(kind, name, f"longer than {most} characters")
    return value


def _reason(kind: str, value: object) -> None:
    if not isinstance(value, str) or value not in POLL_REASONS:
        raise MessageRefused(kind, "reason", "not one of " + ", ".join(sorted(POLL_REASONS)))


def _version(kind: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageRefused(kind, "version", "not an integer")
    if not 0 <= value <= LabelJob.MAX_VERSION:
        raise MessageRefused(kind, "version", f"outside 0…{LabelJob.MAX_VERSION}")


def _lax_int(kind: str, name: str, value: object) -> int | None:
    """An integer as pydantic read one in lax mode from JSON (:func:`esl_sync.lax.json_integer`:
    ``5``, ``true``, ``5.0``, ``" +5_000.0 "``), or null."""
    if value is None:
        return None
    try:
        return lax.json_integer(value)
    except lax.Refused as refused:
        raise MessageRefused(kind, name, _SAID[refused.problem]) from None


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt _](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+\-\u2212])(\d{2}):?(\d{2}))?)?",
    re.ASCII,
)


def _datetime(kind: str, name: str, value: object) -> datetime:
    """An ISO 8601 date-time as pydantic read one: ``2026-11-28T12:00:00Z`` and its
    variants (``t``, space or ``_`` between date and time; seconds optional; ``.`` or
    ``,`` before a fraction, cut to microseconds; ``Z``, ``z``, ``±HH:MM`` or ``±HHMM``,
    or no zone: a naive value; a date alone: its midnight, naive)."""
    match = _ISO.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MessageRefused(kind, name, "not an ISO 8601 date-time")
    year, month, day, hour, minute, second, fraction, zulu, sign, tz_h, tz_m = match.groups()
    zone: timezone | None = None
    if zulu:
        zone = UTC
    elif sign:
        if int(tz_h) > 23 or int(tz_m) > 59:
            raise MessageRefused(kind, name, "not a valid UTC offset")
        offset = timedelta(hours=int(tz_h), minutes=int(tz_m))
        zone = UTC if not offset else timezone(-offset if sign != "+" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError:
        raise MessageRefused(kind, name, "not a valid date-time") from None


def _iso(moment: datetime) -> str:
    """As pydantic wrote a datetime: microseconds only when there are some, ``Z`` for a
    zero offset, ``±HH:MM`` (whole seconds of the offset, its minutes) for others."""
    m = moment
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    offset = moment.utcoffset()
    if offset is None:
        return text
    seconds = offset.days * 86400 + offset.seconds
    if not seconds:
        return text + "Z"
    minutes = abs(seconds) // 60
    return text + f"{'-' if seconds < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def _shown_name(name: str) -> str:
    """A field name fit for one log line: an unknown one may be anything, of any length."""
    shown = name if name.isidentifier() and name.isascii() else ascii(name)
    return shown if len(shown) <= 40 else shown[:37] + "..."
