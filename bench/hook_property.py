#!/usr/bin/env python
"""The hook's validation property (tests/unit/functions/test_hook_properties.py) with many more examples
than `make test` runs: whatever parameters arrive for an enrolled serial, an allowed device carries
only values AWS accepts, under the enrolled thing name. Prints the examples run and the time.

Example: .venv/bin/python bench/hook_property.py --examples 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=10_000)
    args = parser.parse_args()
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "--hypothesis-show-statistics",
            "tests/unit/functions/test_hook_properties.py::test_an_allowed_device_only_ever_carries_values_aws_accepts",
        ],
        cwd=ROOT,
        env={**os.environ, "HOOK_PROPERTY_EXAMPLES": str(args.examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    statistics = [line.strip() for line in result.stdout.splitlines() if "passing examples" in line or "-" in line[:4]]
    print(
        f"hook property: {args.examples:,} examples asked, {'passed' if result.returncode == 0 else 'FAILED'} "
        f"in {elapsed:.0f} s"
    )
    for line in statistics[:6]:
        print(f"  {line}")
    if result.returncode != 0:
        print(result.stdout[-3000:])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
