#!/usr/bin/env python
"""The demo `make demo` runs after deploying into the sandbox (with RequireAttestation=true): enroll a
sample manifest with each device's factory public key (as `fleet enroll` does), provision devices of
every type with the real device SDK, each signing with its factory key, show devices that must be
refused being refused (and why, from the hook's decisions), then print the registry and the thing
groups."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scripts.deployed_stack import DeployedStack
from scripts.fleet_ops import decisions, manifest
from scripts.fleet_ops import registry as reg
from scripts.fleet_ops.devices import Devices

ROOT = Path(__file__).resolve().parents[1]


MANUFACTURER = "AcmeIoT"
CREDENTIALS = ROOT / "devices" / "demo"


def factory_key(name: str) -> tuple[str, str]:
    """A factory key as a device's secure element would hold it: (its PEM file, its public key to enroll)."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = CREDENTIALS / f"{name}.factory.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(path), base64.b64encode(public).decode()


def provision(serial: str, device_type: str, *extra: str) -> tuple[int, str]:
    command = [
        sys.executable,
        str(ROOT / "scripts/test_provisioning.py"),
        "--json",
        "--serial-number",
        serial,
        "--device-type",
        device_type,
        "--manufacturer",
        MANUFACTURER,
        "--firmware-version",
        "v1.0.0",
        "--output-dir",
        str(CREDENTIALS),
        *extra,
    ]
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


def enroll(registry: reg.Registry, stack: DeployedStack, rows: list[dict[str, str]]) -> list[reg.Enrollment]:
    """The demo's manifest through the same checks and writes as `fleet enroll`."""
    raw = [manifest.RawRow(line, values) for line, values in enumerate(rows, start=2)]
    devices, problems = manifest.validate(
        raw,
        stack.allowed_device_types,
        claim_client_id_prefix=stack.claim_client_id_prefix,
        require_factory_key=stack.require_attestation,
    )
    plan = registry.plan(devices)
    if problems or plan.problems:
        raise SystemExit(f"demo: the sample manifest is refused: {[str(p) for p in problems + plan.problems]}")
    return registry.enroll(plan.writes()) + [e for e in plan.enrollments if e not in plan.writes()]


def main() -> int:
    stack = DeployedStack.load()
    types = list(stack.allowed_device_types)
    devices = Devices(stack)
    registry = devices.registry
    registry.enrolled_by = "demo"
    fleet = [(f"DEMO-{t[:4].upper()}-{n:02d}", t) for t in types for n in (1, 2)]
    rows = [{"serialNumber": s, "deviceType": t, "manufacturer": MANUFACTURER} for s, t in fleet]
    # More, to be refused: one revoked before it was ever switched on, one that will claim another type, and
    # one whose serial someone with a copy of the claim certificate (but not the device's key) tries first.
    for serial in ("DEMO-REVOKED-01", "DEMO-MISMATCH-01", "DEMO-TAKEN-01"):
        rows.append({"serialNumber": serial, "deviceType": types[0], "manufacturer": MANUFACTURER})
    keys = {row["serialNumber"]: factory_key(row["serialNumber"]) for row in rows}
    for row in rows:
        row["factoryPublicKey"] = keys[row["serialNumber"]][1]
    impostor_key, _ = factory_key("impostor")  # a key of its own, enrolled for no device
    enrolled = enroll(registry, stack, rows)
    devices.revoke("DEMO-REVOKED-01", "demo: reported stolen from the warehouse")
    outcomes = ", ".join(
        f"{sum(e.outcome == o for e in enrolled)} {o}"
        for o in (reg.NEW, reg.UNCHANGED, reg.UNTOUCHED)
        if any(e.outcome == o for e in enrolled)
    )
    print(
        f"enrolled {len(rows)} devices ({', '.join(types)}) with their factory keys: {outcomes}; revoked "
        f"DEMO-REVOKED-01; attestation required: {'yes' if stack.require_attestation else 'no'}\n"
    )

    results = []
    for serial, device_type in fleet:
        csr = serial.endswith("02")
        code, detail = provision(serial, device_type, "--factory-key", keys[serial][0], *(["--csr"] if csr else []))
        results.append(
            [serial, device_type, "csr" if csr else "keys", "provisioned" if code == 0 else f"FAILED ({code})", detail]
        )
    refusals = [
        ("unknown serial", "DEMO-UNKNOWN-99", types[0], []),
        ("revoked device", "DEMO-REVOKED-01", types[0], ["--factory-key", keys["DEMO-REVOKED-01"][0]]),
        ("type not matching enrollment", "DEMO-MISMATCH-01", types[-1], ["--factory-key", keys["DEMO-MISMATCH-01"][0]]),
        ("replay of a provisioned serial", fleet[0][0], fleet[0][1], ["--factory-key", keys[fleet[0][0]][0]]),
        ("claim certificate, no device key", "DEMO-TAKEN-01", types[0], []),
        ("claim certificate, wrong key", "DEMO-TAKEN-01", types[0], ["--factory-key", impostor_key]),
    ]
    logs = stack.client("logs")
    hook_function = str(stack.output("provisioning_hook_function_name"))
    for case, serial, device_type, extra in refusals:
        code, _ = provision(serial, device_type, "--skip-device-check", *extra)
        # What `fleet why SERIAL` reads: the hook's own decision for the serial.
        last = decisions.decisions(logs, hook_function, serial, since_days=1, limit=1)
        reason = f"{last[-1].reason}: {last[-1].detail}" if last else "no decision logged"
        results.append([serial, device_type, case, "refused" if code == 5 else f"NOT REFUSED ({code})", reason])
    print(table(results, ["serial", "type", "flow / case", "result", "thing / why (fleet why SERIAL)"]))

    items = sorted(registry.devices(), key=lambda i: str(i["serialNumber"]))
    print(f"\nDevice registry ({stack.table_name}; fleet list)")
    print(
        table(
            [
                [
                    str(i["serialNumber"]),
                    str(i["deviceType"]),
                    str(i["status"]),
                    str(i.get("thingName", "")),
                    str(i.get("certificateId", ""))[:16],
                ]
                for i in items
            ],
            ["serialNumber", "deviceType", "status", "thingName", "certificateId"],
        )
    )
    iot = stack.client("iot")
    groups = []
    for group in dict(stack.output("thing_group_names")).values():
        members = sorted(iot.list_things_in_thing_group(thingGroupName=group)["things"])
        shown = ", ".join(members[:4]) + (f", … ({len(members) - 4} more)" if len(members) > 4 else "")
        groups.append([str(stack.output("thing_group_root_name")) + " / " + group, str(len(members)), shown])
    print("\nThing groups")
    print(table(groups, ["group", "things", "members"]))
    failures = [r for r in results if r[3].startswith(("FAILED", "NOT"))]
    provisioned = len([r for r in results if r[3] == "provisioned"])
    refused = len([r for r in results if r[3] == "refused"])
    print(f"\n{provisioned} provisioned, {refused} refused as they should be, {len(failures)} unexpected.")
    print(
        "Credentials are in devices/demo/. Explore: `.venv/bin/fleet --help` (show, why, revoke, "
        "expiring, ...).\nClean up: `make destroy` (decommissions the devices, then destroys the stack), then "
        "`make sandbox-down`."
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
