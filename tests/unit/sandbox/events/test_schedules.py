"""EventBridge schedules in the sandbox: a rate rule invokes its Lambda target on the scaled clock,
once per period, with a Scheduled Event, and only when the function's policy allows EventBridge."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox.awslambda import runtime as lambda_runtime
from sandbox.events.schedules import ScheduleRunner, period_seconds
from sandbox.iot_data_plane.local_account import LocalAccount

RECORDER = (
    "import json, os\n"
    "def handler(event, context):\n"
    "    with open(os.environ['OUT'], 'a') as out:\n"
    "        out.write(json.dumps(event) + '\\n')\n"
    "    return {}\n"
)


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[Path]:
    with mock_aws():
        pool = lambda_runtime.WorkerPool(tmp_path, "http://127.0.0.1:9")
        original = lambda_runtime.LambdaFunction._invoke_lambda
        lambda_runtime.install(pool)
        try:
            yield tmp_path
        finally:
            pool.stop()
            lambda_runtime.LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]


def scheduled_function(folder: Path, allow: bool) -> tuple[str, Path]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("app.py", RECORDER)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="reconciler-role", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    out = folder / "runs.jsonl"
    lam = boto3.client("lambda", region_name="us-east-1")
    arn = lam.create_function(
        FunctionName="reconciler",
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Timeout=5,
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": {"OUT": str(out)}},
    )["FunctionArn"]
    events = boto3.client("events", region_name="us-east-1")
    rule = events.put_rule(Name="reconcile", ScheduleExpression="rate(5 minutes)")["RuleArn"]
    events.put_targets(Rule="reconcile", Targets=[{"Id": "fn", "Arn": arn}])
    if allow:
        lam.add_permission(
            FunctionName="reconciler",
            StatementId="events",
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=rule,
        )
    return rule, out


def runs(out: Path, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) >= expected:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_rate_rule_fires_once_per_scaled_period_with_a_scheduled_event(aws: Path) -> None:
    rule, out = scheduled_function(aws, allow=True)
    runner = ScheduleRunner(LocalAccount("us-east-1"), scale=60)

    runner.run_due(now=0.0)  # first seen: fires one period later, as EventBridge does
    runner.run_due(now=4.9)
    assert runner.fired == {}
    runner.run_due(now=5.0)
    runner.run_due(now=9.0)
    runner.run_due(now=10.0)

    assert runner.fired == {rule: 2}
    events = runs(out, 2)
    assert len(events) == 2
    assert events[0]["detail-type"] == "Scheduled Event" and events[0]["source"] == "aws.events"
    assert events[0]["resources"] == [rule]


def test_a_function_whose_policy_does_not_allow_eventbridge_is_not_invoked(aws: Path) -> None:
    rule, out = scheduled_function(aws, allow=False)
    runner = ScheduleRunner(LocalAccount("us-east-1"), scale=60)

    runner.run_due(now=0.0)
    runner.run_due(now=5.0)
    time.sleep(1.0)

    assert runner.fired == {rule: 1}  # the rule fired; EventBridge could not invoke the function
    assert not out.exists()


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(5 minutes)", 300),
        ("rate(1 minute)", 60),
        ("rate(2 hours)", 7200),
        ("rate(1 day)", 86400),
        ("cron(0 * * * ? *)", None),
        ("rate(0 minutes)", None),
        ("rate(5 minutes)\n", None),
    ],
)
def test_rate_expressions_are_read_as_eventbridge_reads_them(expression: str, seconds: int | None) -> None:
    assert period_seconds(expression) == seconds
