"""`sam local invoke` for a user with Docker, proved without Docker.

Every function's environment is resolved the way `sam local invoke` resolves it, with
samcli's own code: the template (parameters at their defaults, intrinsics resolved the way
sam local does), the shell, and the env-vars file samconfig.toml names. Nothing may be
left a placeholder (sam local turns a Ref it cannot resolve into the logical id, and an
intrinsic into ""). Then each built handler runs with exactly that environment, and its
sample event, against devkit/local_services.py (the services the file points at, here on
free ports, with ``host.docker.internal`` read as this machine, as it is from a container).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.config.samconfig import SamConfig
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

from devkit.local_services import (
    CONTAINER_HOST,
    DEMO_MERCHANT,
    DEMO_STORE,
    container_database_url,
    main,
    start,
)
from devkit.local_stack import Listen, LocalStack
from devkit.template import REPO_ROOT, TEMPLATE_PATH

pytestmark = pytest.mark.infra

Template = dict[str, Any]
InvokeBuilt = Callable[..., dict[str, Any]]  # the invoke_built fixture (tests/infra/conftest.py)
EVENTS = {
    "DispatcherFunction": "dispatcher",
    "PollerFunction": "poller",
    "HipoinkSenderFunction": "hipoink_sender",
    "MigrationFunction": "migrator",
    "WebhookFunction": "webhook",
    "OnboardingFunction": "onboarding",
}


def env_file() -> Path:
    config = SamConfig(str(REPO_ROOT), "samconfig.toml")
    return REPO_ROOT / config.get_all(["local", "invoke"], "parameters")["env_vars"]


def resolved_environments(template: Template) -> dict[str, dict[str, str]]:
    """What `sam local invoke <Function>` gives each function (as samcli computes it)."""
    stacks, _ = SamLocalStackProvider.get_stacks(str(TEMPLATE_PATH), parameter_overrides={})
    provider = SamFunctionProvider(stacks)
    overrides = json.loads(env_file().read_text())
    runner = LocalLambdaRunner(  # no runtime: only its environment resolution is used
        None,  # type: ignore[arg-type]
        provider,
        str(REPO_ROOT),
        str(REPO_ROOT),
        env_vars_values=overrides,
    )
    return {f.name: runner._make_env_vars(f).resolve() for f in provider.get_all()}


@pytest.fixture
def clean_shell(template: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell without the template's variables (sam local would pass them through)."""
    for resource in template["Resources"].values():
        for name in resource.get("Properties", {}).get("Environment", {}).get("Variables", {}):
            monkeypatch.delenv(name, raising=False)
    for name in template["Globals"]["Function"]["Environment"]["Variables"]:
        monkeypatch.delenv(name, raising=False)


def test_samconfig_gives_sam_local_the_env_file() -> None:
    assert env_file() == REPO_ROOT / "events" / "sam-local-env.json"


def test_every_function_has_its_values_and_none_is_a_placeholder(
    template: Template, clean_shell: None
) -> None:
    overrides = json.loads(env_file().read_text())
    environments = resolved_environments(template)
    assert set(environments) == set(EVENTS) == set(overrides)
    placeholders = set(template["Parameters"]) | set(template["Resources"])
    defaults = {n for n, p in template["Parameters"].items() if "Default" in p}
    for function, env in environments.items():
        declared = {
            **template["Globals"]["Function"]["Environment"]["Variables"],
            **template["Resources"][function]["Properties"]
            .get("Environment", {})
            .get("Variables", {}),
        }
        for name, value in declared.items():
            plain = not isinstance(value, dict) or value.get("Ref") in defaults
            assert plain or name in overrides[function], f"{function}: {name} needs a value"
        assert set(overrides[function]) <= set(declared), f"{function}: sam local drops the rest"
        for name, value in env.items():
            if name in declared and name not in overrides[function]:  # (not sam local's own)
                assert value not in placeholders, f"{function}: {name}={value} is a placeholder"
            assert ":function:" not in value, f"{function}: {name}={value} is a placeholder"
        assert env["AWS_SAM_LOCAL"] == "true"


@pytest.fixture
def services(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStack]:
    database = make_database()
    monkeypatch.setenv("DATABASE_URL", database)
    stack = start(database, Listen("127.0.0.1", 0, 0, 0), container_host="localhost")
    yield stack
    stack.__exit__(None, None, None)


def _as_seen_from_here(value: str, stack: LocalStack) -> str:
    """A container's address of devkit/local_services read from this machine."""
    assert stack.clover is not None
    assert stack.hipoink is not None
    listen = Listen()
    ports = {
        listen.aws_port: stack.env["AWS_ENDPOINT_URL"],
        listen.clover_port: stack.clover.base_url,
        listen.hipoink_port: stack.hipoink.base_url,
    }
    for port, here in ports.items():
        value = value.replace(f"http://{CONTAINER_HOST}:{port}", here)
    return value


def test_every_handler_starts_and_answers_its_sample_event(
    template: Template,
    clean_shell: None,
    sam_build_dir: Path,
    services: LocalStack,
    invoke_built: InvokeBuilt,
    cloudformation: Any,
) -> None:
    results = {}
    for function, env in resolved_environments(template).items():
        here = {k: _as_seen_from_here(v, services) for k, v in env.items()}
        assert not any(CONTAINER_HOST in v for v in here.values()), here
        event = str(REPO_ROOT / "events" / f"{EVENTS[function]}.json")
        extra = [cloudformation.url] if function == "MigrationFunction" else []
        results[function] = invoke_built(sam_build_dir, function, event, here, *extra)["result"]
    assert results["MigrationFunction"]["Status"] == "SUCCESS"
    assert results["DispatcherFunction"]["dispatched"] == 1
    assert results["PollerFunction"] == {"batchItemFailures": []}
    assert results["HipoinkSenderFunction"] == {"batchItemFailures": []}
    assert results["WebhookFunction"]["statusCode"] == 202
    assert results["OnboardingFunction"]["statusCode"] == 302  # on to Clover's authorize page
    location = results["OnboardingFunction"]["headers"]["Location"]
    assert location.startswith("http://localhost:4011/oauth/v2/authorize?client_id=")
    assert len(services.products(DEMO_MERCHANT)) == 60
    assert services.hipoink is not None
    assert services.hipoink.labels(DEMO_STORE)["REG-UNL"]["pp"] == "3.49"
    assert os.environ.get("AWS_SAM_LOCAL") is None


def test_the_database_secret_is_rewritten_for_containers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = container_database_url("postgresql://esl:pw@localhost:5432/esl_sync")
    assert conninfo_to_dict(url)["host"] == CONTAINER_HOST
    remote = "postgresql://esl:pw@db.internal:5432/esl_sync"
    assert conninfo_to_dict(container_database_url(remote))["host"] == "db.internal"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1
