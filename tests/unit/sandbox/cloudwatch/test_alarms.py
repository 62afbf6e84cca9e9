"""The sandbox's alarm evaluator held to CloudWatch's documented rules (AlarmThatSendsEmail.html):
statistics, periods on the scaled clock, M out of N, missing data, metric math, and what an alarm's
SNS topic receives."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudwatch.models import cloudwatch_backends

from sandbox.cloudwatch import alarms as cloudwatch_alarms
from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.cloudwatch.alarms import ALARM, INSUFFICIENT_DATA, OK, NotEvaluated, Spec, Stat
from sandbox.cloudwatch.metrics import Identity, Sample, Series

cloudwatch_metrics.install()
cloudwatch_alarms.install()
ACCOUNT, REGION = "123456789012", "us-east-1"
METRIC = Identity.of("AWS/IoT", "RegisterThingFailed", {"TemplateName": "fleet"})


def spec(n: int = 3, m: int | None = None, treat: str = "missing", threshold: float = 5.0, **extra: Any) -> Spec:
    stat = Stat("m1", METRIC, 300, extra.pop("statistic", "Sum"), None)
    return Spec((stat,), {}, "m1", 300, n, m or n, "GreaterThanThreshold", threshold, treat, **extra)


def values(row: str) -> list[float | None]:
    """A row of AWS's tables: 0 not breaching, X breaching, - missing (oldest first)."""
    return [{"0": 0.0, "X": 10.0, "-": None}[c] for c in row.split()]


TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")
KEEP = "keep"  # "Retain current state"


@pytest.mark.parametrize(
    ("row", "m", "expected"),
    [
        # Datapoints to Alarm 3 of Evaluation Periods 3 (the first table)
        ("0 - X - X", 3, (OK, OK, OK, OK)),
        ("0 - - - -", 3, (OK, OK, OK, OK)),
        ("- - - - -", 3, (INSUFFICIENT_DATA, KEEP, ALARM, OK)),
        ("0 X X - X", 3, (ALARM, ALARM, ALARM, ALARM)),
        ("- - X - -", 3, (ALARM, KEEP, ALARM, OK)),
        # 2 of 3 (the second table)
        ("0 - X - X", 2, (ALARM, ALARM, ALARM, ALARM)),
        ("0 0 X 0 X", 2, (ALARM, ALARM, ALARM, ALARM)),
        ("0 - X - -", 2, (OK, OK, ALARM, OK)),
        ("- - - - 0", 2, (OK, OK, ALARM, OK)),
        ("- - - X -", 2, (ALARM, KEEP, ALARM, OK)),
    ],
)
def test_missing_data_is_treated_as_the_documented_tables_say(row: str, m: int, expected: tuple[str, ...]) -> None:
    for treat, state in zip(TREATMENTS, expected, strict=True):
        decided = cloudwatch_alarms.decide(spec(3, m, treat), values(row)).state
        assert (decided or KEEP) == state, (row, m, treat)


def test_a_lone_recent_breach_does_not_alarm_before_it_is_datapoints_to_alarm_periods_old() -> None:
    """ "- - - - X": the next datapoint may not breach, so the alarm waits (premature-transition rule)."""
    assert cloudwatch_alarms.decide(spec(3, 3), values("- - - - X")).state is None
    assert cloudwatch_alarms.decide(spec(3, 3), values("- - - X -")).state is None
    assert cloudwatch_alarms.decide(spec(3, 3), values("- - X - -")).state == ALARM


@pytest.mark.parametrize(
    ("row", "m", "state"),
    [("0 0 X X 0", 2, ALARM), ("X X 0 X 0", 2, OK), ("0 X 0 X X", 3, OK), ("X 0 X X X", 3, ALARM)],
)
def test_m_of_the_n_most_recent_datapoints_need_not_be_consecutive(row: str, m: int, state: str) -> None:
    assert cloudwatch_alarms.decide(spec(3, m, "notBreaching"), values(row)).state == state


