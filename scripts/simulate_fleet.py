#!/usr/bin/env python
"""Enroll and provision a fleet of simulated devices with the AWS IoT Device SDK v2.

Each device runs the full flow of scripts/test_provisioning.py (claim connect, certificate,
RegisterThing, reconnect as the thing, shadow, telemetry) in one of --concurrency worker processes.
Shows a progress bar, then a table: successes, rejections by code, latency p50/p95/max, devices/s, and
the requests AWS IoT throttled (each device asks again with backoff: scripts/device_client.py).
Against real AWS (the stack has an iot_data_endpoint output) it paces RegisterThing to --tps
(default 10, the documented account rate) and the registry is written with your credentials.
Each simulated device gets a factory key (EC P-256, in its run folder): its public key is enrolled
with the device and the device signs its RegisterThing with it (attestation; --no-attestation: none).

Example: scripts/simulate_fleet.py --devices 200 --concurrency 10 --flow csr --key-type ec
After an interruption, `--run <id> --devices 200` provisions the same serials again, skipping those
the registry holds as provisioned.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tqdm import tqdm

from scripts import device_client as device
from scripts.deployed_stack import DeployedStack
from scripts.fleet_ops import manifest
from scripts.fleet_ops.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


_TARGET: device.Target | None = None
_CLAIM_CONTEXT: Any = None  # the claim certificate, loaded once per worker process
_CLAIM_ERROR = ""  # why it could not be loaded: each device then reports it as a failed claim connection


def _init_worker(target: device.Target) -> None:
    global _TARGET, _CLAIM_CONTEXT, _CLAIM_ERROR
    _TARGET = target
    device.trust_only(target.ca_file)
    try:
        _CLAIM_CONTEXT = device.tls_context(target, target.claim_cert, target.claim_key)
    except Exception as error:  # noqa: BLE001 - reported per device, as a connection failure would be
        _CLAIM_ERROR = f"the claim certificate and key cannot be loaded: {error}"


def _ready(_: int) -> bool:
    time.sleep(0.05)  # holds this worker, so each of the pool's workers starts
    return _TARGET is not None


def provision_one(options: dict[str, Any]) -> tuple[str, float, str, dict[str, int]]:
    """(outcome, seconds, detail, throttled attempts by step) for one device, in a worker process."""
    assert _TARGET is not None
    started = time.monotonic()
    try:
        if _CLAIM_ERROR:
            raise device.Failure(device.CLAIM_CONNECT, _CLAIM_ERROR)
        result = device.provision(argparse.Namespace(**options), _TARGET, _CLAIM_CONTEXT)
        return "provisioned", time.monotonic() - started, "", result["throttledAttempts"]
    except device.Failure as failure:
        text = str(failure)
        code = next((part for part in text.split() if part.isupper() and len(part) > 3), f"exit {failure.code}")
        return code, time.monotonic() - started, text, failure.throttled


def throttling(per_device: list[dict[str, int]]) -> dict[str, Any]:
    """The fleet's throttled attempts: in all, by step, how many devices met throttling at all, and the most
    any one device met (against its retry budget, --throttle-attempts per step)."""
    steps: Counter[str] = Counter()
    for counts in per_device:
        steps.update(counts)
    return {
        "throttled_attempts": sum(steps.values()),
        "throttled_by_step": dict(sorted(steps.items())),
        "throttled_devices": sum(1 for counts in per_device if any(counts.values())),
        "throttled_most": max((max(counts.values(), default=0) for counts in per_device), default=0),
    }


def throttling_line(summary: dict[str, Any]) -> str:
    """The summary's line on throttling, for the table's reader ("" when nothing was throttled)."""
    if not summary["throttled_attempts"]:
        return ""
    steps = ", ".join(f"{step} {n}" for step, n in summary["throttled_by_step"].items())
    return (
        f"  throttled {summary['throttled_attempts']} requests ({steps}) from {summary['throttled_devices']} devices,"
        f" each asked again with backoff (at most {summary['throttled_most']} times for one step)"
    )


def factory_key(folder: Path, serial: str) -> tuple[str, str]:
    """One simulated device's factory key: (its PEM file, 0600; its public key as enrolled)."""
    path = folder / f"{serial}.factory.key"
    if path.exists():  # a rerun of the run (--run): the key its enrollment holds
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        device._write_private(path, pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(path), base64.b64encode(public).decode()


def enroll(
    stack: DeployedStack, devices: list[tuple[str, str]], manufacturer: str, keys: dict[str, str] | None = None
) -> set[str]:
    """Enrolls the simulated devices as `fleet enroll` enrolls a manifest (conditional writes, thing
    names reserved), each with its factory public key from `keys` (by serial) if given."""
    rows = [
        manifest.Device(
            line=i + 2,
            serial_number=serial,
            device_type=device_type,
            manufacturer=manufacturer,
            thing_name=manifest.derived_thing_name(device_type, serial),
            factory_public_key=(keys or {}).get(serial, ""),
        )
        for i, (serial, device_type) in enumerate(devices)
    ]
    registry = Registry(stack.client("dynamodb"), stack.table_name, enrolled_by="simulate_fleet")
    plan = registry.plan(rows)
    if plan.problems:
        raise SystemExit(f"simulate_fleet: cannot enroll the simulated fleet: {plan.problems[0]}")
    registry.enroll(plan.writes())
    items = registry.get_many([serial for serial, _ in devices])
    return {serial for serial, item in items.items() if item.get("status") == "provisioned"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100, help="how many devices (default 100)")
    parser.add_argument("--concurrency", type=int, default=10, help="devices in flight at once (default 10)")
    parser.add_argument("--flow", choices=["keys", "csr"], default="csr", help="certificate flow (default csr)")
    parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="device key for --flow csr")
    parser.add_argument("--device-types", help="comma-separated (default: the stack's allowed_device_types)")
    parser.add_argument("--manufacturer", default="SimCorp")
    parser.add_argument("--register-only", action="store_true", help="skip the reconnect/shadow/telemetry step")
    parser.add_argument("--tps", type=float, help="RegisterThing rate limit (default: 10 on AWS, none in the sandbox)")
    parser.add_argument("--stack-dir", type=Path, help="deployed stack folder (default: the one in cdktf.out)")
    parser.add_argument(
        "--output-dir",
        default="devices/simulated",
        help="credentials go to a folder per run in here, run-<id>/ (files 0600)",
    )
    parser.add_argument(
        "--no-attestation", action="store_true", help="no factory keys: enroll and provision without attestation"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a device waits for each step (default 30)")
    parser.add_argument(
        "--throttle-attempts",
        type=int,
        default=device.Backoff().attempts,
        help=f"requests a device makes per step while AWS IoT throttles it (default {device.Backoff().attempts})",
    )
    parser.add_argument(
        "--throttle-seconds",
        type=float,
        default=device.Backoff().budget,
        help=f"seconds a device keeps asking per step while throttled (default {device.Backoff().budget:g})",
    )
    parser.add_argument("--run", help="an earlier run's id: its serials again, skipping the provisioned ones")
    args = parser.parse_args(argv)

    stack = DeployedStack.load(args.stack_dir)
    tps = args.tps if args.tps is not None else (10.0 if stack.on_aws else 0.0)
    target = device.resolve_target(
        argparse.Namespace(
            claim_cert=None,
            claim_key=None,
            template_name=None,
            endpoint=None,
            port=None,
            ca=None,
            stack_dir=stack.directory,
            output_dir=args.output_dir,
        )
    )
    types = args.device_types.split(",") if args.device_types else list(stack.allowed_device_types)
    run = args.run or uuid.uuid4().hex[:6].upper()
    # One folder per run, so no folder collects every run's credentials (one had reached 80,000
    # files after a day of benchmarks) and a run's devices are easy to find or delete together.
    credentials = Path(args.output_dir) / f"run-{run}"
    fleet = [(f"SIM-{run}-{i:05d}", types[i % len(types)]) for i in range(args.devices)]
    if args.no_attestation and stack.require_attestation:
        raise SystemExit("simulate_fleet: the stack requires attestation (RequireAttestation): drop --no-attestation")
    keys = {} if args.no_attestation else {serial: factory_key(credentials, serial) for serial, _ in fleet}
    done = enroll(stack, fleet, args.manufacturer, {serial: public for serial, (_, public) in keys.items()})
    fleet = [(serial, device_type) for serial, device_type in fleet if serial not in done]

    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    details: list[str] = []
    failed: dict[str, str] = {}
    throttled: list[dict[str, int]] = []
    with ProcessPoolExecutor(max_workers=args.concurrency, initializer=_init_worker, initargs=(target,)) as pool:
        # Devices are powered up before the clock starts: what is measured is provisioning.
        list(pool.map(_ready, range(args.concurrency)))
        started = time.monotonic()
        futures: dict[Any, str] = {}
        for index, (serial, device_type) in enumerate(fleet):
            if tps:
                time.sleep(max(0.0, started + index / tps - time.monotonic()))
            futures[
                pool.submit(
                    provision_one,
                    {
                        "serial_number": serial,
                        "device_type": device_type,
                        "manufacturer": args.manufacturer,
                        "firmware_version": "v1.0.0",
                        "location": "",
                        "thing_name": "",
                        "csr": args.flow == "csr",
                        "key_type": args.key_type,
                        "output_dir": str(credentials),
                        "client_id": None,
                        "timeout": args.timeout,
                        "skip_device_check": args.register_only,
                        "sdk_metrics": False,
                        "factory_key": keys[serial][0] if serial in keys else None,
                        "throttle_attempts": args.throttle_attempts,
                        "throttle_seconds": args.throttle_seconds,
                    },
                )
            ] = serial
        for future in tqdm(as_completed(futures), total=len(futures), unit="device", disable=args.json):
            outcome, seconds, detail, counts = future.result()
            outcomes[outcome] += 1
            throttled.append(counts)
            if outcome != "provisioned":
                failed[futures[future]] = detail
            latencies.append(seconds)
            if detail and len(details) < 5:
                details.append(detail)
    elapsed = time.monotonic() - started
    summary = {
        "devices": args.devices,
        "concurrency": args.concurrency,
        "flow": args.flow if args.flow == "keys" else f"csr/{args.key_type}",
        "run": run,
        "skipped": len(done),  # provisioned by an earlier try of this run
        "provisioned": outcomes.pop("provisioned", 0),
        "rejections": dict(outcomes),
        "failed": failed,  # serial -> why, for each device that did not provision
        "p50_s": round(statistics.median(latencies), 3) if latencies else 0.0,
        "p95_s": round(percentile(latencies, 0.95), 3) if latencies else 0.0,
        "max_s": round(max(latencies), 3) if latencies else 0.0,
        "devices_per_s": round(len(fleet) / elapsed, 1) if elapsed else 0.0,
        "wall_s": round(elapsed, 1),
        **throttling(throttled),
        "credentials": str(credentials),
        "examples": details,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\n{'devices':>10} {'provisioned':>12} {'rejected':>9} {'p50':>8} {'p95':>8} {'max':>8} {'dev/s':>7}")
        print(
            f"{summary['devices']:>10} {summary['provisioned']:>12} {sum(outcomes.values()):>9} "
            f"{summary['p50_s']:>7.3f}s {summary['p95_s']:>7.3f}s {summary['max_s']:>7.3f}s "
            f"{summary['devices_per_s']:>7}"
        )
        for code, count in sorted(outcomes.items()):
            print(f"  rejected {count} x {code}")
        if line := throttling_line(summary):
            print(line)
        for detail in details:
            print(f"  e.g. {detail}")
        print(f"  credentials of the provisioned devices: {credentials}/ (0600)")
        if done:
            print(f"  skipped {len(done)} provisioned by an earlier try of run {run}")
        if failed:
            print(f"  to try the others again: --run {run} --devices {args.devices}")
    return 0 if summary["provisioned"] + len(done) == args.devices else 1


if __name__ == "__main__":
    sys.exit(main())
