#!/usr/bin/env python
"""The demo `make demo` runs after deploying into the sandbox: enroll a sample manifest, provision
devices of every type with the real device SDK, show devices that must be refused being refused,
then print the registry and the thing groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.__main__ import environment  # noqa: E402


def outputs(stack_dir: Path) -> dict[str, Any]:
    result = subprocess.run(["terraform", "output", "-json"], cwd=stack_dir, capture_output=True, text=True,
                            check=True, timeout=120)  # fmt: skip
    return {k: v["value"] for k, v in json.loads(result.stdout).items()}


def provision(serial: str, device_type: str, *extra: str) -> tuple[int, str]:
    command = [sys.executable, str(ROOT / "scripts/test_provisioning.py"), "--json", "--serial-number", serial,
               "--device-type", device_type, "--manufacturer", "AcmeIoT", "--firmware-version", "v1.0.0",
               "--output-dir", str(ROOT / "devices" / "demo"), *extra]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    answer = json.loads(lines[-1]) if lines else {"error": result.stderr.strip()[-200:]}
    return result.returncode, answer.get("thingName") or answer.get("error", "")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def main() -> int:
    if "AWS_ENDPOINT_URL" not in os.environ:  # the sandbox: its endpoint and its administrator key, together
        os.environ.update(environment())
    stack_dir = next(iter(sorted((ROOT / "cdktf.out" / "stacks").glob("*"))))
    out = outputs(stack_dir)
    types = out["allowed_device_types"].split(",")
    registry = boto3.resource("dynamodb").Table(out["device_registry_table_name"])
    manifest = [(f"DEMO-{t[:4].upper()}-{n:02d}", t) for t in types for n in (1, 2)]
    with registry.batch_writer() as batch:
        for serial, device_type in manifest:
            batch.put_item(Item={"serialNumber": serial, "deviceType": device_type, "status": "enrolled",
                                 "manufacturer": "AcmeIoT"})  # fmt: skip
        batch.put_item(Item={"serialNumber": "DEMO-REVOKED-01", "deviceType": types[0], "status": "revoked",
                             "manufacturer": "AcmeIoT"})  # fmt: skip
    print(f"enrolled {len(manifest)} devices ({', '.join(types)}) and 1 revoked device\n")

    rows = []
    for serial, device_type in manifest:
        code, detail = provision(serial, device_type, *(["--csr"] if serial.endswith("02") else []))
        rows.append([serial, device_type, "csr" if serial.endswith("02") else "keys",
                     "provisioned" if code == 0 else f"FAILED ({code})", detail])  # fmt: skip
    refusals = [
        ("unknown serial", "DEMO-UNKNOWN-99", types[0]),
        ("revoked device", "DEMO-REVOKED-01", types[0]),
        ("type not matching enrollment", manifest[0][0].replace("01", "02"), types[-1]),
        ("replay of a provisioned serial", manifest[0][0], manifest[0][1]),
    ]
    for case, serial, device_type in refusals:
        code, detail = provision(serial, device_type, "--skip-device-check")
        rows.append([serial, device_type, case, "refused" if code == 5 else f"NOT REFUSED ({code})", detail[:70]])
    print(table(rows, ["serial", "type", "flow / case", "result", "thing / reason"]))

    items = sorted(registry.scan()["Items"], key=lambda i: i["serialNumber"])
    print("\nDevice registry (" + out["device_registry_table_name"] + ")")
    print(table([[i["serialNumber"], i["deviceType"], i["status"], i.get("thingName", ""),
                  str(i.get("certificateId", ""))[:16]] for i in items],
                ["serialNumber", "deviceType", "status", "thingName", "certificateId"]))  # fmt: skip
    iot = boto3.client("iot")
    groups = []
    for group in out["thing_group_names"].values():
        members = sorted(iot.list_things_in_thing_group(thingGroupName=group)["things"])
        shown = ", ".join(members[:4]) + (f", … ({len(members) - 4} more)" if len(members) > 4 else "")
        groups.append([out["thing_group_root_name"] + " / " + group, str(len(members)), shown])
    print("\nThing groups")
    print(table(groups, ["group", "things", "members"]))
    failures = [r for r in rows if r[3].startswith(("FAILED", "NOT"))]
    provisioned = len([r for r in rows if r[3] == "provisioned"])
    refused = len([r for r in rows if r[3] == "refused"])
    print(f"\n{provisioned} provisioned, {refused} refused as they should be, {len(failures)} unexpected.")
    print(
        "Credentials are in devices/demo/. Clean up: `make sandbox-down` (drops everything the sandbox held);"
        " against AWS, decommission the devices, then `make destroy`."
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
