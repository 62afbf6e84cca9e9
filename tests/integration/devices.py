"""Devices against a deployed sandbox stack, as the tests drive them: the real device client in a
process of its own (scripts/test_provisioning.py), the registry and IoT as a test inspects them, and
the operator CLI (scripts/fleet.py) as an operator runs it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scripts import device_client as device
from tests.integration.conftest import ROOT, Deployment


class Fleet:
    def __init__(self, deployment: Deployment, folder: Path) -> None:
        self.deployment = deployment
        self.folder = folder
        outputs = json.loads(deployment.run("terraform", "output", "-json", cwd=deployment.stack_dir).stdout)
        self.outputs = {k: v["value"] for k, v in outputs.items()}
        state = deployment.state()
        self.target = device.Target(
            endpoint="127.0.0.1",
            port=state["mqtt_port"],
            ca_file=state["ca_file"],
            template_name=self.outputs["provisioning_template_name"],
            claim_cert=device._write_private(folder / "claim.pem.crt", self.outputs["claim_certificate_pem"]),
            claim_key=device._write_private(folder / "claim.key", self.outputs["claim_private_key"]),
        )
        self.iot = deployment.client("iot")
        self.table = self.outputs["device_registry_table_name"]
        self.dynamodb = deployment.client("dynamodb")

    def enroll(self, serial: str, device_type: str, status: str = "enrolled", factory_public_key: str = "") -> None:
        item = {"serialNumber": serial, "deviceType": device_type, "status": status, "manufacturer": "AcmeIoT"}
        if factory_public_key:
            item["factoryPublicKey"] = factory_public_key
        self.dynamodb.put_item(TableName=self.table, Item={k: {"S": v} for k, v in item.items()})

    def factory_key(self, name: str) -> tuple[str, str]:
        """A new factory key: (its PEM file for --factory-key, its public key as the registry holds it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return device._write_private(self.folder / f"{name}.factory.key", pem), base64.b64encode(public).decode()

    def registry(self, serial: str) -> dict[str, str]:
        item = self.dynamodb.get_item(TableName=self.table, Key={"serialNumber": {"S": serial}}).get("Item", {})
        return {k: v["S"] for k, v in item.items() if "S" in v}  # strings only (history: history())

    def history(self, serial: str) -> list[tuple[str, str]]:
        """The registry item's certificate history: (event, certificate id), oldest first."""
        item = self.dynamodb.get_item(TableName=self.table, Key={"serialNumber": {"S": serial}}).get("Item", {})
        events = item.get("certificateHistory", {}).get("L", [])
        return [(e["M"]["event"]["S"], e["M"]["certificateId"]["S"]) for e in events]

    def rotate(self, thing: str, cert: str, key: str, *flags: str) -> dict[str, Any]:
        """The device client's `rotate` command, in a process of its own, as a device runs it."""
        command = [
            sys.executable,
            "scripts/test_provisioning.py",
            "rotate",
            "--json",
            "--thing-name",
            thing,
            "--cert",
            cert,
            "--key",
            key,
            "--endpoint",
            self.target.endpoint,
            "--port",
            str(self.target.port),
            "--ca",
            self.target.ca_file,
            "--output-dir",
            str(self.folder),
            "--timeout",
            "20",
            *flags,
        ]
        result = self.deployment.run(*command, timeout=120)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        answer = json.loads(lines[-1]) if lines else {"error": result.stderr[-500:], "exitCode": result.returncode}
        if result.returncode != 0:
            raise device.Failure(result.returncode, answer.get("error", ""))
        return answer  # type: ignore[no-any-return]

    def args(self, serial: str, device_type: str, **extra: Any) -> Any:
        values = {
            "serial_number": serial,
            "device_type": device_type,
            "manufacturer": "AcmeIoT",
            "firmware_version": "v1.2.3",
            "location": "plant-1",
            "thing_name": "",
            "csr": False,
            "key_type": "ec",
            "output_dir": str(self.folder),
            "client_id": None,
            "timeout": 15.0,
            "skip_device_check": False,
            "system_trust": False,
            "factory_key": None,
            **extra,
        }
        return type("Args", (), values)()

    def provision(
        self, serial: str, device_type: str, *, claim: tuple[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Runs the device client as a device runs it: its own process (scripts/test_provisioning.py).
        `claim`: the claim certificate and key files it carries (default: the stack's at start)."""
        claim_cert, claim_key = claim or (self.target.claim_cert, self.target.claim_key)
        args = self.args(serial, device_type, **extra)
        command = [
            sys.executable,
            "scripts/test_provisioning.py",
            "--json",
            "--serial-number",
            serial,
            "--device-type",
            args.device_type,
            "--manufacturer",
            args.manufacturer,
            "--endpoint",
            self.target.endpoint,
            "--port",
            str(self.target.port),
            "--ca",
            self.target.ca_file,
            "--claim-cert",
            claim_cert,
            "--claim-key",
            claim_key,
            "--template-name",
            self.target.template_name,
            "--output-dir",
            args.output_dir,
            "--timeout",
            str(extra.get("timeout", 20)),
        ]
        for flag, value in (
            ("--firmware-version", args.firmware_version),
            ("--location", args.location),
            ("--client-id", args.client_id),
            ("--factory-key", args.factory_key),
            ("--thing-name", args.thing_name),
        ):
            if value:
                command += [flag, value]
        command += ["--csr"] if args.csr else []
        command += ["--skip-device-check"] if args.skip_device_check else []
        command += ["--system-trust"] if args.system_trust else []
        result = self.deployment.run(*command, timeout=120)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        answer = json.loads(lines[-1]) if lines else {"error": result.stderr[-500:], "exitCode": result.returncode}
        if result.returncode != 0:
            raise device.Failure(result.returncode, answer.get("error", ""))
        return answer  # type: ignore[no-any-return]

    def footprint(self, *serials: str) -> tuple[int, int, int, list[dict[str, Any]]]:
        """(things, ACTIVE certificates, registry items, the items of these serials). Only the named
        serials' items are compared whole: other tests' devices change by themselves meanwhile (the
        reconciler completes or fails their attempts), while a count catches any item written."""
        things = len(self.iot.list_things()["things"])
        active = len([c for c in self.iot.list_certificates()["certificates"] if c["status"] == "ACTIVE"])
        items = self.dynamodb.scan(TableName=self.table)["Items"]
        watched = sorted((i for i in items if i["serialNumber"]["S"] in serials), key=str)
        return things, active, len(items), watched

    def cli(self, *args: str, stdin: str = "") -> tuple[int, Any, str]:
        """scripts/fleet.py against this stack: (exit code, its JSON document or None, everything it wrote)."""
        process = subprocess.run(
            [sys.executable, "scripts/fleet.py", "--stack-dir", str(self.deployment.stack_dir), *args],
            cwd=ROOT,
            env=self.deployment.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        try:
            document = json.loads(process.stdout) if "--json" in args else None
        except ValueError:
            document = None
        return process.returncode, document, process.stdout + process.stderr
