"""The dispatcher and the webhook never load httpx (nor the Clover client): their cold
starts stay short and a failure of the HTTP stack cannot reach them (docs/architecture.md,
"Layers"); the poller loads it only to refresh a token (its Clover items client is
``http.client``). No function loads botocore: their AWS calls go through esl_sync.store.aws_json
(botocore's import, data and clients were a third of a poller's cold start). Powertools
imports the bare ``botocore`` package (its user-agent hook, ≈ 1 ms, nothing under it), so the
check is on botocore's modules: ``botocore.session``, ``botocore.client`` and the rest.

Each handler runs in a fresh interpreter, imported and invoked once with its sample event
against the local stack, the way Lambda starts it; then ``sys.modules`` tells what it
loaded. A poll that refreshes its token is the control: it does load httpx.

Nor does the poller load pydantic on an ordinary poll: its import and first model were
≈ 110 ms of a ≈ 320 ms cold start (docs/architecture.md, "Cheap cold starts"). An item
only pydantic can judge is the control."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.catalog import gas_station_catalog
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.records import Merchant

REPO = Path(__file__).resolve().parents[2]

# Only the standard library besides the handler itself: anything imported here would
# count against it.
INVOKE = """
import builtins, importlib.util, json, sys
from pathlib import Path

# Who imports botocore (even when it is loaded already): the importing module's name.
botocore_importers = set()
_import = builtins.__import__

def _watching(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "?")
    if level == 0 and name.split(".")[0] == "botocore" and importer.split(".")[0] != "botocore":
        botocore_importers.add(importer)
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = _watching

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
loaded = sorted(
    m
    for m in sys.modules
    if m.split(".")[0] in ("httpx", "botocore", "pydantic", "pydantic_core")
    or m.startswith("esl_sync")
)
found = {"answer": answer, "loaded": loaded, "botocore_importers": sorted(botocore_importers)}
print(json.dumps(found, default=str))
"""


def _invoke(
    function: str, env: dict[str, str | None] | None = None
) -> tuple[dict[str, object], list[str]]:
    answer, loaded, _ = _invoke_watched(function, env)
    return answer, loaded


def _invoke_watched(
    function: str, env: dict[str, str | None] | None = None
) -> tuple[dict[str, object], list[str], list[str]]:
    """The handler's answer, the modules it loaded, the modules that imported botocore."""
    changed = {**os.environ, **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-c", INVOKE, str(REPO), function],
        env={name: value for name, value in changed.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return result["answer"], result["loaded"], result["botocore_importers"]


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


def _httpx_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] in ("httpx", "httpcore", "h11")]


@pytest.fixture
def demo_catalog(stack: LocalStack) -> LocalStack:
    """The sample events' merchant with a token and 30 items in Clover: its first poll is a
    first sync, the next ones idle polls."""
    stack.add_merchant(
        "MDEMO0000001", "tok-demo-0001", "STORE-DEMO-1", items=gas_station_catalog(30)
    )
    return stack


def test_the_poller_never_loads_httpx_on_a_first_sync_or_an_idle_poll(
    demo_catalog: LocalStack,
) -> None:
    """Its Clover client is ``http.client`` (esl_sync.http_connections); httpx is for the
    token refresh (esl_sync.clover.oauth) alone."""
    assert demo_catalog.clover is not None
    for polls in (1, 2):  # the first sync, then an idle poll
        answer, loaded = _invoke("poller")
        assert answer == {"batchItemFailures": []}
        assert demo_catalog.clover.request_count("MDEMO0000001", "list") == polls
        assert "esl_sync.clover.client" in loaded  # it read Clover through its client
        assert _httpx_modules(loaded) == []
        assert "esl_sync.clover.oauth" not in loaded
    assert len(demo_catalog.products("MDEMO0000001")) == 30


