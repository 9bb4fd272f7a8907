"""A record Hipoink refused by name, in a job that then fails for a retryable reason: the
retry of that job (SQS redelivers it whole) does not send the refused record again, does
not count it again, and never un-names its refusal. Real parts: the sender's handler
through the local stack, Postgres, the Hipoink simulator.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from devkit.catalog import numbered_catalog
from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync.hipoink.records import label_hash
from esl_sync.messages import LabelJob
from esl_sync.records import LabelAck, LabelFailure
from esl_sync.store.label_ledger import PostgresLabelLedger
from esl_sync.store.postgres import Database, PostgresMerchantDirectory
from tests.integration.test_sender import failures_of

M = "MRETRY000001"
STORE = "STORE-RETRY"
FAILED = "label job failed; back to its queue"
REFUSAL = ("bad_record", "create_multiple: product X2: rejected")


def _sim(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _event(job: LabelJob) -> dict[str, Any]:
    template = json.loads((REPO_ROOT / "events" / "hipoink_sender.json").read_text())
    record = json.loads(json.dumps(template["Records"][0]))
    record["body"] = job.to_json()
    record["attributes"]["MessageGroupId"] = M
    return {"Records": [record]}


def _lines(stack: LocalStack, since: int, message: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stack.logs[since:] if f'"{message}"' in line]
    return [line for line in found if line.get("message") == message]


def _failures(stack: LocalStack) -> dict[str, tuple[str | None, str | None]]:
    return failures_of(stack, M)


def _synced_with_sku0003_refused(
    make_stack: Callable[..., LocalStack],
) -> tuple[LocalStack, HipoinkSimulator]:
    """A merchant of five items synced to STORE, which refuses SKU0003 by name."""
    stack = make_stack()
    hipoink = _sim(stack)
    assert stack.clover is not None
    hipoink.reject_pcs_in = {STORE: {"SKU0003"}}
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(5))
    stack.run_cycle()
    return stack, hipoink


def _move_to_a_new_store(stack: LocalStack) -> None:
    """``merchants set-store`` to STORE-NEW (made in the simulator first), its relabel job
    and poll delivered, then a cycle."""
    _sim(stack).add_store("STORE-NEW")
    stack.cli("merchants", "set-store", M, "STORE-NEW")
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")
    stack.run_cycle()


def _records(*pcs: str) -> list[dict[str, str]]:
    return [{"pc": pc, "pn": "Thing", "pp": "1.00", "pi": f"ITEM{pc}"} for pc in pcs]


def _retried(stack: LocalStack, job: LabelJob) -> dict[str, Any]:
    """``job`` alone fails for Hipoink (retried by SQS, not the invocation); its line."""
    mark = len(stack.logs)
    event = _event(job)
    retried = [{"itemIdentifier": event["Records"][0]["messageId"]}]
    assert stack.invoke("hipoink_sender", event) == {"batchItemFailures": retried}
    (failed,) = _lines(stack, mark, FAILED)
    return failed


def test_a_retried_job_does_not_send_count_or_un_name_a_record_hipoink_refused(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Hipoink takes X1, refuses X2 by name and times out on X3: the job fails and SQS
    redelivers it whole. The retry sent X2 again (refused again: a call, a second
    ``LabelsRejected``), and when that retry met a 503, X2's refusal was overwritten as
    ``retryable`` (the heal then queued it again and again, and ``status`` no longer said
    why Hipoink will not show it)."""
    stack = make_stack(HIPOINK_BATCH_SIZE="1", HIPOINK_TIMEOUT_SECONDS="0.5")
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    hipoink.reject_pcs = {"X2"}
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2", "X3"), version=7)
    hipoink.delay_next(0.0, count=2)
    hipoink.delay_next(2.0)  # X3: answered after the client gave up
    first = _retried(stack, job)
    assert (first["upserted"], first["rejected_codes"]) == (1, ["X2"])
    assert _failures(stack)["X2"] == REFUSAL

    # The first retry meets a 503: only X3 was tried, and X2 still names its refusal.
    hipoink.reset_requests()
    hipoink.fail_next(503)
    mark = len(stack.logs)
    second = _retried(stack, job)
    assert [r.codes for r in hipoink.requests] == [["X3"]]
    assert second["rejected"] == 0
    assert second["refused_before"] == 1
    assert _failures(stack)["X2"] == REFUSAL
    assert _failures(stack)["X3"] == ("retryable", "create_multiple: HTTP 503")

    # The next one delivers X3, never X2 again; X2 was counted refused once in all.
    assert stack.invoke("hipoink_sender", _event(job)) == {"batchItemFailures": []}
    assert all("X2" not in r.codes for r in hipoink.requests)
    (delivered,) = _lines(stack, mark, "label job delivered")
    assert (delivered["upserted"], delivered["skipped"], delivered["rejected"]) == (1, 1, 0)
    assert delivered["refused_before"] == 1
    assert metric_sums(stack.logs[mark:])["LabelsRejected"] == 0
    assert set(hipoink.labels(STORE)) == {"X1", "X3"}
    assert _failures(stack) == {"X1": (None, None), "X2": REFUSAL, "X3": (None, None)}


