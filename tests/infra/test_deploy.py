"""What a first deploy needs from the template, checked on the plain CloudFormation that
`sam deploy` submits (the SAM translator's output): a second stack in the same account
collides with nothing, nothing runs before the schema exists, and the migration cannot
hold CloudFormation for its default hour."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devkit.template import REPO_ROOT, translate
from esl_sync.store.schema import migration_files

pytestmark = pytest.mark.infra

Template = dict[str, Any]

# Per resource type, the property naming it where names are unique per account and region
# (None: the type has no such name). A type missing here fails the test until someone says.
UNIQUE_NAME = {
    "AWS::ApiGatewayV2::Api": None,  # API names need not be unique
    "AWS::ApiGatewayV2::Stage": None,  # unique within its API only
    "AWS::CloudFormation::CustomResource": None,
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::IAM::Role": "RoleName",
    "AWS::KMS::Alias": "AliasName",
    "AWS::KMS::Key": None,
    "AWS::Lambda::EventSourceMapping": None,
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Lambda::LayerVersion": "LayerName",  # versions of one name: shared across stacks
    "AWS::Lambda::Permission": None,
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SNS::Subscription": None,
    "AWS::SNS::Topic": "TopicName",
    "AWS::SNS::TopicPolicy": None,
    "AWS::SQS::Queue": "QueueName",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::SecretsManager::Secret": "Name",
}


@pytest.fixture(scope="module")
def deployed(template: Template) -> Template:
    return translate(template)


def _mentions_stack_name(value: Any) -> bool:
    return "AWS::StackName" in str(value)


def test_no_resource_has_a_fixed_unique_name(deployed: Template) -> None:
    fixed = []
    for logical_id, resource in deployed["Resources"].items():
        kind = resource["Type"]
        assert kind in UNIQUE_NAME, f"{kind} ({logical_id}): add it to UNIQUE_NAME"
        name = UNIQUE_NAME[kind]
        props = resource.get("Properties", {})
        if name in props and not _mentions_stack_name(props[name]):
            fixed.append(f"{logical_id}.{name} = {props[name]!r}")
    assert fixed == [], "a second stack in the account would collide: " + ", ".join(fixed)


def test_the_names_it_does_set_follow_the_stack(deployed: Template) -> None:
    named = {
        logical_id: resource["Properties"][UNIQUE_NAME[resource["Type"]]]
        for logical_id, resource in deployed["Resources"].items()
        if UNIQUE_NAME[resource["Type"]] in resource.get("Properties", {})
    }
    assert set(named) >= {"StateKeyAlias", "Dashboard", "OAuthStateKeySecret"}
    assert any(r["Type"] == "AWS::Scheduler::Schedule" for r in deployed["Resources"].values())
    assert all(_mentions_stack_name(v) for v in named.values())


def _needs_schema(function_dir: str) -> bool:
    code = (REPO_ROOT / "functions" / function_dir / "app.py").read_text()
    return bool(re.search(r'require\([^)]*"database_url"', code))


def test_functions_that_use_the_schema_wait_for_the_migration(
    template: Template, deployed: Template
) -> None:
    waiting = set()
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        directory = resource["Properties"]["CodeUri"].strip("/").split("/")[-1]
        depends = deployed["Resources"][logical_id].get("DependsOn", [])
        depends = depends if isinstance(depends, list) else [depends]
        if _needs_schema(directory):
            assert "DatabaseMigration" in depends, f"{logical_id} may run before the schema"
            waiting.add(logical_id)
    assert waiting == {
        "DispatcherFunction",
        "PollerFunction",
        "HipoinkSenderFunction",
        "WebhookFunction",
        "OnboardingFunction",
    }
    # Their triggers need the function, so they wait too: nothing polls before the schema.
    schedule = deployed["Resources"]["DispatchSchedule"]["Properties"]["Target"]
    assert schedule["Arn"] == {"Fn::GetAtt": ["DispatcherFunction", "Arn"]}


def test_cloudformation_gives_up_on_the_migration_in_minutes_not_an_hour(
    template: Template,
) -> None:
    migration = template["Resources"]["DatabaseMigration"]["Properties"]
    timeout = template["Resources"]["MigrationFunction"]["Properties"]["Timeout"]
    assert isinstance(migration["ServiceTimeout"], int)
    # The function answers within its timeout; the service timeout only covers a function
    # that never runs (and an asynchronous retry after a crash: a minute's wait, then again).
    assert 2 * timeout + 60 <= migration["ServiceTimeout"] <= 600


def test_the_schema_version_is_the_newest_migration(template: Template) -> None:
    newest = migration_files()[-1][0]
    version = template["Resources"]["DatabaseMigration"]["Properties"]["SchemaVersion"]
    assert version == str(int(newest.split("_", 1)[0])), (
        f"bump DatabaseMigration's SchemaVersion to {int(newest.split('_', 1)[0])} so that"
        f" the deploy applies {newest}"
    )


# ---------------------------------------------------------------- sam deploy --guided


def _samconfig_deploy() -> dict[str, Any]:
    from samcli.lib.config.samconfig import SamConfig

    parameters: dict[str, Any] = SamConfig(str(REPO_ROOT), "samconfig.toml").get_all(
        ["deploy"], "parameters"
    )
    return parameters


def test_samconfig_offers_every_non_secret_default(template: Template) -> None:
    config = _samconfig_deploy()
    overrides = dict(item.split("=", 1) for item in config["parameter_overrides"])
    defaults = {n: p["Default"] for n, p in template["Parameters"].items() if "Default" in p}
    assert set(overrides) == set(defaults), "samconfig.toml and the template's defaults differ"
    for name, value in overrides.items():
        assert value == str(defaults[name]), name
    asked = set(template["Parameters"]) - set(overrides)
    assert asked == {
        "HipoinkApiBaseUrl",
        "DatabaseUrlSecretArn",
        "HipoinkSignSecretArn",
        "CloverWebhookAuthSecretArn",
        "CloverAppSecretArn",
    }
    assert config["capabilities"] == "CAPABILITY_IAM"
    assert config["resolve_s3"] is True
    assert config["confirm_changeset"] is True
    assert config["stack_name"] == "esl-sync"


def test_the_guided_deploy_asks_about_the_public_routes_only_and_the_readme_answers(
    template: Template,
) -> None:
    from samcli.commands.deploy.auth_utils import auth_per_resource
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    stacks, _ = SamLocalStackProvider.get_stacks(str(REPO_ROOT / "template.yaml"))
    unauthenticated = [name for name, ok in auth_per_resource(stacks) if not ok]
    # Asked once per route: the install's three, the webhook's one.
    assert sorted(unauthenticated) == ["OnboardingFunction"] * 3 + ["WebhookFunction"]
    readme = (REPO_ROOT / "README.md").read_text()
    for function in set(unauthenticated):
        assert f"{function} has no authentication. Is this okay? [y/N]: y" in readme
