"""Alerts and the dashboard (MonitoringEnabled): alarms that can fire, into an encrypted SNS topic.

Each alarm watches a metric its source actually publishes with exactly these dimensions (CloudWatch
matches the whole dimension set): IoT's RegisterThingFailed by TemplateName, Lambda's Errors by
FunctionName, the hook's own ProvisioningErrors (its embedded metrics; it catches every exception,
so Lambda never counts a registry outage), and DynamoDB's Read/WriteThrottleEvents by TableName
(its ThrottledRequests carries an Operation dimension too). The sandbox evaluates them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdktf_cdktf_provider_aws.cloudwatch_dashboard import CloudwatchDashboard
from cdktf_cdktf_provider_aws.cloudwatch_metric_alarm import (
    CloudwatchMetricAlarm,
    CloudwatchMetricAlarmMetricQuery,
    CloudwatchMetricAlarmMetricQueryMetric,
)
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.sns_topic import SnsTopic
from cdktf_cdktf_provider_aws.sns_topic_subscription import SnsTopicSubscription
from constructs import Construct

FIVE_MINUTES = 300
# Denials in 5 minutes before serial-guessing fires: serials not enrolled, failed attestations,
# retries of a serial another attempt holds or that already provisioned (someone retrying a known one),
# and serials whose thing name is another device's.
SERIAL_GUESSES = 20
GUESSED = {
    "unknown": "NOT_ENROLLED",
    "attestation": "ATTESTATION_FAILED",
    "inprogress": "PROVISIONING_IN_PROGRESS",
    "provisioned": "ALREADY_PROVISIONED",
    "taken": "THING_NAME_TAKEN",
}


@dataclass(frozen=True)
class Metric:
    namespace: str
    name: str
    dimensions: Mapping[str, str]


@dataclass(frozen=True)
class Alarm:
    """One alarm: a statistic of a metric (the Sum unless said) over a period (five minutes unless
    said), or of a metric-math expression over metrics (each referred to by its id), compared with a
    threshold. The description says what happened
    and what to do: it is the first line an operator reads in the notification."""

    name: str
    description: str
    threshold: float
    metric: Metric | None = None
    expression: str = ""
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    comparison: str = "GreaterThanThreshold"
    statistic: str = "Sum"
    period: int = FIVE_MINUTES  # seconds
    treat_missing_data: str = "notBreaching"
    notify_insufficient_data: bool = False  # also notify when the alarm has no data to decide on

    def __post_init__(self) -> None:
        if (self.metric is None) == (not self.expression):
            raise ValueError(f"alarm {self.name}: give either a metric or an expression over metrics")


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        region: str,
        key: KmsKey,
        alert_email: str,
        template_name: str,
        table_name: str,
        hook_function_name: str,
        events_function_name: str,
        reconciler_function_name: str,
        rotation_function_name: str,
        function_alarms: Sequence[Alarm],
        claim_certificate_ids: Mapping[str, str],
        claim_expiry_warning_days: int,
        metrics_namespace: str,
    ) -> None:
        """`function_alarms`: each function's own, defined with the function; `claim_certificate_ids`: each
        claim certificate's id by a short name for its alarm."""
        super().__init__(scope, id_)
        self.topic = SnsTopic(self, "alerts", name=f"{prefix}-alerts", kms_master_key_id=key.arn)
        if alert_email:
            SnsTopicSubscription(self, "email", topic_arn=self.topic.arn, protocol="email", endpoint=alert_email)
        alarms = [
            *function_alarms,
            Alarm(
                "provisioning-failures",
                "More than 5 RegisterThing requests failed in 5 minutes: devices are being refused. Check the "
                "hook's denials by Reason on the dashboard and in its log group: NOT_ENROLLED or DEVICE_TYPE_MISMATCH "
                "bursts mean a manifest not enrolled or someone probing with the claim certificate; REGISTRY_ERROR "
                "means the registry is failing (see hook-denied-on-errors); no denials means the account's "
                "RegisterThing rate is taken (throttling: provision fewer devices at once).",
                5,
                Metric("AWS/IoT", "RegisterThingFailed", {"TemplateName": template_name}),
            ),
            Alarm(
                "registry-throttling",
                "The device registry table throttled reads or writes (Read/WriteThrottleEvents): the hook denies "
                "devices with REGISTRY_ERROR while it lasts. Check the table's consumed capacity for a hot key or a "
                "bulk job (enrollment, scans) running against it, and slow that job down.",
                0,
                # DynamoDB publishes throttle metrics only while it throttles, and alarms on AWS/DynamoDB always
                # ignore missing data: FILL makes the quiet periods 0, so the alarm returns to OK.
                expression="FILL(reads, 0) + FILL(writes, 0)",
                metrics={
                    "reads": Metric("AWS/DynamoDB", "ReadThrottleEvents", {"TableName": table_name}),
                    "writes": Metric("AWS/DynamoDB", "WriteThrottleEvents", {"TableName": table_name}),
                },
            ),
            Alarm(
                "serial-guessing",
                f"More than {SERIAL_GUESSES} provisioning attempts in 5 minutes were denied as a guess or a takeover "
                "would be: a serial not enrolled (NOT_ENROLLED), a failed attestation (ATTESTATION_FAILED), a serial "
                "another attempt holds (PROVISIONING_IN_PROGRESS) or that already provisioned (ALREADY_PROVISIONED), "
                "or a thing name that is another device's (THING_NAME_TAKEN). Someone holding the claim certificate "
                "may be guessing serials or retrying a known device's; or a batch of devices was shipped before its "
                "manifest (or its factory keys) was enrolled, or is retrying registrations throttled or left "
                "unanswered. Check the hook's log lines with those reasons (serials, "
                "client ids, claim certificate); enroll the manifest, or rotate the claim certificate if it leaked "
                "(fleet rotate-claim).",
                SERIAL_GUESSES,
                # Each series exists only once the hook has denied for that reason: FILL counts its absence as 0.
                expression=" + ".join(f"FILL({name}, 0)" for name in GUESSED),
                metrics={
                    name: Metric(metrics_namespace, "ProvisioningRequests", {"Decision": "deny", "Reason": reason})
                    for name, reason in GUESSED.items()
                },
            ),
            *(
                Alarm(
                    f"{name}-expiry",
                    f"A claim certificate ({name}) expires in fewer than {claim_expiry_warning_days} days: devices "
                    "still carrying it will no longer provision. Rotate it (fleet rotate-claim, then the "
                    "factory steps in docs/operations.md) before it expires. Check which devices are still to be made "
                    "with it.",
                    claim_expiry_warning_days,
                    Metric(metrics_namespace, "ClaimCertificateDaysToExpiry", {"CertificateId": certificate_id}),
                    comparison="LessThanThreshold",
                    statistic="Minimum",
                    # The reconciler publishes the figure every 5 minutes: over an hour, one skipped run
                    # changes nothing. With no figure for a whole hour (the reconciler stopped) the alarm
                    # goes to INSUFFICIENT_DATA and says so, rather than to OK as notBreaching would.
                    period=3600,
                    treat_missing_data="missing",
                    notify_insufficient_data=True,
                )
                for name, certificate_id in claim_certificate_ids.items()
            ),
        ]
        self.alarms = {alarm.name: self._alarm(prefix, alarm) for alarm in alarms}
        self.dashboard = CloudwatchDashboard(
            self,
            "dashboard",
            dashboard_name=f"{prefix}-provisioning",
            dashboard_body=json.dumps(
                _dashboard(
                    region,
                    template_name,
                    table_name,
                    hook_function_name,
                    events_function_name,
                    reconciler_function_name,
                    rotation_function_name,
                    metrics_namespace,
                )
            ),
        )

    def _alarm(self, prefix: str, alarm: Alarm) -> CloudwatchMetricAlarm:
        if alarm.metric is not None:
            watched: dict[str, Any] = {
                "namespace": alarm.metric.namespace,
                "metric_name": alarm.metric.name,
                "dimensions": dict(alarm.metric.dimensions) or None,
                "statistic": alarm.statistic,
                "period": alarm.period,
            }
        else:
            queries = [
                CloudwatchMetricAlarmMetricQuery(
                    id="total", expression=alarm.expression, label=alarm.name, return_data=True
                )
            ] + [
                CloudwatchMetricAlarmMetricQuery(
                    id=query_id,
                    metric=CloudwatchMetricAlarmMetricQueryMetric(
                        namespace=metric.namespace,
                        metric_name=metric.name,
                        dimensions=dict(metric.dimensions),
                        period=alarm.period,
                        stat="Sum",
                    ),
                    return_data=False,
                )
                for query_id, metric in alarm.metrics.items()
            ]
            watched = {"metric_query": queries}
        return CloudwatchMetricAlarm(
            self,
            alarm.name,
            alarm_name=f"{prefix}-{alarm.name}",
            alarm_description=alarm.description,
            evaluation_periods=1,
            threshold=alarm.threshold,
            comparison_operator=alarm.comparison,
            treat_missing_data=alarm.treat_missing_data,
            actions_enabled=True,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            insufficient_data_actions=[self.topic.arn] if alarm.notify_insufficient_data else None,
            **watched,
        )


