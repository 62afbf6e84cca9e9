#!/usr/bin/env python
"""Benchmark: a large fleet provisioned into one sandbox in rounds, and what grows with it.

Starts a sandbox of its own, deploys the stack, optionally warms the Lambda workers with one unmeasured
round (--warm-up devices; 0 measures a sandbox just started), then provisions --rounds rounds of
--round-size devices with scripts/simulate_fleet.py (CSR flow, EC keys, the full flow; enrollment is not
in the rate). Per round it prints devices/s, p50/p95/max latency, failed devices (with why), and the
sandbox's memory afterwards: the local AWS process's resident set, and the proportional set size (PSS)
of the whole process group (local AWS, broker, Lambda workers; PSS shares pages a forked worker shares
with its parent, which a sum of resident sets counts once per process). With --destroy it then times
`fleet.py list --status provisioned` and `make destroy` on the whole fleet. With --plot it draws rate,
p95 and memory per round into one PNG. --concurrency takes a comma-separated list, cycled over the
rounds (10,50: the odd rounds at 10, the even at 50). It measures; it asserts nothing.

The sandbox runs AWS's periodic work on its clock (SandboxClockScale, default 60): the stack's reconciler,
every 5 AWS minutes, reads every device's registry item for the fleet metrics, so at the default scale it reads
the whole fleet every 5 seconds, work that grows with the fleet and that AWS would do 60 times less
often. `SandboxClockScale=1 bench/fleet_scale.py ...` runs it as often as AWS would.

Usage: .venv/bin/python bench/fleet_scale.py [--rounds 10] [--round-size 10000] [--concurrency 10]
       [--warm-up 50] [--destroy] [--plot bench/fleet_scale.png] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.claim_rotation import Bench
from bench.fleet_quotas import load, simulate
from sandbox.state import group_members


def rollup(pid: int, field: str) -> int:
    """A field of /proc/PID/smaps_rollup in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory(pgid: int) -> dict[str, float]:
    """MB: the local AWS process's RSS, the group's PSS, and how many processes the group has."""
    members = group_members(pgid)
    return {
        "local_aws_rss_mb": round(rollup(pgid, "Rss") / 1e6, 1),
        "group_pss_mb": round(sum(rollup(pid, "Pss") for pid in members) / 1e6, 1),
        "processes": len(members),
    }


def plot(rounds: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib  # a dev dependency, needed only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [r["round"] for r in rounds]
    figure, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 7))
    axes[0].plot(numbers, [r["devices_per_s"] for r in rounds], marker="o")
    axes[0].set_ylabel("devices/s")
    axes[1].plot(numbers, [r["p95_s"] for r in rounds], marker="o", color="tab:orange")
    axes[1].set_ylabel("p95 latency (s)")
    axes[2].plot(numbers, [r["group_pss_mb"] for r in rounds], marker="o", color="tab:green", label="sandbox (PSS)")
    axes[2].plot(numbers, [r["local_aws_rss_mb"] for r in rounds], marker="o", color="tab:red", label="local AWS (RSS)")
    axes[2].set_ylabel("memory (MB)")
    axes[2].legend()
    axes[2].set_xlabel(f"round ({rounds[0]['devices']:,} devices each)")
    for axis in axes:
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--round-size", type=int, default=10000)
    parser.add_argument("--concurrency", default="10", help="comma-separated, cycled over the rounds (default 10)")
    parser.add_argument("--warm-up", type=int, default=50, help="devices of an unmeasured first round (0: none)")
    parser.add_argument("--destroy", action="store_true", help="then time `fleet.py list` and `make destroy`")
    parser.add_argument("--plot", type=Path, help="draw rate, p95 and memory per round into this PNG")
    parser.add_argument("--json", type=Path, help="write every figure to this file too")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, Any] = {"rounds": [], "load_start": load()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        bench = Bench(Path(folder))
        try:
            deploy = bench.up_and_deploy()
            pgid = json.loads((Path(folder) / "sandbox" / "state.json").read_text())["pid"]
            results["deployed"] = memory(pgid)
            results["clock_scale"] = bench.env.get("SandboxClockScale") or "60"
            print(
                f"deployed in {deploy:.0f} s (SandboxClockScale {results['clock_scale']}); "
                f"sandbox {results['deployed']}",
                flush=True,
            )
            if args.warm_up:
                simulate(bench, Path(folder), args.warm_up, concurrencies[0])
                results["warmed"] = memory(pgid)
                print(f"warm-up of {args.warm_up} devices; sandbox {results['warmed']}", flush=True)
            print(
                f"{'round':>5} {'conc':>5} {'ok':>7} {'failed':>7} {'dev/s':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"
                f" {'AWS RSS':>8} {'PSS MB':>8} {'procs':>5}   load before -> after"
            )
            for number in range(1, args.rounds + 1):
                concurrency = concurrencies[(number - 1) % len(concurrencies)]
                before = load()
                summary = simulate(bench, Path(folder), args.round_size, concurrency)
                row = {
                    "round": number,
                    "concurrency": concurrency,
                    "devices": args.round_size,
                    "provisioned": summary["provisioned"],
                    "failed": args.round_size - summary["provisioned"],
                    "rejections": summary["rejections"],
                    **{k: summary[k] for k in ("devices_per_s", "p50_s", "p95_s", "max_s", "wall_s")},
                    **memory(pgid),
                    "load": f"{before} -> {load()}",
                }
                results["rounds"].append(row)
                print(
                    f"{number:>5} {concurrency:>5} {row['provisioned']:>7} {row['failed']:>7} {row['devices_per_s']:>7}"
                    f" {row['p50_s']:>7} {row['p95_s']:>7} {row['max_s']:>7} {row['local_aws_rss_mb']:>8}"
                    f" {row['group_pss_mb']:>8} {row['processes']:>5}   {row['load']}",
                    flush=True,
                )
                if row["failed"]:
                    print(f"      failed: {summary['rejections']}; e.g. {summary['examples'][:2]}", flush=True)
            if args.destroy:
                seconds, listed = bench.run(
                    sys.executable,
                    "scripts/fleet.py",
                    "--stack-dir",
                    str(bench.stack),
                    "list",
                    "--status",
                    "provisioned",
                    "--json",
                )
                count = int(json.loads(listed.stdout)["count"])
                results["list_provisioned"] = {"seconds": round(seconds, 1), "devices": count}
                print(f"fleet.py list --status provisioned: {count} devices in {seconds:.0f} s", flush=True)
                seconds, destroyed = bench.run(
                    "make", "-o", "setup", "--no-print-directory", "destroy", f"CDKTF_OUT={bench.out}"
                )
                said = [line for line in destroyed.stdout.splitlines() if line.startswith("decommissioned")]
                results["destroy"] = {"seconds": round(seconds, 1), "said": said[0] if said else ""}
                print(f"make destroy: {seconds:.0f} s ({said[0] if said else 'no decommission line'})", flush=True)
        finally:
            bench.run(sys.executable, "-m", "sandbox", "down", check=False)
    results["load_end"] = load()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot and results["rounds"]:
        total = args.rounds * args.round_size
        plot(results["rounds"], args.plot, f"{total:,} devices into one sandbox ({os.cpu_count()} cores)")
        print(f"drawn: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
