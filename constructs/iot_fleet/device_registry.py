"""The device registry: one DynamoDB item per serial number, holding the device's lifecycle status."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTableGlobalSecondaryIndex,
)
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

# Indexes operators and tools query by: all devices of a type, all devices in a status.
INDEXES = {"deviceType-index": "deviceType", "status-index": "status"}


class DeviceRegistry(Construct):
    def __init__(self, scope: Construct, id_: str, *, table_name: str, key: KmsKey, is_prod: bool) -> None:
        super().__init__(scope, id_)
        self.table = DynamodbTable(
            self,
            "table",
            name=table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key="serialNumber",
            attribute=[
                DynamodbTableAttribute(name="serialNumber", type="S"),
                *(DynamodbTableAttribute(name=attribute, type="S") for attribute in INDEXES.values()),
            ],
            global_secondary_index=[
                DynamodbTableGlobalSecondaryIndex(name=index, hash_key=attribute, projection_type="ALL")
                for index, attribute in INDEXES.items()
            ],
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True, "kms_key_arn": key.arn},
            deletion_protection_enabled=is_prod,
        )
