"""A state table restored from a backup (point-in-time, an export and import, a hand edit
lowering ``lease_generation``) puts every merchant's lease generation back while Postgres
(``label_clocks``, migration 0009) keeps the higher one it saw: each poll that writes is
refused ("poll lease lost", ``PollsFenced``) until the count catches up, and the labels stop.
``esl-sync fence catch-up`` brings the count up to what Postgres saw.

Real handlers, moto, Postgres and the simulators over HTTP.
"""

from __future__ import annotations

import re
from typing import Any

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError

from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from esl_sync.clover.transform import to_product
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.records import Fence, FenceRefused, ProductRow
from esl_sync.store.postgres import Database
from esl_sync.sync.item_rows import product_row
from tests.integration.test_poll import assert_in_step, poll, poll_lines, poller_event, sims

MERCHANT = "MRESTORE0001"
OTHER = "MRESTORE0002"
STORE = "STORE-RESTORE"
MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}
NOT_A_COUNT = (
    "lease generation is not a number (stored as {kind}): nothing to raise;"
    " the next poll starts a new epoch, which Postgres accepts (Postgres saw 6)"
)


def state_item(stack: LocalStack, merchant_id: str) -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb").get_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": merchant_id}}
    )["Item"]
    return item


def restore(stack: LocalStack, item: dict[str, Any]) -> None:
    """The state item as the backup holds it, written back whole (what a restore does)."""
    boto3.client("dynamodb").put_item(TableName=stack.env["STATE_TABLE_NAME"], Item=item)


def postgres_fence(stack: LocalStack, merchant_id: str) -> tuple[str, int]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT fence_epoch, fence_generation FROM label_clocks WHERE merchant_id = %s",
            (merchant_id,),
        ).fetchone()
    assert row is not None
    return row[0], int(row[1])


def stale_milk(item_id: str) -> ProductRow:
    """Milk as a poll that read Clover long ago would write it."""
    product = to_product({"id": item_id, "name": "Milk", "price": 120}, merchant_id=MERCHANT)
    return product_row(product, label_hash(to_record(product)))


def invoke_poll(stack: LocalStack, message_id: str) -> dict[str, Any]:
    """One delivery of one poll request to the poller (no SQS retry)."""
    return stack.invoke("poller", poller_event(MERCHANT, message_id))


def restored_merchant(stack: LocalStack) -> tuple[str, str]:
    """The merchant polled six times (six writes: generations 1 to 6), then its state item
    restored from the backup taken after the first: its generation is 1 again, Postgres
    holds 6. Milk's price is then changed in Clover; (Milk's item id, the epoch)."""
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    backup = state_item(stack, MERCHANT)
    assert backup["lease_generation"] == {"N": "1"}
    milk = next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "MILK-1")
    for price in (110, 120, 130, 140, 150):
        clover.update_item(MERCHANT, milk, price=price)
        poll(stack, MERCHANT)
    epoch, generation = postgres_fence(stack, MERCHANT)
    assert (epoch, generation) == (backup["lease_epoch"]["S"], 6)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.50"
    restore(stack, backup)
    clover.update_item(MERCHANT, milk, price=199)
    return milk, epoch


def test_a_restored_state_table_fences_every_poll_until_its_count_catches_up(
    stack: LocalStack,
) -> None:
    """The field case, as it is without an operator: each poll that writes is refused,
    named as a lost lease, and the shelf keeps the old price."""
    _, hipoink = sims(stack)
    restored_merchant(stack)
    mark = len(stack.logs)
    answers = [invoke_poll(stack, f"after-restore-{k}") for k in range(3)]
    stack.drain("LabelQueue", "hipoink_sender")

    assert all(answer["batchItemFailures"] for answer in answers), answers
    lines = poll_lines(stack, MERCHANT)[-3:]
    assert [line["status"] for line in lines] == ["failed"] * 3
    assert all("poll lease lost" in line["detail"] for line in lines), lines
    assert metric_sums(stack.logs[mark:])["PollsFenced"] == 3
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.50"  # 1.99 never reaches the shelf


def test_the_fenced_line_names_the_stored_and_own_generations_and_the_restore(
    stack: LocalStack,
) -> None:
    """The runbook tells a restore from a lost lease by the line: the poll still held its
    lease, and Postgres saw a later generation than the state table now counts."""
    restored_merchant(stack)
    invoke_poll(stack, "after-restore")
    detail = poll_lines(stack, MERCHANT)[-1]["detail"]
    assert "Postgres saw generation 6 of this epoch, this poll's is 2" in detail, detail
    assert "esl-sync fence catch-up" in detail, detail


