"""Terraform references shared by the constructs: partition, region and account of the target."""

from __future__ import annotations

import json

from cdktf_cdktf_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktf_cdktf_provider_aws.data_aws_partition import DataAwsPartition
from cdktf_cdktf_provider_aws.data_aws_region import DataAwsRegion
from constructs import Construct


class AccountContext(Construct):
    """Where the stack is deployed, for building ARNs without hard-coding any of it."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        self.partition = DataAwsPartition(self, "partition").partition
        self.region = DataAwsRegion(self, "region").name
        self.account_id = DataAwsCallerIdentity(self, "caller").account_id

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account_id if account else ''}:{resource}"
        )

    def trust_policy(self, service: str) -> str:
        """Assume-role policy for an AWS service principal, confined to this account (confused deputy)."""
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": self.account_id}},
                    }
                ],
            }
        )

    @property
    def iot_arn_prefix(self) -> str:
        return self.arn("iot", "")
