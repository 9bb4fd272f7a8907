"""The Hipoink sender in production conditions: real handlers, moto, Postgres, simulators.

Batching, bad-record isolation, outages past the dead-letter limit, a wrong sign, ordering
of upserts and deletes, duplicate deliveries, and the repairs an operator (or the poller's
sweep) runs afterwards: ``esl-sync status --labels``, ``heal``, ``stores unblock``,
``redrive``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from devkit.catalog import gas_station_catalog, numbered_catalog
from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import HIPOINK_SIGN, LocalStack
from devkit.template import REPO_ROOT, load_template
from esl_sync import runtime, tls
from esl_sync.hipoink.client import MESSAGE_MAX_CHARS
from esl_sync.messages import LabelJob
from esl_sync.sync.deliver import SKIPPED
from tests.pg_conflicts import deadlock_once
from tests.tls_certs import self_signed

M = "MSEND0000001"
STORE = "STORE-SEND"
MAX_RECEIVES = int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])


def _sim(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _expected(stack: LocalStack) -> dict[str, dict[str, str]]:
    assert stack.clover is not None
    return expected_labels(stack.clover.items(M))


def _poll_only(stack: LocalStack) -> None:
    """Dispatcher and poller, leaving the label jobs on the queue."""
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0


def _status(stack: LocalStack) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--json"))
    return next(r for r in rows if r["merchant_id"] == M)


def _stale(stack: LocalStack) -> dict[str, dict[str, Any]]:
    rows = json.loads(stack.cli("status", "--labels", M, "--json"))
    return {r["pc"]: r for r in rows}


def _expire_block(stack: LocalStack) -> None:
    """Let the store's cool-down pass now (rather than wait ten minutes)."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE store_blocks SET retry_after = now() WHERE merchant_id = %s", (M,))


def test_a_first_sync_of_2000_products_takes_one_call_per_batch(stack: LocalStack) -> None:
    hipoink = _sim(stack)
    batch = runtime.settings().hipoink_batch_size
    hipoink.max_batch_size = batch  # a server that refuses anything bigger
    stack.add_merchant(M, "tok", STORE, items=gas_station_catalog(2000, seed=11))

    summary = stack.run_cycle()

    expected = _expected(stack)
    assert summary.labels.failures == 0
    assert hipoink.labels(STORE) == expected
    assert hipoink.request_count("product/create_multiple") == math.ceil(len(expected) / batch)
    assert hipoink.request_count() == hipoink.request_count("product/create_multiple")


def test_bad_records_are_isolated_named_and_never_retried(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(HIPOINK_BATCH_SIZE="100")
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(100))
    bad = {"SKU0007", "SKU0042", "SKU0099"}
    hipoink.reject_pcs = bad

    summary = stack.run_cycle()

    assert summary.labels.records == 1
    assert summary.labels.failures == 0
    assert summary.dead_lettered == 0
    labels = hipoink.labels(STORE)
    assert len(labels) == 97
    assert not bad & labels.keys()
    for pc in bad:  # halving a batch of 100 reaches a bad record in at most 8 calls
        assert sum(pc in r.codes for r in hipoink.requests) <= math.ceil(math.log2(100)) + 1
    stale = _stale(stack)
    assert set(stale) == bad
    assert stale["SKU0042"]["failure"] == "bad_record: create_multiple: product SKU0042: rejected"
    assert stale["SKU0042"]["name"] == "Item 42"

    # Neither the next cycle nor the self-healing pass sends them again.
    hipoink.reset_requests()
    stack.run_cycle()
    assert "queued 0 upsert(s)" in stack.cli("heal", M, "--older-than", "0")
    assert hipoink.request_count() == 0


