"""The fleet-provisioning template, the role IoT assumes to apply it, and IoT's right to call the hook."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from cdktf import DataResource, LocalExecProvisioner
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iot_provisioning_template import IotProvisioningTemplate
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from iot_fleet import documents
from iot_fleet.device_fleet import DeviceFleet
from iot_fleet.naming import AccountContext

HOOK_PAYLOAD_VERSION = "2020-04-01"
TEMPLATE_BODY_MAX = 10_240
PRUNE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prune_template_versions.py"

# What applying the template needs (the thing, its groups, the certificate, the policy), and no more.
PROVISIONING_ACTIONS = [
    "iot:CreateThing",
    "iot:DescribeThing",
    "iot:UpdateThing",
    "iot:DescribeThingType",
    "iot:AddThingToThingGroup",
    "iot:DescribeThingGroup",
    "iot:ListThingGroupsForThing",
    "iot:UpdateThingGroupsForThing",
    "iot:AttachThingPrincipal",
    "iot:ListThingPrincipals",
    "iot:ListPrincipalThings",
    "iot:DescribeCertificate",
    "iot:UpdateCertificate",
    "iot:AttachPolicy",
    "iot:AttachPrincipalPolicy",
    "iot:ListAttachedPolicies",
    "iot:ListPrincipalPolicies",
    "iot:GetPolicy",
]


class FleetProvisioning(Construct):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        template_name: str,
        prefix: str,
        fleet: DeviceFleet,
        hook: LambdaFunction,
        account: AccountContext,
        region: str,
        aws_environment: Mapping[str, str],
    ) -> None:
        """`aws_environment`: what the pruning script needs besides the deployer's own environment to
        reach the same account as the provider (the sandbox's endpoint and keys; nothing for AWS)."""
        super().__init__(scope, id_)
        self.role = IamRole(
            self,
            "role",
            name=f"{prefix}-provisioning-role",
            description="Assumed by AWS IoT to apply the fleet-provisioning template",
            assume_role_policy=account.trust_policy("iot.amazonaws.com"),
        )
        resources = [
            account.arn("iot", "thing/*"),
            account.arn("iot", "cert/*"),
            fleet.thing_type.arn,
            fleet.root_group.arn,
            *(group.arn for group in fleet.groups.values()),
            *(policy.arn for policy in fleet.policies.values()),
        ]
        self.role_policy = IamRolePolicy(
            self,
            "policy",
            name="provisioning-policy",  # the recipe's troubleshooting command reads it by this name
            role=self.role.id,
            policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": PROVISIONING_ACTIONS, "Resource": resources}],
                }
            ),
        )
        self.body = documents.provisioning_template(
            thing_type_name=fleet.thing_type_name,
            per_type={
                name: {"PolicyName": fleet.policy_names[name], "ThingGroup": fleet.group_names[name]}
                for name in fleet.groups
            },
        )
        body_text = documents.terraform_string(self.body)
        if len(body_text) > TEMPLATE_BODY_MAX:
            raise ValueError(
                f"AllowedDeviceTypes: the template body would be {len(body_text)} characters; "
                f"AWS allows {TEMPLATE_BODY_MAX}. Allow fewer device types per stack."
            )
        # AWS keeps 5 versions of a template and the provider never deletes one: before each change of
        # the body (this resource is replaced with it, and the template depends on it), prune to 4.
        self.version_pruning = DataResource(
            self,
            "version-pruning",
            triggers_replace={"template_body": template_revision(body_text)},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    command=shlex.join(
                        [
                            sys.executable,
                            str(PRUNE_SCRIPT),
                            "--template-name",
                            template_name,
                            "--region",
                            region,
                            "--keep",
                            "4",
                        ]
                    ),
                    environment=dict(aws_environment),
                )
            ],
        )
        self.template = IotProvisioningTemplate(
            self,
            "template",
            name=template_name,
            description=f"Fleet provisioning by claim for {prefix}",
            type="FLEET_PROVISIONING",
            enabled=True,
            provisioning_role_arn=self.role.arn,
            template_body=body_text,
            pre_provisioning_hook={"target_arn": hook.arn, "payload_version": HOOK_PAYLOAD_VERSION},
            # The names in the body must exist before the template is used.
            depends_on=[
                self.role_policy,
                fleet.thing_type,
                *fleet.groups.values(),
                *fleet.policies.values(),
                self.version_pruning,
            ],
        )
        self.hook_permission = LambdaPermission(
            self,
            "hook-permission",
            statement_id="AllowIoTProvisioningTemplate",
            action="lambda:InvokeFunction",
            function_name=hook.function_name,
            principal="iot.amazonaws.com",
            source_arn=self.template.arn,
        )


def template_revision(body_text: str) -> str:
    """Names one template body: its change replaces the pruning resource."""
    return hashlib.sha256(body_text.encode()).hexdigest()[:16]