def test_catch_up_lets_the_next_poll_write_and_the_labels_match(stack: LocalStack) -> None:
    """After the restore: the command raises the state item's count to the generation
    Postgres saw (same epoch), so the next poll's lease is newer than every poll that
    wrote, and its labels go out; a poll that took its lease before the command (a lower
    generation) is still refused after it."""
    _, hipoink = sims(stack)
    milk, epoch = restored_merchant(stack)
    invoke_poll(stack, "before-catch-up")  # generation 2, refused
    before = stack.cli("fence", "catch-up", MERCHANT)
    assert before == f"{MERCHANT}: lease generation 2 -> 6 (Postgres saw 6)\n"
    item = state_item(stack, MERCHANT)
    assert (item["lease_epoch"]["S"], item["lease_generation"]) == (epoch, {"N": "6"})

    assert invoke_poll(stack, "after-catch-up") == {"batchItemFailures": []}
    assert poll_lines(stack, MERCHANT)[-1]["status"] == "ok"
    assert postgres_fence(stack, MERCHANT) == (epoch, 7)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.99"
    assert_in_step(stack, MERCHANT, STORE)

    # The poll refused before the command (generation 2), if it still ran, writes nothing.
    database = Database(stack.env["DATABASE_URL"])
    try:
        refused = "saw generation 7 of this epoch, this poll's is 2"
        old = Fence(epoch, 2)
        with pytest.raises(FenceRefused, match=refused), database.transaction(old) as tx:
            tx.upsert(MERCHANT, [stale_milk(milk)])
    finally:
        database.close()
    assert postgres_fence(stack, MERCHANT) == (epoch, 7)

    # Run again (or for a merchant in step): nothing to do, nothing written.
    again = stack.cli("fence", "catch-up", MERCHANT)
    assert again == f"{MERCHANT}: in step (lease generation 7, Postgres saw 7)\n"


def test_catch_up_of_every_merchant_leaves_those_in_step(stack: LocalStack) -> None:
    """Without a merchant id: every merchant Postgres holds a fence for."""
    _, hipoink = sims(stack)
    restored_merchant(stack)
    stack.add_merchant(OTHER, "tok", "STORE-OTHER", items=[{"name": "Tea", "price": 5}])
    poll(stack, OTHER)
    stack.add_merchant("MRESTORE0003", "tok", "STORE-THIRD", items=[])  # never polled
    out = stack.cli("fence", "catch-up")
    assert out == (
        f"{MERCHANT}: lease generation 1 -> 6 (Postgres saw 6)\n"
        f"{OTHER}: in step (lease generation 1, Postgres saw 1)\n"
        "fence catch-up: 1 raised, 1 in step, 0 in another epoch, 1 with no fence yet\n"
    )
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.99"


def at_the_size_limit(stack: LocalStack, item: dict[str, Any]) -> None:
    """The item written back padded to the largest size DynamoDB (moto) accepts: a write
    that makes it any larger is refused (ValidationException)."""
    low, high = 0, 410_000
    while high - low > 1:  # the largest pad put_item accepts
        pad = (low + high) // 2
        try:
            restore(stack, item | {"pad": {"S": "x" * pad}})
        except ClientError:
            high = pad
        else:
            low = pad
    restore(stack, item | {"pad": {"S": "x" * low}})


def test_catch_up_of_every_merchant_names_one_dynamodb_refuses_and_catches_up_the_rest(
    stack: LocalStack,
) -> None:
    """One merchant's write refused (here its item at DynamoDB's size limit, its count
    missing, so that raising it makes the item larger; in the field also throttling past
    the client's retries): its line says so, the merchants before and after it are each
    caught up and said, the count comes last with it and the exit status is 1."""
    restored_merchant(stack)  # MERCHANT: generation 1, Postgres saw 6
    third = "MRESTORE0003"
    for merchant_id in (OTHER, third):
        stack.add_merchant(merchant_id, "tok", f"STORE-{merchant_id}", items=[dict(MILK)])
        poll(stack, merchant_id)  # generation 1, Postgres saw 1
    refused = state_item(stack, OTHER)
    del refused["lease_generation"]
    at_the_size_limit(stack, refused)
    restore(stack, state_item(stack, third) | {"lease_generation": {"N": "0.5"}})

    code, out, err = stack.run_cli("fence", "catch-up")
    lines = out.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 4, (code, out, err)
    assert lines[0] == f"{MERCHANT}: lease generation 1 -> 6 (Postgres saw 6)"
    assert re.fullmatch(
        rf"{OTHER}: NOT raised \(AwsError: .*ValidationException.*\): its polls that write"
        " stay refused until it is; run the command again",
        lines[1],
    ), lines[1]
    assert lines[2] == f"{third}: lease generation 0.5 -> 1 (Postgres saw 1)"
    assert lines[3] == (
        "fence catch-up: 2 raised, 0 in step, 0 in another epoch, 0 with no fence yet, 1 refused"
    )
    assert "x" * 100 not in out + err  # nothing of the item but its key
    assert err == (
        "esl-sync: fence catch-up: 1 merchant(s) not caught up (named above): run the"
        " command again\n"
    )
    assert code == 1
    assert state_item(stack, third)["lease_generation"] == {"N": "1"}