def test_hipoink_down_retries_then_dead_letters_then_heals(stack: LocalStack) -> None:
    hipoink, clover = _sim(stack), stack.clover
    assert clover is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(30))

    # Down for a while: the job is retried and arrives once Hipoink is back.
    hipoink.fail_next(503, count=2)
    first = stack.run_cycle()
    assert first.labels.failures == 2
    assert first.dead_lettered == 0
    assert hipoink.labels(STORE) == _expected(stack)

    # Down past the queue's receive limit: the job is dead-lettered, the labels are stale.
    hipoink.down = True
    for item in clover.items(M)[:3]:
        clover.update_item(M, item["id"], price=item["price"] + 50)
    second = stack.run_cycle()
    assert second.queue_depths["LabelDeadLetterQueue"] == 1
    assert hipoink.request_count() == 1 + 2 + MAX_RECEIVES
    assert _status(stack)["stale_labels"] == 3
    stale = _stale(stack)
    assert {row["failure"] for row in stale.values()} == {"retryable: create_multiple: HTTP 503"}

    # A failure that fresh is left alone; once Hipoink is back the heal repairs everything.
    assert "queued 0 upsert(s)" in stack.cli("heal", M)
    hipoink.down = False
    assert "queued 3 upsert(s) and 0 delete(s) in 1" in stack.cli("heal", M, "--older-than", "0")
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    assert hipoink.labels(STORE) == _expected(stack)
    assert _status(stack)["stale_labels"] == 0

    # Redriving the dead letter afterwards is harmless: its labels are acknowledged.
    hipoink.reset_requests()
    assert "moved 1 message(s)" in stack.cli("redrive", "--queue", "label")
    redriven = stack.drain("LabelQueue", "hipoink_sender")
    assert (redriven.records, redriven.failures) == (1, 0)
    assert hipoink.request_count() == 0
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 0


def test_a_wrong_sign_blocks_the_store_until_it_is_fixed(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(HIPOINK_BATCH_SIZE="10")
    hipoink, clover = _sim(stack), stack.clover
    assert clover is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(35))
    hipoink.sign = "rotated-on-the-server"

    first = stack.run_cycle()

    # Four jobs, one Hipoink call: the first job blocks the store, the rest wait.
    assert first.labels.records == 4
    assert first.labels.failures == 0
    assert first.dead_lettered == 0
    assert hipoink.request_count() == 1
    assert any('"HipoinkConfigErrors"' in line for line in stack.logs)
    status = _status(stack)
    assert status["stale_labels"] == 35
    assert status["store_blocked"].endswith("create_multiple: sign error")
    stale = _stale(stack)
    assert stale["SKU0000"]["failure"] == "configuration: create_multiple: sign error"
    assert "store blocked since" in stale["SKU0034"]["failure"]

    # New changes while blocked make no call either.
    clover.update_item(M, clover.items(M)[0]["id"], price=999)
    stack.run_cycle()
    assert hipoink.request_count() == 1

    # After the cool-down one call re-tests the store; still wrong, it stays blocked.
    _expire_block(stack)
    assert "in 4 label job(s)" in stack.cli("heal", M, "--older-than", "0")
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.request_count() == 2

    # Fixed, and unblocked by the operator: the heal brings every label up to date.
    hipoink.sign = HIPOINK_SIGN
    assert "unblocked" in stack.cli("stores", "unblock", M)
    stack.cli("heal", M, "--older-than", "0")
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    assert hipoink.labels(STORE) == _expected(stack)
    status = _status(stack)
    assert (status["stale_labels"], status["store_blocked"]) == (0, None)
    assert "was not blocked" in stack.cli("stores", "unblock", M)
    assert all(HIPOINK_SIGN not in line for line in stack.logs)


