#!/usr/bin/env python
"""Scan the synthesized stack with checkov; fail on any finding not acknowledged on its resource.

checkov reads cdk.tf.json but honours no per-resource skip there, so deliberate deviations are
recorded on the resource itself (``"//": {"checkov": {"skip": [{"id", "comment"}]}}``, written by
``iot_fleet.acknowledge``). A failed check counts as acknowledged only when the failing resource
carries that check id with a reason; everything else fails the scan.

Usage: scripts/checkov_scan.py cdktf.out/stacks/<stack>/cdk.tf.json [--report reports/checkov.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def acknowledgements(stack: dict[str, Any]) -> dict[str, dict[str, str]]:
    """resource name -> {check id: reason} as recorded on each resource of the stack."""
    found: dict[str, dict[str, str]] = {}
    for resources in stack.get("resource", {}).values():
        for name, body in resources.items():
            skips = body.get("//", {}).get("checkov", {}).get("skip", [])
            found[name] = {s.get("id", ""): str(s.get("comment", "")).strip() for s in skips}
    return found


def scannable(stack: dict[str, Any]) -> dict[str, Any]:
    """The document as checkov's terraform_json parser can read it: that parser takes every setting of
    the `terraform` block for a block and stops at `required_version`, a string with no bearing on any
    check, so the copy it reads leaves it out."""
    settings = {k: v for k, v in stack.get("terraform", {}).items() if k != "required_version"}
    return {**stack, "terraform": settings} if "terraform" in stack else stack


def run_checkov(path: Path) -> dict[str, Any]:
    checkov = Path(sys.executable).with_name("checkov")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        copy.write_text(json.dumps(scannable(json.loads(path.read_text()))))
        result = subprocess.run(
            [
                str(checkov),
                "-f",
                str(copy),
                "--framework",
                "terraform_json",
                "--skip-download",
                "--quiet",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        sys.exit(f"checkov produced no report (exit {result.returncode}):\n{result.stderr[-2000:]}")
    report = report[0] if isinstance(report, list) else report
    if "results" not in report:
        sys.exit(f"checkov found nothing to scan in {path}: {report}")
    return report


def classify(report: dict[str, Any], acks: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """Splits failed checks into (acknowledged, unacknowledged) lines."""
    acknowledged, unacknowledged = [], []
    for check in report["results"]["failed_checks"]:
        name = check["resource"].split(".", 1)[-1]  # checkov names tf.json resources resource.<name>
        reason = acks.get(name, {}).get(check["check_id"], "")
        line = f"{check['check_id']} {name}: {check['check_name']}"
        if reason:
            acknowledged.append(f"{line}\n    acknowledged: {reason}")
        else:
            unacknowledged.append(line)
    return acknowledged, unacknowledged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack", type=Path, help="path of the synthesized cdk.tf.json")
    parser.add_argument("--report", type=Path, help="also write checkov's JSON report here")
    parser.add_argument("--verbose", action="store_true", help="list acknowledged findings with their reasons")
    args = parser.parse_args()
    stack = json.loads(args.stack.read_text())
    acks = acknowledgements(stack)
    empty = [f"{name}: {check}" for name, checks in acks.items() for check, reason in checks.items() if not reason]
    report = run_checkov(args.stack)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    acknowledged, unacknowledged = classify(report, acks)
    summary = report["summary"]
    if args.verbose:
        print("\n".join(acknowledged))
    for line in unacknowledged:
        print(f"FAILED {line}")
    for line in empty:
        print(f"FAILED acknowledgement without a reason: {line}")
    print(
        f"checkov {summary.get('checkov_version', '?')}: passed {summary['passed']}, "
        f"failed {len(unacknowledged)}, skipped {len(acknowledged)} (acknowledged on their resource), "
        f"parsing errors {summary.get('parsing_errors', 0)}"
    )
    return 1 if unacknowledged or empty or summary.get("parsing_errors") else 0


if __name__ == "__main__":
    sys.exit(main())