@pytest.mark.parametrize(
    ("generation", "said"),
    [
        ({"N": "1.5"}, "lease generation 1.5 -> 6 (Postgres saw 6)"),
        ({"N": "0.001"}, "lease generation 0.001 -> 6 (Postgres saw 6)"),
        (None, "lease generation none -> 6 (Postgres saw 6)"),
        # Not a number: the next lease starts a new epoch (DynamoDB cannot ADD to it),
        # which Postgres accepts; nothing to raise.
        ({"S": "2"}, NOT_A_COUNT.format(kind="S")),
        ({"BOOL": True}, NOT_A_COUNT.format(kind="BOOL")),
    ],
    ids=["fraction", "tiny", "none", "text", "bool"],
)
def test_catch_up_of_a_hand_edited_generation_says_what_it_did_and_the_poll_writes(
    stack: LocalStack, generation: dict[str, str] | None, said: str
) -> None:
    """The restored item's ``lease_generation`` edited by hand (same epoch): the command
    still ends in one line, exit 0, and the next poll writes the new price."""
    _, hipoink = sims(stack)
    restored_merchant(stack)
    item = state_item(stack, MERCHANT)
    if generation is None:
        del item["lease_generation"]
    else:
        item["lease_generation"] = generation
    restore(stack, item)

    assert stack.cli("fence", "catch-up", MERCHANT) == f"{MERCHANT}: {said}\n"
    assert invoke_poll(stack, "after-catch-up") == {"batchItemFailures": []}
    assert poll_lines(stack, MERCHANT)[-1]["status"] == "ok"
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.99"


def test_catch_up_of_a_state_item_in_another_epoch_says_so_and_the_poll_writes(
    stack: LocalStack,
) -> None:
    """A restore that brought back an item of another epoch (the merchant removed and added
    back since): Postgres accepts its polls as they are; the command says so, not "in step"."""
    _, hipoink = sims(stack)
    restored_merchant(stack)
    item = state_item(stack, MERCHANT)
    item["lease_epoch"] = {"S": "another-epoch"}
    restore(stack, item)

    assert stack.cli("fence", "catch-up", MERCHANT) == (
        f"{MERCHANT}: the state item is in another epoch than Postgres saw: nothing to raise;"
        " the next poll writes in the item's epoch (or a new one), which Postgres accepts"
        " (Postgres saw 6)\n"
    )
    assert state_item(stack, MERCHANT) == item  # nothing written
    assert invoke_poll(stack, "after-catch-up") == {"batchItemFailures": []}
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.99"


def test_catch_up_of_a_merchant_without_a_state_item_says_so(stack: LocalStack) -> None:
    """A backup older than the merchant: no item (no tokens either); nothing is written
    (no item is created) and the line says what is missing; the fleet form counts it as
    another epoch (its first lease starts one)."""
    restored_merchant(stack)
    boto3.client("dynamodb").delete_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": MERCHANT}}
    )
    assert stack.cli("fence", "catch-up", MERCHANT) == (
        f"{MERCHANT}: no state item (its tokens are gone with it: store them with"
        " `esl-sync merchants add`): nothing to raise; its first lease starts a new epoch"
        " (Postgres saw 6)\n"
    )
    assert "Item" not in boto3.client("dynamodb").get_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": MERCHANT}}
    )
    assert stack.cli("fence", "catch-up").splitlines()[-1] == (
        "fence catch-up: 0 raised, 0 in step, 1 in another epoch, 0 with no fence yet"
    )


def test_catch_up_where_no_poll_wrote_says_so_in_one_line(stack: LocalStack) -> None:
    """No fence yet: one merchant named, or the fleet (none registered, then one) each get
    one line, exit 0."""
    assert stack.cli("fence", "catch-up") == (
        "fence catch-up: 0 raised, 0 in step, 0 in another epoch, 0 with no fence yet\n"
    )
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    assert stack.cli("fence", "catch-up", MERCHANT) == (
        f"{MERCHANT}: no poll wrote under a fence yet: nothing to catch up\n"
    )
    assert stack.cli("fence", "catch-up") == (
        "fence catch-up: 0 raised, 0 in step, 0 in another epoch, 1 with no fence yet\n"
    )


def test_catch_up_of_an_unknown_merchant_is_refused_by_name(stack: LocalStack) -> None:
    with pytest.raises(AssertionError, match="exited 2: esl-sync: unknown merchant 'MNOBODY'"):
        stack.cli("fence", "catch-up", "MNOBODY")
