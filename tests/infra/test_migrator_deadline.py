"""The built migration function answers CloudFormation FAILED, to a local response URL,
before its own timeout, whatever does not answer it: Postgres (a server that accepts the
connection and never says a word), Secrets Manager (the same, as the AWS endpoint), or its
own layer (an import that fails). The context's remaining time runs with the real clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devkit.template import REPO_ROOT

pytestmark = pytest.mark.infra

TIMEOUT_SECONDS = 8  # the function's timeout in these runs (template: 120)
InvokeBuilt = Callable[..., dict[str, Any]]  # the invoke_built fixture (tests/infra/conftest.py)


def _run_built_migrator(
    invoke_built: InvokeBuilt,
    build: Path,
    answers: Any,
    env: dict[str, str],
    *,
    layer: Path | None = None,
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    answer = invoke_built(
        build,
        "MigrationFunction",
        str(REPO_ROOT / "events" / "migrator.json"),
        {
            "ESL_SYNC_TEST_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AWS_LAMBDA_FUNCTION_NAME": "esl-sync-MigrationFunction-x",
            **env,
        },
        answers.url,
        layer=layer,
    )
    result: dict[str, Any] = answer["result"]
    return result, time.monotonic() - started


def test_a_postgres_that_never_answers(
    invoke_built: InvokeBuilt, sam_build_dir: Path, cloudformation: Any, silent_server: int
) -> None:
    url = f"postgresql://app:pw@127.0.0.1:{silent_server}/esl?sslmode=require"
    answer, elapsed = _run_built_migrator(
        invoke_built, sam_build_dir, cloudformation, {"DATABASE_URL": url}
    )
    assert elapsed < TIMEOUT_SECONDS, f"answered after {elapsed:.1f} s"
    assert cloudformation.answers == [answer]
    assert answer["Status"] == "FAILED"
    assert answer["LogicalResourceId"] == "DatabaseMigration"
    assert "timeout" in answer["Reason"].lower() or "did not finish" in answer["Reason"]
    assert "pw@" not in answer["Reason"]


def test_a_secrets_manager_that_never_answers(
    invoke_built: InvokeBuilt, sam_build_dir: Path, cloudformation: Any, silent_server: int
) -> None:
    env = {
        "DATABASE_URL_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent_server}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    answer, elapsed = _run_built_migrator(invoke_built, sam_build_dir, cloudformation, env)
    assert elapsed < TIMEOUT_SECONDS, f"answered after {elapsed:.1f} s"
    assert cloudformation.answers == [answer]
    assert answer["Status"] == "FAILED"
    assert "did not finish" in answer["Reason"] or "timeout" in answer["Reason"].lower()


def test_a_layer_that_cannot_be_imported(
    invoke_built: InvokeBuilt, sam_build_dir: Path, cloudformation: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "layer"
    (broken / "esl_sync").mkdir(parents=True)
    (broken / "esl_sync" / "__init__.py").write_text(
        "raise ImportError('the layer was built for another platform')\n"
    )
    answer, elapsed = _run_built_migrator(
        invoke_built, sam_build_dir, cloudformation, {}, layer=broken
    )
    assert elapsed < TIMEOUT_SECONDS
    assert cloudformation.answers == [answer]
    assert answer["Status"] == "FAILED"
    assert "cannot start" in answer["Reason"]
    assert "another platform" in answer["Reason"]
    assert answer["StackId"].startswith("arn:aws:cloudformation:")
    assert answer["RequestId"]
    assert answer["PhysicalResourceId"]
