#!/usr/bin/env python
"""Benchmark: `fleet enroll` of a large manifest into the sandbox, its idempotent re-run, and
`fleet list --status enrolled --type T` against a full scan of the same table.

Needs the stack deployed into a running sandbox (`make deploy`); adds --rows enrolled devices to its
registry (SandboxEndpoint etc. as for `make deploy`). For the list and the scan it reports the items
each read (ScannedCount: what DynamoDB bills, by size) and the time. The local AWS answers an index
query by walking its whole table, so there the time ratio proves little; the items read are what AWS
would read. It measures; it asserts nothing.

Usage: .venv/bin/python bench/fleet_enroll.py [--rows 100000] [--workers 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from scripts.deployed_stack import DeployedStack

ROOT = Path(__file__).resolve().parents[1]


def fleet(*args: str) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "scripts/fleet.py", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=7200,
    )
    elapsed = time.monotonic() - started
    try:
        return elapsed, json.loads(result.stdout)
    except ValueError:
        sys.exit(f"fleet.py {' '.join(args)} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")


def full_scan(stack: DeployedStack, status: str, device_type: str) -> tuple[float, int, int, float]:
    """(seconds, items read, items matching, capacity units) of a Scan filtered as the list is."""
    dynamodb = stack.client("dynamodb", read_timeout=300)
    request = {
        "TableName": stack.table_name,
        "FilterExpression": "#s = :s AND deviceType = :t",
        "ExpressionAttributeNames": {"#s": "status"},
        "ReturnConsumedCapacity": "TOTAL",
        "ExpressionAttributeValues": {":s": {"S": status}, ":t": {"S": device_type}},
    }
    started = time.monotonic()
    scanned = matched = 0
    units = 0.0
    while True:
        page = dynamodb.scan(**request)
        scanned += page["ScannedCount"]
        matched += page["Count"]
        units += page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)
        if "LastEvaluatedKey" not in page:
            return time.monotonic() - started, scanned, matched, units
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    stack = DeployedStack.load()
    if stack.on_aws:
        sys.exit("this benchmark writes --rows devices into the registry: run it against the sandbox")
    types = stack.allowed_device_types
    run = uuid.uuid4().hex[:6].upper()
    with tempfile.TemporaryDirectory(prefix="bench-enroll-") as folder:
        manifest = Path(folder) / "manifest.csv"
        lines = ["serialNumber,deviceType,manufacturer,firmwareVersion"]
        lines += [f"BENCH-{run}-{i:06d},{types[i % len(types)]},BenchCorp,v1.0.0" for i in range(args.rows)]
        manifest.write_text("\n".join(lines) + "\n")
        first, enrolled = fleet("enroll", str(manifest), "--workers", str(args.workers))
        print(
            f"enroll {args.rows:,} rows: {first:.1f} s wall, {enrolled['rowsPerSecond']:,} rows/s as the CLI "
            f"measured it (reads and writes), {enrolled['counts']}",
            flush=True,
        )
        again, repeated = fleet("enroll", str(manifest), "--workers", str(args.workers))
        print(f"enroll again (nothing to change): {again:.1f} s wall, {repeated['counts']}", flush=True)
    device_type = types[0]
    listed_seconds, listed = fleet("list", "--status", "enrolled", "--type", device_type)
    scan_seconds, scanned, matched, units = full_scan(stack, "enrolled", device_type)
    total = stack.client("dynamodb").describe_table(TableName=stack.table_name)["Table"]["ItemCount"]
    print(f"table: {total:,} items (devices and their thing-name reservations)")
    print(f"{'':<44}{'items read':>12}{'matching':>10}{'capacity':>10}{'seconds':>9}")
    print(
        f"{'list --status enrolled --type ' + device_type:<44}{listed['scannedCount']:>12,}{listed['count']:>10,}"
        f"{listed['consumedCapacity']:>10g}{listed_seconds:>9.1f}"
    )
    print(f"{'scan, filtered the same':<44}{scanned:>12,}{matched:>10,}{units:>10g}{scan_seconds:>9.1f}")
    print("(the list's seconds include the CLI's start and `terraform output`; capacity as the local AWS reports it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
