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
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from devkit.catalog import gas_station_catalog
from devkit.local_stack import SECRET_VARIABLES, LocalStack
from devkit.template import REPO_ROOT

pytestmark = pytest.mark.infra

RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import esl_sync, pydantic

class Context:
    function_name = "built"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:built"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    def get_remaining_time_in_millis(self):
        return 60000

event = json.load(open(sys.argv[2]))
if len(sys.argv) > 3:
    event["ResponseURL"] = sys.argv[3]
result = module.lambda_handler(event, Context())
import botocore
files = {"esl_sync": esl_sync, "pydantic": pydantic, "botocore": botocore}
print(json.dumps({**{k: m.__file__ for k, m in files.items()}, "result": result}, default=str))
"""


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
    build: Path, logical_id: str, event_file: str, env: dict[str, str], *extra: str
) -> dict[str, Any]:
    path = os.pathsep.join([str(build / "CommonLayer" / "python"), str(build / logical_id)])
    deployed_env = {k: v for k, v in env.items() if k not in SECRET_VARIABLES}
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, str(build / logical_id / "app.py"), event_file, *extra],
        env={**os.environ, **deployed_env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer["esl_sync"].startswith(str(build)), "imported the checkout, not the build"
    assert answer["pydantic"].startswith(str(build)), "imported the venv's pydantic"
    assert not answer["botocore"].startswith(str(build)), "the layer must not ship botocore"
    return answer


def test_dispatcher_sample_event(sam_build_dir: Path, demo_stack: LocalStack) -> None:
    answer = _invoke_built(
        sam_build_dir,
        "DispatcherFunction",
        str(REPO_ROOT / "events/dispatcher.json"),
        demo_stack.env,
    )
    assert answer["result"]["dispatched"] == 1


def test_poller_sample_event(sam_build_dir: Path, demo_stack: LocalStack) -> None:
    answer = _invoke_built(
        sam_build_dir, "PollerFunction", str(REPO_ROOT / "events/poller.json"), demo_stack.env
    )
    assert answer["result"] == {"batchItemFailures": []}
    assert len(demo_stack.products("MDEMO0000001")) == 60


def test_hipoink_sender_sample_event(sam_build_dir: Path, demo_stack: LocalStack) -> None:
    answer = _invoke_built(
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


def test_webhook_sample_event_queues_a_poll(sam_build_dir: Path, demo_stack: LocalStack) -> None:
    before = demo_stack.queue_depths()["PollQueue"]
    answer = _invoke_built(
        sam_build_dir, "WebhookFunction", str(REPO_ROOT / "events/webhook.json"), demo_stack.env
    )
    assert answer["result"]["statusCode"] == 202
    assert json.loads(answer["result"]["body"]) == {"message": "accepted"}
    assert demo_stack.queue_depths()["PollQueue"] == before + 1


def test_migrator_sample_event_answers_cloudformation(
    sam_build_dir: Path, demo_stack: LocalStack
) -> None:
    received: list[dict[str, Any]] = []

    class Capture(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cfn-response"
        answer = _invoke_built(
            sam_build_dir,
            "MigrationFunction",
            str(REPO_ROOT / "events/migrator.json"),
            demo_stack.env,
            url,
        )
    finally:
        server.shutdown()
    assert answer["result"]["Status"] == "SUCCESS"
    assert received == [answer["result"]]
    assert received[0]["LogicalResourceId"] == "DatabaseMigration"
