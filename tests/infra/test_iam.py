"""Each function's role grants exactly what its handler calls, plus what AWS does with it.

The calls come from tests/infra/aws_calls.json: what the handlers called across the whole
integration suite, recorded by the local stack (devkit/aws_calls.py) and rewritten by
`scripts/record-aws-calls`. The file cannot drift from the code: a session that runs the
whole integration suite fails when the calls made differ from it (tests/conftest.py), and
every local stack fails a call its function's role does not grant. So a new call in the
code fails first where it is made, then here until the role grants it; a call the code no
longer makes fails here until the role stops granting it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devkit.aws_calls import OPERATOR, AwsCall, read_record
from devkit.iam import attribute_limits, function_env, problems, role_grants, role_name
from devkit.lambda_runner import FUNCTIONS
from devkit.template import REPO_ROOT, translate

pytestmark = pytest.mark.infra

Template = dict[str, Any]
AWS_CALLS = REPO_ROOT / "tests" / "infra" / "aws_calls.json"
TOKEN_ATTRIBUTES = {"token_ciphertext", "token_generation", "auth_state", "high_water_ms"}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def recorded() -> set[AwsCall]:
    return {
        AwsCall(function, action, resource, tuple(attributes))
        for function, actions in read_record(AWS_CALLS).items()
        for action, resources in actions.items()
        for resource, attributes in resources.items()
    }


@pytest.mark.parametrize("function", sorted(FUNCTIONS.values()))
def test_the_role_grants_exactly_what_the_function_calls(template: Template, function: str) -> None:
    found = problems(template, function, recorded(), exact=True)
    assert found == [], "\n".join(found)


def test_every_function_was_recorded_reading_its_database_secret() -> None:
    readers = {
        c.function
        for c in recorded()
        if (c.action, c.resource)
        == ("secretsmanager:GetSecretValue", "env:DATABASE_URL_SECRET_ARN")
    }
    assert readers == {*FUNCTIONS.values(), OPERATOR}


def test_the_comparison_names_the_role_and_what_to_change(template: Template) -> None:
    calls = recorded()
    extra = AwsCall("WebhookFunction", "dynamodb:PutItem", "StateTable", ("merchant_id",))
    assert problems(template, "WebhookFunction", calls | {extra}, exact=False) == [
        "WebhookFunction calls dynamodb:PutItem on StateTable, which WebhookRole does not"
        " grant: add it to WebhookRole in template.yaml"
    ]
    without_sends = {c for c in calls if c.action != "sqs:SendMessage"}
    assert problems(template, "PollerFunction", without_sends, exact=True) == [
        "PollerRole grants sqs:SendMessage on LabelQueue, which PollerFunction never calls"
        " (tests/infra/aws_calls.json): remove it"
    ]
    tokens = AwsCall("WebhookFunction", "dynamodb:UpdateItem", "StateTable", ("token_ciphertext",))
    [complaint] = problems(template, "WebhookFunction", {tokens}, exact=False)
    assert "['token_ciphertext']" in complaint
    assert "dynamodb:Attributes condition does not list" in complaint


def test_the_webhook_may_write_only_its_hints(template: Template) -> None:
    [(key, allowed)] = attribute_limits(template, "WebhookFunction").items()
    assert key == ("dynamodb:UpdateItem", "StateTable")
    assert "merchant_id" in allowed
    assert not allowed & TOKEN_ATTRIBUTES
    [statement] = [
        s
        for p in template["Resources"]["WebhookRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if "dynamodb:Attributes" in str(s.get("Condition"))
    ]
    # Nothing written may be read back whole through ReturnValues.
    assert statement["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"] == [
        "NONE",
        "UPDATED_OLD",
        "UPDATED_NEW",
    ]
    actions = {g[0] for g in role_grants(template, "WebhookFunction") if g[0].startswith("dynamo")}
    assert actions == {"dynamodb:UpdateItem"}


def test_the_onboarding_function_writes_tokens_it_can_never_read(template: Template) -> None:
    """It stores the exchanged pair, takes the refresh lock and marks sign-ins used: an
    UpdateItem limited to those attributes, returning nothing; KMS encrypt, never decrypt
    but through DynamoDB; no read of the table at all."""
    [(key, allowed)] = attribute_limits(template, "OnboardingFunction").items()
    assert key == ("dynamodb:UpdateItem", "StateTable")
    assert allowed == {
        "merchant_id",
        "refresh_lock_owner",
        "refresh_lock_until_ms",
        "oauth_state_issued_ms",
        "oauth_state_nonce",
        "authorized_ms",
        "token_ciphertext",
        "token_generation",
        "auth_state",
    }
    assert not allowed & {"high_water_ms", "lease_owner", "pending_deletes", "version"}
    grants = role_grants(template, "OnboardingFunction")
    assert {g[0] for g in grants if g[0].startswith("dynamodb")} == {"dynamodb:UpdateItem"}
    assert ("kms:Encrypt", "StateKey", "") in grants
    assert {g for g in grants if g[0] == "kms:Decrypt"} == {
        ("kms:Decrypt", "StateKey", "via dynamodb")
    }
    [statement] = [
        s
        for p in template["Resources"]["OnboardingRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if "dynamodb:Attributes" in str(s.get("Condition"))
    ]
    assert statement["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"] == ["NONE"]


@pytest.mark.parametrize("read_only", [True, False])
def test_dispatcher_and_webhook_use_the_read_only_login_when_there_is_one(
    template: Template, read_only: bool
) -> None:
    account = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:esl-sync"
    parameters = {
        "DatabaseUrlSecretArn": f"{account}/app-AbCdEf",
        "ReadOnlyDatabaseUrlSecretArn": f"{account}/reader-AbCdEf" if read_only else "",
    }
    plain = _resolve_conditions(translate(template, parameters), parameters)
    expected = parameters["ReadOnlyDatabaseUrlSecretArn" if read_only else "DatabaseUrlSecretArn"]
    for function in FUNCTIONS.values():
        resource = plain["Resources"][function]["Properties"]
        secret = resource["Environment"]["Variables"]["DATABASE_URL_SECRET_ARN"]
        reader = function in ("DispatcherFunction", "WebhookFunction")
        assert secret == (expected if reader else parameters["DatabaseUrlSecretArn"]), function
        role = plain["Resources"][role_name(template, function)]["Properties"]
        readable = [
            r
            for p in role["Policies"]
            for s in p["PolicyDocument"]["Statement"]
            if "secretsmanager:GetSecretValue" in str(s["Action"])
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        ]
        assert secret in readable, function
        if reader and read_only:
            assert parameters["DatabaseUrlSecretArn"] not in readable, function


def test_the_schedule_may_only_invoke_the_dispatcher(template: Template) -> None:
    role = template["Resources"]["DispatchScheduleRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    [policy] = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Sid": "InvokeDispatcher",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": ["DispatcherFunction", "Arn"]},
        }
    ]


def test_secrets_are_granted_through_the_variable_that_names_them(template: Template) -> None:
    for function in FUNCTIONS.values():
        env = function_env(template, function)
        for action, resource, _ in role_grants(template, function):
            if action == "secretsmanager:GetSecretValue":
                assert resource.startswith("env:"), (function, resource)
                assert resource.removeprefix("env:") in env


def _resolve_conditions(template: Template, parameters: dict[str, str]) -> Template:
    """Fn::If and Ref to parameters resolved (enough of CloudFormation for these checks)."""
    conditions: dict[str, bool] = {}

    def value(node: Any) -> Any:
        if isinstance(node, list):
            return [value(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"} and node["Ref"] in parameters:
            return parameters[node["Ref"]]
        if set(node) == {"Fn::If"}:
            name, when_true, when_false = node["Fn::If"]
            return value(when_true if condition(name) else when_false)
        if set(node) == {"Fn::Equals"}:
            left, right = value(node["Fn::Equals"])
            return left == right
        if set(node) == {"Fn::Not"}:
            return not value(node["Fn::Not"][0])
        if set(node) == {"Condition"}:
            return condition(node["Condition"])
        return {k: value(v) for k, v in node.items()}

    def condition(name: str) -> bool:
        if name not in conditions:
            conditions[name] = bool(value(template["Conditions"][name]))
        return conditions[name]

    return {"Resources": value(template["Resources"])}


# ---------------------------------------------------------------- people's policies

POLICIES = REPO_ROOT / "deploy" / "iam"
# An ARN pattern of deploy/iam/*.json (placeholders REGION, ACCOUNT, STACK, …) -> the
# logical id (or secret variable) of the resource it matches in a stack named STACK.
OPERATOR_RESOURCES = {
    "arn:aws:cloudformation:REGION:ACCOUNT:stack/STACK/*": "Stack",
    "DATABASE_SECRET_ARN": "env:DATABASE_URL_SECRET_ARN",
    "arn:aws:dynamodb:REGION:ACCOUNT:table/STACK-StateTable-*": "StateTable",
    "arn:aws:kms:REGION:ACCOUNT:key/*": "StateKey",  # with the alias condition, below
    "arn:aws:sqs:REGION:ACCOUNT:STACK-PollQueue-*": "PollQueue",
    "arn:aws:sqs:REGION:ACCOUNT:STACK-LabelQueue-*": "LabelQueue",
    "arn:aws:sqs:REGION:ACCOUNT:STACK-PollDeadLetterQueue-*": "PollDeadLetterQueue",
    "arn:aws:sqs:REGION:ACCOUNT:STACK-LabelDeadLetterQueue-*": "LabelDeadLetterQueue",
}


def _policy(name: str) -> list[dict[str, Any]]:
    document = json.loads((POLICIES / name).read_text())
    assert document["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = document["Statement"]
    return statements


def test_the_operator_policy_is_what_the_cli_calls(template: Template) -> None:
    """`esl-sync --stack NAME …` (all but demo, bench and cycle) against a deployed stack."""
    granted = set()
    for statement in _policy("operator-policy.json"):
        condition = statement.get("Condition", {})
        if "kms:ResourceAliases" in str(condition):
            aliases = condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"]
            assert aliases == "alias/STACK-state", "the key is named by the stack's alias"
        via = "via dynamodb" if "kms:ViaService" in str(condition) else ""
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                granted.add((action, OPERATOR_RESOURCES[resource], via))
    calls = {c for c in recorded() if c.function == OPERATOR}
    assert calls, "no operator command was recorded"
    needed = {(c.action, c.resource, "") for c in calls}
    needed.add(("kms:Decrypt", "StateKey", "via dynamodb"))  # the table's own encryption
    assert granted == needed


DEPLOYER_NEEDS = {  # what creating and deleting each resource type of the stack takes
    "AWS::ApiGatewayV2::Api": "apigateway:POST",
    "AWS::ApiGatewayV2::Stage": "apigateway:POST",
    "AWS::CloudFormation::CustomResource": "lambda:InvokeFunction",
    "AWS::CloudWatch::Alarm": "cloudwatch:PutMetricAlarm",
    "AWS::CloudWatch::Dashboard": "cloudwatch:PutDashboard",
    "AWS::DynamoDB::Table": "dynamodb:CreateTable",
    "AWS::IAM::Role": "iam:CreateRole",
    "AWS::KMS::Alias": "kms:CreateAlias",
    "AWS::KMS::Key": "kms:CreateKey",
    "AWS::Lambda::EventSourceMapping": "lambda:CreateEventSourceMapping",
    "AWS::Lambda::Function": "lambda:CreateFunction",
    "AWS::Lambda::LayerVersion": "lambda:PublishLayerVersion",
    "AWS::Lambda::Permission": "lambda:AddPermission",
    "AWS::Logs::LogGroup": "logs:CreateLogGroup",
    "AWS::SNS::Subscription": "sns:Subscribe",
    "AWS::SNS::Topic": "sns:CreateTopic",
    "AWS::SNS::TopicPolicy": "sns:SetTopicAttributes",
    "AWS::SQS::Queue": "sqs:CreateQueue",
    "AWS::Scheduler::Schedule": "scheduler:CreateSchedule",
    "AWS::SecretsManager::Secret": "secretsmanager:CreateSecret",
}


def test_the_deployer_policy_covers_every_resource_of_the_stack(template: Template) -> None:
    statements = _policy("deployer-policy.json")
    actions = {a for s in statements for a in as_list(s["Action"])}
    for kind in {r["Type"] for r in translate(template)["Resources"].values()}:
        assert kind in DEPLOYER_NEEDS, f"{kind}: say what deploying it takes"
        assert DEPLOYER_NEEDS[kind] in actions, kind
    assert {"cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet"} <= actions
    assert not any(a == "*" or a.endswith(":*") for a in actions)
    [pass_role] = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    passed = pass_role["Condition"]["StringEquals"]["iam:PassedToService"]
    assert sorted(passed) == ["lambda.amazonaws.com", "scheduler.amazonaws.com"]
