"""The stack's customer-managed KMS key: registry table, log groups and alert topic encrypt with it."""

from __future__ import annotations

import json

from cdktf_cdktf_provider_aws.kms_alias import KmsAlias
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from iot_fleet.naming import AccountContext


class StackKey(Construct):
    def __init__(self, scope: Construct, id_: str, *, name: str, account: AccountContext, is_prod: bool) -> None:
        super().__init__(scope, id_)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    # The account administers the key; IAM policies then grant use per role.
                    "Sid": "AccountAdministration",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{account.partition}:iam::{account.account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchLogsOfThisAccount",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{account.region}.amazonaws.com"},
                    "Action": [
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "ArnLike": {"kms:EncryptionContext:aws:logs:arn": account.arn("logs", "log-group:*")}
                    },
                },
                {
                    "Sid": "CloudWatchAlarmsPublishToAlertTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account.account_id}},
                },
            ],
        }
        self.key = KmsKey(
            self,
            "key",
            description=f"{name}: device registry, logs and alerts",
            enable_key_rotation=True,
            deletion_window_in_days=30 if is_prod else 7,
            policy=json.dumps(policy),
        )
        KmsAlias(self, "alias", name=f"alias/{name}", target_key_id=self.key.key_id)
