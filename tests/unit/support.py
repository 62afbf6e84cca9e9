"""Helpers for Lambda unit tests: the moto registry table, hook events as IoT sends them, log parsing."""

from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any

import boto3
import pytest

TABLE = "device-registry-test"
ALLOWED = "temperature-sensor,humidity-sensor,pressure-sensor,gateway"


def create_registry(name: str = TABLE) -> Any:
    """The registry table as the stack declares it (fleet_shared.registry): key and indexes."""
    from fleet_shared.registry import INDEXES, PARTITION_KEY

    client = boto3.client("dynamodb", region_name="us-east-1")
    keys = sorted({PARTITION_KEY} | {k for index in INDEXES for k in (index.partition_key, index.sort_key) if k})
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index.name,
                "KeySchema": [{"AttributeName": index.partition_key, "KeyType": "HASH"}]
                + ([{"AttributeName": index.sort_key, "KeyType": "RANGE"}] if index.sort_key else []),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in INDEXES
        ],
    )
    return client


class Registry:
    """Test-side view of the registry table."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def enroll(
        self, serial: str, device_type: str = "temperature-sensor", status: str = "enrolled", **extra: str
    ) -> None:
        item = {"serialNumber": serial, "deviceType": device_type, "status": status, **extra}
        self.client.put_item(TableName=TABLE, Item={k: {"S": v} for k, v in item.items()})

    def get(self, serial: str) -> dict[str, str] | None:
        item = self.client.get_item(TableName=TABLE, Key={"serialNumber": {"S": serial}}, ConsistentRead=True).get(
            "Item"
        )
        return {k: v["S"] for k, v in item.items() if "S" in v} if item else None  # strings only

    def items(self) -> list[dict[str, Any]]:
        return self.client.scan(TableName=TABLE)["Items"]


# The decision pools of the hook modules loaded by the running test: a decision still running when the
# test ends (a registry the test slowed down) must finish inside that test's moto, not write into the
# registry of whichever test runs next.
_HOOK_POOLS: list[Any] = []


def drain_hook_decisions() -> None:
    """Waits for every decision the running test's hooks started (conftest's `aws` fixture calls it)."""
    while _HOOK_POOLS:
        _HOOK_POOLS.pop().shutdown(wait=True)


def load_hook(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    settings = {
        "TABLE_NAME": TABLE,
        "ALLOWED_DEVICE_TYPES": ALLOWED,
        "REQUIRE_ENROLLMENT": "true",
        "METRICS_NAMESPACE": "IoTProvisioning/test",
        "IOT_PROVISIONING_DEBUG": "false",
        "PROVISIONING_TEMPLATE_NAME": "IoTProvisioning-dev-fleet",  # the template of event()'s templateArn
        **env,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    import provisioning_hook

    module = importlib.reload(provisioning_hook)
    _HOOK_POOLS.append(module._DECIDING)
    return module


def event(certificate_id: str = "a" * 64, **parameters: str) -> dict[str, Any]:
    """A hook event as IoT sends it (payload version 2020-04-01)."""
    params = {
        "SerialNumber": "SN-0001",
        "DeviceType": "temperature-sensor",
        "Manufacturer": "AcmeIoT",
        "FirmwareVersion": "v1.0.0",
        **parameters,
    }
    return {
        "claimCertificateId": "c" * 64,
        "certificateId": certificate_id,
        "certificatePem": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----",
        "templateArn": "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/IoTProvisioning-dev-fleet",
        "clientId": "SN-0001",
        "parameters": {k: v for k, v in params.items() if v is not None},
    }


def log_records(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


LAMBDA_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def lambda_role(name: str) -> str:
    """An execution role Lambda can assume (the sandbox refuses a function whose role it cannot)."""
    iam = boto3.client("iam", region_name="us-east-1")
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=LAMBDA_TRUST)["Role"]["Arn"])
