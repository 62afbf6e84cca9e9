#!/usr/bin/env python
"""Benchmark: `python main.py` (synth) wall time and peak memory, median of N runs (default 3).

Memory is the peak of the summed RSS of the synth's process tree (Python + the jsii Node.js
process), sampled every 50 ms. Usage: .venv/bin/python bench/synth.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            rss[int(proc.name)] = int((proc / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in members)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times, peaks = [], []
    for round_number in range(1, args.rounds + 1):
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, stdout=subprocess.DEVNULL)
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if process.returncode != 0:
            sys.exit(f"main.py failed with exit code {process.returncode}")
        times.append(elapsed)
        peaks.append(peak / 1e6)
        print(f"round {round_number}: {elapsed:.1f} s, peak RSS {peak / 1e6:.0f} MB", flush=True)
    print(
        f"median of {args.rounds}: python main.py {statistics.median(times):.1f} s, "
        f"peak RSS {statistics.median(peaks):.0f} MB (Python + jsii Node.js)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
