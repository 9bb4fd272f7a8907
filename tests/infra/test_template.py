"""The SAM template: it lints clean, holds the guarantees the design relies on, and builds."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from devkit.iam import function_env
from devkit.template import REPO_ROOT, TEMPLATE_PATH
from esl_sync.events import ScheduleEvent
from esl_sync.messages import LabelJob, LabelVerify, PollRequest
from esl_sync.settings import Settings
from esl_sync.webhooks import CloverNotification

pytestmark = pytest.mark.infra


Template = dict[str, Any]

FUNCTION_DIRS = {
    "DispatcherFunction": "dispatcher",
    "PollerFunction": "poller",
    "HipoinkSenderFunction": "hipoink_sender",
    "MigrationFunction": "migrator",
    "WebhookFunction": "webhook",
    "OnboardingFunction": "onboarding",
}
# main queue -> (its dead-letter queue, the function that consumes it)
QUEUES = {
    "PollQueue": ("PollDeadLetterQueue", "PollerFunction"),
    "LabelQueue": ("LabelDeadLetterQueue", "HipoinkSenderFunction"),
}
# The only actions that may (must) name every resource.
WILDCARD_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
CLOVER_MAX_IN_FLIGHT = 10


# ---------------------------------------------------------------- helpers


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def functions(template: Template) -> dict[str, dict[str, Any]]:
    return resources(template, "AWS::Serverless::Function")


def function_property(template: Template, name: str, prop: str) -> Any:
    own = template["Resources"][name]["Properties"]
    if prop in own:
        return own[prop]
    return template.get("Globals", {}).get("Function", {}).get(prop)


env_vars = function_env


def role_of(template: Template, function: str) -> dict[str, Any]:
    role = template["Resources"][function]["Properties"]["Role"]
    assert set(role) == {"Fn::GetAtt"}, f"{function}: Role must be its own role in the template"
    role_name, attribute = role["Fn::GetAtt"]
    assert attribute == "Arn"
    resource = template["Resources"][role_name]
    assert resource["Type"] == "AWS::IAM::Role"
    return resource


def statements_of_role(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(statements: list[dict[str, Any]], action: str) -> list[Any]:
    """Every resource that `action` is allowed on."""
    found: list[Any] = []
    for statement in statements:
        if statement["Effect"] == "Allow" and action in as_list(statement["Action"]):
            found.extend(as_list(statement["Resource"]))
    return found


def identity_policy_statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of an identity policy (roles, policies, SAM function Policies)."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for statement in statements_of_role(resource):
                yield name, statement
        elif resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            for statement in props["PolicyDocument"]["Statement"]:
                yield name, statement
        elif resource["Type"] == "AWS::Serverless::Function":
            for policy in props.get("Policies", []):
                if isinstance(policy, dict) and "Statement" in policy:
                    for statement in policy["Statement"]:
                        yield name, statement


def load_event(name: str) -> dict[str, Any]:
    data = json.loads((REPO_ROOT / "events" / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------- lint


def test_sam_validate_lint_is_clean(sam_command: str, sam_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sam_command, "validate", "--lint", "--template", str(TEMPLATE_PATH)],
        cwd=REPO_ROOT,
        env=sam_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"\b[EW]\d{4}\b", output), output


# ---------------------------------------------------------------- queues


@pytest.mark.parametrize(("queue", "dead_letter_queue"), [(q, d) for q, (d, _) in QUEUES.items()])
def test_main_queue_redrives_to_its_own_dead_letter_queue(
    template: Template, queue: str, dead_letter_queue: str
) -> None:
    redrive = template["Resources"][queue]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dead_letter_queue, "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == 5


def test_every_queue_keeps_messages_14_days_encrypted(template: Template) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    assert set(queues) == {"PollQueue", "PollDeadLetterQueue", "LabelQueue", "LabelDeadLetterQueue"}
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props["MessageRetentionPeriod"] == 1209600, name
        assert props["SqsManagedSseEnabled"] is True, name


def test_label_queues_are_fifo_per_store(template: Template) -> None:
    label = template["Resources"]["LabelQueue"]["Properties"]
    assert label["FifoQueue"] is True
    assert label["DeduplicationScope"] == "messageGroup"
    assert label["FifoThroughputLimit"] == "perMessageGroupId"
    assert template["Resources"]["LabelDeadLetterQueue"]["Properties"]["FifoQueue"] is True
    assert "FifoQueue" not in template["Resources"]["PollQueue"]["Properties"]


@pytest.mark.parametrize(("queue", "consumer"), [(q, c) for q, (_, c) in QUEUES.items()])
def test_visibility_timeout_is_six_times_the_consumer_timeout(
    template: Template, queue: str, consumer: str
) -> None:
    events = template["Resources"][consumer]["Properties"]["Events"]
    sources = [e["Properties"]["Queue"] for e in events.values() if e["Type"] == "SQS"]
    assert sources == [{"Fn::GetAtt": [queue, "Arn"]}]
    timeout = function_property(template, consumer, "Timeout")
    visibility = template["Resources"][queue]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout, f"{queue}: {visibility} < 6 x {timeout}"


def test_sqs_events_report_item_failures_and_cap_concurrency(template: Template) -> None:
    seen = 0
    for name, function in functions(template).items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            seen += 1
            props = event["Properties"]
            assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
            concurrency = props["ScalingConfig"]["MaximumConcurrency"]
            assert set(concurrency) == {"Ref"}, name
            assert concurrency["Ref"] in template["Parameters"], name
    assert seen == 2


def test_poller_concurrency_stays_inside_clovers_in_flight_budget(template: Template) -> None:
    event = template["Resources"]["PollerFunction"]["Properties"]["Events"]["PollQueueEvent"]
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {
        "Ref": "PollerMaximumConcurrency"
    }
    assert event["Properties"]["BatchSize"] == {"Ref": "PollerBatchSize"}
    parameter = template["Parameters"]["PollerMaximumConcurrency"]
    assert parameter["Default"] == 2
    assert parameter["MinValue"] == 2
    assert parameter["MaxValue"] <= CLOVER_MAX_IN_FLIGHT
    # Every instance's share of Clover's budget, at every allowed concurrency: together they
    # stay within 50 requests/s and 10 in flight (an instance overlaps that many polls).
    share = template["Mappings"]["CloverShare"]
    for instances in range(parameter["MinValue"], parameter["MaxValue"] + 1):
        rps = int(share[str(instances)]["InstanceRps"])
        in_flight = int(share[str(instances)]["InstanceInFlight"])
        assert instances * rps <= 50, instances
        assert instances * in_flight <= CLOVER_MAX_IN_FLIGHT, instances
        assert in_flight >= 1
    env = template["Resources"]["PollerFunction"]["Properties"]["Environment"]["Variables"]
    for variable, key in (
        ("CLOVER_INSTANCE_RPS", "InstanceRps"),
        ("CLOVER_INSTANCE_IN_FLIGHT", "InstanceInFlight"),
    ):
        assert env[variable] == {
            "Fn::FindInMap": ["CloverShare", {"Ref": "PollerMaximumConcurrency"}, key]
        }
    sender = template["Resources"]["HipoinkSenderFunction"]["Properties"]["Events"]
    assert sender["LabelQueueEvent"]["Properties"]["BatchSize"] == 10
    assert template["Parameters"]["SenderMaximumConcurrency"]["Default"] == 2


def test_dispatcher_schedule_follows_the_sync_interval(template: Template) -> None:
    schedule = template["Resources"]["DispatchSchedule"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    props = schedule["Properties"]
    target = props["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["DispatcherFunction", "Arn"]}
    assert target["RoleArn"] == {"Fn::GetAtt": ["DispatchScheduleRole", "Arn"]}
    assert "Name" not in props, "a fixed name collides with a second stack in the account"
    assert json.loads(target["Input"]) == {
        "reason": "schedule",
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    }
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 0
    assert props["ScheduleExpression"] == {
        "Fn::FindInMap": ["SyncRate", {"Ref": "SyncIntervalSeconds"}, "Expression"]
    }
    parameter = template["Parameters"]["SyncIntervalSeconds"]
    assert str(parameter["Default"]) == "300"
    table = template["Mappings"]["SyncRate"]
    unit_seconds = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}
    for allowed in parameter["AllowedValues"]:
        expression = table[str(allowed)]["Expression"]
        match = re.fullmatch(r"rate\((\d+) (minutes?|hours?)\)", expression)
        assert match, expression
        assert int(match[1]) * unit_seconds[match[2]] == int(allowed), expression
        assert (int(match[1]) == 1) == (not match[2].endswith("s")), expression
    for name in ("DispatcherFunction", "PollerFunction"):
        assert env_vars(template, name)["CLOVER_SYNC_INTERVAL_SECONDS"] == {
            "Ref": "SyncIntervalSeconds"
        }


# ---------------------------------------------------------------- alarms


def test_every_alarm_explains_itself_and_notifies_the_topic(template: Template) -> None:
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert alarms
    topic = {"Ref": "AlarmTopic"}
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert len(props.get("AlarmDescription", "")) > 40, name
        assert topic in props["AlarmActions"], name
        assert topic in props["OKActions"], name
        # Missing data means "nothing happened" for every alarm but freshness, where it
        # means the dispatcher that measures freshness is not running.
        expected = "breaching" if name == "MerchantNotFreshAlarm" else "notBreaching"
        assert props["TreatMissingData"] == expected, name


ALARMS_OF_ISSUE_7 = {
    "PollDeadLetterAlarm",
    "LabelDeadLetterAlarm",
    "MerchantNotFreshAlarm",
    "CloverRateLimitAlarm",
    "SweepRefusedAlarm",
    "MerchantNeedsReauthAlarm",
    "HipoinkConfigErrorAlarm",
    "DispatcherErrorsAlarm",
    "PollerErrorsAlarm",
    "HipoinkSenderErrorsAlarm",
    "MigrationErrorsAlarm",
    "WebhookErrorsAlarm",
    "FunctionThrottlesAlarm",
    "PollQueueLateAlarm",
}


def test_the_alarms_operators_need_exist(template: Template) -> None:
    assert set(resources(template, "AWS::CloudWatch::Alarm")) >= ALARMS_OF_ISSUE_7


def _custom_metrics(props: dict[str, Any]) -> set[str]:
    stats = [props] + [
        q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q
    ]
    return {m["MetricName"] for m in stats if m.get("Namespace") == "EslSync"}


def test_every_custom_metric_an_alarm_watches_is_emitted_by_the_code(template: Template) -> None:
    code = "\n".join(
        path.read_text() for path in (REPO_ROOT / "layers/common/esl_sync").rglob("*.py")
    )
    for name, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        for metric in _custom_metrics(alarm["Properties"]):
            # add_metric(name="X"), single_metric("X"), or a table of counts ("X": "field")
            emitted = re.search(rf'(name=|\(\s*)"{metric}"|"{metric}": "', code)
            assert emitted, f"{name} watches {metric}, which nothing emits"


@pytest.mark.parametrize("dead_letter_queue", ["PollDeadLetterQueue", "LabelDeadLetterQueue"])
def test_every_dead_letter_queue_has_an_alarm(template: Template, dead_letter_queue: str) -> None:
    watching = [
        props
        for props in (
            a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
        )
        if {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letter_queue, "QueueName"]}}
        in props.get("Dimensions", [])
    ]
    assert len(watching) == 1
    props = watching[0]
    assert props["Namespace"] == "AWS/SQS"
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["Threshold"] == 0
    assert props["Period"] == 60
    assert props["EvaluationPeriods"] == 1
    assert "redrive" in props["AlarmDescription"]


def test_alarm_topic_key_lets_cloudwatch_publish(template: Template) -> None:
    # CloudWatch alarms cannot publish to a topic encrypted with alias/aws/sns.
    key_ref = template["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"]
    assert key_ref == {"Ref": "AlarmTopicKey"}
    key = template["Resources"]["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
    ]
    assert len(cloudwatch) == 1
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(as_list(cloudwatch[0]["Action"]))


# ---------------------------------------------------------------- functions


def test_globals(template: Template) -> None:
    function = template["Globals"]["Function"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["Tracing"] == "Active"
    assert function["MemorySize"] == 512
    assert function["Layers"] == [{"Ref": "CommonLayer"}]
    assert function["VpcConfig"]["Fn::If"][0] == "HasVpc"
    assert function["VpcConfig"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    variables = function["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "esl-sync"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "EslSync"
    assert variables["POWERTOOLS_LOG_LEVEL"] == variables["LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert variables["DATABASE_URL_SECRET_ARN"] == {"Ref": "DatabaseUrlSecretArn"}
    assert variables["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    assert variables["PSYCOPG_IMPL"] == "binary"


def test_common_layer(template: Template) -> None:
    layer = template["Resources"]["CommonLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert (REPO_ROOT / "layers/common/requirements.txt").is_file()
    assert "build-CommonLayer:" in (REPO_ROOT / "layers/common/Makefile").read_text()


@pytest.mark.parametrize(("function", "directory"), FUNCTION_DIRS.items())
def test_function_code_and_handler(template: Template, function: str, directory: str) -> None:
    props = template["Resources"][function]["Properties"]
    assert props["CodeUri"] == f"functions/{directory}/"
    assert props["Handler"] == "app.lambda_handler"
    requirements = REPO_ROOT / "functions" / directory / "requirements.txt"
    lines = requirements.read_text(encoding="utf-8").strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("#"), "function dependencies come from the common layer"


def test_functions_are_those_of_the_design(template: Template) -> None:
    assert set(functions(template)) == set(FUNCTION_DIRS)
    timeouts = {name: function_property(template, name, "Timeout") for name in FUNCTION_DIRS}
    assert timeouts == {
        "DispatcherFunction": 60,
        "PollerFunction": 300,
        "HipoinkSenderFunction": 60,
        "MigrationFunction": 120,
        "WebhookFunction": 15,
        "OnboardingFunction": 25,
    }
    # API Gateway gives an HTTP API's request 30 s: the install's answer comes before that.
    assert timeouts["OnboardingFunction"] < 30


def test_the_webhook_is_one_post_route_of_an_http_api(template: Template) -> None:
    events = template["Resources"]["WebhookFunction"]["Properties"]["Events"]
    assert [e["Type"] for e in events.values()] == ["HttpApi"]
    [route] = [e["Properties"] for e in events.values()]
    assert route["ApiId"] == {"Ref": "WebhookApi"}
    assert (route["Method"], route["Path"]) == ("POST", "/webhooks/clover/inventory")
    assert route["PayloadFormatVersion"] == "2.0"
    api = template["Resources"]["WebhookApi"]
    assert api["Type"] == "AWS::Serverless::HttpApi"
    assert api["Properties"]["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    url = template["Outputs"]["WebhookUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${WebhookApi}.execute-api.")
    assert url.endswith(route["Path"])


def test_the_install_is_three_get_routes_of_the_same_api(template: Template) -> None:
    events = template["Resources"]["OnboardingFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()}
    assert routes == {
        ("GET", "/clover"),
        ("GET", "/clover/install"),
        ("GET", "/clover/oauth/callback"),
    }
    for event in events.values():
        assert event["Type"] == "HttpApi"
        assert event["Properties"]["ApiId"] == {"Ref": "WebhookApi"}
        assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    site = template["Outputs"]["CloverSiteUrl"]["Value"]["Fn::Sub"]
    redirect = template["Outputs"]["CloverRedirectUri"]["Value"]["Fn::Sub"]
    assert site.startswith("https://${WebhookApi}.execute-api.")
    assert redirect.startswith(site + "/"), "Clover wants the redirect URI under the site URL"
    assert redirect.endswith("/clover/oauth/callback")
    access_log = template["Resources"]["WebhookApi"]["Properties"]["AccessLogSettings"]["Format"]
    assert "$context.routeKey" in access_log
    assert "querystring" not in access_log.lower(), "an install's query holds Clover's code"
    assert "$context.path" not in access_log


def test_every_function_has_its_own_log_group_with_retention(template: Template) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    used = []
    for name in functions(template):
        ref = template["Resources"][name]["Properties"]["LoggingConfig"]["LogGroup"]
        assert set(ref) == {"Ref"}, name
        group = ref["Ref"]
        assert group in groups, name
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        used.append(group)
    assert len(used) == len(set(used)), "two functions share a log group"
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_env_var_names_are_settings(template: Template) -> None:
    fields = {name.upper() for name in Settings.names()}
    # Declared for `sam local invoke --env-vars` only; CloudFormation drops it when deployed.
    assert template["Globals"]["Function"]["Environment"]["Variables"]["AWS_ENDPOINT_URL"] == {
        "Ref": "AWS::NoValue"
    }
    fields.add("AWS_ENDPOINT_URL")
    libraries = {"PYDANTIC_DISABLE_PLUGINS", "PSYCOPG_IMPL"}  # the libraries' own, documented
    fields |= libraries
    for name in functions(template):
        for variable in env_vars(template, name):
            assert (
                variable in fields or variable.startswith("POWERTOOLS_") or variable == "LOG_LEVEL"
            ), f"{name}: {variable} is not a field of esl_sync.settings.Settings"


def test_functions_get_the_settings_they_need(template: Template) -> None:
    expected = {
        "DispatcherFunction": {
            "POLL_QUEUE_URL",
            "CLOVER_SYNC_ENABLED",
            "CLOVER_SYNC_INTERVAL_SECONDS",
            "DATABASE_IDLE_SESSION_TIMEOUT_SECONDS",
        },
        "PollerFunction": {
            "LABEL_QUEUE_URL",
            "STATE_TABLE_NAME",
            "STATE_KEY_ID",
            "CLOVER_API_BASE_URL",
            "CLOVER_SYNC_INTERVAL_SECONDS",
            "CLOVER_CLEANUP_INTERVAL_HOURS",
            "CLOVER_CLEANUP_EVERY_N_POLLS",
            "CLOVER_PAGE_SIZE",
            "CLOVER_OVERLAP_MS",
            "CLOVER_MAX_DELETE_FRACTION",
            "HIPOINK_BATCH_SIZE",
            "CLOVER_APP_SECRET_ARN",
            "CLOVER_TOKEN_REFRESH_MARGIN_SECONDS",
        },
        "WebhookFunction": {
            "POLL_QUEUE_URL",
            "STATE_TABLE_NAME",
            "CLOVER_WEBHOOK_AUTH_SECRET_ARN",
            "CLOVER_WEBHOOK_POLL_WINDOW_SECONDS",
            "DATABASE_IDLE_SESSION_TIMEOUT_SECONDS",
        },
        "OnboardingFunction": {
            "POLL_QUEUE_URL",
            "STATE_TABLE_NAME",
            "STATE_KEY_ID",
            "CLOVER_API_BASE_URL",
            "CLOVER_APP_SECRET_ARN",
            "CLOVER_OAUTH_STATE_KEY_SECRET_ARN",
            "CLOVER_OAUTH_STATE_TTL_SECONDS",
            "ONBOARDING_STORE_CODE_TEMPLATE",
            "DATABASE_IDLE_SESSION_TIMEOUT_SECONDS",
        },
        "HipoinkSenderFunction": {
            "HIPOINK_API_BASE_URL",
            "HIPOINK_CLIENT_ID",
            "HIPOINK_SIGN_SECRET_ARN",
            "HIPOINK_BATCH_SIZE",
            "HIPOINK_F1_ENCODING",
            "HIPOINK_BLOCK_COOLDOWN_SECONDS",
        },
        "MigrationFunction": set(),
    }
    for name, variables in expected.items():
        present = set(env_vars(template, name))
        assert variables | {"DATABASE_URL_SECRET_ARN"} <= present, name
    # Literal values must parse as the settings model would: a typo fails here, not at 3 a.m.
    for name in functions(template):
        literal = {k: v for k, v in env_vars(template, name).items() if isinstance(v, str)}
        Settings.from_values(
            {k.lower(): v for k, v in literal.items() if k.lower() in Settings.names()}
        )


def test_every_function_gets_database_session_settings_from_its_parameter(
    template: Template,
) -> None:
    """``DatabaseSessionSettings`` ("off" behind RDS Proxy: README, the connection budget)
    reaches every function that connects, and each allowed value is the setting's."""
    parameter = template["Parameters"]["DatabaseSessionSettings"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("on", ["on", "off"])
    for allowed in parameter["AllowedValues"]:
        assert Settings.from_values({"database_session_settings": allowed})
    for name in functions(template):
        assert env_vars(template, name)["DATABASE_SESSION_SETTINGS"] == {
            "Ref": "DatabaseSessionSettings"
        }, name


def test_migration_runs_on_every_schema_version(template: Template) -> None:
    migration = template["Resources"]["DatabaseMigration"]
    assert migration["Type"] == "AWS::CloudFormation::CustomResource"
    props = migration["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    assert isinstance(props["SchemaVersion"], str)


# ---------------------------------------------------------------- permissions


def test_no_identity_policy_names_every_resource_without_need(template: Template) -> None:
    checked = 0
    for owner, statement in identity_policy_statements(template):
        checked += 1
        actions = set(as_list(statement["Action"]))
        assert "*" not in actions, owner
        assert not any(a.endswith(":*") for a in actions), owner
        if "*" in as_list(statement["Resource"]):
            assert actions <= WILDCARD_ACTIONS, f"{owner}: {sorted(actions)} on '*'"
    assert checked


def test_resource_policies_are_scoped(template: Template) -> None:
    # A key policy's "*" means "this key"; only the account root may do everything.
    for name, key in resources(template, "AWS::KMS::Key").items():
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            if "kms:*" in as_list(statement["Action"]):
                root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
                assert statement["Principal"] == {"AWS": root}, name
            if "Service" in statement.get("Principal", {}):
                assert "aws:SourceAccount" in statement["Condition"]["StringEquals"], name
    for name, policy in resources(template, "AWS::SNS::TopicPolicy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Resource"] == {"Ref": "AlarmTopic"}, name
            assert "aws:SourceAccount" in statement["Condition"]["StringEquals"], name


def test_vpc_access_only_inside_a_vpc(template: Template) -> None:
    for name in functions(template):
        role = role_of(template, name)["Properties"]
        managed = role.get("ManagedPolicyArns")
        assert managed is not None, name
        condition, when_true, when_false = managed["Fn::If"]
        assert condition == "HasVpc", name
        assert when_false == {"Ref": "AWS::NoValue"}, name
        assert len(when_true) == 1
        assert "AWSLambdaVPCAccessExecutionRole" in json.dumps(when_true), name
    condition = template["Conditions"]["HasVpc"]
    assert "SubnetIds" in json.dumps(condition)
    for parameter in ("SubnetIds", "SecurityGroupIds"):
        assert template["Parameters"][parameter]["Type"] == "CommaDelimitedList"
        assert template["Parameters"][parameter]["Default"] == ""


def test_each_role_is_least_privilege(template: Template) -> None:
    roles = {name: statements_of_role(role_of(template, name)) for name in FUNCTION_DIRS}
    log_groups = {
        "DispatcherFunction": "DispatcherLogGroup",
        "PollerFunction": "PollerLogGroup",
        "HipoinkSenderFunction": "HipoinkSenderLogGroup",
        "MigrationFunction": "MigrationLogGroup",
        "WebhookFunction": "WebhookLogGroup",
        "OnboardingFunction": "OnboardingLogGroup",
    }
    main_database = {"Ref": "DatabaseUrlSecretArn"}
    read_only_or_main = {
        "Fn::If": [
            "HasReadOnlyDatabase",
            {"Ref": "ReadOnlyDatabaseUrlSecretArn"},
            {"Ref": "DatabaseUrlSecretArn"},
        ]
    }
    sign = {"Ref": "HipoinkSignSecretArn"}
    own_secrets = {
        "HipoinkSenderFunction": [{"Ref": "HipoinkSignSecretArn"}],
        "PollerFunction": [{"Ref": "CloverAppSecretArn"}],
        "WebhookFunction": [{"Ref": "CloverWebhookAuthSecretArn"}],
        "OnboardingFunction": [{"Ref": "CloverAppSecretArn"}, {"Ref": "OAuthStateKeySecret"}],
    }
    table = {"Fn::GetAtt": ["StateTable", "Arn"]}
    key = {"Fn::GetAtt": ["StateKey", "Arn"]}
    for name, statements in roles.items():
        database = (
            read_only_or_main
            if name in ("DispatcherFunction", "WebhookFunction")
            else main_database
        )
        assert env_vars(template, name)["DATABASE_URL_SECRET_ARN"] == database, name
        own_group = {"Fn::GetAtt": [log_groups[name], "Arn"]}
        assert grants(statements, "logs:PutLogEvents") == [own_group], name
        assert grants(statements, "logs:CreateLogStream") == [own_group], name
        assert database in grants(statements, "secretsmanager:GetSecretValue"), name
        readable = grants(statements, "secretsmanager:GetSecretValue")
        assert sorted(map(str, readable)) == sorted(
            map(str, [database, *own_secrets.get(name, [])])
        ), name
        writes_state = name in ("PollerFunction", "WebhookFunction", "OnboardingFunction")
        assert grants(statements, "dynamodb:UpdateItem") == ([table] if writes_state else []), name
        uses_state = name in (
            "PollerFunction",
            "DispatcherFunction",
            "WebhookFunction",
            "OnboardingFunction",
        )
        assert grants(statements, "kms:Decrypt") == ([key] if uses_state else []), name
    # The dispatcher reads merchant state (freshness), the webhook writes hints into it and
    # the onboarding function new tokens, but they may use the key only through DynamoDB, so
    # none can decrypt a Clover token (the onboarding function encrypts the ones it stores).
    for name in ("DispatcherFunction", "WebhookFunction", "OnboardingFunction"):
        decrypt = [s for s in roles[name] if "kms:Decrypt" in str(s.get("Action"))]
        assert [s["Condition"]["StringEquals"]["kms:ViaService"] for s in decrypt] == [
            {"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"}
        ], name
        assert grants(roles[name], "kms:Encrypt") == ([key] if "Onboarding" in name else []), name
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem"):
        assert grants(roles["OnboardingFunction"], action) == [], action
    assert sign not in grants(roles["PollerFunction"], "secretsmanager:GetSecretValue")
    assert grants(roles["DispatcherFunction"], "dynamodb:BatchGetItem") == [table]
    poller = roles["PollerFunction"]
    for action in ("dynamodb:GetItem", "dynamodb:UpdateItem", "kms:Encrypt", "kms:Decrypt"):
        assert grants(poller, action) == [key if action.startswith("kms") else table], action
    for action in ("dynamodb:PutItem", "dynamodb:DeleteItem", "kms:GenerateDataKey"):
        assert grants(poller, action) == [], action
    sends = {name: grants(statements, "sqs:SendMessage") for name, statements in roles.items()}
    assert sends == {
        "DispatcherFunction": [{"Fn::GetAtt": ["PollQueue", "Arn"]}],
        "PollerFunction": [{"Fn::GetAtt": ["LabelQueue", "Arn"]}],
        "HipoinkSenderFunction": [],
        "MigrationFunction": [],
        "WebhookFunction": [{"Fn::GetAtt": ["PollQueue", "Arn"]}],
        "OnboardingFunction": [{"Fn::GetAtt": ["PollQueue", "Arn"]}],
    }
    receives = {
        name: grants(statements, "sqs:ReceiveMessage") for name, statements in roles.items()
    }
    assert receives == {
        "DispatcherFunction": [],
        "PollerFunction": [{"Fn::GetAtt": ["PollQueue", "Arn"]}],
        "HipoinkSenderFunction": [{"Fn::GetAtt": ["LabelQueue", "Arn"]}],
        "MigrationFunction": [],
        "WebhookFunction": [],
        "OnboardingFunction": [],
    }


# ---------------------------------------------------------------- state


def test_state_table_is_durable_and_encrypted_with_the_customer_key(template: Template) -> None:
    table = template["Resources"]["StateTable"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "merchant_id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "merchant_id", "AttributeType": "S"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": ["StateKey", "Arn"]},
    }
    assert props["DeletionProtectionEnabled"] is True
    key = template["Resources"]["StateKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain", "a retained table needs its key"
    alias = template["Resources"]["StateKeyAlias"]["Properties"]
    assert alias["TargetKeyId"] == {"Ref": "StateKey"}


# ---------------------------------------------------------------- parameters and outputs


def test_every_parameter_is_described(template: Template) -> None:
    expected = {
        "CloverApiBaseUrl",
        "HipoinkApiBaseUrl",
        "HipoinkClientId",
        "HipoinkExtraFields",
        "DatabaseUrlSecretArn",
        "HipoinkSignSecretArn",
        "SubnetIds",
        "SecurityGroupIds",
        "SyncIntervalSeconds",
        "MaxReceiveCount",
        "PollerMaximumConcurrency",
        "SenderMaximumConcurrency",
        "PollerBatchSize",
        "LogRetentionDays",
        "LogLevel",
        "AlarmEmail",
        "SyncEnabled",
        "CloverWebhookAuthSecretArn",
        "CloverAppSecretArn",
        "ReadOnlyDatabaseUrlSecretArn",
        "OnboardingStoreCodeTemplate",
        "DatabaseSessionSettings",
    }
    assert set(template["Parameters"]) == expected
    for name, parameter in template["Parameters"].items():
        assert parameter.get("Description"), name
    assert "10" in template["Parameters"]["PollerMaximumConcurrency"]["Description"]
    assert template["Parameters"]["CloverApiBaseUrl"]["Default"] == "https://api.clover.com"


def test_outputs(template: Template) -> None:
    assert set(template["Outputs"]) >= {
        "PollQueueUrl",
        "LabelQueueUrl",
        "PollDeadLetterQueueUrl",
        "LabelDeadLetterQueueUrl",
        "StateTableName",
        "StateKeyArn",
        "AlarmTopicArn",
        "CommonLayerArn",
        "WebhookUrl",
        "CloverSiteUrl",
        "CloverRedirectUri",
    }
    for name, output in template["Outputs"].items():
        assert output.get("Description"), name


# ---------------------------------------------------------------- sample events


def test_dispatcher_event_is_the_schedule_input(template: Template) -> None:
    schedule = template["Resources"]["DispatchSchedule"]["Properties"]["Target"]
    scheduled = json.loads(schedule["Input"])
    scheduled["scheduled_time"] = load_event("dispatcher")["scheduled_time"]  # filled by Scheduler
    assert load_event("dispatcher") == scheduled
    assert ScheduleEvent.model_validate(load_event("dispatcher")).scheduled_time is not None


@pytest.mark.parametrize(
    ("name", "queue_suffix"), [("poller", "PollQueue"), ("hipoink_sender", "LabelQueue")]
)
def test_sqs_sample_events_are_complete(name: str, queue_suffix: str) -> None:
    records = load_event(name)["Records"]
    assert records
    assert len({r["messageId"] for r in records}) == len(records)
    for record in records:
        _assert_complete_sqs_record(record, queue_suffix)


def _assert_complete_sqs_record(record: dict[str, Any], queue_suffix: str) -> None:
    for field in (
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ):
        assert field in record, field
    assert record["eventSource"] == "aws:sqs"
    assert record["awsRegion"] == "us-east-1"
    assert record["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:123456789012:")
    assert queue_suffix in record["eventSourceARN"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_poller_event_carries_a_poll_request() -> None:
    body = load_event("poller")["Records"][0]["body"]
    request = PollRequest.parse(body)
    assert request.merchant_id == "MDEMO0000001"
    assert request.reason == "schedule"


def test_sender_event_carries_a_label_job_from_the_fifo_queue() -> None:
    record = load_event("hipoink_sender")["Records"][0]
    assert record["eventSourceARN"].endswith(".fifo")
    attributes = record["attributes"]
    assert attributes["MessageGroupId"] == "MDEMO0000001"
    assert attributes["SequenceNumber"]
    assert attributes["MessageDeduplicationId"]
    job = LabelJob.parse(record["body"])
    assert job.merchant_id == "MDEMO0000001"
    assert job.store_code == "STORE-DEMO-1"
    assert [u["pc"] for u in job.upserts] == ["012345678905", "REG-UNL"]
    assert job.deletes == ["000000000017"]


def test_sender_event_carries_a_verify_after_its_job_in_the_same_group() -> None:
    """The label queue carries verify requests too; the sample's second record is one, in
    the job's message group and after it (a FIFO queue hands a group's messages in order)."""
    job, verify = load_event("hipoink_sender")["Records"]
    request = LabelVerify.parse(verify["body"])
    assert (request.merchant_id, request.store_code) == ("MDEMO0000001", "STORE-DEMO-1")
    assert verify["attributes"]["MessageGroupId"] == job["attributes"]["MessageGroupId"]
    assert int(verify["attributes"]["SequenceNumber"]) > int(job["attributes"]["SequenceNumber"])
    assert verify["md5OfBody"] == hashlib.md5(verify["body"].encode()).hexdigest()  # noqa: S324


def test_migrator_event_is_a_custom_resource_create(template: Template) -> None:
    event = load_event("migrator")
    assert event["RequestType"] == "Create"
    assert event["LogicalResourceId"] == "DatabaseMigration"
    assert event["ResourceType"] == "Custom::DatabaseMigration"
    assert event["ResponseURL"] == "http://127.0.0.1:9/cfn-response"
    for field in ("ServiceToken", "StackId", "RequestId"):
        assert event[field], field
    schema_version = template["Resources"]["DatabaseMigration"]["Properties"]["SchemaVersion"]
    assert event["ResourceProperties"]["SchemaVersion"] == schema_version
    assert event["ResourceProperties"]["ServiceToken"] == event["ServiceToken"]


def test_webhook_event_is_a_clover_delivery_through_the_http_api(template: Template) -> None:
    event = load_event("webhook")
    route = template["Resources"]["WebhookFunction"]["Properties"]["Events"]["CloverInventory"]
    props = route["Properties"]
    assert event["version"] == props["PayloadFormatVersion"]
    assert event["routeKey"] == f"{props['Method']} {props['Path']}"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["isBase64Encoded"] is False
    assert event["headers"]["x-clover-auth"]
    assert event["headers"]["content-length"] == str(len(event["body"].encode()))
    delivery = CloverNotification.model_validate_json(event["body"])
    assert [e.object_id for e in delivery.merchants["MDEMO0000001"]] == ["I:ITEMDEMO00002"]


def test_onboarding_event_is_clovers_site_url_through_the_http_api(template: Template) -> None:
    event = load_event("onboarding")
    routes = template["Resources"]["OnboardingFunction"]["Properties"]["Events"]
    route = routes["CloverInstall"]["Properties"]
    assert event["version"] == route["PayloadFormatVersion"]
    assert event["routeKey"] == f"{route['Method']} {route['Path']}" == "GET /clover/install"
    assert event["requestContext"]["http"]["method"] == "GET"
    query = dict(parse_qsl(event["rawQueryString"]))
    assert query == event["queryStringParameters"]
    assert set(query) == {"merchant_id", "employee_id", "client_id"}  # what Clover adds
    assert query["merchant_id"] == "MDEMO0000001"


# ---------------------------------------------------------------- build


def test_sam_build_holds_layer_and_handlers(sam_build_dir: Path) -> None:
    layer = sam_build_dir / "CommonLayer" / "python"
    assert (layer / "esl_sync" / "__init__.py").is_file()
    for package in ("pydantic", "psycopg", "httpx", "aws_lambda_powertools"):
        assert (layer / package).is_dir(), package
    for function in FUNCTION_DIRS:
        assert (sam_build_dir / function / "app.py").is_file(), function
    assert (sam_build_dir / "template.yaml").is_file()


def test_the_runbook_names_every_alarm(template: Template) -> None:
    """A newcomer reading only the README can map every alarm to its fix."""
    readme = (REPO_ROOT / "README.md").read_text()
    runbook = readme[readme.index("## Runbook") : readme.index("**Onboarding a merchant.**")]
    alarms = set(resources(template, "AWS::CloudWatch::Alarm"))
    assert sorted(a for a in alarms if f"`{a}`" not in runbook) == []
