#!/usr/bin/env python
"""Benchmark: sandbox start (time, memory), `make deploy` and `make destroy` against it.

Runs N rounds (default 3) in a private sandbox folder on a free port and prints each round and the
medians. It measures; it asserts nothing. Usage: .venv/bin/python bench/sandbox_deploy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return elapsed


def group_rss_mb(pgid: int) -> float:
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                total += int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as folder:
        env = {
            **os.environ,
            "SandboxEndpoint": f"http://127.0.0.1:{free_port()}",
            "SandboxMqttPort": str(free_port()),
            "IOT_SANDBOX_DIR": folder,
            "Target": "sandbox",
        }
        try:
            for round_number in range(1, args.rounds + 1):
                run([sys.executable, "-m", "sandbox", "up"], env)
                state = json.loads((Path(folder) / "state.json").read_text())
                idle_mb = group_rss_mb(state["pid"])
                deploy = run(["make", "--no-print-directory", "deploy"], env)
                stack = next((ROOT / "cdktf.out" / "stacks").iterdir())
                listed = subprocess.run(
                    ["terraform", "state", "list"], cwd=stack, env=env, capture_output=True, text=True, check=True
                ).stdout.split()
                resources = len([line for line in listed if not line.startswith("data.")])
                deployed_mb = group_rss_mb(state["pid"])
                destroy = run(["make", "--no-print-directory", "destroy"], env)
                run([sys.executable, "-m", "sandbox", "down"], env)
                row = (state["startup_seconds"], idle_mb, deploy, destroy, resources, deployed_mb)
                rows.append(row)
                print(
                    f"round {round_number}: sandbox start {row[0]:.1f} s, {row[1]:.0f} MB idle; "
                    f"make deploy {row[2]:.1f} s ({row[4]} resources, sandbox then {row[5]:.0f} MB); "
                    f"make destroy {row[3]:.1f} s",
                    flush=True,
                )
        finally:
            subprocess.run(
                [sys.executable, "-m", "sandbox", "down"], cwd=ROOT, env=env, capture_output=True, check=False
            )
    median = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(
        f"median of {len(rows)}: sandbox start {median[0]:.1f} s, {median[1]:.0f} MB idle, "
        f"{median[5]:.0f} MB with the stack and warm Lambda workers; make deploy {median[2]:.1f} s; "
        f"make destroy {median[3]:.1f} s; {median[4]:.0f} resources"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
