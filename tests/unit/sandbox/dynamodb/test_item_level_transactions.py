"""TransactWriteItems sets aside only the items it names (sandbox/dynamodb/item_level_transactions.py):
a cancelled transaction leaves every item as it was, as DynamoDB's does, and a committed one writes all."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends

from sandbox.dynamodb import atomic_writes, item_level_transactions


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    item_level_transactions.install()
    atomic_writes.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="registry",
            KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "serialNumber", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.create_table(
            TableName="events",
            KeySchema=[{"AttributeName": "serial", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "serial", "AttributeType": "S"},
                {"AttributeName": "at", "AttributeType": "N"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for n in range(50):
            client.put_item(TableName="registry", Item={"serialNumber": {"S": f"SN-{n}"}, "status": {"S": "enrolled"}})
        client.put_item(TableName="events", Item={"serial": {"S": "SN-1"}, "at": {"N": "1"}, "what": {"S": "made"}})
        yield client


def everything(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        table: sorted((item for item in client.scan(TableName=table)["Items"]), key=str)
        for table in ("registry", "events")
    }


def claim(serial: str, expected: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": "registry",
            "Key": {"serialNumber": {"S": serial}},
            "UpdateExpression": "SET #s = :new",
            "ConditionExpression": "#s = :expected",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":new": {"S": "provisioning"}, ":expected": {"S": expected}},
        }
    }


def test_a_cancelled_transaction_leaves_every_item_as_it_was(dynamodb: Any) -> None:
    before = everything(dynamodb)
    writes = [
        claim("SN-1", "enrolled"),  # would pass: written by moto, then put back
        {"Put": {"TableName": "registry", "Item": {"serialNumber": {"S": "NEW-1"}, "status": {"S": "x"}}}},
        {"Delete": {"TableName": "events", "Key": {"serial": {"S": "SN-1"}, "at": {"N": "1"}}}},
        {"Put": {"TableName": "events", "Item": {"serial": {"S": "SN-2"}, "at": {"N": "2"}}}},
        claim("SN-2", "provisioned"),  # fails: the whole transaction is cancelled
    ]

    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(TransactItems=writes)

    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in refused.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert everything(dynamodb) == before


def test_a_committed_transaction_writes_every_item_and_tables_still_copy_whole(dynamodb: Any) -> None:
    dynamodb.transact_write_items(
        TransactItems=[
            claim("SN-3", "enrolled"),
            {"Put": {"TableName": "events", "Item": {"serial": {"S": "SN-3"}, "at": {"N": "3"}}}},
        ]
    )

    item = dynamodb.get_item(TableName="registry", Key={"serialNumber": {"S": "SN-3"}})["Item"]
    assert item["status"] == {"S": "provisioning"}
    assert dynamodb.get_item(TableName="events", Key={"serial": {"S": "SN-3"}, "at": {"N": "3"}}).get("Item")
    table = dynamodb_backends["123456789012"]["us-east-1"].tables["registry"]
    copied = copy.deepcopy(table)  # outside a transaction (a backup): a table of its own, as moto makes
    assert copied is not table and len(copied.items) == len(table.items) == 50
