#!/usr/bin/env python
"""Benchmark: provisioning under AWS IoT Core's default fleet-provisioning quotas, and without them.

For each SandboxQuotas setting (default: none, then aws) it starts a sandbox of its own with that setting,
deploys the stack, provisions one unmeasured round of --concurrency devices (the Lambda workers warm),
lets the quota buckets refill, then provisions --devices devices at --concurrency with
scripts/simulate_fleet.py (CSR flow, EC keys, the full flow) and prints devices/s, p50/p95/max latency,
failed devices and the requests throttled (each asked again by the device with backoff), with the
machine's load average before and after. With quotas, RegisterThing's 10 requests a second per account
bounds the CSR flow (CreateCertificateFromCsr allows 20): the rate to compare is 10 devices/s.
It measures; it asserts nothing.
Usage: .venv/bin/python bench/fleet_quotas.py [--devices 1000] [--concurrency 50] [--settings none,aws]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.claim_rotation import Bench
from sandbox.iot_data_plane.quotas import AWS_DEFAULT_RATES

GOVERNING = "RegisterThing"  # the lowest rate a device of the CSR flow needs: the fleet's ceiling


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def simulate(bench: Bench, folder: Path, devices: int, concurrency: int) -> dict[str, Any]:
    _, result = bench.run(
        sys.executable,
        "scripts/simulate_fleet.py",
        "--devices",
        str(devices),
        "--concurrency",
        str(concurrency),
        "--flow",
        "csr",
        "--key-type",
        "ec",
        "--json",
        "--stack-dir",
        str(bench.stack),
        "--output-dir",
        str(folder / "devices"),
        check=False,  # a device that failed is in the summary
    )
    try:
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        sys.exit(f"simulate_fleet.py gave no summary:\n{(result.stdout + result.stderr)[-3000:]}")


def measure(setting: str, devices: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix=f"bench-quotas-{setting}-") as folder:
        bench = Bench(Path(folder))
        bench.env["SandboxQuotas"] = setting
        try:
            deploy = bench.up_and_deploy()
            print(f"SandboxQuotas={setting}: deployed in {deploy:.0f} s", flush=True)
            simulate(bench, Path(folder), concurrency, concurrency)  # warm-up, unmeasured
            time.sleep(2.0)  # every bucket full again: the measured run starts as a fresh account would
            before = load()
            summary = simulate(bench, Path(folder), devices, concurrency)
            after = load()
            failed = devices - summary["provisioned"]
            quota = f"{AWS_DEFAULT_RATES[GOVERNING]:g}/s" if setting == "aws" else "none"
            print(
                f"{setting:>5} {concurrency:>5} {devices:>8} {summary['provisioned']:>6} {failed:>7} "
                f"{summary['devices_per_s']:>7} {quota:>8} {summary['p50_s']:>7} {summary['p95_s']:>7} "
                f"{summary['max_s']:>7} {summary['throttled_attempts']:>10}   load {before} -> {after}",
                flush=True,
            )
            print(
                f"      throttled by step {summary['throttled_by_step']} of {summary['throttled_devices']} devices; "
                f"at most {summary['throttled_most']} times for one device's step; wall {summary['wall_s']} s",
                flush=True,
            )
            if failed:
                print(f"      failed: {summary['rejections']}; e.g. {summary['examples'][:2]}", flush=True)
            _, status = bench.run(sys.executable, "-m", "sandbox", "status", check=False)
            print("      " + "\n      ".join(line for line in status.stdout.splitlines() if "quotas" in line))
        finally:
            bench.run(sys.executable, "-m", "sandbox", "down", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--settings", default="none,aws", help="SandboxQuotas values, comma-separated")
    args = parser.parse_args()
    print(
        f"{'quota':>5} {'conc':>5} {'devices':>8} {'ok':>6} {'failed':>7} {'dev/s':>7} {'limit':>8} {'p50 s':>7} "
        f"{'p95 s':>7} {'max s':>7} {'throttled':>10}   load average (1/5/15 min) before -> after"
    )
    for setting in args.settings.split(","):
        measure(setting, args.devices, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
