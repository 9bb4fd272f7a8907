"""A deployed stack's outputs, so the CLI can work against it by name."""

from __future__ import annotations

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from esl_sync.settings import ConfigurationError
from esl_sync.store import aws


def stack_outputs(stack_name: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of a CloudFormation stack, or an error that says why not."""
    try:
        client = aws.client("cloudformation")
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except NoRegionError:
        raise ConfigurationError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION") from None
    except NoCredentialsError:
        raise ConfigurationError(
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY"
        ) from None
    except ClientError as error:
        if "does not exist" in str(error):
            region = client.meta.region_name
            raise ConfigurationError(f"no stack named {stack_name!r} in {region}") from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