def test_a_refusal_by_the_old_store_never_holds_back_the_moved_store_s_label(
    make_stack: Callable[..., LocalStack],
) -> None:
    """A poll's job for the merchant's store waits on the queue when the operator moves the
    merchant (``set-store``): every label is queued for the new store, under the clock's
    committed value, the poll's version. The old store refuses one record of the poll's
    job by name; the new store would take it. The refusal mark (that version, that hash)
    made the new store's job skip it as "refused before": the moved store never got the
    label, and the heal never sends a refused record again until its product changes."""
    stack = make_stack()
    hipoink = _sim(stack)
    assert stack.clover is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(5))
    stack.run_cycle()
    item = next(i for i in stack.clover.items(M) if i["sku"] == "SKU0003")
    stack.clover.update_item(M, item["id"], price=333)
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0  # its job waits
    hipoink.add_store("STORE-NEW")
    hipoink.reject_pcs_in = {STORE: {"SKU0003"}}  # the old store refuses it, the new would not
    stack.cli("merchants", "set-store", M, "STORE-NEW")

    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")

    assert hipoink.labels("STORE-NEW") == expected_labels(stack.clover.items(M))
    assert hipoink.labels("STORE-NEW")["SKU0003"]["pp"] == "3.33"


def test_a_label_the_old_store_refused_is_sent_to_the_store_the_merchant_moved_to(
    make_stack: Callable[..., LocalStack],
) -> None:
    """The merchant's store refused a record by name (its refusal and mark stand); the
    operator then moves the merchant to another store (``set-store``: every label queued
    for the new store at once). The refusal was the old store's, yet the relabel left that
    label out (a refused record waits for its product to change), and so did every heal
    after: the new store's shelf lacked it for good."""
    stack, hipoink = _synced_with_sku0003_refused(make_stack)
    hipoink.reject_pcs_in[STORE].add("SKU0001")  # acknowledged, then a change refused
    item = next(i for i in stack.clover.items(M) if i["sku"] == "SKU0001")
    stack.clover.update_item(M, item["id"], price=111)
    stack.run_cycle()
    assert _failures(stack)["SKU0003"][0] == _failures(stack)["SKU0001"][0] == "bad_record"
    _move_to_a_new_store(stack)

    assert hipoink.labels("STORE-NEW") == expected_labels(stack.clover.items(M))
    assert hipoink.labels("STORE-NEW")["SKU0001"]["pp"] == "1.11"
    assert _failures(stack)["SKU0003"] == _failures(stack)["SKU0001"] == (None, None)


def _batch(*jobs: LabelJob) -> dict[str, Any]:
    """The jobs in one sender invocation, in order (one merchant: one message group)."""
    records = []
    for n, job in enumerate(jobs):
        (record,) = json.loads(json.dumps(_event(job)["Records"]))
        record["messageId"] = f"{record['messageId']}-{n}"
        records.append(record)
    return {"Records": records}


def test_a_later_job_of_the_code_skipped_behind_it_keeps_the_refusal_from_its_retry(
    make_stack: Callable[..., LocalStack],
) -> None:
    """X2 refused in the first job, whose X3 then times out; the product changed meanwhile,
    so the next job of the store, in the same batch, names X2 again (another price) and is
    skipped behind the first (``retryable``, "not tried"). That failure cleared the first
    job's refusal mark: its retry sent the refused X2 again (refused again, counted again)."""
    stack = make_stack(HIPOINK_BATCH_SIZE="1", HIPOINK_TIMEOUT_SECONDS="0.5")
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    hipoink.reject_pcs = {"X2"}
    first = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2", "X3"), version=7)
    changed = [dict(_records("X2")[0], pp="2.00")]
    second = LabelJob(merchant_id=M, store_code=STORE, upserts=changed, version=8)
    hipoink.delay_next(0.0, count=2)
    hipoink.delay_next(2.0)  # X3: answered after the client gave up
    assert len(stack.invoke("hipoink_sender", _batch(first, second))["batchItemFailures"]) == 2
    assert _failures(stack)["X2"] == ("retryable", "not tried: an earlier job of this store failed")

    hipoink.reset_requests()
    mark = len(stack.logs)
    assert stack.invoke("hipoink_sender", _batch(first, second)) == {"batchItemFailures": []}
    assert [r.codes for r in hipoink.requests] == [["X3"], ["X2"]]  # X2: the second job's
    assert metric_sums(stack.logs[mark:])["LabelsRejected"] == 1
    assert _failures(stack)["X2"] == REFUSAL


