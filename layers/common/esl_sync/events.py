"""Typed models of the events the functions receive (validated before any logic runs)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, ConfigDict, Field, Json

from esl_sync.messages import LabelJob, PollReason, PollRequest


class ScheduleEvent(BaseModel):
    """What EventBridge Scheduler sends the dispatcher (the schedule's Input)."""

    model_config = ConfigDict(extra="ignore")

    reason: PollReason = "schedule"
    scheduled_time: datetime | None = None


class PollRecord(SqsRecordModel):
    body: Json[PollRequest]


class LabelJobRecord(SqsRecordModel):
    body: Json[LabelJob]


class CustomResourceEvent(BaseModel):
    """A CloudFormation custom resource request (the migration step of a deploy)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_type: Literal["Create", "Update", "Delete"] = Field(alias="RequestType")
    response_url: str = Field(alias="ResponseURL")
    stack_id: str = Field(alias="StackId")
    request_id: str = Field(alias="RequestId")
    logical_resource_id: str = Field(alias="LogicalResourceId")
    physical_resource_id: str | None = Field(None, alias="PhysicalResourceId")