def test_a_hipoink_certificate_that_fails_verification_blocks_the_store_until_trusted(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A certificate no trusted root signed (a private CA not in ``SSL_CERT_FILE``, the
    wrong host, one let expire) fails every retry alike: the store is blocked and alarmed,
    its labels name why, and nothing is dead-lettered; trusted, a re-test delivers all."""
    cert, key = self_signed(tmp_path)
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    tls.forget()
    hipoink = HipoinkSimulator(sign=HIPOINK_SIGN)
    hipoink.certificate = (str(cert), str(key))
    monkeypatch.setenv("DATABASE_URL", make_database())
    with hipoink, LocalStack(hipoink_base_url=hipoink.base_url) as stack:
        assert hipoink.base_url.startswith("https://")
        hipoink.add_store(STORE)
        stack.add_merchant(M, "tok", STORE, items=numbered_catalog(5))

        first = stack.run_cycle()

        assert (first.labels.records, first.labels.failures, first.dead_lettered) == (1, 0, 0)
        assert hipoink.request_count() == 0  # refused in the handshake, before any request
        assert any('"HipoinkConfigErrors"' in line for line in stack.logs)
        blocked = _status(stack)["store_blocked"]
        refusal = re.search(
            r"(create_multiple: Hipoink's TLS certificate failed verification \((.+)\))$", blocked
        )
        assert refusal is not None, blocked
        assert re.search(r"self.signed certificate", refusal[2]), refusal[2]
        stale = _stale(stack)
        assert len(stale) == 5
        assert {row["failure"] for row in stale.values()} == {f"configuration: {refusal[1]}"}

        # The operator trusts the certificate: the setting, then new instances of the sender.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        tls.forget()
        runtime.reset()
        _expire_block(stack)
        assert "in 1 label job(s)" in stack.cli("heal", M, "--older-than", "0")
        assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
        assert hipoink.labels(STORE) == _expected(stack)
        status = _status(stack)
        assert (status["stale_labels"], status["store_blocked"]) == (0, None)
    tls.forget()


def test_a_refusal_postgres_could_not_store_as_sent_still_names_the_label(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Hipoink's message is stored on the refused label: a NUL or a lone surrogate in it
    (which Postgres refuses) or a megabyte of it must not crash the job into the
    dead-letter queue; the label is named and the rest go through."""
    stack = make_stack(HIPOINK_BATCH_SIZE="1")
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(3))
    message = "product SKU0000:\u0000 bad\nname \ud800" + "x" * 1_000_000
    hipoink.fail_next(200, body=json.dumps({"error_code": 1, "error_msg": message}))

    summary = stack.run_cycle()

    assert (summary.labels.failures, summary.dead_lettered) == (0, 0)
    stale = _stale(stack)
    assert len(stale) == 1
    (refused,) = stale.values()
    kept = ("product SKU0000: bad name " + "x" * MESSAGE_MAX_CHARS)[:MESSAGE_MAX_CHARS]
    assert refused["failure"] == f"bad_record: create_multiple: {kept}"
    assert len(hipoink.labels(STORE)) == 2


def test_a_configuration_refusal_postgres_could_not_store_as_sent_still_blocks(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack()
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(3))
    message = "sign\u0000 error \udfff"  # NUL, a lone surrogate: json writes them escaped
    hipoink.fail_next(200, body=json.dumps({"error_code": 1, "error_msg": message}))

    summary = stack.run_cycle()

    assert (summary.labels.failures, summary.dead_lettered) == (0, 0)
    assert _status(stack)["store_blocked"].endswith(": create_multiple: sign error")
    assert {row["failure"] for row in _stale(stack).values()} == {
        "configuration: create_multiple: sign error"
    }


def test_upsert_then_delete_in_one_batch_and_a_barcode_change(stack: LocalStack) -> None:
    hipoink, clover = _sim(stack), stack.clover
    assert clover is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(5))
    _poll_only(stack)
    hidden = clover.items(M)[0]
    clover.hide_item(M, hidden["id"])
    _poll_only(stack)

    both = stack.drain("LabelQueue", "hipoink_sender")

    assert (both.invocations, both.records, both.failures) == (1, 2, 0)
    assert hidden["sku"] not in hipoink.labels(STORE)
    assert len(hipoink.upserts_of(STORE, hidden["sku"])) == 1  # created, then deleted
    assert hipoink.labels(STORE) == _expected(stack)

    renamed = clover.items(M)[1]
    clover.update_item(M, renamed["id"], sku="NEWCODE")
    assert stack.run_cycle().labels.failures == 0
    labels = hipoink.labels(STORE)
    assert "NEWCODE" in labels
    assert renamed["sku"] not in labels
    assert labels == _expected(stack)


