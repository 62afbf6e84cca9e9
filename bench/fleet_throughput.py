#!/usr/bin/env python
"""Benchmark: provisioning throughput of the sandbox with scripts/simulate_fleet.py.

For each flow (CSR with an EC key the device keeps; CreateKeysAndCertificate, where the service
makes an RSA-2048 key as AWS does) and each concurrency, provisions --devices fresh devices (full
flow: claim connect, certificate, RegisterThing, reconnect as the thing, shadow read, telemetry)
and prints devices/s, p50/p95/max latency and errors (steady state: each row is preceded by an
unmeasured warm-up round, so Lambda cold starts are not in it), plus the CPU each part used
per device (the simulator's figure includes its start-up: reading the stack's outputs, enrolling
the fleet, starting its worker processes). Needs the stack deployed into a running sandbox
(`make deploy`). It measures; it asserts nothing.
Usage: .venv/bin/python bench/fleet_throughput.py [--devices 1000] [--concurrency 1,10,50] [--warm-up 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from sandbox.state import SandboxState

ROOT = Path(__file__).resolve().parents[1]


FLOWS = {
    "csr/ec": ["--flow", "csr", "--key-type", "ec"],
    "keys/rsa": ["--flow", "keys"],
    "csr/rsa": ["--flow", "csr", "--key-type", "rsa"],
}


def cpu_by_process(sandbox_pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each process of the sandbox: local AWS + service, broker, Lambda workers."""
    tick = os.sysconf("SC_CLK_TCK")
    processes: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if int(fields[2]) != sandbox_pid and pid != sandbox_pid:  # not in the sandbox's process group
            continue
        part = (
            "local AWS + service" if pid == sandbox_pid else "broker" if b"mosquitto" in command else "Lambda functions"
        )
        processes[pid] = (part, (int(fields[11]) + int(fields[12])) / tick)
    return processes


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by part between two snapshots (a Lambda worker that exited in between is not counted)."""
    parts: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        parts[part] = parts.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated (default 1,10,50)")
    parser.add_argument("--flows", default="csr/ec,keys/rsa", help=f"comma-separated of {', '.join(FLOWS)}")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=2,
        metavar="K",
        help="before each row, provision K x concurrency devices unmeasured, so the sandbox's "
        "Lambda workers are warm (steady state; default 2, 0 to measure cold starts)",
    )
    args = parser.parse_args()
    state = SandboxState.load()
    if state is None:
        sys.exit("the sandbox is not running: `make deploy` first")
    print(
        f"{'flow':>9} {'conc':>5} {'devices':>8} {'ok':>6} {'errors':>7} {'dev/s':>7} {'p50 s':>7} {'p95 s':>7}"
        f" {'max s':>7}   CPU ms per device"
    )
    for flow in args.flows.split(","):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            if args.warm_up:
                subprocess.run(
                    [
                        sys.executable,
                        "scripts/simulate_fleet.py",
                        "--devices",
                        str(args.warm_up * concurrency),
                        "--concurrency",
                        str(concurrency),
                        "--json",
                        *FLOWS[flow],
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            before, children_before = cpu_by_process(state.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
            result = subprocess.run(
                [
                    sys.executable,
                    "scripts/simulate_fleet.py",
                    "--devices",
                    str(args.devices),
                    "--concurrency",
                    str(concurrency),
                    "--json",
                    *FLOWS[flow],
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            after, children_after = cpu_by_process(state.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                summary = json.loads(result.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                print(f"{flow:>9} {concurrency:>5}  failed: {(result.stdout + result.stderr)[-800:]}")
                continue
            cpu = cpu_used(before, after)
            cpu["devices (simulator)"] = (children_after.ru_utime + children_after.ru_stime) - (
                children_before.ru_utime + children_before.ru_stime
            )
            per_device = ", ".join(f"{p} {1000 * s / args.devices:.0f}" for p, s in sorted(cpu.items()))
            errors = args.devices - summary["provisioned"]
            print(
                f"{flow:>9} {concurrency:>5} {args.devices:>8} {summary['provisioned']:>6} {errors:>7} "
                f"{summary['devices_per_s']:>7} {summary['p50_s']:>7} {summary['p95_s']:>7} {summary['max_s']:>7}"
                f"   {per_device}",
                flush=True,
            )
            if errors:
                print(f"           rejections: {summary['rejections']}; e.g. {summary['examples'][:2]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
