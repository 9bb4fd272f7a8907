"""Typed models of the events the functions receive (validated before any logic runs).

Each model's validator is built at its first use, not at import (``defer_build``): a
function receives one kind of event, and building the others' cost every cold start.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from esl_sync.messages import (
    LabelJob,
    LabelMessage,
    LabelVerify,
    MessageRefused,
    PollReason,
    label_message,
    merchant_named,
)


class ScheduleEvent(BaseModel):
    """What EventBridge Scheduler sends the dispatcher (the schedule's Input)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    reason: PollReason = "schedule"
    scheduled_time: datetime | None = None

    @field_validator("scheduled_time")
    @classmethod
    def _utc_unless_said(cls, value: datetime | None) -> datetime | None:
        """The Scheduler's time ends in ``Z``; one without an offset (an operator's manual
        tick, a date alone) is UTC, like Lambda's clock. Left naive, it could not be
        compared with the stored times, and the fleet's health went unmeasured."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


@dataclass(frozen=True, slots=True)
class RefusedLabelMessage:
    """A label queue body that is neither a job nor a verify request (a hand-edited redrive,
    a message of another version, garbage): ``reason`` is its refusal's one line, which
    never quotes a value; ``merchant_id`` the merchant its body names, when it names one
    fit for a log line (else ``None``). The sender refuses it by name and acknowledges it
    (:func:`esl_sync.sync.sender.refuse_label_message`)."""

    reason: str
    merchant_id: str | None = None


def _label_job(body: object) -> LabelMessage | RefusedLabelMessage:
    """The record's body read by :func:`esl_sync.messages.label_message` (a job, or a
    verify request), or its refusal as a value: a refusal raised here failed the record
    inside Powertools' parser, which logs it at debug level only, and (FIFO) held the
    merchant's message group on every receive until the dead-letter queue."""
    if isinstance(body, LabelJob | LabelVerify | RefusedLabelMessage):
        return body
    if not isinstance(body, str):
        return RefusedLabelMessage("label job: not text")
    try:
        return label_message(body)
    except MessageRefused as refused:
        return RefusedLabelMessage(str(refused), merchant_named(body))


class LabelJobRecord(SqsRecordModel):
    """An SQS record of the label queue: Powertools' model checks the envelope, the body
    is a :class:`LabelJob`, a :class:`LabelVerify` or, never raised, a
    :class:`RefusedLabelMessage` (the poller reads its own records without pydantic:
    :mod:`esl_sync.sync.poll_batch`)."""

    model_config = ConfigDict(defer_build=True)

    body: Annotated[  # type: ignore[assignment]
        LabelMessage | RefusedLabelMessage, PlainValidator(_label_job)
    ]


class CustomResourceEvent(BaseModel):
    """A CloudFormation custom resource request (the migration step of a deploy)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    request_type: Literal["Create", "Update", "Delete"] = Field(alias="RequestType")
    response_url: str = Field(alias="ResponseURL")
    stack_id: str = Field(alias="StackId")
    request_id: str = Field(alias="RequestId")
    logical_resource_id: str = Field(alias="LogicalResourceId")
    physical_resource_id: str | None = Field(None, alias="PhysicalResourceId")


class _HttpDetails(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    source_ip: str | None = Field(None, alias="sourceIp")


class _RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    http: _HttpDetails = Field(default_factory=_HttpDetails)
    request_id: str | None = Field(None, alias="requestId")
    domain_name: str | None = Field(None, alias="domainName")


class _RoutedHttp(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    method: str


class _RoutedContext(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    http: _RoutedHttp


class HttpRoute(BaseModel):
    """What Powertools' resolver reads to route an HTTP API (payload 2.0) request, typed as
    API Gateway always sends it: a function checks it before routing, so an event of
    another shape gets a refusal, not the resolver's exception."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    raw_path: str = Field(alias="rawPath")
    request_context: _RoutedContext = Field(alias="requestContext")


class HttpRequest(BaseModel):
    """What the webhook and the install routes read of an HTTP API (payload 2.0) request:
    headers, raw body, the raw query string, the caller's address and the request id."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    headers: dict[str, str] = Field(default_factory=dict)
    raw_query: str = Field("", alias="rawQueryString")
    body: str | None = None
    is_base64_encoded: bool = Field(False, alias="isBase64Encoded")
    request_context: _RequestContext = Field(
        default_factory=_RequestContext, alias="requestContext"
    )

    @property
    def raw_body(self) -> bytes:
        """The body as sent (API Gateway base64-encodes what it takes for binary); a
        ``ValueError`` if it cannot be (invalid base64)."""
        if self.body is None:
            return b""
        if self.is_base64_encoded:
            return base64.b64decode(self.body, validate=True)
        return self.body.encode("utf-8", "surrogatepass")

    @property
    def source_ip(self) -> str | None:
        return self.request_context.http.source_ip

    @property
    def host(self) -> str | None:
        """The API's own host name as API Gateway saw it (its execute-api name or a custom
        domain), if it is one."""
        name = self.request_context.domain_name or ""
        return name if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name) else None

    @property
    def reference(self) -> str:
        """API Gateway's id of the request (in its access log and our log lines), as pages
        show it to the person who has to quote it."""
        request_id = self.request_context.request_id or ""
        return request_id if re.fullmatch(r"[A-Za-z0-9=_-]{1,64}", request_id) else "unknown"

    def header(self, name: str) -> str | None:
        """A header by name, whatever its case (HTTP API lower-cases them; tests may not)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


def is_http_api_event(event: object) -> bool:
    """Whether ``event`` has the shape API Gateway's HTTP API (payload 2.0) always sends:
    what the resolver routes on and what the functions read. Only another caller of the
    function sends anything else; the functions refuse it before routing, with a 4xx, not
    the resolver's exception answered 5xx."""
    try:
        HttpRoute.model_validate(event)
        HttpRequest.model_validate(event)
    except ValueError:  # pydantic's ValidationError
        return False
    return True
