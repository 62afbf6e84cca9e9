#!/usr/bin/env python
"""Benchmark: a whole claim certificate rotation, as an operator runs it, in a sandbox of its own.

Deploys the stack (one claim generation), provisions a device with it, runs `fleet rotate-claim
--apply` (generation 2 added: a deploy), provisions with either generation during the overlap, runs
it again (generation 1 retired: a deploy), checks that generation 1 is refused and a connection made
with it was closed, that a plan shows no drift, then `make destroy`. Prints what each step did
(Terraform's added/changed/destroyed) and how long it took. make test runs the second half
(tests/integration/test_sandbox_deploy.py, deployed already in the overlap); this is the long version.

Usage: .venv/bin/python bench/claim_rotation.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts import device_client as device

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Bench:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.out = folder / "cdktf.out"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "ClaimCertificateGenerations"
        }
        self.env.update(
            {
                "SandboxEndpoint": f"http://127.0.0.1:{free_port()}",
                "SandboxMqttPort": str(free_port()),
                "IOT_SANDBOX_DIR": str(folder / "sandbox"),
                "Target": "sandbox",
                "TF_CLI_CONFIG_FILE": str(ROOT / ".terraformrc.generated"),
            }
        )
        self.context = folder / "cdktf.json"
        self.context.write_text((ROOT / "cdktf.json").read_text())

    def run(
        self, *command: str, cwd: Path = ROOT, check: bool = True
    ) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        result = subprocess.run(
            list(command), cwd=cwd, env=self.env, capture_output=True, text=True, check=False, timeout=1800
        )
        if check and result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
        return time.monotonic() - started, result

    def deploy(self) -> float:
        """`cdktf deploy` of the stack into this bench's sandbox; its seconds."""
        seconds, _ = self.run(
            "npx",
            "--no-install",
            "cdktf",
            "deploy",
            "--auto-approve",
            "--skip-provider-lock",
            "--output",
            str(self.out),
        )
        return seconds

    def up_and_deploy(self) -> float:
        """Starts this bench's sandbox and deploys the stack into it; the deploy's seconds."""
        self.run(sys.executable, "-m", "sandbox", "up")
        return self.deploy()

    @property
    def stack(self) -> Path:
        return next((self.out / "stacks").iterdir())

    def outputs(self) -> dict[str, Any]:
        listed = self.run("terraform", "output", "-json", cwd=self.stack)[1].stdout
        return {k: v["value"] for k, v in json.loads(listed).items()}

    def fleet(self, *args: str) -> tuple[float, dict[str, Any]]:
        seconds, result = self.run(sys.executable, "scripts/fleet.py", "--stack-dir", str(self.stack), *args, "--json")
        return seconds, json.loads(result.stdout)

    def claim(self, generation: int) -> tuple[str, str]:
        outputs, named = self.outputs(), self.folder / f"claim-{generation}"
        return (
            device._write_private(named.with_suffix(".pem"), outputs["claim_certificate_pem"]),
            device._write_private(named.with_suffix(".key"), outputs["claim_private_key"]),
        )

    def provision(self, serial: str, device_type: str, claim: tuple[str, str]) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "scripts/test_provisioning.py",
                "--json",
                "--serial-number",
                serial,
                "--device-type",
                device_type,
                "--manufacturer",
                "BenchCorp",
                "--claim-cert",
                claim[0],
                "--claim-key",
                claim[1],
                "--stack-dir",
                str(self.stack),
                "--output-dir",
                str(self.folder / "devices"),
                "--skip-device-check",
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        return "provisioned" if result.returncode == 0 else f"refused (exit {result.returncode})"


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as folder:
        bench = Bench(Path(folder))
        try:
            deploy = bench.up_and_deploy()
            print(f"deploy, generation 1: {deploy:.0f} s", flush=True)
            manifest = Path(folder) / "fleet.csv"
            manifest.write_text(
                "serialNumber,deviceType,manufacturer\n" + "".join(f"ROT-{n},gateway,BenchCorp\n" for n in range(1, 5))
            )
            bench.fleet("enroll", str(manifest))
            first = bench.claim(1)
            print(f"  generation 1 only: ROT-1 {bench.provision('ROT-1', 'gateway', first)}", flush=True)
            rotate = ("rotate-claim", "--apply", "--yes", "--context-file", str(bench.context))
            seconds, added = bench.fleet(*rotate)
            print(
                f"rotate-claim --apply (add generation 2): {seconds:.0f} s, in force {added['inForce']}, "
                f"terraform {added['terraform']}",
                flush=True,
            )
            second = bench.claim(2)
            print(
                f"  overlap: ROT-2 with generation 1 {bench.provision('ROT-2', 'gateway', first)}, "
                f"ROT-3 with generation 2 {bench.provision('ROT-3', 'gateway', second)}",
                flush=True,
            )
            mqtt = json.loads((Path(folder) / "sandbox" / "state.json").read_text())
            target = device.Target("127.0.0.1", mqtt["mqtt_port"], mqtt["ca_file"], "", *first)
            drops: list[Any] = []
            connection = device.connect(target, *first, "claim-bench-old", 15, on_disconnection=drops.append)
            try:
                seconds, retired = bench.fleet(*rotate)
                deadline = time.monotonic() + 10
                while not drops and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                connection.close()
            print(
                f"rotate-claim --apply (retire generation 1): {seconds:.0f} s, in force {retired['inForce']}, "
                f"terraform {retired['terraform']}; a connection with generation 1 "
                f"{'was closed' if drops else 'STAYED OPEN'}",
                flush=True,
            )
            print(
                f"  after: ROT-4 with generation 1 {bench.provision('ROT-4', 'gateway', first)}, "
                f"with generation 2 {bench.provision('ROT-4', 'gateway', second)}",
                flush=True,
            )
            seconds, plan = bench.run(
                "terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color", cwd=bench.stack, check=False
            )
            print(f"plan afterwards: {'no changes' if plan.returncode == 0 else 'DRIFT'} ({seconds:.0f} s)")
            seconds, destroyed = bench.run(
                "make", "-o", "setup", "--no-print-directory", "destroy", f"CDKTF_OUT={bench.out}"
            )
            said = [line for line in destroyed.stdout.splitlines() if line.startswith("decommissioned")]
            print(f"make destroy: {seconds:.0f} s ({said[0] if said else 'no decommission line'})")
        finally:
            bench.run(sys.executable, "-m", "sandbox", "down", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
