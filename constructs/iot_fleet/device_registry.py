"""The device registry: one DynamoDB item per serial number, holding the device's lifecycle status."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTableGlobalSecondaryIndex,
)
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from fleet_shared.registry import INDEXES, PARTITION_KEY


class DeviceRegistry(Construct):
    def __init__(self, scope: Construct, id_: str, *, table_name: str, key: KmsKey, is_prod: bool) -> None:
        super().__init__(scope, id_)
        index_keys = sorted({k for index in INDEXES for k in (index.partition_key, index.sort_key) if k})
        self.table = DynamodbTable(
            self,
            "table",
            name=table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=PARTITION_KEY,
            attribute=[
                DynamodbTableAttribute(name=PARTITION_KEY, type="S"),
                *(DynamodbTableAttribute(name=attribute, type="S") for attribute in index_keys),
            ],
            global_secondary_index=[
                DynamodbTableGlobalSecondaryIndex(
                    name=index.name, hash_key=index.partition_key, range_key=index.sort_key, projection_type="ALL"
                )
                for index in INDEXES
            ],
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True, "kms_key_arn": key.arn},
            deletion_protection_enabled=is_prod,
        )