def test_a_token_refresh_loads_httpx_so_the_check_can_fail(demo_catalog: LocalStack) -> None:
    """The control: a poll whose access token is about to expire refreshes it through the
    OAuth client, which is on httpx; the same check then sees it."""
    assert demo_catalog.clover is not None
    demo_catalog.use_token_pair("MDEMO0000001", access_lifetime_seconds=5)
    answer, loaded = _invoke("poller")
    assert answer == {"batchItemFailures": []}
    assert demo_catalog.clover.request_count("MDEMO0000001", "refresh") == 1
    assert demo_catalog.clover.request_count("MDEMO0000001", "list") == 1
    assert "esl_sync.clover.oauth" in loaded
    assert "httpx" in _httpx_modules(loaded)


def _pydantic_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] in ("pydantic", "pydantic_core")]


def test_the_poller_never_loads_pydantic_on_a_first_sync_or_an_idle_poll(
    demo_catalog: LocalStack,
) -> None:
    """Its settings, stored tokens, queue messages and SQS record are plain classes; the
    models that judge an unusual item load only for such an item."""
    assert demo_catalog.clover is not None
    for polls in (1, 2):  # the first sync, then an idle poll
        answer, loaded = _invoke("poller")
        assert answer == {"batchItemFailures": []}
        assert demo_catalog.clover.request_count("MDEMO0000001", "list") == polls
        assert "esl_sync.sync.item_rows" in loaded  # it made rows of items
        assert _pydantic_modules(loaded) == []
    assert len(demo_catalog.products("MDEMO0000001")) == 30


def test_an_item_only_pydantic_can_judge_loads_it_so_the_check_can_fail(
    demo_catalog: LocalStack,
) -> None:
    """The control: after the first sync, an item whose price Clover sends as text is
    judged (and refused by name) by the pydantic model; the same check then sees it."""
    assert demo_catalog.clover is not None
    answer, loaded = _invoke("poller")
    assert _pydantic_modules(loaded) == []
    item = demo_catalog.clover.items("MDEMO0000001")[0]
    demo_catalog.clover.update_item("MDEMO0000001", item["id"], price="3.49")
    demo_catalog.clover.clock_offset_ms += 600_000  # the next poll is due
    answer, loaded = _invoke("poller")
    assert answer == {"batchItemFailures": []}
    assert "pydantic" in _pydantic_modules(loaded)
    assert "esl_sync.clover.items" in loaded
    row = next(p for p in demo_catalog.products("MDEMO0000001") if p["source_id"] == item["id"])
    assert "price" in str(row["validation_error"])


def _botocore_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.startswith("botocore.")]


def test_the_poller_never_loads_botocore(demo_merchant: LocalStack) -> None:
    answer, loaded, importers = _invoke_watched("poller")
    assert answer == {"batchItemFailures": []}
    assert "esl_sync.store.aws_json" in loaded  # it called AWS
    assert _botocore_modules(loaded) == []
    assert importers == ["aws_lambda_powertools.shared.user_agent"]  # the bare package


# The X-Ray SDK's recorder imports its sampling connector, which imports botocore.session
# (for centralized sampling rules, which Lambda does not use): the functions traced with it
# load botocore through it, and only through it (docs/architecture.md, "Cheap cold starts").
_XRAY_SDK_ONLY = ["aws_lambda_powertools.shared.user_agent", "aws_xray_sdk.core.sampling.connector"]


@pytest.mark.parametrize("function", ["dispatcher", "webhook", "hipoink_sender"])
def test_nothing_of_ours_imports_botocore(demo_merchant: LocalStack, function: str) -> None:
    answer, loaded, importers = _invoke_watched(function)
    assert answer not in (None, {}), answer  # it ran its sample event
    assert "esl_sync.store.aws_json" in loaded  # and called AWS through this client
    assert importers == _XRAY_SDK_ONLY
    assert "botocore.session" in loaded  # (what the SDK's connector costs them)


def test_the_botocore_checks_can_fail(demo_merchant: LocalStack, tmp_path: Path) -> None:
    """Without keys in the environment the client falls back to botocore's credential
    chain (an operator's profile): the same checks then see botocore, imported by us."""
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = local\naws_secret_access_key = local\n"
    )
    answer, loaded, importers = _invoke_watched(
        "poller",
        {
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        },
    )
    assert answer == {"batchItemFailures": []}  # it worked, signed with the profile's keys
    assert "botocore.session" in _botocore_modules(loaded)
    assert "esl_sync.store.aws" in importers
