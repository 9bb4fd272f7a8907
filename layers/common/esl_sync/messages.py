"""The JSON carried by the two queues, validated on both sides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PollReason = Literal["schedule", "webhook", "manual", "install"]


class PollRequest(BaseModel):
    """Poll queue: "poll this merchant now"."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    merchant_id: str = Field(min_length=1, max_length=64)
    reason: PollReason = "schedule"
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class LabelJob(BaseModel):
    """Label queue: what one store's labels must show, in the order it was produced.

    ``upserts`` are complete Hipoink product records; ``deletes`` are product codes.
    Deletes are applied after upserts, so a code both upserted and deleted ends deleted.

    ``version`` is the merchant's label clock when the job was decided: the sender skips a
    label whose acknowledged version is newer, so a replayed, redriven or late job never
    puts an older value back. Jobs queued before versions existed have none and count as
    older than any version (they still deliver where no versioned label was acknowledged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    merchant_id: str = Field(min_length=1)
    store_code: str = Field(min_length=1)
    upserts: list[dict[str, Any]] = Field(default_factory=list)
    deletes: list[str] = Field(default_factory=list)
    oldest_change_ms: int | None = Field(
        None, description="Clover's modifiedTime of the oldest change in the job (latency)."
    )
    version: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,  # a Postgres bigint, like the sequence it comes from
        strict=True,
        description="The merchant's label clock when the job was decided.",
    )

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.deletes)
