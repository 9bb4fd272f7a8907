"""Fixtures of the infra tests: the template as data, and one `sam build` per session.

`sam_build_dir` builds the stack for the HOST architecture (the template says arm64; a copy
with the host's architecture is built, and the layer's Makefile is told the host's platform)
so that the built handlers and the layer's compiled wheels (pydantic-core, psycopg-binary,
wrapt) import on this machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devkit.template import REPO_ROOT, TEMPLATE_PATH, load_template

TEMPLATE_ARCHITECTURE = "arm64"
LAMBDA_PYTHON = "python3.13"
BUILD_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml as plain data (short tags turned into their JSON form)."""
    return load_template(TEMPLATE_PATH)


def tool_env() -> dict[str, str]:
    """The environment for `sam`: this venv's bin first (so `python3.13` is the venv's),
    no telemetry, a region (cfn-lint and the SAM translator need one)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["SAM_CLI_TELEMETRY"] = "0"
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_REGION", env["AWS_DEFAULT_REGION"])
    return env


def sam_executable() -> str:
    sam = shutil.which("sam", path=tool_env()["PATH"])
    if sam is None:
        pytest.fail(
            "the infra tests need the `sam` command (aws-sam-cli): install the dev extra, "
            "e.g. `pip install -e '.[dev]'`, into the venv that runs pytest"
        )
    return sam


def host_architecture() -> str:
    machine = platform.machine().lower()
    if machine in {"x86_64", "amd64"}:
        return "x86_64"
    if machine in {"aarch64", "arm64"}:
        return "arm64"
    pytest.fail(f"sam build: Lambda has no architecture for this host ({platform.machine()})")


@pytest.fixture(scope="session")
def sam_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `sam build` once for the host architecture; return the build directory.

    It holds `template.yaml`, `CommonLayer/python/...` (esl_sync and its dependencies) and
    `<FunctionLogicalId>/app.py` for every function.
    """
    env = tool_env()
    if shutil.which(LAMBDA_PYTHON, path=env["PATH"]) is None:
        pytest.fail(
            f"sam build needs `{LAMBDA_PYTHON}` on PATH (the Lambda runtime of the template); "
            f"run the tests from a {LAMBDA_PYTHON} venv or install {LAMBDA_PYTHON}"
        )
    sam = sam_executable()
    work = tmp_path_factory.mktemp("sam-build")
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    host_template = work / "template.yaml"
    host_template.write_text(
        text.replace(TEMPLATE_ARCHITECTURE, host_architecture()), encoding="utf-8"
    )
    build_dir = work / "build"
    # The layer's Makefile installs wheels for this platform (Lambda's arm64 by default).
    env["ESL_SYNC_LAYER_ARCH"] = "x86_64" if host_architecture() == "x86_64" else "aarch64"
    command = [
        sam,
        "build",
        "--template",
        str(host_template),
        "--base-dir",
        str(REPO_ROOT),
        "--build-dir",
        str(build_dir),
    ]
    try:
        result = subprocess.run(
            command,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"sam build did not finish within {BUILD_TIMEOUT_SECONDS} s")
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"sam build failed (exit {result.returncode}):\n{output}")
    return build_dir


@pytest.fixture(scope="session")
def sam_env() -> dict[str, str]:
    """The environment to run `sam` with (see :func:`tool_env`)."""
    return tool_env()


@pytest.fixture(scope="session")
def sam_command() -> str:
    """The `sam` executable; fails (never skips) when it is missing."""
    return sam_executable()


RUNNER = """
import importlib, importlib.util, json, os, sys, time
deadline = time.monotonic() + float(os.environ.get("ESL_SYNC_TEST_TIMEOUT_SECONDS", "60"))
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

class Context:
    function_name = "built"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:built"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    def get_remaining_time_in_millis(self):
        return int((deadline - time.monotonic()) * 1000)

event = json.load(open(sys.argv[2]))
if len(sys.argv) > 3:
    event["ResponseURL"] = sys.argv[3]
result = module.lambda_handler(event, Context())
origins = {}
for name in ("esl_sync", "pydantic", "botocore"):
    try:
        origins[name] = importlib.import_module(name).__file__
    except Exception:
        origins[name] = None
print(json.dumps({**origins, "result": result}, default=str))
"""

InvokeBuilt = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def invoke_built() -> InvokeBuilt:
    """``invoke_built(build, logical_id, event_file, env, [response_url], layer=None)``: the
    built function run in a subprocess with exactly ``env`` and a path of the built layer
    (or ``layer``) and the function's folder, so it imports the build, not the checkout;
    boto3 and botocore come from outside it, as the Lambda runtime provides them. Its
    context's remaining time runs down with the clock from ``ESL_SYNC_TEST_TIMEOUT_SECONDS``
    in ``env`` (60 by default). Returns ``{"result": ...}`` and where ``esl_sync``,
    ``pydantic`` and ``botocore`` came from (checked, unless a ``layer`` is given)."""

    def invoke(
        build: Path,
        logical_id: str,
        event_file: str,
        env: dict[str, str],
        *extra: str,
        layer: Path | None = None,
    ) -> dict[str, Any]:
        layer_path = layer or build / "CommonLayer" / "python"
        path = os.pathsep.join([str(layer_path), str(build / logical_id)])
        completed = subprocess.run(
            [sys.executable, "-c", RUNNER, str(build / logical_id / "app.py"), event_file, *extra],
            env={**env, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        if layer is None:
            assert answer["esl_sync"].startswith(str(build)), "imported the checkout"
            assert answer["pydantic"].startswith(str(build)), "imported the venv's pydantic"
            assert not answer["botocore"].startswith(str(build)), "the layer ships botocore"
        return answer

    return invoke
