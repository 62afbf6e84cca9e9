#!/usr/bin/env python
"""Benchmark: how long a sandbox Lambda worker takes to start (its cold start), against bare boto3.

For the provisioning hook's code (its module and the shared package; ecdsa, which the stack bundles,
from the project's environment), it
times --runs starts of each, on this machine, one at a time, and prints the median and the slowest:
- bare boto3: `python -c "import boto3; boto3.client('dynamodb')"` as a new process (what a Lambda
  runtime's own cold start with boto3 costs, less Lambda's microVM);
- a worker started as a new Python process (how the sandbox started every worker before warm starts,
  and how it still starts a function that bundles its own boto3);
- a worker forked by the warm-start process (sandbox.awslambda.warm_start), and that process's own start,
  paid once per sandbox.
A worker's start ends when its init phase has run (the handler's module imported: boto3 client made),
as Lambda's init phase ends. Each worker also answers one invocation (an event the hook refuses without
calling AWS), timed apart. It measures; it asserts nothing.

Usage: .venv/bin/python bench/lambda_cold_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet_quotas import load
from sandbox.awslambda.runtime import WarmStart, Worker

ROOT = Path(__file__).resolve().parents[1]


def environment(home: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: the timed invocation calls no AWS
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "TABLE_NAME": "bench",
        "PROVISIONING_TEMPLATE_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_NAME": "bench-hook",
    }


def figures(name: str, seconds: list[float]) -> str:
    return f"{name:<44} median {statistics.median(seconds) * 1000:7.1f} ms   slowest {max(seconds) * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"load average {load()}; {args.runs} runs each")
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as home:
        code = Path(home) / "code"  # the function's module and the shared package, as the stack stages them
        shutil.copytree(ROOT / "lambda" / "provisioning_hook", code, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "lambda" / "shared" / "fleet_shared", code / "fleet_shared")
        bare = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", "import boto3; boto3.client('dynamodb')"],
                env=environment(home),
                check=True,
            )
            bare.append(time.perf_counter() - started)
        print(figures("bare boto3 (new process, one client)", bare))
        event = {"parameters": {}, "templateArn": ""}  # refused on its parameters: no AWS call
        for name, warm in (("worker as a new process", None), ("worker forked warm", WarmStart())):
            starts, invocations = [], []
            if warm is not None:
                started = time.perf_counter()
                warm.start()
                print(figures("warm-start process (once per sandbox)", [time.perf_counter() - started]))
            for _ in range(args.runs):
                started = time.perf_counter()
                worker = Worker(code, "provisioning_hook.handler", environment(home), warm)
                starts.append(time.perf_counter() - started)
                started = time.perf_counter()
                answer = worker.invoke(event, 3.0)
                invocations.append(time.perf_counter() - started)
                assert answer is not None and "payload" in answer, answer
                worker.stop()
            print(figures(f"{name}: init", starts))
            print(figures(f"{name}: first invocation", invocations))
            if warm is not None:
                warm.stop()
    print(f"load average {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