def sample(value: float, count: float = 1.0) -> Sample:
    return Sample(0.0, None, value * count, count, value, value, ((value, count),))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Sum", 16.0),
        ("SampleCount", 5.0),
        ("Average", 3.2),
        ("Minimum", 1.0),
        ("Maximum", 9.0),
        ("p50", 2.0),
        ("p80", 2.0),
        ("p90", 9.0),
        ("p100", 9.0),
    ],
)
def test_statistics_over_one_period(name: str, expected: float) -> None:
    samples = [sample(1.0), sample(2.0, 3), sample(9.0)]  # 1, 2, 2, 2, 9

    assert cloudwatch_alarms.statistic(samples, name) == pytest.approx(expected)


def test_a_period_without_datapoints_has_no_value_and_statistic_sets_carry_no_percentiles() -> None:
    assert cloudwatch_alarms.statistic([], "Sum") is None
    aggregated = Sample(0.0, None, 10.0, 4.0, 1.0, 4.0, None)
    assert cloudwatch_alarms.statistic([aggregated], "Average") == 2.5
    assert cloudwatch_alarms.statistic([aggregated], "p90") is None
    assert cloudwatch_alarms.statistic([sample(1.0)], "p99", low_sample_count="ignore") is None  # fewer than 1,000
    assert cloudwatch_alarms.statistic([sample(1.0)], "p100", low_sample_count="ignore") == 1.0


def test_periods_run_on_the_scaled_clock_and_count_only_the_alarms_exact_metric() -> None:
    """At SandboxClockScale 60 a 5-minute period lasts 5 s; a datapoint with another dimension set is
    another metric (DynamoDB's ThrottledRequests by TableName and Operation never reaches an alarm on
    TableName alone)."""
    store, end = Series(), 1_000_000.0
    for at, value in ((end - 1, 2.0), (end - 4.5, 3.0), (end - 5.5, 7.0), (end - 16, 100.0)):
        store.add(METRIC, Sample(at, "Count", value, 1, value, value, ((value, 1),)))
    other = Identity.of("AWS/IoT", "RegisterThingFailed", {"TemplateName": "fleet", "Extra": "x"})
    store.add(other, Sample(end - 1, "Count", 50.0, 1, 50.0, 50.0, ((50.0, 1),)))

    found = cloudwatch_alarms.slots(spec(1), store.between, end, scale=60)

    assert [(s.start, s.value) for s in found] == [(end - 15, None), (end - 10, 7.0), (end - 5, 5.0)]
    slow = cloudwatch_alarms.slots(spec(1), store.between, end, scale=1)  # AWS's own clock: one 300 s period
    assert slow[-1].value == 112.0


def test_a_unit_given_to_the_alarm_counts_only_datapoints_of_that_unit() -> None:
    store, end = Series(), 1_000_000.0
    store.add(METRIC, Sample(end - 1, "Count", 9.0, 1, 9.0, 9.0, ((9.0, 1),)))
    store.add(METRIC, Sample(end - 1, "Seconds", 90.0, 1, 90.0, 90.0, ((90.0, 1),)))
    counted = Spec(
        (Stat("m1", METRIC, 300, "Sum", "Count"),), {}, "m1", 300, 1, 1, "GreaterThanThreshold", 5.0, "missing"
    )

    assert cloudwatch_alarms.slots(counted, store.between, end, 60)[-1].value == 9.0


