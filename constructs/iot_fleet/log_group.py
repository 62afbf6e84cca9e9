"""A KMS-encrypted CloudWatch log group with the operator's retention."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from iot_fleet.acknowledge import acknowledge


def log_group(scope: Construct, id_: str, *, name: str, key: KmsKey, retention_days: int) -> CloudwatchLogGroup:
    group = CloudwatchLogGroup(scope, id_, name=name, retention_in_days=retention_days, kms_key_id=key.arn)
    acknowledge(group, CKV_AWS_338="Retention is the operator's LogRetentionDays parameter (default 30 days).")
    return group
