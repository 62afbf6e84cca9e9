"""EventBridge schedules, run: moto stores scheduled rules but never fires them.

Every enabled rule with a `rate(N minute|minutes|hour|hours|day|days)` expression fires every N of
those units on the sandbox's scaled clock (SandboxClockScale: at 60, `rate(5 minutes)` fires every 5
seconds), the first time one period after the sandbox first sees it, and invokes its Lambda targets
as EventBridge does: asynchronously, with a "Scheduled Event", and only when the function's policy
lets events.amazonaws.com invoke it for that rule. Cron expressions are not run (logged once).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from moto.events.models import events_backends

from sandbox.iam.enforcement import AUTHORITY
from sandbox.iot_data_plane.local_account import AwsError, LocalAccount

EVENTS_SERVICE = "events.amazonaws.com"
_RATE = re.compile(r"rate\(([1-9][0-9]*) (minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def period_seconds(expression: str) -> float | None:
    """AWS seconds between firings of a rate expression (None: not a rate expression)."""
    match = _RATE.fullmatch(expression or "")
    if not match:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


class ScheduleRunner:
    def __init__(self, account: LocalAccount, scale: float, tick: float = 0.5) -> None:
        self.account = account
        self.scale = scale
        self.tick = tick
        self.fired: dict[str, int] = {}  # rule ARN -> times fired
        self._due: dict[str, float] = {}
        self._unsupported: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _rules(self) -> list[Any]:
        backend = events_backends[self.account.account_id][self.account.region]
        rules = [rule for bus in list(backend.event_buses.values()) for rule in list(bus.rules.values())]
        return [rule for rule in rules if rule.scheduled_expression]

    def _run(self) -> None:
        while not self._stopping.wait(self.tick):
            try:
                self.run_due(time.monotonic())
            except Exception as error:  # noqa: BLE001 - the next tick tries again
                print(f"schedules: {error}", flush=True)

    def run_due(self, now: float) -> None:
        seen = set()
        for rule in self._rules():
            seen.add(rule.arn)
            period = period_seconds(rule.scheduled_expression)
            if period is None:
                if rule.arn not in self._unsupported:
                    self._unsupported.add(rule.arn)
                    print(f"schedules: {rule.name}: {rule.scheduled_expression} is not run (rate only)", flush=True)
                continue
            due = self._due.setdefault(rule.arn, now + period / self.scale)
            if rule.state != "ENABLED" or now < due:
                continue
            self._due[rule.arn] = now + period / self.scale
            self.fired[rule.arn] = self.fired.get(rule.arn, 0) + 1
            for target in list(rule.targets):
                threading.Thread(target=self._invoke, args=(rule, target), daemon=True).start()
        for gone in set(self._due) - seen:
            del self._due[gone]

    def _invoke(self, rule: Any, target: dict[str, Any]) -> None:
        arn = str(target.get("Arn", ""))
        if ":lambda:" not in arn:
            print(f"schedules: {rule.name}: target {arn} is not a Lambda function: not run", flush=True)
            return
        permitted = AUTHORITY.function_policy_allows(arn, EVENTS_SERVICE, rule.arn, self.account.account_id)
        if not permitted.allowed:  # EventBridge cannot invoke it: AWS records a failed invocation, nothing runs
            print(f"schedules: {rule.name}: the function policy of {arn} does not allow {EVENTS_SERVICE}", flush=True)
            return
        event = target.get("Input")
        payload = (
            json.loads(event)
            if event
            else {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": self.account.account_id,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": self.account.region,
                "resources": [rule.arn],
                "detail": {},
            }
        )
        try:
            invocation = self.account.invoke(arn, payload)
        except AwsError as error:
            print(f"schedules: {rule.name}: invoking {arn} failed: {error}", flush=True)
            return
        if invocation.function_error:  # asynchronous: the error is the function's (its Errors metric, its log)
            print(f"schedules: {rule.name}: {arn} failed: {json.dumps(invocation.payload)[:300]}", flush=True)
