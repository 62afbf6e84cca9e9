"""Certificate rotation: devices publish their rotation requests and confirmations on their own
fleet/rotation/<thing>/... topics; a topic rule hands each to the rotation function
(lambda/certificate_rotation), adding who sent it, and the function answers on the device's topics."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.iot_topic_rule import (
    IotTopicRule,
    IotTopicRuleErrorAction,
    IotTopicRuleErrorActionCloudwatchLogs,
    IotTopicRuleLambda,
)
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_function_event_invoke_config import LambdaFunctionEventInvokeConfig
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from fleet_shared.registry import CERTIFICATE_HISTORY_LIMIT
from iot_fleet.audit_trail import AuditTrail
from iot_fleet.config import StackConfig
from iot_fleet.documents import ROTATION_SQL
from iot_fleet.fleet_function import LIST_ATTACHED_POLICIES, FleetFunction, FunctionSettings
from iot_fleet.monitoring import Alarm, Metric

# How long a rotation message may wait in Lambda's queue (AWS's smallest maximum event age is 60 s).
ROTATION_EVENT_AGE_SECONDS = 120


def rotation_function(scope: Construct, settings: FunctionSettings, config: StackConfig) -> LambdaFunction:
    account, table = settings.account, settings.table
    function = FleetFunction(
        scope,
        "certificate-rotation",
        function_name=f"{config.prefix}-certificate-rotation",
        source="certificate_rotation",
        handler="certificate_rotation.handler",
        description="Issues a provisioned device a certificate from its CSR; retires the old one once confirmed",
        environment={
            "TABLE_NAME": table.name,
            "IOT_DATA_ENDPOINT": settings.iot_data_endpoint,
            "ROTATION_INTERVAL_SECONDS": str(config.rotation_interval_minutes * 60),
            "CERTIFICATE_HISTORY_LIMIT": str(CERTIFICATE_HISTORY_LIMIT),
        },
        # Each request is about ten IoT control-plane calls: a flood from many devices at once may
        # not spend the account's IoT quotas or Lambda concurrency (more events wait in Lambda's queue).
        reserved_concurrency=config.rotation_concurrency,
        statements=[
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
            settings.registry_key_use(),
            {"Effect": "Allow", "Action": ["iot:CreateCertificateFromCsr"], "Resource": "*"},  # no resource type
            LIST_ATTACHED_POLICIES,
            {
                "Effect": "Allow",
                "Action": [
                    "iot:DescribeCertificate",
                    "iot:UpdateCertificate",
                    "iot:DeleteCertificate",
                    "iot:AttachPolicy",
                    "iot:DetachPolicy",
                    "iot:AttachThingPrincipal",
                    "iot:DetachThingPrincipal",
                ],
                "Resource": account.arn("iot", "cert/*"),
            },
            {
                "Effect": "Allow",
                "Action": ["iot:DescribeThing"],
                "Resource": account.arn("iot", "thing/*"),
            },
            {  # answers go only to the rotation topics
                "Effect": "Allow",
                "Action": ["iot:Publish"],
                "Resource": account.arn("iot", "topic/fleet/rotation/*"),
            },
        ],
        account=account,
        key=settings.key,
        log_retention_days=settings.log_retention_days,
        timeout=30,
        extra_acknowledgements={
            "CKV_AWS_116": "A failed rotation step changes nothing the device relies on: its current certificate "
            "keeps working, it asks again, and the reconciler removes a new certificate never confirmed.",
        },
    ).function
    # The device asks again itself (a repeat keeps its requestId): Lambda's own retries of a failed
    # event would spend the request's tries and answer a device that had given up. An event queued
    # behind RotationConcurrency longer than a device waits is dropped, not run late (a late request
    # would take the device's slot for a certificate nobody waits for).
    LambdaFunctionEventInvokeConfig(
        scope,
        "certificate-rotation-retries",
        function_name=function.function_name,
        maximum_retry_attempts=0,
        maximum_event_age_in_seconds=ROTATION_EVENT_AGE_SECONDS,
    )
    return function


class CertificateRotation(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, rule_name: str, function: LambdaFunction, audit: AuditTrail
    ) -> None:
        super().__init__(scope, id_)
        self.rule = IotTopicRule(
            self,
            "rule",
            name=rule_name,
            description="Certificate rotation requests and confirmations from devices, to the rotation function",
            enabled=True,
            sql=ROTATION_SQL,
            sql_version="2016-03-23",
            lambda_=[IotTopicRuleLambda(function_arn=function.arn)],
            error_action=IotTopicRuleErrorAction(
                cloudwatch_logs=IotTopicRuleErrorActionCloudwatchLogs(
                    log_group_name=audit.log_group.name, role_arn=audit.role.arn
                )
            ),
            depends_on=[audit.role_policy],  # the error action writes as the audit role
        )
        self.permission = LambdaPermission(
            self,
            "permission",
            statement_id="AllowCertificateRotationRule",
            action="lambda:InvokeFunction",
            function_name=function.function_name,
            principal="iot.amazonaws.com",
            source_arn=self.rule.arn,
        )


def rotation_alarm(function_name: str) -> Alarm:
    """Its errors: a rotation step that did not finish."""
    return Alarm(
        "certificate-rotation-errors",
        "The certificate-rotation function failed (Lambda Errors): a device's rotation step did not finish. "
        "Mostly the device was answered InternalFailure (no answer on a timeout) and its current certificate "
        "still works; a confirm that failed after the registry took the new certificate leaves that one "
        "current; a request that failed after taking the device's slot may be repeated only with its own "
        "requestId until RotationIntervalMinutes passes. Read the function's log group for the error and "
        "the serial; check the registry table, IoT's certificate APIs and the role's permissions; `fleet "
        "show SERIAL` says which certificate is current. The reconciler removes one never confirmed.",
        0,
        Metric("AWS/Lambda", "Errors", {"FunctionName": function_name}),
    )
