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
        stack = DeployedStack(Path(f"cdktf.out/stacks/iot-provisioning-{environment}"),
                              {"environment": environment, "device_registry_table_name": "t"})  # fmt: skip
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
