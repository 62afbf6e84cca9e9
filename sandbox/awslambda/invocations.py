"""What the Lambda service does around each invocation of the local runtime: reserved concurrency
(throttling) and the AWS/Lambda metrics (monitoring-metrics-types.html).

Per invocation request: Invocations 1, Errors 0 or 1 (a function error: the handler raised, timed
out or failed its init), Throttles 0, and Duration (the handler's time, from the runtime's REPORT
line; the timeout for a timed-out invocation), by FunctionName and across all functions, at the
time the function was invoked. A throttled request (as many invocations running as the function's
reserved concurrency) is refused with TooManyRequestsException and counts only as Throttles 1.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from moto.core.exceptions import JsonRESTError

from sandbox.cloudwatch import metrics as cloudwatch_metrics

TIMED_OUT = "Sandbox.Timedout"  # the errorType the local runtime reports a timeout with
_REPORT_DURATION = re.compile(r"^REPORT RequestId: \S+\tDuration: ([0-9.]+) ms", re.MULTILINE)
_running: dict[str, int] = {}
_lock = threading.Lock()


class Function(Protocol):
    function_arn: str
    function_name: str
    account_id: str
    region: str
    timeout: int
    reserved_concurrency: Any


class TooManyRequests(JsonRESTError):
    code = 429

    def __init__(self) -> None:
        super().__init__("TooManyRequestsException", "Rate Exceeded.")
        self.description = (
            '{"Type": "User", "message": "Rate Exceeded.", '
            '"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}'
        )


class Outcome:
    """What the runtime reports about the invocation once it ends."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.errored = True  # an invocation that never reports is a failed one
        self.duration_ms: float | None = None

    def ended(self, errored: bool, payload: str, logs: str) -> None:
        self.errored = errored
        if errored and _error_type(payload) == TIMED_OUT:
            self.duration_ms = self.timeout * 1000
        elif found := _REPORT_DURATION.search(logs or ""):
            self.duration_ms = float(found.group(1))


def _error_type(payload: str) -> str | None:
    try:
        answer = json.loads(payload)
    except ValueError:
        return None
    return answer.get("errorType") if isinstance(answer, dict) else None


def _publish(fn: Function, values: list[tuple[str, float, str]], at: float) -> None:
    data = [
        cloudwatch_metrics.Datum(name, value, dimensions, unit)
        for name, value, unit in values
        for dimensions in ({"FunctionName": fn.function_name}, {})
    ]
    cloudwatch_metrics.publish_all(fn.account_id, fn.region, "AWS/Lambda", data, at)


@contextmanager
def invocation(fn: Function) -> Iterator[Outcome]:
    """One invocation request: refused when the function's reserved concurrency is taken, else run by
    the caller inside the block, and measured."""
    started = time.time()
    limit = fn.reserved_concurrency
    with _lock:
        running = _running.get(fn.function_arn, 0)
        throttled = limit is not None and str(limit) != "" and running >= int(limit)
        if not throttled:
            _running[fn.function_arn] = running + 1
    if throttled:
        _publish(fn, [("Throttles", 1, "Count")], started)
        raise TooManyRequests()
    outcome = Outcome(float(fn.timeout))
    try:
        yield outcome
    finally:
        with _lock:
            _running[fn.function_arn] -= 1
        values = [
            ("Invocations", 1.0, "Count"),
            ("Errors", 1.0 if outcome.errored else 0.0, "Count"),
            ("Throttles", 0.0, "Count"),
        ]
        if outcome.duration_ms is not None:
            values.append(("Duration", outcome.duration_ms, "Milliseconds"))
        _publish(fn, values, started)
