"""Provisioning interrupted after the hook's allow, and what brings the device back: the scheduled
reconciler and the hook's takeover of a stale claim, against the deployed sandbox stack with the
real device client. The stale window is passed by dating the claim back (StaleClaimMinutes is real
time: at least a minute)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scripts import test_provisioning as device
from tests.integration.conftest import Deployment
from tests.integration.test_device_provisioning import Fleet

pytestmark = pytest.mark.integration
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("recovery-devices"))


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
    """The role's inline policy without `action` for the duration of the block, then as it was."""
    iam = fleet.deployment.client("iam")
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
        yield
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=json.dumps(original))


def date_back(fleet: Fleet, serial: str) -> None:
    """The stale window passes."""
    fleet.dynamodb.update_item(
        TableName=fleet.table, Key={"serialNumber": {"S": serial}},
        UpdateExpression="SET provisioningStartedAt = :then", ExpressionAttributeValues={":then": {"S": LONG_AGO}},
    )  # fmt: skip


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

    reconcile(fleet)

    failed = fleet.registry(serial)
    assert failed["status"] == "failed"
    assert failed["failureReason"].startswith(f"no thing temperature-sensor-{serial} with the attempt's certificate")
    assert certificate_status(fleet, interrupted["certificateId"]) == "REVOKED"
    result = fleet.provision(serial, "temperature-sensor")  # its next attempt: the whole flow, reconnect included
    assert result["thingName"] == f"temperature-sensor-{serial}"
    assert fleet.registry(serial)["status"] == "provisioned"


def test_an_attempt_whose_registry_event_fails_is_completed_by_the_reconciler(
    fleet: Fleet, no_scheduled_runs: None
) -> None:
    serial = "SN-RECOVER-EVENT"
    fleet.enroll(serial, "humidity-sensor")
    function = fleet.outputs["registry_events_function_name"]
    role = fleet.deployment.client("lambda").get_function(FunctionName=function)["Configuration"]["Role"]
    with role_without(fleet, role.rsplit("/", 1)[1], f"{function}-policy", "dynamodb:GetItem"):
        result = fleet.provision(serial, "humidity-sensor", skip_device_check=True)  # the device got its thing
    assert fleet.registry(serial)["status"] == "provisioning"  # ...but the registry-events function failed
    date_back(fleet, serial)

    reconcile(fleet)

    item = fleet.registry(serial)
    assert (item["status"], item["completedBy"]) == ("provisioned", "reconciler")
    shadow = fleet.deployment.client("iot-data").get_thing_shadow(thingName=result["thingName"])
    assert json.loads(shadow["payload"].read())["state"]["desired"] == {"enabled": True, "reportingInterval": 60}


def test_a_stale_claim_is_taken_over_by_the_next_attempt_and_the_abandoned_certificate_revoked(
    fleet: Fleet, no_scheduled_runs: None
) -> None:
    serial = "SN-RECOVER-STALE"
    fleet.enroll(serial, "pressure-sensor")
    with role_without(fleet, fleet.outputs["provisioning_role_name"], "provisioning-policy", "iot:CreateThing"):
        with pytest.raises(device.Failure):
            fleet.provision(serial, "pressure-sensor", skip_device_check=True)
    abandoned = fleet.registry(serial)["certificateId"]
    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):  # within the window: still refused
        fleet.provision(serial, "pressure-sensor", skip_device_check=True)
    date_back(fleet, serial)

    result = fleet.provision(serial, "pressure-sensor")

    item = fleet.registry(serial)
    assert (item["status"], item["certificateId"], item["previousCertificateId"]) == (
        "provisioned", result["certificateId"], abandoned
    )  # fmt: skip
    assert certificate_status(fleet, abandoned) == "REVOKED"


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
