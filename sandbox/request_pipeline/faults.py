"""The fault switch: makes the device registry (DynamoDB over HTTP, as the functions reach it) fail
on demand, the way an outage looks to an AWS SDK.

  python -m sandbox fault registry unavailable [--table NAME] [--operations GetItem,UpdateItem]
  python -m sandbox fault registry slow=2.5 | throttle | lose-answer [...]
  python -m sandbox fault clear

Modes (ErrorHandling.html, "Error messages and codes"):
  unavailable   HTTP 503 ServiceUnavailable ("DynamoDB is currently unavailable"): SDKs retry it,
                then raise it; nothing is applied
  slow=<s>      the request is applied and answered <s> seconds late (SDK read timeouts, Lambda timeouts)
  throttle      HTTP 400 ProvisionedThroughputExceededException, with the message DynamoDB gives an
                on-demand or a provisioned table; nothing is applied; ThrottledRequests (TableName,
                Operation) and Read/WriteThrottleEvents (TableName) are published to AWS/DynamoDB
                (table management, DescribeTable and the like: ThrottlingException, no metrics)
  lose-answer   the request is applied, then its connection is closed without an answer; a retry of
                it (an SDK's next attempt: `amz-sdk-request: attempt=2`) is answered, so the SDK's
                retry meets the already-applied write, as after a network failure

A fault applies to DynamoDB requests naming the table (every table without --table) and one of the
operations (every operation without --operations); the server answers GET/POST/DELETE on
/_sandbox/faults, which this module's `main` drives and `sandbox status` reads.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

FAULTS_PATH = "/_sandbox/faults"
TARGET_PREFIX = "DynamoDB_20120810."
MAX_DELAY = 900.0  # a request's own SDK gives up long before this
MODES = ("unavailable", "slow=<seconds>", "throttle", "lose-answer")
_ATTEMPT = re.compile(r"attempt=(\d+)")
_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/")
ON_DEMAND_THROTTLED = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
    "table or index so please try again shortly. If exceptions persist, check if you have a hot key: "
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html"
)
PROVISIONED_THROTTLED = (
    "The level of configured provisioned throughput for the table was exceeded. Consider increasing your "
    "provisioning level with the UpdateTable API."
)


class DropConnection(Exception):  # an instruction to the HTTP front, not an error
    """Raised through the WSGI stack to have the HTTP front close the connection without an answer."""


@dataclass(frozen=True)
class Fault:
    mode: str  # unavailable | slow | throttle | lose-answer
    seconds: float = 0.0
    table: str | None = None
    operations: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, mode: str, table: str | None = None, operations: Iterable[str] | None = None) -> Fault:
        """The fault named by the CLI's words; ValueError saying what is accepted otherwise."""
        seconds = 0.0
        if mode.startswith("slow="):
            try:
                seconds = float(mode.removeprefix("slow="))
            except ValueError:
                seconds = -1.0
            if not 0 < seconds <= MAX_DELAY:
                raise ValueError(f"{mode}: give slow=<seconds>, more than 0 and at most {MAX_DELAY:.0f}")
            mode = "slow"
        elif mode not in ("unavailable", "throttle", "lose-answer"):
            raise ValueError(f"unknown fault mode {mode!r}: one of {', '.join(MODES)}")
        names = tuple(sorted({o.strip() for o in operations or () if o.strip()})) or None
        unknown = sorted(set(names or ()) - _operations())
        if unknown:
            raise ValueError(f"not DynamoDB operations: {', '.join(unknown)} (e.g. GetItem, UpdateItem, PutItem)")
        return cls(mode, seconds, table or None, names)

    def describe(self) -> str:
        mode = f"slow={self.seconds:g}" if self.mode == "slow" else self.mode
        where = f"table {self.table}" if self.table else "every table"
        which = ", ".join(self.operations) if self.operations else "every operation"
        return f"registry {mode} ({where}; {which})"


