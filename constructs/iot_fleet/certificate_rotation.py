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
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from iot_fleet.audit_trail import AuditTrail
from iot_fleet.documents import ROTATION_SQL


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