def test_metric_math_fills_quiet_periods_and_adds_series() -> None:
    reads = Identity.of("AWS/DynamoDB", "ReadThrottleEvents", {"TableName": "t"})
    writes = Identity.of("AWS/DynamoDB", "WriteThrottleEvents", {"TableName": "t"})
    store, end = Series(), 1_000_000.0
    store.add(writes, Sample(end - 1, "Count", 2.0, 1, 2.0, 2.0, ((2.0, 1),)))
    store.add(reads, Sample(end - 6, "Count", 1.0, 1, 1.0, 1.0, ((1.0, 1),)))
    math_spec = Spec(
        (Stat("r", reads, 300, "Sum", None), Stat("w", writes, 300, "Sum", None)),
        {"total": "FILL(r, 0) + FILL(w, 0)", "unfilled": "r + w * 2"},
        "total",
        300,
        1,
        1,
        "GreaterThanThreshold",
        0.0,
        "ignore",
    )

    assert [s.value for s in cloudwatch_alarms.slots(math_spec, store.between, end, 60)] == [0.0, 1.0, 2.0]
    unfilled = Spec(
        math_spec.stats, math_spec.expressions, "unfilled", 300, 1, 1, "GreaterThanThreshold", 0.0, "ignore"
    )
    assert [s.value for s in cloudwatch_alarms.slots(unfilled, store.between, end, 60)] == [None, None, None]


@pytest.mark.parametrize("expression", ["ANOMALY_DETECTION_BAND(r, 2)", "FILL(r, REPEAT)", "r +", "SUM([r, w])"])
def test_metric_math_the_sandbox_does_not_evaluate_is_refused_by_name(expression: str) -> None:
    with pytest.raises(NotEvaluated, match=r"metric math|FILL|function"):
        cloudwatch_alarms.evaluate_expression(expression, lambda _: [1.0], 1)


