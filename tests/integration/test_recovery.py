"""Provisioning interrupted after the hook's allow, and what brings the device back: the scheduled
reconciler, which completes the attempt or marks it failed (then the device tries again); and what
never does, a claim-certificate holder retrying the serial. Against the deployed sandbox stack with
the real device client. The stale window is passed by dating the claim back (StaleClaimMinutes is real
time: at least a minute)."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from awsiot import iotidentity

from scripts import device_client as device
from tests.integration.conftest import Deployment
from tests.integration.test_alarms import Alerts, Monitoring
from tests.integration.test_device_provisioning import Fleet, claim_identity

pytestmark = pytest.mark.integration
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("recovery-devices"))


@pytest.fixture(scope="module")
def monitoring(fleet: Fleet) -> Iterator[Monitoring]:
    """The stack's alarms as an operator receives them (tests/integration/test_alarms.py)."""
    alerts = Alerts(fleet.deployment, fleet.outputs["alerts_topic_arn"])
    try:
        yield Monitoring(fleet.deployment, fleet, alerts)
    finally:
        alerts.close()


@pytest.fixture
def no_scheduled_runs(fleet: Fleet) -> Iterator[None]:
    """The reconciler runs every few seconds in the sandbox: these tests run it themselves, when they mean to."""
    events = fleet.deployment.client("events")
    rule = fleet.outputs["reconciler_function_name"]  # the schedule rule has the function's name
    events.disable_rule(Name=rule)
    try:
        yield
    finally:
        events.enable_rule(Name=rule)


@contextlib.contextmanager
def role_without(fleet: Fleet, role: str, policy: str, action: str) -> Iterator[None]:
    """The role's inline policy without `action`, and no managed policy attached (the provisioning role's
    AWSIoTThingsRegistration would grant the action again), for the duration of the block; then as it was."""
    iam = fleet.deployment.client("iam")
    managed = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    original = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    statements = []
    for statement in original["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        kept = [a for a in actions if a != action]
        if kept:
            statements.append({**statement, "Action": kept})
    assert statements != original["Statement"], f"{action} is not in {policy}"
    iam.put_role_policy(
        RoleName=role, PolicyName=policy, PolicyDocument=json.dumps({**original, "Statement": statements})
    )
    try:
        for arn in managed:
            iam.detach_role_policy(RoleName=role, PolicyArn=arn)
        yield
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=json.dumps(original))
        for arn in managed:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)


def provisioned_without_registry_event(fleet: Fleet, serial: str, device_type: str) -> dict[str, Any]:
    """The device provisions (its thing holds its certificate) while the registry-events function cannot
    read the registry, so its serial stays `provisioning`."""
    function = fleet.outputs["registry_events_function_name"]
    role = fleet.deployment.client("lambda").get_function(FunctionName=function)["Configuration"]["Role"]
    with role_without(fleet, role.rsplit("/", 1)[1], f"{function}-policy", "dynamodb:GetItem"):
        return fleet.provision(serial, device_type, skip_device_check=True)


def date_back(fleet: Fleet, serial: str) -> None:
    """The stale window passes."""
    fleet.dynamodb.update_item(
        TableName=fleet.table,
        Key={"serialNumber": {"S": serial}},
        UpdateExpression="SET provisioningStartedAt = :then",
        ExpressionAttributeValues={":then": {"S": LONG_AGO}},
    )


def reconcile(fleet: Fleet) -> dict[str, Any]:
    answer = fleet.deployment.client("lambda").invoke(FunctionName=fleet.outputs["reconciler_function_name"])
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return dict(payload)


def certificate_status(fleet: Fleet, certificate_id: str) -> str:
    return str(fleet.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"])


def test_an_attempt_whose_template_fails_is_marked_failed_and_the_next_attempt_provisions(
    fleet: Fleet, no_scheduled_runs: None
) -> None:
    serial = "SN-RECOVER-TEMPLATE"
    fleet.enroll(serial, "temperature-sensor")
    with role_without(fleet, fleet.outputs["provisioning_role_name"], "provisioning-policy", "iot:CreateThing"):
        with pytest.raises(device.Failure, match="RegisterThing rejected"):
            fleet.provision(serial, "temperature-sensor", skip_device_check=True)
    interrupted = fleet.registry(serial)
    assert interrupted["status"] == "provisioning"  # the hook allowed it; the template never applied
    date_back(fleet, serial)
    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):  # however old: only the reconciler lets it go
        fleet.provision(serial, "temperature-sensor", skip_device_check=True)

    reconcile(fleet)

    failed = fleet.registry(serial)
    assert failed["status"] == "failed"
    assert failed["failureReason"].startswith(f"no thing temperature-sensor-{serial} with the attempt's certificate")
    assert certificate_status(fleet, interrupted["certificateId"]) == "REVOKED"
    result = fleet.provision(serial, "temperature-sensor")  # its next attempt: the whole flow, reconnect included
    assert result["thingName"] == f"temperature-sensor-{serial}"
    item = fleet.registry(serial)
    assert (item["status"], item["certificateId"], item["previousCertificateId"]) == (
        "provisioned",
        result["certificateId"],
        interrupted["certificateId"],
    )


