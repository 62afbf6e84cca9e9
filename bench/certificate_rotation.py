#!/usr/bin/env python
"""Benchmark: `fleet expiring --rotate` on a fleet of simulated devices, in a sandbox of its own.

Deploys the stack, provisions --devices devices (scripts/simulate_fleet.py, CSR flow), asks them all to
rotate (`fleet expiring --days 3650 --rotate`: one shadow update each), then runs each device's
`rotate --if-requested` (scripts/test_provisioning.py: connect with the current certificate, read the
shadow, request, connect with the new certificate, confirm, report) at --concurrency devices at once.
Prints devices/s, latency percentiles and errors, and checks afterwards that every rotated device's
registry item names its new certificate and that the old certificates are revoked.

Usage: .venv/bin/python bench/certificate_rotation.py [--devices 1000] [--concurrency 10] [--rotation-concurrency N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import boto3

from bench.claim_rotation import Bench
from bench.fleet_quotas import load
from scripts import device_client as device

ROOT = Path(__file__).resolve().parents[1]


_TARGET: device.Target | None = None


def _init_worker(target: device.Target) -> None:
    global _TARGET
    _TARGET = target
    device.trust_only(target.ca_file)


def rotate_one(thing: str, cert: str, key: str, folder: str) -> tuple[str, float, str, dict[str, float]]:
    """(outcome, seconds, detail, seconds by step) for one device, in a worker process."""
    assert _TARGET is not None
    options = argparse.Namespace(
        thing_name=thing,
        cert=cert,
        key=key,
        key_type="ec",
        if_requested=True,
        no_confirm=False,
        output_dir=folder,
        timeout=30.0,
    )
    started = time.monotonic()
    try:
        result = device.rotate(options, _TARGET)
    except device.Failure as failure:
        return f"exit {failure.code}", time.monotonic() - started, str(failure), {}
    outcome = "rotated" if result.get("rotated") else "not asked"
    return outcome, time.monotonic() - started, "", result.get("steps", {})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--rotation-concurrency",
        help="the stack's RotationConcurrency (executions reserved for the rotation function; default: the stack's)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cert-rotation-") as folder:
        bench = Bench(Path(folder))
        if args.rotation_concurrency:
            bench.env["RotationConcurrency"] = args.rotation_concurrency
        try:
            deploy = bench.up_and_deploy()
            print(f"deploy: {deploy:.0f} s (RotationConcurrency {args.rotation_concurrency or 'default'})", flush=True)
            seconds, simulated = bench.run(
                sys.executable,
                "scripts/simulate_fleet.py",
                "--devices",
                str(args.devices),
                "--concurrency",
                str(args.concurrency),
                "--register-only",
                "--json",
                "--stack-dir",
                str(bench.stack),
                "--output-dir",
                str(Path(folder) / "devices"),
                check=False,  # a device refused here is reported; the others are rotated
            )
            fleet = json.loads(simulated.stdout.splitlines()[-1])
            print(
                f"provisioned {fleet['provisioned']}/{args.devices} in {seconds:.0f} s "
                f"({fleet['devices_per_s']} devices/s; refused {fleet['rejections']})",
                flush=True,
            )
            seconds, listed = bench.run(
                sys.executable,
                "scripts/fleet.py",
                "--stack-dir",
                str(bench.stack),
                "expiring",
                "--days",
                "3650",
                "--rotate",
                "--json",
                check=False,
            )
            asked = json.loads(listed.stdout)
            rotation = asked["rotation"]
            print(
                f"fleet expiring --days 3650 --rotate: {len(rotation['requested'])} devices asked, "
                f"{len(rotation['errors'])} errors, {seconds:.1f} s (shadow updates {rotation['seconds']} s)",
                flush=True,
            )
            state = json.loads((Path(folder) / "sandbox" / "state.json").read_text())
            target = device.Target("127.0.0.1", state["mqtt_port"], state["ca_file"], "", "", "", iot_core_limits=False)
            credentials = Path(fleet["credentials"])
            files = sorted(p for p in credentials.glob("*.pem.crt") if not p.name.endswith(".new.pem.crt"))
            devices = [
                (p.name.removesuffix(".pem.crt"), str(p), str(p).removesuffix(".pem.crt") + ".private.key")
                for p in files
            ]
            outcomes: Counter[str] = Counter()
            latencies: list[float] = []
            by_step: dict[str, list[float]] = {}
            details: list[str] = []
            work = str(Path(folder) / "rotation")
            with ProcessPoolExecutor(args.concurrency, initializer=_init_worker, initargs=(target,)) as pool:
                started, load_before = time.monotonic(), load()
                futures = [pool.submit(rotate_one, thing, cert, key, work) for thing, cert, key in devices]
                for future in as_completed(futures):
                    outcome, took, detail, steps = future.result()
                    outcomes[outcome] += 1
                    latencies.append(took)
                    for step, seconds in steps.items():
                        by_step.setdefault(step, []).append(seconds)
                    if detail and len(details) < 5:
                        details.append(detail)
                elapsed = time.monotonic() - started
            rotated = outcomes.pop("rotated", 0)
            print(
                f"rotated {rotated}/{len(devices)} at concurrency {args.concurrency} in {elapsed:.1f} s: "
                f"{len(devices) / elapsed:.1f} devices/s, p50 {statistics.median(latencies):.3f} s, "
                f"p95 {percentile(latencies, 0.95):.3f} s, max {max(latencies):.3f} s; errors {dict(outcomes)}; "
                f"load average {load_before} -> {load()}"
            )
            for detail in details:
                print(f"  e.g. {detail}")
            print("  where a rotation's time goes, by step (p50 / p95 / max s):")
            for step, values in by_step.items():
                print(
                    f"    {step:<12} {statistics.median(values):.3f} / {percentile(values, 0.95):.3f} / "
                    f"{max(values):.3f}  ({len(values)} devices)"
                )
            aws = {
                "endpoint_url": bench.env["SandboxEndpoint"],
                "region_name": "us-east-1",
                "aws_access_key_id": "sandbox",
                "aws_secret_access_key": "sandbox",
            }
            iot, dynamodb = boto3.client("iot", **aws), boto3.client("dynamodb", **aws)
            statuses = Counter(
                c["status"] for page in iot.get_paginator("list_certificates").paginate() for c in page["certificates"]
            )
            confirmed = 0
            for page in dynamodb.get_paginator("scan").paginate(
                TableName=bench.outputs()["device_registry_table_name"]
            ):
                for item in page["Items"]:
                    events = [
                        (e["M"]["event"]["S"], e["M"]["certificateId"]["S"])
                        for e in item.get("certificateHistory", {}).get("L", [])
                    ]
                    confirmed += ("confirmed", item.get("certificateId", {}).get("S")) in events
            print(
                f"afterwards: {confirmed} registry items name their confirmed new certificate; "
                f"certificates by status {dict(statuses)}"
            )
            return 0 if rotated == len(devices) else 1
        finally:
            bench.run(sys.executable, "-m", "sandbox", "down", check=False)


if __name__ == "__main__":
    sys.exit(main())