def test_the_same_label_job_delivered_twice_reaches_hipoink_once(stack: LocalStack) -> None:
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    record = {"pc": "X1", "pn": "Thing", "pp": "1.00", "pi": "ITEMX1"}
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=[record], version=1)

    runtime.label_queue().send([job, job])
    drained = stack.drain("LabelQueue", "hipoink_sender")

    assert (drained.records, drained.failures) == (2, 0)
    assert hipoink.upserts_of(STORE, "X1") == [record]
    assert hipoink.request_count("product/create_multiple") == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"merchant_id": "MSEND0000001", "store_code": "STORE-SEND", "version": "7"}',
        '{"merchant_id": "MSEND0000001", "store_code": "", "upserts": []}',
        '{"merchant_id": "MSEND0000001", "store_code": "STORE-SEND", "upserts": {}}',
        '{"merchant_id": "MSEND0000001", "store_code": "STORE-SEND", "deletes": ["\\udc00"]}',
        '{"merchant_id": "MSEND0000001", "store_code": "STORE-SEND", "surprise": 1}',
        "x" * 2**18,
    ],
    ids=["not-json", "version-text", "empty-store", "upserts-object", "surrogate", "extra", "256k"],
)
def test_a_bad_label_job_is_refused_and_holds_neither_its_store_nor_another(
    stack: LocalStack, body: str
) -> None:
    """The bad body is refused by name and acknowledged; its store's later job and another
    store's job are delivered. It used to fail on every receive, holding its store's later
    jobs until the dead-letter queue (tests/integration/test_sender_refused.py)."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    stack.add_merchant("MSEND0000002", "tok", "STORE-OTHER", items=[])
    template = json.loads((REPO_ROOT / "events" / "hipoink_sender.json").read_text())
    records = []
    for message_id, group, text in [
        ("bad", M, body),
        ("later", M, _job(M, STORE, "X1")),
        ("other", "MSEND0000002", _job("MSEND0000002", "STORE-OTHER", "Y1")),
    ]:
        record = json.loads(json.dumps(template["Records"][0]))
        record["messageId"], record["body"] = message_id, text
        record["attributes"]["MessageGroupId"] = group
        records.append(record)

    answer = stack.invoke("hipoink_sender", {"Records": records})

    assert answer == {"batchItemFailures": []}
    assert hipoink.upserts_of("STORE-OTHER", "Y1") != []
    assert hipoink.upserts_of(STORE, "X1") != []
    assert metric_sums(stack.logs)["LabelMessagesRefused"] == 1


def _job(merchant_id: str, store_code: str, pc: str) -> str:
    """A job as this code queues it (a version: one without is checked against the
    products, which these tests have none of)."""
    record = {"pc": pc, "pn": "Thing", "pp": "1.00", "pi": f"ITEM{pc}"}
    job = LabelJob(merchant_id=merchant_id, store_code=store_code, upserts=[record], version=1)
    return job.to_json()


def test_redrive_of_the_poll_queue(stack: LocalStack) -> None:
    for _ in range(3):
        stack.sqs.send_message(
            QueueUrl=stack.urls["PollDeadLetterQueue"], MessageBody=json.dumps({"merchant_id": M})
        )
    assert "moved 3 message(s)" in stack.cli("redrive", "--queue", "poll")
    depths = stack.queue_depths()
    assert (depths["PollDeadLetterQueue"], depths["PollQueue"]) == (0, 3)


def test_a_sweep_poll_heals_dead_lettered_labels_without_an_operator(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Hipoink down past the receive limit, then back: the next sweep poll re-sends."""
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="2", LABEL_HEAL_AFTER_SECONDS="0")
    hipoink = _sim(stack)
    assert stack.clover is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(30))
    hipoink.down = True
    first = stack.run_cycle()
    assert first.queue_depths["LabelDeadLetterQueue"] == 1
    assert hipoink.labels(STORE) == {}

    hipoink.down = False
    stack.run_cycle()  # the second poll sweeps, then heals

    assert hipoink.labels(STORE) == expected_labels(stack.clover.items(M))
    assert any('"stale labels queued again"' in line for line in stack.logs)
    assert metric_sums(stack.logs)["LabelsHealed"] == len(hipoink.labels(STORE))


