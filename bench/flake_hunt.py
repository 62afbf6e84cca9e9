#!/usr/bin/env python
"""Flake hunt: the integration tests, run again and again in random orders on two workers, and every
failure with the number of the random order that repeats it.

Each run is `pytest -m integration -n 2 --dist loadgroup` with pytest-randomly's order option, as
`make test` runs them, with a new random order number (pytest-randomly orders the tests, and so how
xdist spreads them over the workers). A test that fails in one run and passes in the others is not
"flaky": the printed command repeats its order; read what it waited for.

Usage: .venv/bin/python bench/flake_hunt.py [--runs 10] [--workers 2] [--marker integration] [--order N ...]
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER_OPTION = "--randomly-seed"  # pytest-randomly's option: the number that repeats a random order


def failures(report: Path) -> dict[str, str]:
    """Test id -> the first line of its failure or error, from a JUnit XML report."""
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):  # noqa: S314 - the report pytest just wrote
        for outcome in ("failure", "error"):
            element = case.find(outcome)
            if element is not None:
                test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
                message = (element.get("message") or element.text or outcome).strip().splitlines()
                found[test] = f"{outcome}: {message[0][:200] if message else outcome}"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--marker", default="integration", help="pytest -m expression ('' for every test)")
    parser.add_argument("--order", type=int, action="append", help="run these order numbers (repeatable) instead")
    args = parser.parse_args()
    orders = args.order or [secrets.randbelow(2**32) for _ in range(args.runs)]
    failed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="flake-hunt-") as folder:
        for number, order in enumerate(orders, 1):
            report = Path(folder) / f"run-{number}.xml"
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "randomly",
                f"{ORDER_OPTION}={order}",
                "-n",
                str(args.workers),
                "--dist",
                "loadgroup",
                f"--junitxml={report}",
            ]
            if args.marker:
                command += ["-m", args.marker]
            started = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            seconds = time.monotonic() - started
            summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
            found = failures(report) if report.exists() else {"(no report)": done.stderr[-300:]}
            for test, why in found.items():
                failed[test].append((order, why))
            print(f"run {number}/{len(orders)} order {order}: {summary} ({seconds:.0f} s)", flush=True)
    print(f"\n{len(orders)} runs, {sum(map(len, failed.values()))} failures in {len(failed)} tests")
    marker = f" -m {args.marker}" if args.marker else ""
    for test, seen in sorted(failed.items()):
        print(f"\n{test}: failed {len(seen)} of {len(orders)}")
        for order, why in seen:
            print(f"  order {order}: {why}")
            print(
                f"    repeat: .venv/bin/python -m pytest{marker} -n {args.workers} --dist loadgroup "
                f"{ORDER_OPTION}={order}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
