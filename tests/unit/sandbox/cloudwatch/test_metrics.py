"""Metrics in the sandbox as CloudWatch gets them: EMF extraction from log events, and the AWS/Lambda
metrics (with reserved-concurrency throttling) of the local Lambda runtime."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox.awslambda import runtime as lambda_runtime
from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.cloudwatch.metrics import EmfDatum, InvalidEmf, extract_emf
from tests.unit.support import lambda_role, log_records

cloudwatch_metrics.install()


def emf(**root: Any) -> str:
    record = {
        "_aws": {
            "Timestamp": 1_700_000_000_123,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Fleet/dev",
                    "Dimensions": [["Decision", "Reason"], []],
                    "Metrics": [{"Name": "Requests", "Unit": "Count"}, {"Name": "Latency", "Unit": "Milliseconds"}],
                }
            ],
        },
        "Decision": "deny",
        "Reason": "NOT_ENROLLED",
        "Requests": 1,
        "Latency": [3.5, 4.0],
        "other": {"x": 1},
    }
    record.update(root)
    return json.dumps(record)


def test_each_metric_becomes_one_datapoint_per_dimension_set_at_the_records_timestamp_and_unit() -> None:
    extracted = extract_emf(emf())

    at, denied = 1_700_000_000.123, {"Decision": "deny", "Reason": "NOT_ENROLLED"}
    assert extracted == [
        EmfDatum("Fleet/dev", "Requests", denied, [1.0], "Count", at),
        EmfDatum("Fleet/dev", "Requests", {}, [1.0], "Count", at),
        EmfDatum("Fleet/dev", "Latency", denied, [3.5, 4.0], "Milliseconds", at),
        EmfDatum("Fleet/dev", "Latency", {}, [3.5, 4.0], "Milliseconds", at),
    ]


@pytest.mark.parametrize(
    "line", ["START RequestId: 1 Version: $LATEST", '{"level": "INFO", "message": "hi"}', '{"_aws": broken json', "[]"]
)
def test_ordinary_log_lines_carry_no_metrics(line: str) -> None:
    assert extract_emf(line) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"Reason": 7}, "dimension 'Reason'"),
        ({"Decision": None}, "dimension 'Decision'"),
        ({"Requests": "1"}, "metric Requests"),
        ({"Latency": [1.0] * 101}, "metric Latency"),
        ({"_aws": {"CloudWatchMetrics": []}}, "Timestamp"),
        (
            {
                "_aws": {
                    "Timestamp": 1,
                    "CloudWatchMetrics": [{"Namespace": "AWS/Lambda", "Dimensions": [[]], "Metrics": []}],
                }
            },
            "reserved",
        ),
        (
            {
                "_aws": {
                    "Timestamp": 1,
                    "CloudWatchMetrics": [
                        {"Namespace": "N", "Dimensions": [[]], "Metrics": [{"Name": "Requests", "Unit": "Counts"}]}
                    ],
                }
            },
            "not a CloudWatch unit",
        ),
        (
            {
                "_aws": {
                    "Timestamp": 1,
                    "CloudWatchMetrics": [
                        {"Namespace": "N", "Metrics": [], "Dimensions": [[f"d{i}" for i in range(31)]]}
                    ],
                }
            },
            "at most 30",
        ),
    ],
)
def test_a_record_cloudwatch_would_reject_is_dropped_whole_with_the_reason(change: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidEmf, match=why):
        extract_emf(emf(**change))


def test_the_hooks_decision_record_yields_the_metrics_its_alarms_watch(
    hook: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = hook.Settings.from_environment({"METRICS_NAMESPACE": "Fleet/dev", "ALLOWED_DEVICE_TYPES": "gateway"})
    hook.log_decision(settings, hook.Decision(False, hook.REGISTRY_ERROR, "down"), {}, None, 12.0)
    (line,) = capsys.readouterr().out.splitlines()

    extracted = {(d.name, tuple(sorted(d.dimensions.items()))): d.values for d in extract_emf(line)}

    assert extracted == {
        ("ProvisioningRequests", (("Decision", "deny"), ("Reason", "REGISTRY_ERROR"))): [1.0],
        ("ProvisioningRequests", (("Decision", "deny"), ("DeviceType", "other"))): [1.0],
        ("ProvisioningErrors", ()): [1.0],
    }
    assert log_records(line)[0]["reason"] == "REGISTRY_ERROR"


def test_emf_written_to_cloudwatch_logs_becomes_metrics_and_other_lines_do_not() -> None:
    with mock_aws():
        logs = boto3.client("logs", region_name="us-east-1")
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        logs.create_log_group(logGroupName="/aws/lambda/hook")
        logs.create_log_stream(logGroupName="/aws/lambda/hook", logStreamName="s")
        now = datetime.now(UTC)
        stamp = int(now.timestamp() * 1000)
        logs.put_log_events(
            logGroupName="/aws/lambda/hook",
            logStreamName="s",
            logEvents=[
                {
                    "timestamp": stamp,
                    "message": emf(
                        _aws={
                            "Timestamp": stamp,
                            "CloudWatchMetrics": [
                                {
                                    "Namespace": "Fleet/dev",
                                    "Dimensions": [["Decision"]],
                                    "Metrics": [{"Name": "Requests"}],
                                }
                            ],
                        }
                    ),
                },
                {"timestamp": stamp, "message": emf(Reason=7)},  # invalid: dropped whole
                {"timestamp": stamp, "message": "an ordinary line"},
            ],
        )

        listed = cloudwatch.list_metrics(Namespace="Fleet/dev")["Metrics"]
        assert listed == [
            {"Namespace": "Fleet/dev", "MetricName": "Requests", "Dimensions": [{"Name": "Decision", "Value": "deny"}]}
        ]
        statistics = cloudwatch.get_metric_statistics(
            Namespace="Fleet/dev",
            MetricName="Requests",
            Dimensions=[{"Name": "Decision", "Value": "deny"}],
            StartTime=now - timedelta(minutes=1),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum"],
        )
        assert sum(p["Sum"] for p in statistics["Datapoints"]) == 1.0


# AWS/Lambda from the local runtime ---------------------------------------------------------------


@pytest.fixture
def local_lambda(tmp_path: Path) -> Iterator[Any]:
    with mock_aws():
        pool = lambda_runtime.WorkerPool(tmp_path, "http://127.0.0.1:9")  # nothing listens: no AWS calls
        original = lambda_runtime.LambdaFunction._invoke_lambda
        lambda_runtime.install(pool)
        try:
            yield boto3.client("lambda", region_name="us-east-1")
        finally:
            pool.stop()
            lambda_runtime.LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]


def create(client: Any, name: str, code: str) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("app.py", code)
    role = lambda_role(f"{name}-role")
    client.create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Timeout=3,
        Code={"ZipFile": archive.getvalue()},
    )


def lambda_sums(name: str) -> dict[str, float]:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    now = datetime.now(UTC)
    sums = {}
    for metric in ("Invocations", "Errors", "Throttles", "Duration"):
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda",
            MetricName=metric,
            Dimensions=[{"Name": "FunctionName", "Value": name}],
            StartTime=now - timedelta(minutes=5),
            EndTime=now + timedelta(minutes=1),
            Period=600,
            Statistics=["Sum", "SampleCount"],
        )["Datapoints"]
        sums[metric] = sum(p["Sum"] for p in points) if metric != "Duration" else sum(p["SampleCount"] for p in points)
    return sums


def test_function_errors_count_as_errors_and_a_handled_answer_does_not(local_lambda: Any) -> None:
    code = "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('x')\n    return 1\n"
    create(local_lambda, "flaky", code)

    local_lambda.invoke(FunctionName="flaky", Payload=b"{}")
    failed = local_lambda.invoke(FunctionName="flaky", Payload=b'{"fail": true}')

    assert failed["FunctionError"]
    assert lambda_sums("flaky") == {"Invocations": 2.0, "Errors": 1.0, "Throttles": 0.0, "Duration": 2.0}


def test_reserved_concurrency_reached_throttles_with_too_many_requests_and_counts_only_throttles(
    local_lambda: Any,
) -> None:
    create(local_lambda, "stopped", "def handler(event, context):\n    return 1\n")
    local_lambda.put_function_concurrency(FunctionName="stopped", ReservedConcurrentExecutions=0)

    with pytest.raises(ClientError) as throttled:
        local_lambda.invoke(FunctionName="stopped", Payload=b"{}")

    answer = throttled.value.response
    assert (answer["Error"]["Code"], answer["ResponseMetadata"]["HTTPStatusCode"]) == ("TooManyRequestsException", 429)
    requests = answer["ResponseMetadata"]["RetryAttempts"] + 1  # the SDK retries a throttled invoke
    assert lambda_sums("stopped") == {"Invocations": 0.0, "Errors": 0.0, "Throttles": requests, "Duration": 0.0}


def test_datapoints_within_one_storage_period_are_one_statistic_set_as_cloudwatch_keeps_them() -> None:
    """A standard-resolution metric is kept per minute and a high-resolution one per second (in the
    sandbox's clock: SandboxClockScale 60 makes an AWS minute last a second): any number of datapoints
    in one period are one statistic set, so the sandbox's memory grows with time, not with each call,
    and what a query returns is unchanged."""
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        backend = cloudwatch_metrics.cloudwatch_backends["123456789012"]["us-east-1"]
        period_start = datetime(2026, 12, 8, 3, 0, 0, tzinfo=UTC)
        for n in range(20):  # all inside one sandbox minute (one real second)
            at = period_start + timedelta(milliseconds=40 * n)
            cloudwatch.put_metric_data(
                Namespace="Fleet/dev",
                MetricData=[
                    {"MetricName": "Duration", "Value": float(n), "Unit": "Milliseconds", "Timestamp": at},
                    {"MetricName": "Fast", "Value": 1.0, "Timestamp": at, "StorageResolution": 1},
                ],
            )
        cloudwatch.put_metric_data(
            Namespace="Fleet/dev",
            MetricData=[
                {
                    "MetricName": "Duration",
                    "Value": 100.0,
                    "Unit": "Milliseconds",
                    "Timestamp": period_start + timedelta(seconds=1),
                }
            ],
        )

        durations = [d for d in backend.metric_data if d.name == "Duration"]
        fast = [d for d in backend.metric_data if d.name == "Fast"]
        assert len(durations) == 2  # one per sandbox minute
        assert len(fast) == 20  # high resolution: per AWS second (1/60 s here), and these are 40 ms apart
        stats = cloudwatch.get_metric_statistics(
            Namespace="Fleet/dev",
            MetricName="Duration",
            StartTime=period_start - timedelta(minutes=1),
            EndTime=period_start + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum", "SampleCount", "Minimum", "Maximum"],
        )["Datapoints"]
        (point,) = stats
        assert (point["Sum"], point["SampleCount"], point["Minimum"], point["Maximum"]) == (290.0, 21.0, 0.0, 100.0)
        identity = cloudwatch_metrics.Identity.of("Fleet/dev", "Duration", {})
        samples = cloudwatch_metrics.series(backend).between(identity, 0, 2e9)
        assert [(s.count, s.total) for s in samples] == [(20.0, 190.0), (1.0, 100.0)]
        assert sorted(v for s in samples for v, _ in s.values or ()) == [float(n) for n in range(20)] + [100.0]
