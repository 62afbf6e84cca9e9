"""AddPermission retried by Terraform (sandbox/awslambda/idempotent_permissions.py)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.support import function


def test_a_retried_add_permission_leaves_one_statement_and_a_clashing_one_is_refused(iot: Any) -> None:
    from sandbox.awslambda import idempotent_permissions as idempotent_lambda_permissions

    idempotent_lambda_permissions.install()
    function("target", "def handler(event, context):\n    return None\n")
    client = boto3.client("lambda", region_name="us-east-1")
    permission = {
        "FunctionName": "target",
        "StatementId": "AllowRule",
        "Action": "lambda:InvokeFunction",
        "Principal": "iot.amazonaws.com",
        "SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/r",
    }

    client.add_permission(**permission)
    client.add_permission(**permission)  # the same request again, as a retry sends it

    assert len(json.loads(client.get_policy(FunctionName="target")["Policy"])["Statement"]) == 1
    with pytest.raises(ClientError) as refused:
        client.add_permission(**{**permission, "SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/other"})
    assert refused.value.response["Error"]["Code"] == "ResourceConflictException"
    client.remove_permission(FunctionName="target", StatementId="AllowRule")
    with pytest.raises(ClientError):
        client.get_policy(FunctionName="target")
