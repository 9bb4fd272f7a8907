"""The dispatcher and the webhook never load httpx (nor the Clover client): their cold
starts stay short and a failure of the HTTP stack cannot reach them (docs/architecture.md,
"Layers").

Each handler runs in a fresh interpreter, imported and invoked once with its sample event
against the local stack, the way Lambda starts it; then ``sys.modules`` tells what it
loaded. The poller, invoked the same way, is the control: it does load httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.records import Merchant

REPO = Path(__file__).resolve().parents[2]

# Only the standard library besides the handler itself: anything imported here would
# count against it.
INVOKE = """
import importlib.util, json, sys
from pathlib import Path

repo, function = Path(sys.argv[1]), sys.argv[2]
spec = importlib.util.spec_from_file_location("app", repo / "functions" / function / "app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


class Context:
    function_name = function
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self):
        return 60_000


event = json.loads((repo / "events" / f"{function}.json").read_text())
answer = module.lambda_handler(event, Context())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "httpx" or m.startswith("esl_sync"))
print(json.dumps({"answer": answer, "loaded": loaded}, default=str))
"""


def _invoke(function: str) -> tuple[dict[str, object], list[str]]:
    completed = subprocess.run(
        [sys.executable, "-c", INVOKE, str(REPO), function],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return result["answer"], result["loaded"]


@pytest.fixture
def demo_merchant(stack: LocalStack) -> LocalStack:
    """The merchant of the sample events, known and active (its polls are due)."""
    runtime.merchants().save(Merchant("MDEMO0000001", "STORE-DEMO-1"))
    return stack


def test_the_dispatcher_never_loads_httpx(demo_merchant: LocalStack) -> None:
    answer, loaded = _invoke("dispatcher")
    assert answer["dispatched"] == 1  # it did its work: read Postgres, DynamoDB, sent to SQS
    assert "esl_sync.sync.dispatch" in loaded
    assert [m for m in loaded if m.split(".")[0] == "httpx"] == []
    assert "esl_sync.clover.client" not in loaded


def test_the_webhook_never_loads_httpx(demo_merchant: LocalStack) -> None:
    answer, loaded = _invoke("webhook")
    assert answer["statusCode"] == 202
    assert json.loads(str(answer["body"])) == {"message": "accepted"}
    assert "esl_sync.webhooks" in loaded
    assert [m for m in loaded if m.split(".")[0] == "httpx"] == []
    assert "esl_sync.clover.client" not in loaded


def test_the_poller_does_load_httpx_so_the_check_can_fail(demo_merchant: LocalStack) -> None:
    answer, loaded = _invoke("poller")
    assert answer == {"batchItemFailures": []}
    assert "httpx" in loaded
    assert "esl_sync.clover.client" in loaded
