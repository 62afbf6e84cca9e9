"""moto's models are not kept alive by moto's instance record (sandbox/untracked_models.py): a copy of a
DynamoDB item made for a condition check is gone once the request is answered."""

from __future__ import annotations

import gc
import weakref

import boto3
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import Item
from moto.s3.models import FakeKey

from sandbox import untracked_models


def test_a_model_nothing_holds_is_freed_and_s3_objects_stay_tracked() -> None:
    untracked_models.install()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="registry",
            KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "serialNumber", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName="registry", Item={"serialNumber": {"S": "SN-1"}})
        made: list[weakref.ref[Item]] = []
        original = Item.__init__

        def recorded(self: Item, *args: object, **kwargs: object) -> None:
            original(self, *args, **kwargs)
            made.append(weakref.ref(self))

        Item.__init__ = recorded  # type: ignore[method-assign]
        try:
            for n in range(20):  # each update copies the item (moto's condition and stream bookkeeping)
                dynamodb.update_item(
                    TableName="registry",
                    Key={"serialNumber": {"S": "SN-1"}},
                    UpdateExpression="SET n = :n",
                    ExpressionAttributeValues={":n": {"N": str(n)}},
                )
        finally:
            Item.__init__ = original  # type: ignore[method-assign]
        gc.collect()
        assert Item.instances_tracked == []  # type: ignore[attr-defined]
        assert sum(ref() is not None for ref in made) <= 1  # at most the item the table holds
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="state")
        boto3.client("s3", region_name="us-east-1").put_object(Bucket="state", Key="k", Body=b"x")
        assert FakeKey.instances_tracked  # type: ignore[attr-defined]