def _operations() -> set[str]:
    import botocore.session

    return set(botocore.session.get_session().get_service_model("dynamodb").operation_names)


def _tables(request: dict[str, Any]) -> dict[str, int]:
    """The tables a request names, with its number of items (a batch's events) on each."""
    if isinstance(request.get("TableName"), str):
        return {request["TableName"]: 1}
    found: dict[str, int] = {}
    items = request.get("RequestItems")
    if isinstance(items, dict):
        for table, work in items.items():
            found[str(table)] = len(work.get("Keys", [])) if isinstance(work, dict) else len(work or [])
    for entry in request.get("TransactItems") or []:
        for action in entry.values() if isinstance(entry, dict) else []:
            if isinstance(action, dict) and isinstance(action.get("TableName"), str):
                found[action["TableName"]] = found.get(action["TableName"], 0) + 1
    return found


def _error(status: str, code: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    from moto.utilities.aws_headers import gen_amz_crc32, gen_amzn_requestid_long

    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
    headers: dict[str, str] = {"Content-Type": "application/x-amz-json-1.0"}
    gen_amzn_requestid_long(headers)
    gen_amz_crc32(body, headers)
    return status, list(headers.items()), body


class FaultSwitch:
    """WSGI layer in front of the local AWS: /_sandbox/faults, and the active fault's effect on
    DynamoDB requests."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.fault: Fault | None = None
        self.affected: dict[str, int] = {}  # operation -> requests the active fault acted on
        self._lock = threading.Lock()

    def set(self, fault: Fault | None) -> None:
        with self._lock:
            self.fault, self.affected = fault, {}

    def report(self) -> dict[str, Any]:
        with self._lock:
            fault = self.fault
            return {
                "fault": {**asdict(fault), "description": fault.describe()} if fault else None,
                "affected": dict(self.affected),
            }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == FAULTS_PATH:
            return self._control(environ, start_response)
        fault = self.fault
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if fault is None or not target.startswith(TARGET_PREFIX):
            return self.app(environ, start_response)
        operation = target[len(TARGET_PREFIX) :]
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)  # the local AWS reads it again
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        tables = _tables(request if isinstance(request, dict) else {})
        if (fault.operations is not None and operation not in fault.operations) or (
            fault.table is not None and fault.table not in tables
        ):
            return self.app(environ, start_response)
        if fault.mode == "lose-answer" and not self._first_attempt(environ):
            return self.app(environ, start_response)  # the SDK's retry is answered
        with self._lock:
            self.affected[operation] = self.affected.get(operation, 0) + 1
        if fault.mode == "unavailable":
            status, headers, answer = _error("503 Service Unavailable", "ServiceUnavailable", "Service Unavailable")
        elif fault.mode == "throttle":
            status, headers, answer = self._throttle(environ, operation, tables, fault)
        elif fault.mode == "slow":
            time.sleep(fault.seconds)
            return self.app(environ, start_response)
        else:  # lose-answer: applied, never answered
            for _ in self.app(environ, lambda *_: lambda _: None):
                pass
            raise DropConnection()
        start_response(status, headers)
        return [answer]

    @staticmethod
    def _first_attempt(environ: dict[str, Any]) -> bool:
        found = _ATTEMPT.search(environ.get("HTTP_AMZ_SDK_REQUEST", ""))
        return found is None or found.group(1) == "1"

    def _throttle(
        self, environ: dict[str, Any], operation: str, tables: dict[str, int], fault: Fault
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        from moto.dynamodb.models import dynamodb_backends

        from sandbox.cloudwatch import metrics as cloudwatch_metrics

        if operation not in cloudwatch_metrics.READ_OPERATIONS | cloudwatch_metrics.WRITE_OPERATIONS:
            # Table management throttles with ThrottlingException and counts no throttle events.
            return _error("400 Bad Request", "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
        account, region = _caller(environ)
        on_demand = True
        for table, events in tables.items():
            if fault.table is None or table == fault.table:
                cloudwatch_metrics.dynamodb_throttled(account, region, table, operation, max(events, 1))
                known = dynamodb_backends[account][region].tables.get(table)
                on_demand = on_demand and (known is None or known.billing_mode == "PAY_PER_REQUEST")
        message = ON_DEMAND_THROTTLED if on_demand else PROVISIONED_THROTTLED
        return _error("400 Bad Request", "ProvisionedThroughputExceededException", message)

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        status = "200 OK"
        if method == "POST":
            try:
                asked = json.loads(environ["wsgi.input"].read() or b"{}")
                self.set(Fault.parse(str(asked.get("mode", "")), asked.get("table"), asked.get("operations")))
            except (ValueError, AttributeError) as error:
                answer = json.dumps({"error": str(error)}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [answer]
            print(f"sandbox: fault set: {self.fault.describe() if self.fault else ''}", flush=True)
        elif method == "DELETE":
            if self.fault is not None:
                print(f"sandbox: fault cleared: {self.fault.describe()}", flush=True)
            self.set(None)
        elif method != "GET":
            status = "405 Method Not Allowed"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(self.report()).encode()]


def _caller(environ: dict[str, Any]) -> tuple[str, str]:
    """The account and region a request is for, as moto decides them."""
    import os

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import get_account_id_from

    found = _ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
    region = found.group(2) if found else "us-east-1"
    account = os.environ.get("MOTO_ACCOUNT_ID") or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if not account:
        key = found.group(1) if found else ""
        account = get_account_id_from(key) if re.fullmatch(r"[A-Z0-9]{20}", key) else DEFAULT_ACCOUNT_ID
    return str(account), region


# The command line --------------------------------------------------------------------------------


def request(endpoint: str, method: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The server's fault report after the request; OSError when nothing answers, ValueError for a
    fault it refused."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    call = urllib.request.Request(f"{endpoint}{FAULTS_PATH}", data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:  # noqa: S310 - local http
            text = answer.read()
    except urllib.error.HTTPError as refused:
        text = refused.read()
        try:
            said = json.loads(text or b"{}").get("error")
        except ValueError:
            said = None
        raise ValueError(said or f"{endpoint} refused the fault switch: {refused}") from None
    try:
        return dict(json.loads(text))
    except ValueError:
        raise ValueError(f"{endpoint} answered, but not as a sandbox with the fault switch") from None


def main(argv: list[str], endpoint: str) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox fault", description="Make the device registry fail on demand (see `sandbox --help`)."
    )
    parser.add_argument("target", choices=["registry", "clear"], help="registry: set a fault; clear: end it")
    parser.add_argument("mode", nargs="?", help=f"registry: one of {', '.join(MODES)}")
    parser.add_argument("--table", help="only requests naming this table (default: every table)")
    parser.add_argument(
        "--operations", help="comma-separated DynamoDB operations, e.g. GetItem,UpdateItem (default: every operation)"
    )
    args = parser.parse_args(argv)
    try:
        if args.target == "clear":
            if args.mode or args.table or args.operations:
                parser.error("clear takes no mode or options")
            before = request(endpoint, "GET")["fault"]
            request(endpoint, "DELETE")
            print(f"sandbox: fault cleared: {before['description']}" if before else "sandbox: no fault was set")
            return 0
        if not args.mode:
            parser.error(f"registry needs a mode: one of {', '.join(MODES)}")
        operations = args.operations.split(",") if args.operations else None
        Fault.parse(args.mode, args.table, operations)  # refused here already, sandbox up or not
        report = request(endpoint, "POST", {"mode": args.mode, "table": args.table, "operations": operations})
    except ValueError as refused:
        print(f"sandbox: error: {refused}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"sandbox: error: the sandbox does not answer at {endpoint} ({error}): start it with `make sandbox-up`",
            file=sys.stderr,
        )
        return 1
    print(f"sandbox: fault set: {report['fault']['description']}; clear it with `python -m sandbox fault clear`")
    return 0
