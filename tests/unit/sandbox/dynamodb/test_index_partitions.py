"""A global secondary index's query reads its partition (sandbox/dynamodb/index_partitions.py) and answers
exactly as a walk of the whole table does, whatever writes came before: puts, updates that move an item
between partitions or out of the index, deletes, batch writes, committed and cancelled transactions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from sandbox.dynamodb import atomic_writes, index_partitions, item_level_transactions

SERIALS = [f"SN-{n}" for n in range(6)]
STATUSES = ["enrolled", "provisioned", "revoked"]


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    index_partitions.install()
    item_level_transactions.install()
    atomic_writes.install()
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def make_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "serialNumber", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "deviceType", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "status-index",
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "deviceType", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def write(client: Any, table: str, op: tuple[str, int, int | None, int]) -> None:
    kind, n, status, kind_of_device = op
    key = {"serialNumber": {"S": SERIALS[n]}}
    attrs = {"deviceType": {"S": f"type-{kind_of_device}"}}
    if status is not None:
        attrs["status"] = {"S": STATUSES[status]}
    try:
        if kind == "put":
            client.put_item(TableName=table, Item={**key, **attrs})
        elif kind == "update":
            if status is None:
                client.update_item(
                    TableName=table, Key=key, UpdateExpression="REMOVE #s", ExpressionAttributeNames={"#s": "status"}
                )
            else:
                client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET #s = :s, deviceType = :t",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":s": attrs["status"], ":t": attrs["deviceType"]},
                )
        elif kind == "delete":
            client.delete_item(TableName=table, Key=key)
        elif kind == "batch":
            client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {**key, **attrs}}}]})
        elif kind in ("transaction", "cancelled"):
            other = {"serialNumber": {"S": SERIALS[(n + 1) % len(SERIALS)]}}
            client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": {**key, **attrs}}},
                    {
                        "Update": {
                            "TableName": table,
                            "Key": other,
                            "UpdateExpression": "SET #s = :s",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": {":s": {"S": "revoked"}},
                            # cancelled: a condition that never holds, so the put above is undone
                            **({"ConditionExpression": "attribute_exists(nothing)"} if kind == "cancelled" else {}),
                        }
                    },
                ]
            )
    except ClientError as error:
        assert error.response["Error"]["Code"] == "TransactionCanceledException", error


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "update", "delete", "batch", "transaction", "cancelled"]),
        st.integers(0, len(SERIALS) - 1),
        st.one_of(st.none(), st.integers(0, len(STATUSES) - 1)),
        st.integers(0, 1),
    ),
    max_size=25,
)
tables = iter(range(10_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=operations, after=operations)
def test_an_index_query_answers_as_a_walk_of_the_table(dynamodb: Any, before: list[Any], after: list[Any]) -> None:
    table = f"registry-{next(tables)}"
    make_table(dynamodb, table)
    for op in before:
        write(dynamodb, table, op)
    dynamodb.query(  # the first query builds the partitions; the writes after it keep them
        TableName=table,
        IndexName="status-index",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "enrolled"}},
    )
    for op in after:
        write(dynamodb, table, op)
    everything = dynamodb.scan(TableName=table)["Items"]
    for status in STATUSES:
        answer = dynamodb.query(
            TableName=table,
            IndexName="status-index",
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
        )
        walked = sorted(
            # DynamoDB indexes only the items that hold every key attribute of the index
            (item for item in everything if item.get("status", {}).get("S") == status and "deviceType" in item),
            key=lambda item: (item["deviceType"]["S"], item["serialNumber"]["S"]),
        )
        assert [i["serialNumber"] for i in answer["Items"]] == [i["serialNumber"] for i in walked]
        paged, start = [], None  # page by page, two items a page, as a paginator reads it
        for _ in range(len(SERIALS) + 2):
            page = dynamodb.query(
                TableName=table,
                IndexName="status-index",
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}},
                Limit=2,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            paged += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        assert [i["serialNumber"] for i in paged] == [i["serialNumber"] for i in walked]
    dynamodb.delete_table(TableName=table)
