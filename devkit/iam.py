"""The permissions each function's role grants in template.yaml, against what it calls.

A grant is ``(action, resource, qualifier)``: the resource as the template's logical id
(``PollQueue``), ``env:NAME`` for a secret (the environment variable of the function that
names the same parameter), or ``*``; the qualifier is ``""``, ``"via dynamodb"`` (a
``kms:ViaService`` condition) or ``"attributes"`` (a ``dynamodb:Attributes`` condition,
whose list :func:`attribute_limits` gives).

What a function needs is what its handler calls (recorded by the local stack, see
devkit/aws_calls.py) plus what AWS does with the function's role on its behalf
(:func:`platform_needs`). :func:`problems` says, per role, what differs, in words that
tell the reader which role needs what.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from devkit.aws_calls import AwsCall

Grant = tuple[str, str, str]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def function_env(template: dict[str, Any], function: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for source in (
        template.get("Globals", {}).get("Function", {}),
        template["Resources"][function]["Properties"],
    ):
        merged.update(source.get("Environment", {}).get("Variables", {}))
    return merged


def role_name(template: dict[str, Any], function: str) -> str:
    role = template["Resources"][function]["Properties"]["Role"]
    name: str = role["Fn::GetAtt"][0]
    return name


def _statements(template: dict[str, Any], role: str) -> Iterable[dict[str, Any]]:
    for policy in template["Resources"][role]["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def _resource_key(template: dict[str, Any], function: str, resource: Any) -> str:
    if resource == "*":
        return "*"
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical_id: str = resource["Fn::GetAtt"][0]
        return logical_id
    for name, value in function_env(template, function).items():
        if value == resource:
            return f"env:{name}"
    return f"unnamed:{resource}"  # a secret no variable of the function names: never called


def _qualifier(statement: dict[str, Any]) -> str:
    condition = statement.get("Condition", {})
    if "kms:ViaService" in condition.get("StringEquals", {}):
        via = condition["StringEquals"]["kms:ViaService"]
        service = str(via.get("Fn::Sub", via) if isinstance(via, dict) else via)
        return "via " + service.split(".", 1)[0]
    if "dynamodb:Attributes" in condition.get("ForAllValues:StringEquals", {}):
        return "attributes"
    return ""


def role_grants(template: dict[str, Any], function: str) -> set[Grant]:
    """Every ``(action, resource, qualifier)`` the function's role allows."""
    grants: set[Grant] = set()
    for statement in _statements(template, role_name(template, function)):
        if statement["Effect"] != "Allow":
            continue
        qualifier = _qualifier(statement)
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                grants.add((action, _resource_key(template, function, resource), qualifier))
    return grants


def attribute_limits(template: dict[str, Any], function: str) -> dict[tuple[str, str], set[str]]:
    """``{(action, resource): attributes}`` of the role's ``dynamodb:Attributes`` conditions."""
    limits: dict[tuple[str, str], set[str]] = {}
    for statement in _statements(template, role_name(template, function)):
        allowed = statement.get("Condition", {}).get("ForAllValues:StringEquals", {})
        if "dynamodb:Attributes" not in allowed:
            continue
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                key = (action, _resource_key(template, function, resource))
                limits[key] = set(allowed["dynamodb:Attributes"])
    return limits


def platform_needs(
    template: dict[str, Any], function: str, calls: Iterable[AwsCall]
) -> dict[Grant, str]:
    """What AWS does with the function's role, beyond the handler's own calls, and why."""
    props = template["Resources"][function]["Properties"]
    needs: dict[Grant, str] = {}
    log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        needs[(action, log_group, "")] = "Lambda writes the function's logs"
    tracing = props.get("Tracing", template.get("Globals", {}).get("Function", {}).get("Tracing"))
    if tracing == "Active":
        for action in ("xray:PutTraceSegments", "xray:PutTelemetryRecords"):
            needs[(action, "*", "")] = "active tracing (X-Ray takes no resource)"
    for event in props.get("Events", {}).values():
        if event["Type"] == "SQS":
            queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
            for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
                needs[(action, queue, "")] = "the SQS event source mapping polls with this role"
    called = {(c.action, c.resource) for c in calls}
    for action, resource in called:
        if not action.startswith("dynamodb:"):
            continue
        sse = template["Resources"][resource]["Properties"].get("SSESpecification", {})
        key = sse.get("KMSMasterKeyId")
        if key and ("kms:Decrypt", key["Fn::GetAtt"][0]) not in called:
            needs[("kms:Decrypt", key["Fn::GetAtt"][0], "via dynamodb")] = (
                f"DynamoDB decrypts {resource} (encrypted with that key) with the caller's rights"
            )
    return needs


def problems(
    template: dict[str, Any], function: str, calls: Iterable[AwsCall], *, exact: bool
) -> list[str]:
    """What the function's role lacks for ``calls`` (and, if ``exact``, what it grants that
    neither the calls nor AWS itself ever use)."""
    calls = [c for c in calls if c.function == function]
    role = role_name(template, function)
    grants = role_grants(template, function)
    limits = attribute_limits(template, function)
    found: list[str] = []
    used: set[Grant] = set()
    for call in sorted(calls):
        matching = {g for g in grants if g[:2] == (call.action, call.resource) and g[2] == ""}
        limited = (call.action, call.resource) in limits
        if limited:
            matching |= {(call.action, call.resource, "attributes")}
            extra = set(call.attributes) - limits[(call.action, call.resource)]
            if extra:
                found.append(
                    f"{function} calls {call.action} on {call.resource} with attributes"
                    f" {sorted(extra)}, which {role}'s dynamodb:Attributes condition does not"
                    " list: add them to it in template.yaml"
                )
        if not matching & grants:
            found.append(
                f"{function} calls {call.action} on {call.resource}, which {role} does not"
                f" grant: add it to {role} in template.yaml"
            )
        used |= matching
    if not exact:
        return found
    for grant, why in platform_needs(template, function, calls).items():
        if grant in grants:
            used.add(grant)
        elif grant[2] == "" or (grant[0], grant[1], "") not in grants:
            found.append(f"{role} lacks {grant[0]} on {grant[1]} ({grant[2] or why}): {why}")
    for action, resource, qualifier in sorted(grants - used):
        found.append(
            f"{role} grants {action} on {resource}{f' ({qualifier})' if qualifier else ''},"
            f" which {function} never calls (tests/infra/aws_calls.json): remove it"
        )
    for (action, resource), allowed in limits.items():
        written = set().union(
            *(set(c.attributes) for c in calls if (c.action, c.resource) == (action, resource))
        )
        if allowed - written:
            found.append(
                f"{role}'s dynamodb:Attributes for {action} on {resource} lists"
                f" {sorted(allowed - written)}, which {function} never names: remove them"
            )
    return found
