"""The scheduled reconciler: what the registry, the certificates and the metrics say after a run."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto.iot.models import iot_backends

from tests.unit.support import TABLE, Registry, log_records

SHADOWS = {"temperature-sensor": {"samplingRate": 30, "enabled": True}}
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture
def iot(registry: Registry) -> Any:
    client = boto3.client("iot", region_name="us-east-1")
    claim = client.create_keys_and_certificate(setAsActive=True)["certificateId"]
    client.claim_id = claim  # type: ignore[attr-defined]
    return client


@pytest.fixture
def reconciler(iot: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("STALE_CLAIM_SECONDS", "600")
    monkeypatch.setenv("INITIAL_SHADOWS", json.dumps(SHADOWS))
    monkeypatch.setenv("CLAIM_CERTIFICATE_IDS", iot.claim_id)
    monkeypatch.setenv("METRICS_NAMESPACE", "IoTProvisioning/test")
    monkeypatch.setenv("IOT_DATA_ENDPOINT", "")
    import reconciler

    yield importlib.reload(reconciler)


def certificate(iot: Any, status: str = "ACTIVE") -> tuple[str, str]:
    created = iot.create_keys_and_certificate(setAsActive=status == "ACTIVE")
    return created["certificateId"], created["certificateArn"]


def status_of(iot: Any, certificate_id: str) -> str:
    return str(iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"])


def test_a_stale_attempt_whose_thing_exists_is_completed_with_its_shadow_and_the_replaced_certificate_revoked(
    reconciler: ModuleType, registry: Registry, iot: Any
) -> None:
    """The registry-events function failed (or no created event came): the thing is there with the
    attempt's certificate, so the device did provision."""
    current, arn = certificate(iot)
    replaced, _ = certificate(iot)
    iot.create_thing(thingName="temperature-sensor-SN-1")
    iot.attach_thing_principal(thingName="temperature-sensor-SN-1", principal=arn)
    registry.enroll(
        "SN-1",
        status="provisioning",
        certificateId=current,
        thingName="temperature-sensor-SN-1",
        provisioningStartedAt=LONG_AGO,
        previousCertificateId=replaced,
    )

    summary = reconciler.handler({})

    assert summary == {"completed": 1, "failed": 0, "revoked": 1, "abandoned": 0, "errors": 0}
    assert registry.get("SN-1")["status"] == "provisioned"  # type: ignore[index]
    assert (status_of(iot, current), status_of(iot, replaced)) == ("ACTIVE", "REVOKED")
    shadow = boto3.client("iot-data", region_name="us-east-1").get_thing_shadow(thingName="temperature-sensor-SN-1")
    assert json.loads(shadow["payload"].read())["state"]["desired"] == SHADOWS["temperature-sensor"]


def test_a_stale_attempt_without_its_thing_is_marked_failed_and_its_certificate_revoked(
    reconciler: ModuleType, registry: Registry, iot: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The template failed after the hook's allow: `failed` is retryable (the hook lets the device in
    again); the certificate AWS made for the dead attempt can no longer be used."""
    attempt, _ = certificate(iot, status="INACTIVE")
    registry.enroll(
        "SN-2",
        status="provisioning",
        certificateId=attempt,
        thingName="temperature-sensor-SN-2",
        provisioningStartedAt=LONG_AGO,
    )

    summary = reconciler.handler({})

    item = registry.get("SN-2")
    assert item is not None
    assert (item["status"], summary["failed"], summary["revoked"]) == ("failed", 1, 1)
    assert item["failureReason"].startswith("no thing temperature-sensor-SN-2 with the attempt's certificate")
    assert status_of(iot, attempt) == "REVOKED"
    records = log_records(capsys.readouterr().out)
    assert any(r.get("result") == "failed" and r.get("serialNumber") == "SN-2" for r in records)


def test_a_failed_attempt_never_revokes_a_certificate_the_device_s_thing_holds(
    reconciler: ModuleType, registry: Registry, iot: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attempt's certificate never reached the thing, but the certificate the attempt replaced is
    on it: that one is the device's own, and revoking it would lock the device out."""
    attempt, _ = certificate(iot, status="INACTIVE")
    owned, owned_arn = certificate(iot)
    iot.create_thing(thingName="temperature-sensor-SN-4")
    iot.attach_thing_principal(thingName="temperature-sensor-SN-4", principal=owned_arn)
    registry.enroll(
        "SN-4",
        status="provisioning",
        certificateId=attempt,
        thingName="temperature-sensor-SN-4",
        provisioningStartedAt=LONG_AGO,
        previousCertificateId=owned,
    )

    summary = reconciler.handler({})

    assert (registry.get("SN-4")["status"], summary["revoked"]) == ("failed", 1)  # type: ignore[index]
    assert (status_of(iot, attempt), status_of(iot, owned)) == ("REVOKED", "ACTIVE")
    records = log_records(capsys.readouterr().out)
    assert any(r.get("result") == "kept" and r.get("certificateId") == owned for r in records)