def test_an_attempt_whose_registry_event_fails_is_completed_by_the_reconciler(
    fleet: Fleet, no_scheduled_runs: None
) -> None:
    serial = "SN-RECOVER-EVENT"
    fleet.enroll(serial, "humidity-sensor")
    result = provisioned_without_registry_event(fleet, serial, "humidity-sensor")  # the device got its thing
    assert fleet.registry(serial)["status"] == "provisioning"  # ...but the registry-events function failed
    date_back(fleet, serial)

    reconcile(fleet)

    item = fleet.registry(serial)
    assert (item["status"], item["completedBy"]) == ("provisioned", "reconciler")
    shadow = fleet.deployment.client("iot-data").get_thing_shadow(thingName=result["thingName"])
    assert json.loads(shadow["payload"].read())["state"]["desired"] == {"enabled": True, "reportingInterval": 60}


def test_a_claim_holder_retrying_a_device_whose_registry_event_failed_never_takes_it_over(
    fleet: Fleet, monitoring: Monitoring, no_scheduled_runs: None
) -> None:
    """The device provisioned (its thing holds its certificate) but the registry-events function failed,
    so the serial stays `provisioning`; the stale window passes. Someone holding the claim certificate
    retries the serial again and again: each attempt is refused, the retries raise serial-guessing, the
    device stays connected, and the reconciler completes the item with the device's own certificate."""
    serial = "SN-RECOVER-HIJACK"
    fleet.enroll(serial, "humidity-sensor")
    victim = provisioned_without_registry_event(fleet, serial, "humidity-sensor")
    assert fleet.registry(serial)["status"] == "provisioning"
    date_back(fleet, serial)
    monitoring.quiet("serial-guessing")
    drops: list[Any] = []
    connected = device.connect(
        fleet.target,
        victim["certificateFile"],
        victim["privateKeyFile"],
        victim["thingName"],
        15,
        on_disconnection=drops.append,
    )
    try:
        retries = int(monitoring.alarm("serial-guessing")["Threshold"]) + 1
        client, identity = claim_identity(fleet)
        try:
            created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
            request = iotidentity.RegisterThingRequest(
                template_name=fleet.target.template_name,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={"SerialNumber": serial, "DeviceType": "humidity-sensor", "Manufacturer": "AcmeIoT"},
            )
            for _ in range(retries):  # more than the account's RegisterThing rate (10/s): asked again if throttled
                with pytest.raises(Exception) as denied:
                    device.retry_throttled(
                        "RegisterThing",
                        lambda: identity.register_thing(request).result(15),
                        device.Backoff(),
                        Counter(),
                    )
                assert "403 ACCESS_DENIED" in device.rejection(denied.value)
        finally:
            client.close()
        _, fired = monitoring.fired("serial-guessing")
        item = fleet.registry(serial)
        assert (item["status"], item["certificateId"]) == ("provisioning", victim["certificateId"])

        reconcile(fleet)

        item = fleet.registry(serial)
        assert (item["status"], item["certificateId"], item["completedBy"]) == (
            "provisioned",
            victim["certificateId"],
            "reconciler",
        )
        assert certificate_status(fleet, victim["certificateId"]) == "ACTIVE"
        principals = fleet.iot.list_thing_principals(thingName=victim["thingName"])["principals"]
        assert [p.rsplit("/", 1)[1] for p in principals] == [victim["certificateId"]]
        assert not drops, "the device was disconnected"
    finally:
        connected.close()
    reasons = [r["reason"] for r in fleet.cli("why", serial, "--limit", "50", "--json")[1]["decisions"]]
    assert reasons == ["ALLOWED"] + ["PROVISIONING_IN_PROGRESS"] * retries  # what an operator reads
    assert "PROVISIONING_IN_PROGRESS" in {
        d["value"]
        for m in fired["Trigger"]["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
        if d["name"] == "Reason"
    }
    device.connect(fleet.target, victim["certificateFile"], victim["privateKeyFile"], victim["thingName"], 15).close()
    monitoring.recovered("serial-guessing")


def test_the_schedule_runs_the_reconciler_and_it_publishes_fleet_metrics(fleet: Fleet) -> None:
    logs = fleet.deployment.client("logs")
    group = f"/aws/lambda/{fleet.outputs['reconciler_function_name']}"
    started = int(time.time() * 1000)
    deadline = time.monotonic() + 30  # rate(5 minutes) on the scaled clock: every 5 s by default
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        time.sleep(1)
        try:
            events = logs.filter_log_events(logGroupName=group, startTime=started)["events"]
        except logs.exceptions.ResourceNotFoundException:
            continue
        records = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
        runs = [r for r in records if r.get("message") == "reconciled"]
        metrics = [r for r in records if "Devices" in r]
    assert runs, "the schedule did not run the reconciler within 30 s"
    assert runs[0]["result"] == "ok", runs[0]
    assert {r["Status"] for r in metrics} >= {"enrolled", "provisioning", "provisioned", "failed"}
