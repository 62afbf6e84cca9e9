"""Faults, driven for real in the sandbox with the fault switch an operator uses (python -m sandbox
fault): what devices are told, what the registry holds afterwards, and how long it all takes."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scripts import test_provisioning as device
from tests.conftest import SUMMARY
from tests.integration.conftest import Deployment
from tests.integration.test_device_provisioning import Fleet

pytestmark = pytest.mark.integration
HOOK_TIMEOUT_MS = 4000  # the stack's hook timeout (constructs/iot_fleet/stack.py)


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("fault-devices"))


def fault(fleet: Fleet, *arguments: str) -> None:
    result = fleet.deployment.run(sys.executable, "-m", "sandbox", "fault", *arguments, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def hook_decisions(fleet: Fleet, serial: str) -> list[dict[str, Any]]:
    logs = fleet.deployment.client("logs")
    group = f"/aws/lambda/{fleet.outputs['provisioning_hook_function_name']}"
    events = [
        e for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group) for e in page["events"]
    ]
    records = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
    return [r for r in records if r.get("serialNumber") == serial and "decision" in r]


@pytest.mark.parametrize(
    ("mode", "detail"),
    [("unavailable", "ServiceUnavailable"), ("slow=6", "(Read timeout|did not answer within)")],  # its own client's
)  # fmt: skip
def test_a_registry_that_fails_or_is_too_slow_denies_every_device_in_time_and_writes_nothing(
    fleet: Fleet, mode: str, detail: str
) -> None:
    serials = [f"SN-FAULT-{mode.split('=')[0].upper()}-{n}" for n in range(3)]
    for serial in serials:
        fleet.enroll(serial, "gateway")
    before = {serial: fleet.registry(serial) for serial in serials}
    started = time.monotonic()
    fault(fleet, "registry", mode, "--table", fleet.table, "--operations", "UpdateItem")
    try:
        for serial in serials:
            with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
                fleet.provision(serial, "gateway", skip_device_check=True)
    finally:
        fault(fleet, "clear")
    elapsed = time.monotonic() - started

    for serial in serials:
        (decision,) = hook_decisions(fleet, serial)
        assert (decision["decision"], decision["reason"]) == ("deny", "REGISTRY_ERROR")
        assert re.search(detail, decision["detail"]), decision["detail"]
        assert decision["durationMs"] < HOOK_TIMEOUT_MS  # answered, not timed out
        assert decision["ProvisioningErrors"] == 1  # the metric the hook-denied-on-errors alarm watches
    if mode == "unavailable":
        assert {serial: fleet.registry(serial) for serial in serials} == before  # nothing written
    else:  # a slow write can still land after the hook gave up: the serial is then claimed but recoverable
        assert all(fleet.registry(serial)["status"] in ("enrolled", "provisioning") for serial in serials)
    errors = fleet.deployment.client("lambda").get_function(
        FunctionName=fleet.outputs["provisioning_hook_function_name"]
    )
    assert errors["Configuration"]["Timeout"] * 1000 == HOOK_TIMEOUT_MS
    SUMMARY.append(f"fault test, registry {mode}: 3 devices denied REGISTRY_ERROR in {elapsed:.1f} s")
