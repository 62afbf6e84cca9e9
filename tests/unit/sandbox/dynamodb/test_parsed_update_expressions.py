"""DynamoDB update expressions parsed once (sandbox/dynamodb/parsed_update_expressions.py)."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox.dynamodb import parsed_update_expressions


def test_update_expressions_parsed_once_still_apply_each_calls_own_values() -> None:
    """Calls with the same UpdateExpression text share one parse; each still writes its own values."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    parsed_update_expressions.install()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

        def update(key: str, status: str, expression: str = "SET #s = :s, n = if_not_exists(n, :n)") -> None:
            dynamodb.update_item(
                TableName="t",
                Key={"k": {"S": key}},
                UpdateExpression=expression,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":n": {"S": key}},
                ConditionExpression="attribute_not_exists(k) OR #s <> :s",
            )

        hits = UpdateExpressionParser.make.cache_info().hits
        for key, status in (("a", "one"), ("b", "two"), ("a", "three")):
            update(key, status)
        items = {i["k"]["S"]: (i["status"]["S"], i["n"]["S"]) for i in dynamodb.scan(TableName="t")["Items"]}
        assert items == {"a": ("three", "a"), "b": ("two", "b")}
        assert UpdateExpressionParser.make.cache_info().hits - hits >= 5  # one parse served all three calls
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            update("b", "two")
        for _ in range(2):  # a text that does not parse is refused every time
            with pytest.raises(ClientError, match="ValidationException"):
                update("a", "x", expression="SET = :s")
