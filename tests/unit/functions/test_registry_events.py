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


def certificate() -> str:
    """A device certificate IoT issued (the id the hook recorded for the attempt)."""
    return str(
        boto3.client("iot", region_name="us-east-1").create_keys_and_certificate(setAsActive=True)["certificateId"]
    )


def thing_created(
    thing: str, serial: str, device_type: str = "temperature-sensor", holding: str | None = None
) -> dict[str, Any]:
    """The registry event IoT publishes on $aws/events/thing/<name>/created, once the template made the
    thing and (`holding`) attached that certificate to it."""
    iot = boto3.client("iot", region_name="us-east-1")
    iot.create_thing(thingName=thing)
    if holding:
        arn = iot.describe_certificate(certificateId=holding)["certificateDescription"]["certificateArn"]
        iot.attach_thing_principal(thingName=thing, principal=arn)
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
    attempt = certificate()
    registry.enroll("SN-0001", status="provisioning", certificateId=attempt, thingName="temperature-sensor-SN-0001")

    result = events.handler(thing_created("temperature-sensor-SN-0001", "SN-0001", holding=attempt))

    assert result == {"result": "provisioned"}
    item = registry.get("SN-0001")
    assert item is not None
    assert item["status"] == "provisioned"
    assert item["thingName"] == "temperature-sensor-SN-0001"
    assert item["certificateId"] == attempt
    assert item["provisionedAt"]
    assert shadow("temperature-sensor-SN-0001")["state"]["desired"] == SHADOWS["temperature-sensor"]


def test_given_event_replayed_when_device_already_provisioned_then_nothing_changes(
    events: ModuleType, registry: Registry
) -> None:
    attempt = certificate()
    registry.enroll("SN-0001", status="provisioning", certificateId=attempt, thingName="temperature-sensor-SN-0001")
    event = thing_created("temperature-sensor-SN-0001", "SN-0001", holding=attempt)
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
    replaced, attempt = certificate(), certificate()
    registry.enroll(
        "SN-0001",
        status="provisioning",
        certificateId=attempt,
        thingName="temperature-sensor-SN-0001",
        previousCertificateId=replaced,
    )

    event = thing_created("temperature-sensor-SN-0001", "SN-0001", holding=attempt)
    assert events.handler(event) == {"result": "provisioned"}

    assert iot.describe_certificate(certificateId=replaced)["certificateDescription"]["status"] == "REVOKED"


def test_given_the_thing_does_not_hold_the_attempt_s_certificate_then_nothing_is_completed_and_lambda_retries(
    events: ModuleType, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thing of the claimed name without the attempt's certificate (another certificate on it, or the
    attachment not visible yet) proves nothing: the event fails after a short wait, so Lambda retries it
    (the reconciler completes or fails the attempt if it never holds)."""
    monkeypatch.setattr(events, "ATTACHMENT_CHECKS", (0.0, 0.0))
    attempt, other = certificate(), certificate()
    registry.enroll("SN-0001", status="provisioning", certificateId=attempt, thingName="temperature-sensor-SN-0001")
    before = registry.get("SN-0001")

    with pytest.raises(events.NotAttached, match="does not hold certificate"):
        events.handler(thing_created("temperature-sensor-SN-0001", "SN-0001", holding=other))

    assert registry.get("SN-0001") == before


def test_given_the_replaced_certificate_is_still_on_the_thing_then_it_is_kept(
    events: ModuleType, registry: Registry
) -> None:
    """Nothing revokes a certificate the device's thing still holds: it is the device's own."""
    iot = boto3.client("iot", region_name="us-east-1")
    replaced, attempt = certificate(), certificate()
    registry.enroll(
        "SN-0001",
        status="provisioning",
        certificateId=attempt,
        thingName="temperature-sensor-SN-0001",
        previousCertificateId=replaced,
    )
    event = thing_created("temperature-sensor-SN-0001", "SN-0001", holding=attempt)
    arn = iot.describe_certificate(certificateId=replaced)["certificateDescription"]["certificateArn"]
    iot.attach_thing_principal(thingName="temperature-sensor-SN-0001", principal=arn)

    assert events.handler(event) == {"result": "provisioned"}

    assert iot.describe_certificate(certificateId=replaced)["certificateDescription"]["status"] == "ACTIVE"
