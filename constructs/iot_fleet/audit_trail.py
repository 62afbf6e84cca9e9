"""The audit trail: every thing registry event (created, updated, deleted) into a log group."""

from __future__ import annotations

import json

from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iot_topic_rule import IotTopicRule, IotTopicRuleCloudwatchLogs
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from iot_fleet.log_group import log_group
from iot_fleet.naming import AccountContext

THING_EVENTS = "$aws/events/thing/#"


class AuditTrail(Construct):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        rule_name: str,
        key: KmsKey,
        log_retention_days: int,
        account: AccountContext,
    ) -> None:
        super().__init__(scope, id_)
        self.log_group = log_group(
            self, "logs", name=f"/aws/iot/{prefix}/audit", key=key, retention_days=log_retention_days
        )
        self.role = IamRole(
            self,
            "role",
            name=f"{prefix}-iot-audit-role",
            description="Lets IoT rules write the audit trail and rule errors to their log group",
            assume_role_policy=account.trust_policy("iot.amazonaws.com"),
        )
        self.role_policy = IamRolePolicy(
            self,
            "policy",
            name="write-audit-log",
            role=self.role.id,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                            "Resource": [self.log_group.arn, f"{self.log_group.arn}:*"],
                        }
                    ],
                }
            ),
        )
        self.rule = IotTopicRule(
            self,
            "rule",
            name=rule_name,
            description="Audit trail of thing registry events",
            enabled=True,
            sql=f"SELECT *, topic() AS topic FROM '{THING_EVENTS}'",  # noqa: S608 - IoT rule SQL from constants, not input
            sql_version="2016-03-23",
            cloudwatch_logs=[IotTopicRuleCloudwatchLogs(log_group_name=self.log_group.name, role_arn=self.role.arn)],
            # The role must hold its policy before the rule writes as it (IAM checks every write).
            depends_on=[self.role_policy],
        )
