"""CloudWatch Logs AssociateKmsKey and DisassociateKmsKey in the sandbox, as the Terraform provider calls
them when a log group's key changes in place (an adopted log group made with a key the state lost)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox.logs import kms_key_association

kms_key_association.install()
KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name="us-east-1")
        client.create_log_group(logGroupName="/aws/lambda/fn", kmsKeyId=KEY)
        yield client


def key_of(logs: Any, name: str) -> str | None:
    (group,) = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return group.get("kmsKeyId")


def test_a_log_group_s_key_is_replaced_then_removed_by_name_or_by_arn(logs: Any) -> None:
    logs.associate_kms_key(logGroupName="/aws/lambda/fn", kmsKeyId=OTHER_KEY)
    assert key_of(logs, "/aws/lambda/fn") == OTHER_KEY

    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/fn"
    logs.disassociate_kms_key(resourceIdentifier=arn)
    assert key_of(logs, "/aws/lambda/fn") is None


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"logGroupName": "/aws/lambda/missing", "kmsKeyId": KEY}, "ResourceNotFoundException"),
        ({"kmsKeyId": KEY}, "InvalidParameterException"),
        (
            {"logGroupName": "/aws/lambda/fn", "resourceIdentifier": "/aws/lambda/fn", "kmsKeyId": KEY},
            "InvalidParameterException",
        ),
    ],
    ids=["unknown group", "no group named", "named twice"],
)
def test_an_association_naming_no_group_or_two_is_refused_and_changes_nothing(
    logs: Any, arguments: dict[str, str], code: str
) -> None:
    with pytest.raises(ClientError) as refused:
        logs.associate_kms_key(**arguments)

    assert refused.value.response["Error"]["Code"] == code
    assert key_of(logs, "/aws/lambda/fn") == KEY