def test_an_attempt_within_the_stale_window_is_left_alone(reconciler: ModuleType, registry: Registry, iot: Any) -> None:
    attempt, _ = certificate(iot, status="INACTIVE")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    registry.enroll("SN-3", status="provisioning", certificateId=attempt, provisioningStartedAt=now)
    before = registry.get("SN-3")

    assert reconciler.handler({})["failed"] == 0
    assert registry.get("SN-3") == before
    assert status_of(iot, attempt) == "INACTIVE"


def test_a_certificate_the_registry_does_not_name_is_never_deleted_however_old_and_unattached(
    reconciler: ModuleType, registry: Registry, iot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another workload's certificate (INACTIVE, on nothing, older than an hour) and one made over MQTT
    that never registered (PENDING_ACTIVATION) are not this stack's to delete: AWS removes the latter."""
    others, _ = certificate(iot, status="INACTIVE")
    pending, _ = certificate(iot, status="INACTIVE")
    # What the fleet-provisioning MQTT API leaves (UpdateCertificate cannot set this status).
    iot_backends["123456789012"]["us-east-1"].certificates[pending].status = "PENDING_ACTIVATION"
    later = time.time() + 2 * 3600
    monkeypatch.setattr(reconciler.time, "time", lambda: later)

    summary = reconciler.handler({})

    assert summary["errors"] == 0
    assert (status_of(iot, others), status_of(iot, pending)) == ("INACTIVE", "PENDING_ACTIVATION")


def test_a_run_publishes_devices_by_status_and_type_and_days_until_each_claim_certificate_expires(
    reconciler: ModuleType, registry: Registry, iot: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.enroll("SN-4", status="enrolled")
    registry.enroll("SN-5", status="enrolled", device_type="gateway")
    registry.enroll("SN-6", status="provisioned", device_type="gateway")

    reconciler.handler({})

    metrics = [r for r in log_records(capsys.readouterr().out) if "_aws" in r]
    devices = {(r["Status"], r.get("DeviceType")): r["Devices"] for r in metrics if "Devices" in r}
    assert devices[("enrolled", None)] == 2
    assert devices[("enrolled", "gateway")] == devices[("enrolled", "temperature-sensor")] == 1
    assert devices[("provisioned", "gateway")] == 1 and devices[("failed", None)] == 0
    (claim,) = [r for r in metrics if "ClaimCertificateDaysToExpiry" in r]
    expires = iot.describe_certificate(certificateId=iot.claim_id)["certificateDescription"]["validity"]["notAfter"]
    assert claim["CertificateId"] == iot.claim_id
    assert claim["ClaimCertificateDaysToExpiry"] == pytest.approx((expires.timestamp() - time.time()) / 86400, abs=0.01)
    assert claim["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["CertificateId"]]


def test_an_item_that_fails_does_not_stop_the_others_and_the_run_then_fails(
    reconciler: ModuleType, registry: Registry, iot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for serial in ("SN-7", "SN-8"):
        attempt, _ = certificate(iot, status="INACTIVE")
        registry.enroll(serial, status="provisioning", certificateId=attempt, provisioningStartedAt=LONG_AGO)
    original = reconciler._thing_has

    def broken_for_sn7(thing_name: str, certificate_id: str) -> bool:
        if thing_name.endswith("SN-7"):
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://iot")
        return bool(original(thing_name, certificate_id))

    monkeypatch.setattr(reconciler, "_thing_has", broken_for_sn7)

    with pytest.raises(RuntimeError, match="SN-7"):
        reconciler.handler({})
    assert registry.get("SN-8")["status"] == "failed"  # type: ignore[index]
    assert registry.get("SN-7")["status"] == "provisioning"  # type: ignore[index]
