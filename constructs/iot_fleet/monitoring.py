"""Alerts and the dashboard (MonitoringEnabled): the recipe's default alerts into an encrypted SNS topic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdktf_cdktf_provider_aws.cloudwatch_dashboard import CloudwatchDashboard
from cdktf_cdktf_provider_aws.cloudwatch_metric_alarm import CloudwatchMetricAlarm
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.sns_topic import SnsTopic
from cdktf_cdktf_provider_aws.sns_topic_subscription import SnsTopicSubscription
from constructs import Construct

FIVE_MINUTES = 300


@dataclass(frozen=True)
class Alarm:
    name: str
    description: str
    namespace: str
    metric: str
    dimensions: Mapping[str, str]
    threshold: float
    comparison: str = "GreaterThanThreshold"


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
        metrics_namespace: str,
    ) -> None:
        super().__init__(scope, id_)
        self.topic = SnsTopic(self, "alerts", name=f"{prefix}-alerts", kms_master_key_id=key.arn)
        if alert_email:
            SnsTopicSubscription(self, "email", topic_arn=self.topic.arn, protocol="email", endpoint=alert_email)
        alarms = [
            Alarm(
                "provisioning-failures",
                "High provisioning failures: more than 5 RegisterThing failures in 5 minutes",
                "AWS/IoT",
                "RegisterThingFailed",
                {"TemplateName": template_name},
                5,
            ),
            Alarm(
                "hook-errors",
                "The pre-provisioning hook raised errors (devices are being denied)",
                "AWS/Lambda",
                "Errors",
                {"FunctionName": hook_function_name},
                0,
            ),
            Alarm(
                "registry-events-errors",
                "The registry-events function failed: devices may stay in 'provisioning'",
                "AWS/Lambda",
                "Errors",
                {"FunctionName": events_function_name},
                0,
            ),
            Alarm(
                "registry-throttling",
                "The device registry table throttled requests",
                "AWS/DynamoDB",
                "ThrottledRequests",
                {"TableName": table_name},
                0,
            ),
        ]
        self.alarms = {
            alarm.name: CloudwatchMetricAlarm(
                self,
                alarm.name,
                alarm_name=f"{prefix}-{alarm.name}",
                alarm_description=alarm.description,
                namespace=alarm.namespace,
                metric_name=alarm.metric,
                dimensions=dict(alarm.dimensions),
                statistic="Sum",
                period=FIVE_MINUTES,
                evaluation_periods=1,
                threshold=alarm.threshold,
                comparison_operator=alarm.comparison,
                treat_missing_data="notBreaching",
                actions_enabled=True,
                alarm_actions=[self.topic.arn],
                ok_actions=[self.topic.arn],
            )
            for alarm in alarms
        }
        self.dashboard = CloudwatchDashboard(
            self,
            "dashboard",
            dashboard_name=f"{prefix}-provisioning",
            dashboard_body=json.dumps(
                _dashboard(
                    region, template_name, table_name, hook_function_name, events_function_name, metrics_namespace
                )
            ),
        )


def _dashboard(region: str, template: str, table: str, hook: str, events: str, namespace: str) -> dict[str, Any]:
    def widget(title: str, metrics: list[list[Any]], x: int, y: int) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {"title": title, "region": region, "stat": "Sum", "period": FIVE_MINUTES, "metrics": metrics},
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
                    ["AWS/DynamoDB", "ThrottledRequests", "TableName", table],
                ],
                12,
                6,
            ),
        ]
    }
