"""The functions' runtime helpers: AWS clients with timeouts that fit each function's budget, one JSON
log line per event, embedded-metric-format records, and timestamps as the registry stores them."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3
from botocore.config import Config


def config(*, connect_timeout: float = 2, read_timeout: float = 5, attempts: int = 3) -> Config:
    """Timeouts and standard-mode retries: a function's calls must end well inside its own timeout."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )


def client(service: str, settings: Config) -> Any:
    """A client for `service`; iot-data goes to the account's IoT data endpoint (IOT_DATA_ENDPOINT)."""
    endpoint = os.environ.get("IOT_DATA_ENDPOINT", "") if service == "iot-data" else ""
    return boto3.client(service, config=settings, **({"endpoint_url": f"https://{endpoint}"} if endpoint else {}))


def log(**fields: Any) -> None:
    print(json.dumps({"level": "INFO", **fields}, default=str), flush=True)


def timestamp(seconds: float) -> str:
    """The registry's time format: ISO 8601 UTC to the second, which sorts as it reads."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def now() -> str:
    return timestamp(time.time())


def metric(namespace: str, name: str, value: float, unit: str, **dimensions: str) -> None:
    """One embedded-metric-format line: CloudWatch makes it a datapoint of `name` by these dimensions."""
    record = {
        **dimensions,
        name: value,
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": [sorted(dimensions)], "Metrics": [{"Name": name, "Unit": unit}]}
            ],
        },
    }
    print(json.dumps(record), flush=True)