# Alarms, their history and their notifications, with moto in-process -------------------------------


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        clients = {name: boto3.client(name, region_name=REGION) for name in ("cloudwatch", "sns", "sqs", "kms")}
        queue = clients["sqs"].create_queue(QueueName="alerts")["QueueUrl"]
        clients["queue"] = queue
        clients["queue_arn"] = clients["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        yield clients


def encrypted_topic(aws: dict[str, Any], statements: list[dict[str, Any]]) -> str:
    key = aws["kms"].create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    topic = aws["sns"].create_topic(Name="alerts", Attributes={"KmsMasterKeyId": key["KeyMetadata"]["Arn"]})
    aws["sns"].subscribe(TopicArn=topic["TopicArn"], Protocol="sqs", Endpoint=aws["queue_arn"])
    return str(topic["TopicArn"])


CLOUDWATCH_MAY_USE_THE_KEY = {
    "Effect": "Allow",
    "Principal": {"Service": "cloudwatch.amazonaws.com"},
    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
    "Resource": "*",
    "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
}


def failures_alarm(aws: dict[str, Any], topic: str) -> Any:
    aws["cloudwatch"].put_metric_alarm(
        AlarmName="provisioning-failures",
        AlarmDescription="Devices are refused: check the hook's log.",
        Namespace="AWS/IoT",
        MetricName="RegisterThingFailed",
        Dimensions=[{"Name": "TemplateName", "Value": "fleet"}],
        Statistic="Sum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        AlarmActions=[topic],
        OKActions=[topic],
    )
    return cloudwatch_backends[ACCOUNT][REGION].alarms["provisioning-failures"]


def received(aws: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    messages = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", [])
    envelopes = [json.loads(m["Body"]) for m in messages]
    return [(e["Subject"], json.loads(e["Message"])) for e in envelopes]


def refusals(count: int, at: float) -> None:
    for _ in range(count):
        cloudwatch_metrics.publish(
            ACCOUNT, REGION, "AWS/IoT", "RegisterThingFailed", 1, {"TemplateName": "fleet"}, "Count", at
        )


def test_an_alarm_starts_insufficient_goes_to_alarm_and_back_and_its_topic_hears_each_change(
    aws: dict[str, Any],
) -> None:
    backend = cloudwatch_backends[ACCOUNT][REGION]
    alarm = failures_alarm(aws, encrypted_topic(aws, [CLOUDWATCH_MAY_USE_THE_KEY]))
    assert alarm.state_value == INSUFFICIENT_DATA  # PutMetricAlarm: "immediately set to INSUFFICIENT_DATA"
    now = math.floor(alarm.state_updated_timestamp.timestamp()) + 0.5

    cloudwatch_alarms.evaluate(backend, alarm, now, 60)  # no data, notBreaching: OK
    refusals(6, now)
    cloudwatch_alarms.evaluate(backend, alarm, now + 1, 60)
    assert alarm.state_value == ALARM
    cloudwatch_alarms.evaluate(backend, alarm, now + 5, 60)  # still in the evaluation range (3 periods)
    assert alarm.state_value == ALARM
    cloudwatch_alarms.evaluate(backend, alarm, now + 16, 60)

    (ok_subject, first), (alarm_subject, fired), (_, recovered) = received(aws)
    assert (first["OldStateValue"], first["NewStateValue"]) == (INSUFFICIENT_DATA, OK)
    assert alarm_subject == 'ALARM: "provisioning-failures" in US East (N. Virginia)'
    assert ok_subject == 'OK: "provisioning-failures" in US East (N. Virginia)'
    assert (fired["OldStateValue"], fired["NewStateValue"], recovered["NewStateValue"]) == (OK, ALARM, OK)
    assert fired["NewStateReason"].startswith("Threshold Crossed: 1 datapoint [6.0 (")
    assert fired["NewStateReason"].endswith("was greater than the threshold (5.0).")
    assert {k: fired[k] for k in ("AlarmName", "AlarmDescription", "AWSAccountId", "Region", "AlarmArn")} == {
        "AlarmName": "provisioning-failures",
        "AlarmDescription": "Devices are refused: check the hook's log.",
        "AWSAccountId": ACCOUNT,
        "Region": "US East (N. Virginia)",
        "AlarmArn": alarm.alarm_arn,
    }
    assert fired["Trigger"] | {"Dimensions": None} == {
        "MetricName": "RegisterThingFailed",
        "Namespace": "AWS/IoT",
        "StatisticType": "Statistic",
        "Statistic": "SUM",
        "Unit": None,
        "Dimensions": None,
        "Period": 300,
        "EvaluationPeriods": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 5.0,
        "TreatMissingData": "- TreatMissingData: notBreaching",
        "EvaluateLowSampleCountPercentile": "",
    }
    assert fired["Trigger"]["Dimensions"] == [{"value": "fleet", "name": "TemplateName"}]
    history = aws["cloudwatch"].describe_alarm_history(AlarmName="provisioning-failures", HistoryItemType="StateUpdate")
    assert [h["HistorySummary"] for h in history["AlarmHistoryItems"]] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
    ]
    described = aws["cloudwatch"].describe_alarms(AlarmNames=["provisioning-failures"])["MetricAlarms"][0]
    assert (described["StateValue"], json.loads(described["StateReasonData"])["period"]) == (OK, 300)


def test_an_updated_alarm_keeps_its_state_and_set_alarm_state_notifies(aws: dict[str, Any]) -> None:
    topic = encrypted_topic(aws, [CLOUDWATCH_MAY_USE_THE_KEY])
    failures_alarm(aws, topic)
    aws["cloudwatch"].set_alarm_state(AlarmName="provisioning-failures", StateValue="ALARM", StateReason="test")

    alarm = failures_alarm(aws, topic)  # PutMetricAlarm again: "its state is left unchanged"

    assert (alarm.state_value, alarm.state_reason) == (ALARM, "test")
    ((subject, message),) = received(aws)
    assert (subject.split(":")[0], message["NewStateReason"]) == (ALARM, "test")


def test_a_topic_whose_key_cloudwatch_may_not_use_gets_nothing_and_the_history_says_why(aws: dict[str, Any]) -> None:
    account_only = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    backend = cloudwatch_backends[ACCOUNT][REGION]
    alarm = failures_alarm(aws, encrypted_topic(aws, [account_only]))
    refusals(6, alarm.state_updated_timestamp.timestamp())

    cloudwatch_alarms.evaluate(backend, alarm, alarm.state_updated_timestamp.timestamp() + 1, 60)

    assert alarm.state_value == ALARM
    assert received(aws) == []
    actions = aws["cloudwatch"].describe_alarm_history(AlarmName="provisioning-failures", HistoryItemType="Action")
    (failed,) = actions["AlarmHistoryItems"]
    assert failed["HistorySummary"].startswith("Failed to execute action arn:aws:sns:us-east-1:")
    assert (
        "CloudWatch Alarms does not have authorization to access the SNS topic encryption key"
        in failed["HistorySummary"]
    )


def test_what_the_sandbox_does_not_evaluate_leaves_the_alarm_insufficient_saying_so(aws: dict[str, Any]) -> None:
    backend = cloudwatch_backends[ACCOUNT][REGION]
    aws["cloudwatch"].put_metric_alarm(
        AlarmName="banded",
        EvaluationPeriods=1,
        ComparisonOperator="GreaterThanThreshold",
        Threshold=1,
        Metrics=[
            {"Id": "e", "Expression": "ANOMALY_DETECTION_BAND(m, 2)", "ReturnData": True},
            {
                "Id": "m",
                "ReturnData": False,
                "MetricStat": {
                    "Period": 300,
                    "Stat": "Sum",
                    "Metric": {"Namespace": "AWS/Lambda", "MetricName": "Errors"},
                },
            },
        ],
    )
    alarm = backend.alarms["banded"]

    cloudwatch_alarms.evaluate(backend, alarm, alarm.state_updated_timestamp.timestamp() + 1, 60)

    assert alarm.state_value == INSUFFICIENT_DATA
    assert alarm.state_reason == (
        "Unchecked: metric math function ANOMALY_DETECTION_BAND is not evaluated by the sandbox"
    )


def test_an_alarm_on_a_dynamodb_metric_ignores_missing_data_whatever_it_says_and_fill_brings_it_back(
    aws: dict[str, Any],
) -> None:
    """DynamoDB publishes throttle metrics only while it throttles, and AWS/DynamoDB alarms always ignore
    missing data: a plain alarm stays in ALARM after the throttling ends; FILL(m, 0) returns to OK."""
    backend, cloudwatch = cloudwatch_backends[ACCOUNT][REGION], aws["cloudwatch"]
    metric = {
        "Namespace": "AWS/DynamoDB",
        "MetricName": "WriteThrottleEvents",
        "Dimensions": [{"Name": "TableName", "Value": "registry"}],
    }
    common = {
        "EvaluationPeriods": 1,
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }
    cloudwatch.put_metric_alarm(AlarmName="plain", Statistic="Sum", Period=300, **metric, **common)
    cloudwatch.put_metric_alarm(
        AlarmName="filled",
        **common,
        Metrics=[
            {"Id": "total", "Expression": "FILL(w, 0)", "ReturnData": True},
            {"Id": "w", "ReturnData": False, "MetricStat": {"Period": 300, "Stat": "Sum", "Metric": metric}},
        ],
    )
    plain, filled = backend.alarms["plain"], backend.alarms["filled"]
    now = math.floor(plain.state_updated_timestamp.timestamp()) + 0.5
    assert cloudwatch_alarms.spec_of(plain).treat_missing == "ignore"

    cloudwatch_metrics.dynamodb_throttled(ACCOUNT, REGION, "registry", "UpdateItem")
    for later in (1, 30):
        for alarm in (plain, filled):
            cloudwatch_alarms.evaluate(backend, alarm, now + later, 60)
        if later == 1:
            assert (plain.state_value, filled.state_value) == (ALARM, ALARM)

    assert (plain.state_value, filled.state_value) == (ALARM, OK)