def _mark(stack: LocalStack, pc: str) -> tuple[Any, ...] | None:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        return conn.execute(
            "SELECT failure_class, refused_version FROM label_state"
            " WHERE merchant_id = %s AND pc = %s",
            (M, pc),
        ).fetchone()


def test_a_refusal_mark_kept_under_another_failure_does_not_outlive_a_store_move(
    make_stack: Callable[..., LocalStack],
) -> None:
    """The old store refused SKU0003 (never acknowledged) at the poll's version; a job of
    that store from before (redriven from the dead-letter queue) names SKU0003 with its
    older price and meets a 503: the failure is ``retryable`` now and the refusal mark is
    kept (59c4f3c). The move cleared marks only under a ``bad_record`` failure or on an
    acknowledged label: the mark stood, and the relabel and every heal after (the clock's
    committed value, the refused job's version and hash) skipped SKU0003 as "refused
    before" for the new store, which would take it. ``status`` said it was a 503."""
    stack, hipoink = _synced_with_sku0003_refused(make_stack)
    mark = _mark(stack, "SKU0003")
    assert mark is not None
    assert mark[0] == "bad_record"
    assert mark[1] is not None
    record = expected_labels(stack.clover.items(M))["SKU0003"]
    older = LabelJob(
        merchant_id=M, store_code=STORE, upserts=[dict(record, pp="0.01")], version=mark[1] - 1
    )
    hipoink.fail_next(503)
    _retried(stack, older)
    assert _mark(stack, "SKU0003") == ("retryable", mark[1])
    _move_to_a_new_store(stack)

    assert hipoink.labels("STORE-NEW") == expected_labels(stack.clover.items(M))


def _written_while_the_move_commits(
    stack: LocalStack, write: Callable[[PostgresLabelLedger], object]
) -> None:
    """``write`` by the sender of a job of the old store (another connection), started while
    ``set-store``'s transaction to STORE-NEW is open (the move's invalidation done), which
    then commits."""
    _sim(stack).add_store("STORE-NEW")
    url = stack.env["DATABASE_URL"]
    directory = PostgresMerchantDirectory(Database(url))
    sender_ledger = PostgresLabelLedger(Database(url))
    merchant = directory.get(M)
    assert merchant is not None
    sender = threading.Thread(target=lambda: write(sender_ledger))

    def written_meanwhile() -> None:  # its statement starts; it waits on the merchant's row
        sender.start()
        time.sleep(0.5)

    directory.register(
        dataclasses.replace(merchant, store_code="STORE-NEW"), then=written_meanwhile
    )
    sender.join(timeout=10)
    assert not sender.is_alive()


def test_a_refusal_recorded_while_the_move_commits_does_not_hold_back_the_new_store(
    make_stack: Callable[..., LocalStack],
) -> None:
    """The old store's refusal is written while ``set-store``'s transaction is open (the
    sender of a job of the old store, another connection): record_failures asked whether
    that store is the merchant's in its own snapshot (yes: the move not committed yet) and
    wrote the mark after the move had forgotten the old store's refusals. The new store's
    job of that version and hash (the relabel) then skipped the code as "refused before"."""
    stack = make_stack()
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    (record,) = _records("X2")
    refusal = LabelAck("X2", label_hash(record), 7)
    failure = LabelFailure("X2", "bad_record", "create_multiple: product X2: rejected", refusal)
    _written_while_the_move_commits(
        stack, lambda ledger: ledger.record_failures(M, [failure], store_code=STORE)
    )

    moved = LabelJob(merchant_id=M, store_code="STORE-NEW", upserts=[record], version=7)
    assert stack.invoke("hipoink_sender", _event(moved)) == {"batchItemFailures": []}
    assert set(hipoink.labels("STORE-NEW")) == {"X2"}


def test_an_acknowledgement_written_while_the_move_commits_does_not_hold_back_the_new_store(
    make_stack: Callable[..., LocalStack],
) -> None:
    """The same race for what the old store acknowledged: acknowledge asked whether the
    job's store is the merchant's in its statement's snapshot (yes), waited on the
    merchant's row, and wrote the old store's acknowledgement after the move had
    invalidated them: the new store's job of that version and hash (the relabel) found the
    label current and sent nothing, and no label counted stale."""
    stack = make_stack()
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    (record,) = _records("X2")
    ack = LabelAck("X2", label_hash(record), 7)
    _written_while_the_move_commits(
        stack, lambda ledger: ledger.acknowledge(M, [ack], store_code=STORE)
    )

    moved = LabelJob(merchant_id=M, store_code="STORE-NEW", upserts=[record], version=7)
    assert stack.invoke("hipoink_sender", _event(moved)) == {"batchItemFailures": []}
    assert set(hipoink.labels("STORE-NEW")) == {"X2"}
