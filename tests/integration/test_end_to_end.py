"""The walking skeleton end to end: real handlers, moto, real Postgres, simulators over HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.demo import expected_labels
from devkit.local_stack import LocalStack
from devkit.template import load_template


def _max_receive_count() -> int:
    return int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])


def test_first_sync_then_price_change_then_dead_letter_for_one_store(stack: LocalStack) -> None:
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    big = gas_station_catalog(2000, seed=7)
    stack.add_merchant("MBIG00000001", "tok-big", "STORE-BIG", items=big)
    stack.add_merchant(
        "MSMALL000001", "tok-small", "STORE-SMALL", items=convenience_store_catalog(40, seed=3)
    )

    first = stack.run_cycle()

    assert first.dispatched == 2
    assert first.polls.failures == first.labels.failures == 0
    rows = stack.products("MBIG00000001")
    assert len(rows) == 2000
    assert {r["source_id"] for r in rows} == {item["id"] for item in big}
    assert hipoink.labels("STORE-BIG") == expected_labels(big)
    assert hipoink.labels("STORE-SMALL") == expected_labels(clover.items("MSMALL000001"))

    fuel = next(i for i in big if i["priceType"] == "PER_UNIT")
    clover.update_item("MBIG00000001", fuel["id"], price=fuel["price"] + 7)
    second = stack.run_cycle()

    assert second.labels.failures == 0
    new_price = (Decimal(fuel["price"] + 7) / 100).quantize(Decimal("0.01"))
    assert hipoink.labels("STORE-BIG")[fuel["sku"]]["pp"] == str(new_price)
    stored = next(r for r in stack.products("MBIG00000001") if r["source_id"] == fuel["id"])
    assert stored["price"] == new_price

    # Hipoink keeps failing (HTTP 503) for one store: its job is retried, then dead-lettered;
    # the other store's change still reaches its labels.
    hipoink.down_stores = {"STORE-SMALL"}
    hipoink.reset_requests()
    small_item = next(i for i in clover.items("MSMALL000001") if not i.get("hidden"))
    clover.update_item("MSMALL000001", small_item["id"], name="Renamed while Hipoink is down")
    clover.update_item("MBIG00000001", fuel["id"], price=fuel["price"] + 9)
    third = stack.run_cycle()

    assert third.queue_depths["LabelDeadLetterQueue"] == 1
    assert third.queue_depths["LabelQueue"] == 0
    assert hipoink.request_count(store_code="STORE-SMALL") == _max_receive_count()
    assert hipoink.labels("STORE-BIG")[fuel["sku"]]["pp"] == str(
        (Decimal(fuel["price"] + 9) / 100).quantize(Decimal("0.01"))
    )
    small_labels = hipoink.labels("STORE-SMALL")
    assert small_labels[small_item["sku"]]["pn"] != "Renamed while Hipoink is down"

    # Nothing the handlers logged or emitted carries a Clover token or the Hipoink sign.
    secrets = ("tok-big", "tok-small", stack.env["HIPOINK_SIGN"])
    assert stack.logs
    assert not [line for line in stack.logs if any(s in line for s in secrets)]


def test_unchanged_catalog_sends_no_label_jobs(stack: LocalStack) -> None:
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    stack.add_merchant("MIDLE0000001", "tok", "STORE-IDLE", items=gas_station_catalog(300, seed=1))
    stack.run_cycle()
    hipoink.reset_requests()

    again = stack.run_cycle()

    assert again.labels.records == 0
    assert hipoink.request_count() == 0


def test_a_stack_whose_handlers_logged_a_token_fails_on_exit(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every local stack checks its handlers' logs for secrets when it closes."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    stack = LocalStack().__enter__()
    stack.add_merchant("MLEAK0000001", "leaky-token-0001", "S-LEAK", items=[])
    stack.run_cycle()
    assert stack.leaked_secrets() == 0
    assert stack.runner is not None
    stack.runner.logs.append('{"message": "oops", "token": "leaky-token-0001"}')
    with pytest.raises(AssertionError, match="1 handler log line"):
        stack.__exit__(None, None, None)
