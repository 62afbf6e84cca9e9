"""The registry-events function: what the registry and the device shadow hold after a thing is created."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.unit.support import TABLE, Registry

SHADOWS = {
    "temperature-sensor": {"samplingRate": 30, "temperatureUnit": "celsius", "alertThreshold": 80, "enabled": True}
}


@pytest.fixture
def events(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("INITIAL_SHADOWS", json.dumps(SHADOWS))
    monkeypatch.setenv("IOT_DATA_ENDPOINT", "")
    import registry_events

    yield importlib.reload(registry_events)


def thing_created(thing: str, serial: str, device_type: str = "temperature-sensor") -> dict[str, Any]:
    """The registry event IoT publishes on $aws/events/thing/<name>/created."""
    boto3.client("iot", region_name="us-east-1").create_thing(thingName=thing)
    return {
        "eventType": "THING_EVENT",
        "eventId": "3f0d7c2b",
        "timestamp": 1700000000000,
        "operation": "CREATED",
        "accountId": "123456789012",
        "thingId": "b3ee1b4c-4f0b-4f59-9b34-46e3d8b17a8a",
        "thingName": thing,
        "versionNumber": 1,
        "thingTypeName": "IoTProvisioning-dev-device",
        "attributes": {"serialNumber": serial, "deviceType": device_type},
    }


def shadow(thing: str) -> dict[str, Any]:
    data = boto3.client("iot-data", region_name="us-east-1")
    return json.loads(data.get_thing_shadow(thingName=thing)["payload"].read())


def test_given_device_in_provisioning_when_its_thing_is_created_then_registry_says_provisioned_with_shadow(
    events: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", status="provisioning", certificateId="a" * 64, thingName="temperature-sensor-SN-0001")

    result = events.handler(thing_created("temperature-sensor-SN-0001", "SN-0001"))

    assert result == {"result": "provisioned"}
    item = registry.get("SN-0001")
    assert item is not None
    assert item["status"] == "provisioned"
    assert item["thingName"] == "temperature-sensor-SN-0001"
    assert item["certificateId"] == "a" * 64
    assert item["provisionedAt"]
    assert shadow("temperature-sensor-SN-0001")["state"]["desired"] == SHADOWS["temperature-sensor"]


def test_given_event_replayed_when_device_already_provisioned_then_nothing_changes(
    events: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", status="provisioning", certificateId="a" * 64, thingName="temperature-sensor-SN-0001")
    event = thing_created("temperature-sensor-SN-0001", "SN-0001")
    events.handler(event)
    before = registry.get("SN-0001")

    assert events.handler(event) == {"result": "skipped"}
    assert registry.get("SN-0001") == before


@pytest.mark.parametrize("status", ["enrolled", "revoked", None])
def test_given_no_provisioning_in_progress_when_thing_created_then_registry_untouched(
    events: ModuleType, registry: Registry, status: str | None
) -> None:
    if status:
        registry.enroll("SN-0001", status=status)

    assert events.handler(thing_created("manual-thing", "SN-0001")) == {"result": "skipped"}
    assert (registry.get("SN-0001") or {}).get("status") == status
    if status is None:
        assert registry.items() == []


def test_given_thing_without_serial_attribute_when_created_then_event_is_ignored(
    events: ModuleType, registry: Registry
) -> None:
    event = thing_created("console-thing", "x")
    event["attributes"] = {}

    assert events.handler(event) == {"result": "ignored"}


def test_given_a_thing_of_another_name_carrying_the_serial_then_the_device_stays_provisioning(
    events: ModuleType, registry: Registry
) -> None:
    """Only the thing the hook claimed for the serial proves the device provisioned."""
    registry.enroll("SN-0001", status="provisioning", certificateId="a" * 64, thingName="temperature-sensor-SN-0001")

    result = events.handler(thing_created("someone-elses-thing", "SN-0001"))

    assert result == {"result": "skipped"}
    assert registry.get("SN-0001")["status"] == "provisioning"  # type: ignore[index]


def test_given_the_attempt_took_over_another_then_the_replaced_certificate_is_revoked(
    events: ModuleType, registry: Registry
) -> None:
    iot = boto3.client("iot", region_name="us-east-1")
    replaced = iot.create_keys_and_certificate(setAsActive=True)["certificateId"]
    registry.enroll("SN-0001", status="provisioning", certificateId="a" * 64, thingName="temperature-sensor-SN-0001",
                    previousCertificateId=replaced)  # fmt: skip

    assert events.handler(thing_created("temperature-sensor-SN-0001", "SN-0001")) == {"result": "provisioned"}

    assert iot.describe_certificate(certificateId=replaced)["certificateDescription"]["status"] == "REVOKED"