def test_hand_written_codes_postgres_or_hipoink_cannot_take_are_refused_and_the_rest_go_on(
    stack: LocalStack,
) -> None:
    """A label job edited by hand and redriven, its codes ones the poll never writes (a NUL,
    empty, 10,000 characters, a line break inside): each is refused by name, the others
    delivered. A NUL made Postgres refuse the job's ledger read, so the job failed whole,
    every retry, into the dead-letter queue, and its store's later jobs waited."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    assert stack.invoke("hipoink_sender", _sender_event(_job(M, STORE, "GONE1"))) == {
        "batchItemFailures": []
    }
    bad_codes = ["N\x00UL", "", "P" * 10_000, "LINE\nBREAK"]
    good = {"pc": "OK1", "pn": "Thing", "pp": "1.00", "pi": "ITEMOK1"}
    upserts = [good] + [{**good, "pc": pc} for pc in bad_codes]
    job = LabelJob(
        merchant_id=M, store_code=STORE, upserts=upserts, deletes=[*bad_codes, "GONE1"], version=1
    ).to_json()
    mark = len(stack.logs)

    answer = stack.invoke("hipoink_sender", _sender_event(job))

    assert answer == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"OK1"}  # GONE1 deleted, OK1 shown
    lines = stack.logs[mark:]
    assert metric_sums(lines)["LabelsRejected"] == 2 * len(bad_codes)
    refused = [json.loads(x) for x in lines if "label job record refused" in x]
    assert len(refused) == 2 * len(bad_codes)
    assert all(len(x.get("pc") or "") <= 64 and "\x00" not in (x.get("pc") or "") for x in refused)
    later = stack.invoke("hipoink_sender", _sender_event(_job(M, STORE, "X1")))
    assert later == {"batchItemFailures": []}


def test_a_hand_written_job_naming_a_code_twice_is_applied_in_its_order(stack: LocalStack) -> None:
    """A label job edited by hand and redriven that names a code twice (two records for it,
    or one delete twice): the last record applies and the delete is done once. Postgres
    refused the acknowledgement of both in one statement, after Hipoink had taken them: the
    job failed with a traceback on every retry, re-sending its labels each time, into the
    dead-letter queue, with no failure on its labels, and its store's later jobs waited."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    assert stack.invoke("hipoink_sender", _sender_event(_job(M, STORE, "GONE1"))) == {
        "batchItemFailures": []
    }
    first = {"pc": "X1", "pn": "Thing", "pp": "1.00", "pi": "ITEMX1"}
    last = {**first, "pp": "2.00"}
    job = LabelJob(
        merchant_id=M,
        store_code=STORE,
        upserts=[first, last],
        deletes=["GONE1", "GONE1"],
        version=2,
    ).to_json()
    mark = len(stack.logs)

    answer = stack.invoke("hipoink_sender", _sender_event(job))

    assert answer == {"batchItemFailures": []}
    assert hipoink.labels(STORE) == {"X1": last}
    # Acknowledged, no failure (no product wants X1 here, so it shows as one to delete).
    assert {pc: row["failure"] for pc, row in _stale(stack).items()} == {"X1": None}
    lines = [json.loads(x) for x in stack.logs[mark:] if "names a product code more than once" in x]
    assert [(x["codes"], x["count"]) for x in lines] == [(["GONE1", "X1"], 2)]
    assert stack.invoke("hipoink_sender", _sender_event(job)) == {"batchItemFailures": []}
    assert hipoink.request_count("product/create_multiple") == 2  # the first job's, this one's


def _sender_event(body: str) -> dict[str, Any]:
    template = json.loads((REPO_ROOT / "events" / "hipoink_sender.json").read_text())
    record = json.loads(json.dumps(template["Records"][0]))
    record["body"] = body
    record["attributes"]["MessageGroupId"] = M
    return {"Records": [record]}


def _lines(stack: LocalStack, since: int, message: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stack.logs[since:] if f'"{message}"' in line]
    return [line for line in found if line.get("message") == message]


def _records(*pcs: str) -> list[dict[str, str]]:
    return [{"pc": pc, "pn": "Thing", "pp": "1.00", "pi": f"ITEM{pc}"} for pc in pcs]


FAILED = "label job failed; back to its queue"


def test_a_job_hipoink_answers_503_is_logged_as_failed_never_as_delivered(
    stack: LocalStack,
) -> None:
    """A 503 (retried by SQS) was logged at INFO as ``label job delivered``, ``blocked``
    null: a Logs Insights count of delivered jobs counted it."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2"), version=1)
    hipoink.fail_next(503)
    mark = len(stack.logs)

    failed = _failed_for_a_retry(stack, job, "create_multiple: HTTP 503")
    assert (failed["upserted"], failed["deleted"], failed["rejected"]) == (0, 0, 0)
    assert metric_sums(stack.logs[mark:])["LabelsUpserted"] == 0


def test_a_job_that_times_out_midway_logs_what_it_did_before(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Hipoink takes the first record, refuses the second and is too slow for the third: the
    line says the job failed, with the one acknowledged and the one refused, and only the
    acknowledged one is counted as upserted. The retry sends what is left: not the refused
    record, even were Hipoink to take it now (a refusal waits for its product to change)."""
    stack = make_stack(HIPOINK_BATCH_SIZE="1", HIPOINK_TIMEOUT_SECONDS="0.5")
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    hipoink.reject_pcs = {"X2"}
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2", "X3"), version=1)
    hipoink.delay_next(0.0, count=2)
    hipoink.delay_next(2.0)  # X3: answered after the client gave up
    mark = len(stack.logs)

    failed = _failed_for_a_retry(stack, job, "create_multiple: timed out")
    assert (failed["upserted"], failed["rejected"], failed["rejected_codes"]) == (1, 1, ["X2"])
    sums = metric_sums(stack.logs[mark:])
    assert (sums["LabelsUpserted"], sums["LabelsRejected"]) == (1, 1)
    assert "LabelDeliveryLatency" not in sums
    assert all(HIPOINK_SIGN not in line for line in stack.logs)

    hipoink.reject_pcs = set()
    mark = len(stack.logs)
    assert stack.invoke("hipoink_sender", _sender_event(job.to_json())) == {"batchItemFailures": []}
    (delivered,) = _lines(stack, mark, "label job delivered")
    assert (delivered["upserted"], delivered["skipped"], delivered["level"]) == (1, 1, "INFO")
    assert (delivered["rejected"], delivered["refused_before"]) == (0, 1)
    assert set(hipoink.labels(STORE)) == {"X1", "X3"}


