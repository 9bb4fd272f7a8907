"""Label delivery: ledger skips, bad-record isolation, ordering of upserts and deletes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from esl_sync.hipoink.client import HipoinkRecordError, HipoinkRetryable
from esl_sync.hipoink.records import HipoinkRecord, label_hash
from esl_sync.messages import LabelJob
from esl_sync.store.interfaces import LabelAck, LabelFailure
from esl_sync.sync.deliver import deliver


class Ledger:
    def __init__(self) -> None:
        self.acks: dict[str, str | None] = {}
        self.failures: dict[str, LabelFailure] = {}

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]:
        return {pc: self.acks[pc] for pc in pcs if pc in self.acks}

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck]) -> None:
        self.acks.update({a.pc: a.label_hash for a in acks})

    def record_failures(self, merchant_id: str, failures: Sequence[LabelFailure]) -> None:
        self.failures.update({f.pc: f for f in failures})

    def stale_labels(self, merchant_id: str) -> int:
        return 0


class Sink:
    """Stands in for Hipoink: rejects a batch containing a bad code, like the real server."""

    def __init__(self, bad: set[str] = frozenset(), down: bool = False) -> None:  # type: ignore[assignment]
        self.bad, self.down = bad, down
        self.calls: list[tuple[str, list[str]]] = []

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None:
        self.calls.append(("upsert", [r["pc"] for r in records]))
        if self.down:
            raise HipoinkRetryable("create_multiple: HTTP 503")
        bad = [r["pc"] for r in records if r["pc"] in self.bad]
        if bad:
            raise HipoinkRecordError(f"create_multiple: product {bad[0]}: field pp is malformed")

    def delete(self, store_code: str, codes: Sequence[str]) -> int:
        self.calls.append(("delete", list(codes)))
        return len(codes)


def _record(pc: str, price: str = "1.00") -> HipoinkRecord:
    return {"pc": pc, "pn": f"Item {pc}", "pp": price, "pi": pc}


def _job(upserts: list[HipoinkRecord], deletes: list[str] | None = None) -> LabelJob:
    return LabelJob(merchant_id="M", store_code="S", upserts=upserts, deletes=deletes or [])


def test_batches_of_the_configured_size() -> None:
    sink = Sink()
    outcome = deliver(_job([_record(f"{i:03d}") for i in range(25)]), Ledger(), sink, 10)
    assert [len(pcs) for _, pcs in sink.calls] == [10, 10, 5]
    assert outcome.upserted == 25


def test_bad_records_are_isolated_recorded_and_not_raised() -> None:
    ledger, sink = Ledger(), Sink(bad={"007", "042", "099"})
    outcome = deliver(_job([_record(f"{i:03d}") for i in range(100)]), ledger, sink, 100)
    assert sorted(outcome.rejected) == ["007", "042", "099"]
    assert outcome.upserted == 97
    assert set(ledger.failures) == {"007", "042", "099"}
    assert "field pp is malformed" in ledger.failures["042"].message
    assert ledger.failures["042"].failure_class == "bad_record"
    assert len(ledger.acks) == 97


def test_acknowledged_versions_are_not_sent_again() -> None:
    ledger, sink = Ledger(), Sink()
    job = _job([_record("A"), _record("B")], ["C"])
    deliver(job, ledger, sink, 10)
    sink.calls.clear()
    outcome = deliver(job, ledger, sink, 10)
    assert sink.calls == []
    assert outcome.skipped == 3
    changed = _job([_record("A", "2.00"), _record("B")])
    deliver(changed, ledger, sink, 10)
    assert sink.calls == [("upsert", ["A"])]
    assert ledger.acks["A"] == label_hash(_record("A", "2.00"))


def test_a_retryable_failure_propagates_after_keeping_progress() -> None:
    ledger, sink = Ledger(), Sink()
    deliver(_job([_record("A")]), ledger, sink, 1)
    sink.down = True
    with pytest.raises(HipoinkRetryable):
        deliver(_job([_record("A"), _record("B")]), ledger, sink, 1)
    assert sink.calls[-1] == ("upsert", ["B"])  # A was acknowledged before, so only B was tried


def test_upserts_go_before_deletes_so_a_later_delete_wins() -> None:
    ledger, sink = Ledger(), Sink()
    deliver(_job([_record("X")], ["Y"]), ledger, sink, 10)
    assert [kind for kind, _ in sink.calls] == ["upsert", "delete"]
    assert ledger.acks == {"X": label_hash(_record("X")), "Y": None}
