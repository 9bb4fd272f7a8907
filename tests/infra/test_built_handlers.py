"""Each function as `sam build` packaged it, invoked with its sample event from events/.

The built code runs in a subprocess whose path starts with the build output (the layer's
``python/`` folder and the function's folder), so it imports the packaged ``esl_sync`` and
dependencies, not the development checkout; boto3 and botocore come from outside the layer,
as the Lambda runtime provides them. AWS, Postgres, Clover and Hipoink come from a local
stack that the subprocess reaches over loopback; the secrets come from its Secrets Manager,
as deployed (the subprocess gets only their ARNs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.catalog import gas_station_catalog
from devkit.local_stack import SECRET_VARIABLES, LocalStack
from devkit.template import REPO_ROOT

pytestmark = pytest.mark.infra

InvokeBuilt = Callable[..., dict[str, Any]]  # the invoke_built fixture (tests/infra/conftest.py)


@pytest.fixture(scope="module")
def demo_stack(make_database: Callable[[], str]) -> Iterator[LocalStack]:
    """A local stack holding the merchant and store the sample events name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", make_database())
        with LocalStack() as stack:
            stack.add_merchant(
                "MDEMO0000001", "demo-token", "STORE-DEMO-1", items=gas_station_catalog(60)
            )
            yield stack


def _invoke_built(
    invoke_built: InvokeBuilt,
    build: Path,
    logical_id: str,
    event_file: str,
    env: dict[str, str],
    *extra: str,
) -> dict[str, Any]:
    """Only the secrets' ARNs reach the function, as deployed; the rest of this process's
    environment too (the Lambda runtime's own variables stand in for it)."""
    deployed_env = {k: v for k, v in env.items() if k not in SECRET_VARIABLES}
    return invoke_built(build, logical_id, event_file, {**os.environ, **deployed_env}, *extra)


def test_dispatcher_sample_event(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt
) -> None:
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "DispatcherFunction",
        str(REPO_ROOT / "events/dispatcher.json"),
        demo_stack.env,
    )
    assert answer["result"]["dispatched"] == 1


def test_poller_sample_event(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt
) -> None:
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "PollerFunction",
        str(REPO_ROOT / "events/poller.json"),
        demo_stack.env,
    )
    assert answer["result"] == {"batchItemFailures": []}
    assert len(demo_stack.products("MDEMO0000001")) == 60


def test_hipoink_sender_sample_event(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt
) -> None:
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "HipoinkSenderFunction",
        str(REPO_ROOT / "events/hipoink_sender.json"),
        demo_stack.env,
    )
    assert answer["result"] == {"batchItemFailures": []}
    assert demo_stack.hipoink is not None
    labels = demo_stack.hipoink.labels("STORE-DEMO-1")
    assert labels["REG-UNL"] == {
        "pc": "REG-UNL",
        "pn": "Regular Unleaded",
        "pp": "3.49",
        "pu": "gal",
        "pi": "ITEMDEMO00002",
    }
    # The sample's second record, a verify of the same store, ran after the job (its group):
    # the built sender read the store's one page of products from Hipoink.
    assert demo_stack.hipoink.request_count("product/query", "STORE-DEMO-1") == 1


def test_webhook_sample_event_queues_a_poll(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt
) -> None:
    before = demo_stack.queue_depths()["PollQueue"]
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "WebhookFunction",
        str(REPO_ROOT / "events/webhook.json"),
        demo_stack.env,
    )
    assert answer["result"]["statusCode"] == 202
    assert json.loads(answer["result"]["body"]) == {"message": "accepted"}
    assert demo_stack.queue_depths()["PollQueue"] == before + 1


def test_onboarding_sample_event_sends_the_browser_to_clover(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt
) -> None:
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "OnboardingFunction",
        str(REPO_ROOT / "events/onboarding.json"),
        demo_stack.env,
    )
    result = answer["result"]
    assert result["statusCode"] == 302
    assert result["headers"]["Cache-Control"] == "no-store"
    assert demo_stack.clover is not None
    assert result["headers"]["Location"].startswith(
        f"{demo_stack.clover.base_url}/oauth/v2/authorize?client_id=sim-clover-app&redirect_uri="
    )


def test_migrator_sample_event_answers_cloudformation(
    sam_build_dir: Path, demo_stack: LocalStack, invoke_built: InvokeBuilt, cloudformation: Any
) -> None:
    answer = _invoke_built(
        invoke_built,
        sam_build_dir,
        "MigrationFunction",
        str(REPO_ROOT / "events/migrator.json"),
        demo_stack.env,
        cloudformation.url,
    )
    assert answer["result"]["Status"] == "SUCCESS"
    assert cloudformation.answers == [answer["result"]]
    assert cloudformation.answers[0]["LogicalResourceId"] == "DatabaseMigration"
