"""The operator CLI's guards, which no sandbox deployment can show: a prod stack's fleet is not
decommissioned without --allow-prod, and many devices are not decommissioned without a yes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from scripts import fleet
from scripts.deployed_stack import DeployedStack
from scripts.fleet_ops.devices import Sweep


class FakeDevices:
    decommissioned: ClassVar[list[list[str]]] = []  # what decommission_all was asked to do

    def __init__(self, stack: DeployedStack) -> None:
        self.stack = stack

    def in_service(self) -> list[str]:
        return ["SN-0001", "SN-0002"]

    def decommission_all(self, serials: list[str], **_: Any) -> Sweep:
        FakeDevices.decommissioned.append(serials)
        return Sweep(devices=len(serials))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    FakeDevices.decommissioned = []
    monkeypatch.setattr(fleet, "Devices", FakeDevices)

    def run(environment: str, *args: str, answer: str = "") -> Any:
        stack = DeployedStack(
            Path(f"cdktf.out/stacks/iot-provisioning-{environment}"),
            {"environment": environment, "device_registry_table_name": "t"},
        )
        monkeypatch.setattr(fleet, "stack", lambda: stack)
        return CliRunner().invoke(fleet.app, list(args), input=answer)

    return run


def test_decommissioning_a_prod_fleet_needs_allow_prod_even_with_yes(cli: Any) -> None:
    refused = cli("prod", "decommission", "--all", "--yes")

    assert refused.exit_code == 1
    assert "is prod: decommission 2 devices needs --allow-prod" in refused.output
    assert FakeDevices.decommissioned == []
    allowed = cli("prod", "decommission", "--all", "--yes", "--allow-prod")
    assert (allowed.exit_code, FakeDevices.decommissioned) == (0, [["SN-0001", "SN-0002"]])


def test_decommissioning_many_devices_asks_first_and_a_no_does_nothing(cli: Any) -> None:
    declined = cli("dev", "decommission", "--all", answer="n\n")

    assert declined.exit_code == 1
    assert "decommission 2 devices of iot-provisioning-dev" in declined.output
    assert FakeDevices.decommissioned == []
    accepted = cli("dev", "decommission", "--all", answer="y\n")
    assert (accepted.exit_code, FakeDevices.decommissioned) == (0, [["SN-0001", "SN-0002"]])
    assert "decommissioned 2 devices" in accepted.output


def test_decommission_needs_a_serial_or_all_but_not_both(cli: Any) -> None:
    assert cli("dev", "decommission").exit_code == 2
    assert cli("dev", "decommission", "SN-0001", "--all").exit_code == 2
    assert FakeDevices.decommissioned == []


def test_revoke_revokes_the_certificates_first_and_reports_a_registry_write_that_keeps_failing(
    registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that refuses the write (throttled, or an item DynamoDB will not grow) must not leave a
    revoked device connected: its certificates are revoked before the write, the write is retried and
    then reported with what was done, and running revoke again records it."""
    import boto3
    from botocore.exceptions import ClientError

    from scripts.fleet_ops import devices as devices_module
    from tests.unit.support import TABLE

    iot = boto3.client("iot", region_name="us-east-1")
    thing = "temperature-sensor-SN-0001"
    iot.create_thing(thingName=thing)
    certificate = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=thing, principal=certificate["certificateArn"])
    registry.enroll("SN-0001", status="provisioned", certificateId=certificate["certificateId"], thingName=thing)
    stack = DeployedStack(Path("cdktf.out/stacks/unit"), {"device_registry_table_name": TABLE})
    monkeypatch.setattr(
        DeployedStack, "client", lambda _, service, **__: boto3.client(service, region_name="us-east-1")
    )
    monkeypatch.setattr(devices_module.time, "sleep", lambda _: None)
    devices = devices_module.Devices(stack)
    attempts: list[str] = []

    def refused(*_: Any, **__: Any) -> bool:
        attempts.append("move")
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "Item size has exceeded"}}, "UpdateItem")

    with monkeypatch.context() as failing:
        failing.setattr(devices.registry, "move", refused)
        with pytest.raises(devices_module.Unrecorded) as unrecorded:
            devices.revoke("SN-0001", "reported stolen")

    assert str(unrecorded.value).startswith(f"SN-0001: certificates revoked: {certificate['certificateId']}; ")
    assert "run the same command again to record it" in str(unrecorded.value)
    assert len(attempts) == devices_module.REGISTRY_ATTEMPTS
    described = iot.describe_certificate(certificateId=certificate["certificateId"])["certificateDescription"]
    assert described["status"] == "REVOKED"
    assert registry.get("SN-0001")["status"] == "provisioned"  # type: ignore[index]

    again = devices.revoke("SN-0001", "reported stolen")

    assert (again["alreadyRevoked"], again["certificatesRevoked"]) == (False, [])
    assert registry.get("SN-0001")["status"] == "revoked"  # type: ignore[index]
