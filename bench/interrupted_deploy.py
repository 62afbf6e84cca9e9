#!/usr/bin/env python
"""Benchmark: `make deploy` and `make destroy` interrupted at many points, and what the next one does.

For each point and signal, in a sandbox of its own started afresh (nothing deployed, no state):
- deploy: `make deploy`, interrupted once Terraform's state records N resources: SIGINT to its process
  group (Ctrl-C in a terminal) or SIGKILL to the Terraform process alone; then `make deploy` again
  (its exit status, what it adopted) and `terraform plan -detailed-exitcode` (0: no changes). Also
  counts the unnamed objects (KMS keys, claim certificates) the sandbox holds beyond the state's.
- destroy: `make deploy`, then `make destroy` interrupted once the state is down to N resources, then
  `make destroy` again, and what of the stack the sandbox still holds (nothing, when it converged).

Usage: .venv/bin/python bench/interrupted_deploy.py [--points 10] [--signals INT,KILL] [--only deploy|destroy]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900
STACK_RESOURCES = 63  # what a full deploy records (tests/integration/test_sandbox_deploy.py counts them)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sandbox:
    folder: Path

    def __post_init__(self) -> None:
        self.out = self.folder / "cdktf.out"
        endpoint = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            {
                "SandboxEndpoint": endpoint,
                "SandboxMqttPort": str(free_port()),
                "Target": "sandbox",
                "IOT_SANDBOX_DIR": str(self.folder / "sandbox"),
                "TF_CLI_CONFIG_FILE": str(ROOT / ".terraformrc.generated"),
            }
        )
        self.endpoint = endpoint

    def run(self, *command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        """Runs a command in a process group of its own, which goes whole if the bench is stopped (a
        Terraform and its provider would otherwise outlive it)."""
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def make(self, verb: str) -> list[str]:
        return ["make", "-o", "setup", "--no-print-directory", verb, f"CDKTF_OUT={self.out}"]

    def restart(self) -> None:
        """A sandbox holding nothing, and no state (stopping it forgets both)."""
        self.run(sys.executable, "-m", "sandbox", "down")
        up = self.run(sys.executable, "-m", "sandbox", "up")
        if up.returncode != 0:
            sys.exit(f"sandbox up failed: {up.stdout}{up.stderr}")

    def recorded(self) -> int | None:
        """Managed resources in the state file (None while it is absent or being written)."""
        for path in (self.folder / "sandbox").glob("terraform.*.tfstate"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return sum(1 for r in state.get("resources", []) if r.get("mode") == "managed")
        return None

    def state_addresses(self) -> set[str]:
        stack = next((self.out / "stacks").iterdir())
        listed = self.run("terraform", "state", "list", cwd=stack)
        return set(listed.stdout.split())

    def client(self, service: str) -> Any:
        credentials = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}  # the sandbox's fake key
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", **credentials)

    def inventory(self) -> dict[str, int]:
        """How many objects of the stack's kinds the sandbox holds (moto's own defaults left out)."""
        iot, kms = self.client("iot"), self.client("kms")
        keys = 0
        for key in kms.list_keys()["Keys"]:
            metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])}
            keys += tags.get("ManagedBy") == "cdktf" and metadata["KeyState"] != "PendingDeletion"
        counts = {
            "tables": len(self.client("dynamodb").list_tables()["TableNames"]),
            "functions": len(self.client("lambda").list_functions()["Functions"]),
            "roles": sum(r["RoleName"].startswith("IoTProvisioning") for r in self.client("iam").list_roles()["Roles"]),
            "log groups": len(self.client("logs").describe_log_groups()["logGroups"]),
            "topics": len(self.client("sns").list_topics()["Topics"]),
            "alarms": len(self.client("cloudwatch").describe_alarms()["MetricAlarms"]),
            "dashboards": len(self.client("cloudwatch").list_dashboards()["DashboardEntries"]),
            "event rules": len(self.client("events").list_rules()["Rules"]),
            "kms keys": keys,
            "kms aliases": sum(a["AliasName"].startswith("alias/iot") for a in kms.list_aliases()["Aliases"]),
            "thing types": len(iot.list_thing_types()["thingTypes"]),
            "thing groups": len(iot.list_thing_groups()["thingGroups"]),
            "policies": len(iot.list_policies()["policies"]),
            "certificates": len(iot.list_certificates()["certificates"]),
            "topic rules": len(iot.list_topic_rules()["rules"]),
            "templates": len(iot.list_provisioning_templates()["templates"]),
        }
        return {kind: n for kind, n in counts.items() if n}


def terraform_pid(group: int) -> int | None:
    """The `terraform apply`/`destroy` process in this process group (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            pgrp = int(fields[1].split()[2])
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == group and name == "terraform" and len(command) > 1 and command[1] in (b"apply", b"destroy"):
            return int(stat.parent.name)
    return None


def interrupted(sandbox: Sandbox, verb: str, reached: Any, signum: int) -> tuple[int, int | None, str]:
    """Runs `make <verb>` and interrupts it once `reached(resources recorded)`; returns its exit status,
    the resources recorded when the signal went (Terraform may be past the point by then: it deletes
    faster than this looks), and its output."""
    log = sandbox.folder / f"{verb}-interrupted.log"
    with log.open("w") as written:
        process = subprocess.Popen(
            sandbox.make(verb),
            cwd=ROOT,
            env=sandbox.env,
            stdout=written,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    at, pid = None, None
    try:
        deadline = time.monotonic() + TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if pid is None or not Path(f"/proc/{pid}").exists():
                pid = terraform_pid(process.pid)
            count = sandbox.recorded()
            if count is not None and pid and reached(count):
                at = count
                if signum == signal.SIGINT:
                    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
                else:
                    os.kill(pid, signal.SIGKILL)  # Terraform alone, mid-call
                break
            time.sleep(0.005)
        process.wait(timeout=TIMEOUT)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the group we started (a provider)
        except ProcessLookupError:
            pass
        process.wait()
    return process.returncode, at, log.read_text()


def adopted(output: str) -> list[str]:
    return [line.split("adopted: ", 1)[1].split(" (id")[0] for line in output.splitlines() if "  adopted: " in line]


def deploy_run(sandbox: Sandbox, point: int, signum: int) -> dict[str, Any]:
    sandbox.restart()
    rc, at, said = interrupted(sandbox, "deploy", lambda n: n >= point, signum)
    started = time.monotonic()
    again = sandbox.run(*sandbox.make("deploy"))
    seconds = time.monotonic() - started
    plan = sandbox.run(
        "terraform",
        "plan",
        "-detailed-exitcode",
        "-input=false",
        "-no-color",
        cwd=next((sandbox.out / "stacks").iterdir()),
    )
    state = sandbox.state_addresses()
    held = sandbox.inventory()
    extra = {
        kind: held.get(kind, 0) - sum(a.startswith(prefix) for a in state)
        for kind, prefix in (("kms keys", "aws_kms_key."), ("certificates", "aws_iot_certificate."))
    }
    return {
        "interrupted": rc,
        "recorded at signal": at,
        "again": again.returncode,
        "again s": round(seconds),
        "adopted": adopted(again.stdout),
        "plan": plan.returncode,
        "unrecorded unnamed": {k: n for k, n in extra.items() if n},
        "damaged state restored": "restored it from its backup" in again.stdout,
        "tail": (again.stdout + again.stderr)[-2500:],
        "interrupted tail": said[-600:],
    }


def destroy_run(sandbox: Sandbox, point: int, signum: int) -> dict[str, Any]:
    sandbox.restart()
    deployed = sandbox.run(*sandbox.make("deploy"))
    if deployed.returncode != 0:
        return {"error": "deploy failed", "tail": deployed.stdout[-2000:]}
    rc, at, said = interrupted(sandbox, "destroy", lambda n: n <= point, signum)
    started = time.monotonic()
    again = sandbox.run(*sandbox.make("destroy"))
    seconds = time.monotonic() - started
    return {
        "interrupted": rc,
        "recorded at signal": at,
        "again": again.returncode,
        "again s": round(seconds),
        "left in the sandbox": sandbox.inventory(),
        "recorded after": sandbox.recorded(),
        "damaged state restored": "restored it from its backup" in again.stdout,
        "tail": (again.stdout + again.stderr)[-2500:],
        "interrupted tail": said[-600:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10, help="interruption points spread over the apply")
    parser.add_argument("--signals", default="INT,KILL")
    parser.add_argument("--only", choices=["deploy", "destroy"])
    args = parser.parse_args()
    signals = [getattr(signal, f"SIG{name.strip()}") for name in args.signals.split(",")]
    # Resources recorded: a deploy interrupted once it records 1 to 57 of 63 (past that it ends before
    # a signal lands), a destroy once it is down to 62 to 1.
    n = max(2, args.points)
    points = {
        "deploy": [1 + round(i * 56 / (n - 1)) for i in range(n)],
        "destroy": [STACK_RESOURCES - 1 - round(i * (STACK_RESOURCES - 2) / (n - 1)) for i in range(n)],
    }
    failures = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the sandbox below is stopped
    with tempfile.TemporaryDirectory(prefix="bench-interrupted-") as folder:
        sandbox = Sandbox(Path(folder))
        try:
            for verb, runner in (("deploy", deploy_run), ("destroy", destroy_run)):
                if args.only and args.only != verb:
                    continue
                for point in points[verb]:
                    for signum in signals:
                        started = time.monotonic()
                        result = runner(sandbox, point, signum)
                        ok = result.get("again") == 0 and (
                            result.get("plan") == 0 if verb == "deploy" else not result.get("left in the sandbox")
                        )
                        failures += not ok
                        shown = {k: v for k, v in result.items() if v not in ("", {}, [], None) or k == "adopted"}
                        tails = {k: shown.pop(k) for k in ("tail", "interrupted tail") if k in shown}
                        shown["damaged state restored"] = result.get("damaged state restored") or None
                        shown = {k: v for k, v in shown.items() if v is not None}
                        print(
                            f"{verb} {signal.Signals(signum).name} at {point}: {'ok' if ok else 'FAILED'} "
                            f"({time.monotonic() - started:.0f} s) {json.dumps(shown)}",
                            flush=True,
                        )
                        for name, tail in tails.items() if not ok else ():
                            print(f"  {name}:\n{tail}", flush=True)
        finally:
            sandbox.run(sys.executable, "-m", "sandbox", "down")
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
