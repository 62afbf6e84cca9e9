"""Faults, driven for real in the sandbox with the fault switch an operator uses (python -m sandbox
fault): what devices are told, what the registry holds afterwards, and how long it all takes."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import device_client as device
from tests.conftest import SUMMARY
from tests.integration.conftest import ROOT, Deployment
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
)
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


def broker_pid(deployment: Deployment) -> int:
    """The pid of this sandbox's mosquitto (the only process started with its config file)."""
    config = str(deployment.sandbox_dir / "broker" / "mosquitto.conf").encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and config in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:  # it ended while being looked at
            continue
    raise AssertionError(f"no mosquitto running with {config.decode()}")


def simulator(fleet: Fleet, run: str, output: Path) -> list[str]:
    return [
        sys.executable,
        "scripts/simulate_fleet.py",
        "--devices",
        str(RESTART_FLEET),
        "--concurrency",
        "4",
        "--register-only",
        "--timeout",
        "8",
        "--json",
        "--run",
        run,
        "--stack-dir",
        str(fleet.deployment.stack_dir),
        "--output-dir",
        str(output),
    ]


RESTART_FLEET = 24


def test_a_broker_restart_during_a_fleet_run_fails_devices_with_a_reason_and_a_rerun_finishes_the_rest(
    fleet: Fleet, tmp_path: Path
) -> None:
    """mosquitto killed while the simulator provisions: the sandbox restarts it, the devices in flight
    fail with their reason, and the same run again provisions the others; one thing, one certificate
    and one registry item per device."""
    run = f"RST{secrets.token_hex(2).upper()}"
    deployment = fleet.deployment
    process = subprocess.Popen(
        simulator(fleet, run, tmp_path),
        cwd=ROOT,
        env=deployment.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while sum(item["status"] == "provisioned" for item in run_items(fleet, run)) < 4:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=10)
            time.sleep(0.2)
        killed = broker_pid(deployment)
        os.kill(killed, signal.SIGKILL)
        started = time.monotonic()
        stdout, stderr = process.communicate(timeout=300)
        assert stdout.strip(), stderr[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    first = json.loads(stdout.splitlines()[-1])

    assert broker_pid(deployment) != killed  # restarted by the sandbox
    # Ready again once the fleet service has reconnected, within its reconnect backoff (5 s at most).
    deadline = time.monotonic() + 30
    while (status := deployment.sandbox("status")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status.returncode == 0, status.stdout + status.stderr
    assert first["failed"], first  # the devices in flight were cut off ...
    assert all(first["failed"].values()), first["failed"]  # ... and each says why
    assert first["provisioned"] + len(first["failed"]) == RESTART_FLEET

    reruns: list[dict[str, Any]] = []
    while len(reruns) < 2:  # as an operator would: rerun until done (a busy machine may fail one again)
        deadline = time.monotonic() + 60  # a device cut off after the hook's allow: the reconciler frees it
        while any(item["status"] == "provisioning" for item in run_items(fleet, run)) and time.monotonic() < deadline:
            time.sleep(1)
        again = deployment.run(*simulator(fleet, run, tmp_path), timeout=300)
        reruns.append(json.loads(again.stdout.splitlines()[-1]))
        if again.returncode == 0:
            break
    second = reruns[-1]
    recovered = time.monotonic() - started

    why = {
        serial: ([d["reason"] for d in hook_decisions(fleet, serial)], fleet.registry(serial).get("status"))
        for serial in second["failed"]
    }
    assert second["failed"] == {}, (why, [r["failed"] for r in reruns], first["failed"])
    assert second["skipped"] + second["provisioned"] == RESTART_FLEET
    items = run_items(fleet, run)
    assert len(items) == RESTART_FLEET and {item["status"] for item in items} == {"provisioned"}
    for item in items:
        things = fleet.iot.list_things(attributeName="serialNumber", attributeValue=item["serialNumber"])["things"]
        assert [t["thingName"] for t in things] == [item["thingName"]]
        assert len(fleet.iot.list_thing_principals(thingName=item["thingName"])["principals"]) == 1
    # Devices' messages reach their topic rules again: a provisioned device rotates its certificate (one
    # that has its files: one whose registration answer the kill lost is provisioned without them).
    credentials = tmp_path / f"run-{run}"
    thing = next(i["thingName"] for i in items if (credentials / f"{i['thingName']}.pem.crt").exists())
    files = credentials / f"{thing}.pem.crt", credentials / f"{thing}.private.key"
    assert fleet.rotate(thing, *map(str, files))["rotated"] is True
    SUMMARY.append(
        f"fault test, broker restart: {len(first['failed'])} of {RESTART_FLEET} devices cut off, all "
        f"{RESTART_FLEET} provisioned {recovered:.1f} s after the kill, {len(reruns)} rerun(s)"
    )


def run_items(fleet: Fleet, run: str) -> list[dict[str, str]]:
    items = fleet.dynamodb.scan(
        TableName=fleet.table,
        FilterExpression="begins_with(serialNumber, :run)",
        ExpressionAttributeValues={":run": {"S": f"SIM-{run}-"}},
    )["Items"]
    return [{k: v["S"] for k, v in item.items() if "S" in v} for item in items]