def test_a_deadlock_alone_in_its_batch_is_retried_without_failing_the_invocation(
    stack: LocalStack,
) -> None:
    """A real Postgres deadlock ends the ledger's acknowledgement of the batch's only job
    (after Hipoink took its records): contention a retry resolves, not an outage, so the
    job fails by name (a warning, its label named ``retryable``), counted as
    ``TransientConflicts``, and the answer names its record; the invocation does not fail
    (no ``HipoinkSenderErrorsAlarm`` page). The retry delivers it."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1"), version=1)
    mark = len(stack.logs)

    with deadlock_once(stack.env["DATABASE_URL"], "label_state", M):
        _fails_alone(stack, job)

    (failed,) = _lines(stack, mark, FAILED)
    assert (failed["level"], failed["error_class"]) == ("WARNING", "TransientConflict")
    assert failed["error"].startswith("Postgres DeadlockDetected")
    assert _failures(stack)["X1"][0] == "retryable"
    assert metric_sums(stack.logs[mark:])["TransientConflicts"] == 1
    assert stack.invoke("hipoink_sender", _sender_event(job.to_json())) == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"X1"}
    assert _failures(stack) == {"X1": (None, None)}


def _refuse_acknowledgements(stack: LocalStack) -> None:
    """Postgres refuses every acknowledgement of a label (a trigger ``refuse_ack``, dropped
    by name to let them through again): the ledger fails after Hipoink took the records."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_ack() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'acknowledgement refused (test)'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_ack BEFORE INSERT OR UPDATE ON label_state FOR EACH ROW"
            " WHEN (NEW.acknowledged_at IS NOT NULL) EXECUTE FUNCTION refuse_ack()"
        )


def test_a_job_the_ledger_fails_is_logged_as_an_error_and_counts_nothing_delivered(
    stack: LocalStack,
) -> None:
    """Postgres refuses the acknowledgement after Hipoink took the records: nothing is
    counted as delivered (the retry sends them again), and the line is an error with the
    traceback (no Hipoink fault: the sender's own parts)."""
    stack.add_merchant(M, "tok", STORE, items=[])
    _refuse_acknowledgements(stack)
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1"), version=1)
    mark = len(stack.logs)

    _crashes_alone(stack, job)

    assert _lines(stack, mark, "label job delivered") == []
    (failed,) = _lines(stack, mark, FAILED)
    assert failed["level"] == "ERROR"
    assert failed["error_class"] == "RaiseException"
    assert failed["error"].startswith("acknowledgement refused (test)")
    assert "Traceback" in failed["exception"]
    assert failed["upserted"] == 0
    assert metric_sums(stack.logs[mark:])["LabelsUpserted"] == 0


def _fails_alone(stack: LocalStack, job: LabelJob) -> None:
    """Invoke the sender with ``job`` alone, which fails by name (Hipoink unavailable or slow):
    the answer names its record, which SQS retries; the invocation does not fail."""
    event = _sender_event(job.to_json())
    retried = [{"itemIdentifier": event["Records"][0]["messageId"]}]
    assert stack.invoke("hipoink_sender", event) == {"batchItemFailures": retried}


def _crashes_alone(stack: LocalStack, job: LabelJob) -> None:
    """Invoke the sender with ``job`` alone, which fails in the sender's own parts: the batch
    failed whole, not by name, so the invocation fails (Lambda's ``Errors``, an alarm) and
    SQS retries it."""
    with pytest.raises(BatchProcessingError, match="All records failed processing"):
        stack.invoke("hipoink_sender", _sender_event(job.to_json()))