def _dashboard(
    region: str, template: str, table: str, hook: str, events: str, reconciler: str, rotation: str, namespace: str
) -> dict[str, Any]:
    def widget(title: str, metrics: list[list[Any]], x: int, y: int, stat: str = "Sum") -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {"title": title, "region": region, "stat": stat, "period": FIVE_MINUTES, "metrics": metrics},
        }

    return {
        "widgets": [
            widget(
                "Provisioning: successes and failures",
                [
                    ["AWS/IoT", "RegisterThingFailed", "TemplateName", template],
                    ["AWS/IoT", "CreateKeysAndCertificateFailed"],
                    ["AWS/IoT", "CreateCertificateFromCsrFailed"],
                    [namespace, "ProvisioningRequests", "Decision", "allow", "Reason", "ALLOWED"],
                    [namespace, "ProvisioningErrors"],
                ],
                0,
                0,
            ),
            widget(
                "Security: denied provisioning attempts by reason",
                [
                    [
                        {
                            "expression": f"SEARCH('{{{namespace},Decision,Reason}} Decision=\"deny\"', 'Sum', 300)",
                            "id": "denied",
                            "label": "denied",
                        }
                    ],
                ],
                12,
                0,
            ),
            widget(
                "Lambda: invocations, errors, throttles",
                [
                    ["AWS/Lambda", "Invocations", "FunctionName", hook],
                    ["AWS/Lambda", "Errors", "FunctionName", hook],
                    ["AWS/Lambda", "Throttles", "FunctionName", hook],
                    ["AWS/Lambda", "Invocations", "FunctionName", events],
                    ["AWS/Lambda", "Errors", "FunctionName", events],
                ],
                0,
                6,
            ),
            widget(
                "Device registry: requests and throttling",
                [
                    ["AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName", table],
                    ["AWS/DynamoDB", "ConsumedReadCapacityUnits", "TableName", table],
                    ["AWS/DynamoDB", "ReadThrottleEvents", "TableName", table],
                    ["AWS/DynamoDB", "WriteThrottleEvents", "TableName", table],
                    [
                        {
                            # ThrottledRequests exists only per TableName and Operation: one line per operation.
                            "expression": 'SEARCH(\'{AWS/DynamoDB,TableName,Operation} MetricName="ThrottledRequests" '
                            f"TableName=\"{table}\"', 'Sum', {FIVE_MINUTES})",
                            "id": "throttled",
                            "label": "throttled requests",
                        }
                    ],
                ],
                12,
                6,
            ),
            widget(
                "Fleet: devices by status (the reconciler counts them every run)",
                [
                    [
                        {
                            "expression": f"SEARCH('{{{namespace},Status}} MetricName=\"Devices\"', 'Maximum', 300)",
                            "id": "status",
                            "label": "devices",
                        }
                    ],
                    [
                        {
                            "expression": f"SEARCH('{{{namespace},Status,DeviceType}} MetricName=\"Devices\"', "
                            "'Maximum', 300)",
                            "id": "bytype",
                            "label": "devices by type",
                        }
                    ],
                ],
                0,
                12,
                stat="Maximum",
            ),
            widget(
                "Hook duration (p50, p99) and reconciler outcomes",
                [
                    ["AWS/Lambda", "Duration", "FunctionName", hook, {"stat": "p50", "label": "hook p50 ms"}],
                    ["AWS/Lambda", "Duration", "FunctionName", hook, {"stat": "p99", "label": "hook p99 ms"}],
                    *(
                        [namespace, "ReconcilerOutcomes", "Outcome", outcome]
                        for outcome in ("completed", "failed", "revoked", "abandoned")
                    ),
                    ["AWS/Lambda", "Errors", "FunctionName", reconciler],
                ],
                12,
                12,
            ),
            widget(
                "Certificate rotation: invocations, errors, throttles",
                [
                    ["AWS/Lambda", "Invocations", "FunctionName", rotation],
                    ["AWS/Lambda", "Errors", "FunctionName", rotation],
                    ["AWS/Lambda", "Throttles", "FunctionName", rotation],
                ],
                0,
                18,
            ),
        ]
    }
