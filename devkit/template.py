"""Reading template.yaml, so the local stack builds what the deployed stack has."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation short-form tags as ``{"Fn::X": value}``."""


def _tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=CfnLoader)  # noqa: S506 - safe subclass
    return loaded


def resolve(template: dict[str, Any], value: Any) -> Any:
    """A property's value with ``Ref``s to parameters replaced by their defaults."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = template.get("Parameters", {}).get(value["Ref"])
        if parameter is not None:
            return parameter.get("Default")
    return value


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical_id]
    return found


def translate(template: dict[str, Any], parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The plain CloudFormation that ``sam deploy`` submits: the template through the SAM
    translator, local code paths replaced by S3 URIs the way ``sam package`` does.

    Needs the dev extra (aws-sam-translator comes with aws-sam-cli) and a region, which
    the translator only uses for ARNs of managed policies this template does not use."""
    import copy
    import os

    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    packaged = copy.deepcopy(template)
    for name, resource in packaged["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://esl-sync-artifacts/{name}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    translated: dict[str, Any] = transform(packaged, parameters or {}, NoManagedPolicies())
    return translated