def _two_jobs(first: LabelJob, second: LabelJob) -> dict[str, Any]:
    """One batch of two jobs of the store (one message group), in this order."""
    event = _sender_event(first.to_json())
    record = json.loads(json.dumps(event["Records"][0]))
    record["messageId"], record["body"] = "second-job", second.to_json()
    event["Records"].append(record)
    return event


def test_one_stores_503_alone_in_its_batch_fails_its_records_not_the_invocation(
    stack: LocalStack,
) -> None:
    """Hipoink answers the batch's only store with a 503: its job fails by name, the job
    behind it in its message group is skipped (named too), and the answer names both, which
    SQS retries in order. Powertools raised ``BatchProcessingError`` ("All records failed
    processing"), a failed invocation: ``HipoinkSenderErrorsAlarm`` paged for one store's
    503. The retry delivers both."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    first = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1"), version=1)
    second = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X2"), version=2)
    event = _two_jobs(first, second)
    hipoink.fail_next(503)

    answer = stack.invoke("hipoink_sender", event)

    assert answer == {
        "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]
    }
    assert _failures(stack) == {
        "X1": ("retryable", "create_multiple: HTTP 503"),
        "X2": ("retryable", SKIPPED),
    }
    assert stack.invoke("hipoink_sender", event) == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"X1", "X2"}
    assert _failures(stack) == {"X1": (None, None), "X2": (None, None)}


def _failures(stack: LocalStack) -> dict[str, tuple[str | None, str | None]]:
    return failures_of(stack, M)


def failures_of(stack: LocalStack, merchant_id: str) -> dict[str, tuple[str | None, str | None]]:
    """The failure each label of the merchant carries in the ledger (class, message)."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT pc, failure_class, failure_message FROM label_state WHERE merchant_id = %s",
            (merchant_id,),
        ).fetchall()
    return {pc: (failure_class, message) for pc, failure_class, message in rows}


def test_a_store_re_test_hipoink_answers_503_is_tried_again_by_the_retry(
    stack: LocalStack,
) -> None:
    """The sign fixed, the cool-down passed: the re-test meets a 503, which says nothing of
    the configuration. Its SQS retry found the store blocked (the re-test had moved the next
    one a cool-down ahead) and acknowledged the job, its labels parked as ``configuration:
    store blocked since …``. Now the retry re-tests, passes and delivers."""
    hipoink = _blocked_by_a_sign_error_now_fixed(stack)
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2"), version=2)
    hipoink.fail_next(503)
    _fails_alone(stack, job)
    _the_retry_re_tests_and_delivers(stack, job)


def test_a_job_whose_answer_cannot_be_decoded_fails_by_name_not_the_invocation(
    stack: LocalStack,
) -> None:
    """A broken proxy's ``Content-Encoding: gzip`` over a body that is not: httpx's own
    DecodingError escaped the client, so the job crashed (an ERROR line with a traceback,
    its labels carrying no failure) and, alone in its batch, failed the invocation
    (``HipoinkSenderErrorsAlarm``) for what Hipoink answered. It is an unreadable answer,
    retried like one that is not JSON: named on the line and the labels; the retry delivers."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2"), version=1)
    hipoink.fail_next(200, body='{"error_code": 0}', content_encoding="gzip")
    mark = len(stack.logs)

    _fails_alone(stack, job)

    (failed,) = _lines(stack, mark, FAILED)
    assert (failed["level"], failed["error_class"], failed["error"]) == (
        "WARNING",
        "HipoinkRetryable",
        "create_multiple: answer cannot be decoded (gzip, HTTP 200)",
    )
    reason = "create_multiple: answer cannot be decoded (gzip, HTTP 200)"
    assert _failures(stack) == {"X1": ("retryable", reason), "X2": ("retryable", reason)}
    assert stack.invoke("hipoink_sender", _sender_event(job.to_json())) == {"batchItemFailures": []}
    assert set(hipoink.labels(STORE)) == {"X1", "X2"}


def test_a_store_re_test_the_ledger_cuts_short_is_tried_again_by_the_retry(
    stack: LocalStack,
) -> None:
    """The sign fixed, the cool-down passed: Hipoink takes the re-test's call, then Postgres
    refuses its acknowledgement (the sender's own parts: the invocation fails). The claim
    had moved the next re-test a cool-down ahead, so the SQS retry found the store blocked
    and parked the job's labels as ``configuration`` for another cool-down, though Hipoink
    had just taken the sign. As after a 503, the retry now re-tests and delivers."""
    _blocked_by_a_sign_error_now_fixed(stack)
    _refuse_acknowledgements(stack)
    job = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1", "X2"), version=2)
    _crashes_alone(stack, job)
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute("DROP TRIGGER refuse_ack ON label_state")
    _the_retry_re_tests_and_delivers(stack, job)


def test_a_message_that_is_no_job_behind_a_failed_job_fails_alone_not_the_batch(
    stack: LocalStack,
) -> None:
    """A batch: a job Hipoink answers with a 503, then a message of its store that is not a
    label job (edited by hand), then another store's job. Powertools' FIFO processor reads
    a record skipped behind a failed one in its group through the model without catching its
    ValidationError: the invocation crashed (Lambda's Errors, the whole batch retried), and
    the other store's job was never tried. Now the message is refused like one alone (a
    failed record), the other store's job is delivered, and only the first two are named."""
    hipoink = _sim(stack)
    other_merchant, other_store = "MSEND0000002", "STORE-SEND2"
    stack.add_merchant(M, "tok", STORE, items=[])
    stack.add_merchant(other_merchant, "tok", other_store, items=[])
    first = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1"), version=1)
    other = LabelJob(
        merchant_id=other_merchant, store_code=other_store, upserts=_records("Y1"), version=1
    )
    event = _sender_event(first.to_json())
    no_job, other_job = (json.loads(json.dumps(event["Records"][0])) for _ in range(2))
    no_job["messageId"], no_job["body"] = "no-job", '{"not": "a label job"}'
    other_job["messageId"], other_job["body"] = "other-store", other.to_json()
    other_job["attributes"]["MessageGroupId"] = other_merchant
    event["Records"] += [no_job, other_job]
    hipoink.fail_next(503)

    answer = stack.invoke("hipoink_sender", event)

    assert answer == {
        "batchItemFailures": [
            {"itemIdentifier": event["Records"][0]["messageId"]},
            {"itemIdentifier": "no-job"},
        ]
    }
    assert set(hipoink.labels(other_store)) == {"Y1"}
    assert _failures(stack) == {"X1": ("retryable", "create_multiple: HTTP 503")}


def _blocked_by_a_sign_error_now_fixed(stack: LocalStack) -> HipoinkSimulator:
    """The merchant's store blocked by a wrong sign, the sign then fixed and the cool-down
    passed: the next job re-tests the store."""
    hipoink = _sim(stack)
    stack.add_merchant(M, "tok", STORE, items=[])
    hipoink.sign = "rotated-on-the-server"
    first = LabelJob(merchant_id=M, store_code=STORE, upserts=_records("X1"), version=1)
    assert stack.invoke("hipoink_sender", _sender_event(first.to_json())) == {
        "batchItemFailures": []
    }
    assert _status(stack)["store_blocked"].endswith("create_multiple: sign error")
    hipoink.sign = HIPOINK_SIGN
    _expire_block(stack)
    return hipoink


def _the_retry_re_tests_and_delivers(stack: LocalStack, job: LabelJob) -> None:
    """SQS's retry of ``job`` (upserting X1 and X2): the re-test passes, the block is lifted
    and both labels are delivered."""
    hipoink = _sim(stack)
    mark = len(stack.logs)

    assert stack.invoke("hipoink_sender", _sender_event(job.to_json())) == {"batchItemFailures": []}

    assert set(hipoink.labels(STORE)) == {"X1", "X2"}
    assert _status(stack)["store_blocked"] is None
    (delivered,) = _lines(stack, mark, "label job delivered")
    assert delivered["upserted"] == 2


def _failed_for_a_retry(stack: LocalStack, job: LabelJob, error: str) -> dict[str, Any]:
    """``job`` alone in its batch fails for Hipoink (``error``): no "delivered" line, one
    "label job failed" WARNING naming it; that line."""
    mark = len(stack.logs)
    _fails_alone(stack, job)
    assert _lines(stack, mark, "label job delivered") == []
    (failed,) = _lines(stack, mark, FAILED)
    assert failed["level"] == "WARNING"
    assert (failed["error_class"], failed["error"]) == ("HipoinkRetryable", error)
    return failed
