"""The fleet-provisioning template, the role IoT assumes to apply it, and IoT's right to call the hook."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.iot_provisioning_template import IotProvisioningTemplate
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from iot_fleet import documents
from iot_fleet.deploy_scripts import deploy_script
from iot_fleet.device_fleet import DeviceFleet
from iot_fleet.naming import AccountContext

HOOK_PAYLOAD_VERSION = "2020-04-01"
TEMPLATE_BODY_MAX = 10_240

# The provisioning role. AWS documents the managed policy service-role/AWSIoTThingsRegistration
# (its actions on Resource "*") for it, and the role has it attached: IoT's own calls while applying a
# template are not documented action by action, so a narrower grant is a bet that cannot be checked
# without AWS. The inline policy "provisioning-policy" (which the recipe's troubleshooting command
# reads) states what this template needs, each action on this stack's resources of the types the
# Service Authorization Reference lists for it, and "*" for the actions it lists none for (checked at
# synth: tests/infra/test_iam_reference.py); on AWS the managed policy already grants all of it.
# What the sandbox checks each step against: sandbox/iot_data_plane/provisioning_permissions.py.
MANAGED_POLICY = "service-role/AWSIoTThingsRegistration"
THING_ACTIONS = [
    "iot:CreateThing",
    "iot:DescribeThing",
    "iot:UpdateThing",
    "iot:ListThingGroupsForThing",
    "iot:ListThingPrincipals",
]
MEMBERSHIP_ACTIONS = ["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup", "iot:UpdateThingGroupsForThing"]
CERTIFICATE_ACTIONS = [
    "iot:DescribeCertificate",
    "iot:UpdateCertificate",
    "iot:AttachThingPrincipal",
    "iot:DetachThingPrincipal",
    "iot:AttachPolicy",
    "iot:DetachPolicy",
    "iot:AttachPrincipalPolicy",
    "iot:ListPrincipalThings",
]
POLICY_ACTIONS = ["iot:GetPolicy", "iot:CreatePolicy", "iot:ListTargetsForPolicy"]
# Read-only lists the Service Authorization Reference gives no resource type, so only "*" grants them
# (the IoT Developer Guide's table names resource types for them; "*" works under either reading).
RESOURCELESS_ACTIONS = ["iot:ListAttachedPolicies", "iot:ListPrincipalPolicies", "iot:ListPolicyPrincipals"]
PROVISIONING_ACTIONS = [
    *THING_ACTIONS,
    *MEMBERSHIP_ACTIONS,
    "iot:DescribeThingGroup",
    "iot:DescribeThingType",
    *CERTIFICATE_ACTIONS,
    *POLICY_ACTIONS,
    *RESOURCELESS_ACTIONS,
    "iot:RegisterThing",
]


def provisioning_role_policy(
    *, things: str, certificates: str, thing_type: str, groups: list[str], policies: list[str]
) -> dict[str, Any]:
    """The provisioning role's policy: each action on only the resources of its types."""

    def allow(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
        return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}

    return {
        "Version": "2012-10-17",
        "Statement": [
            allow("Things", THING_ACTIONS, [things]),
            allow("GroupMembership", MEMBERSHIP_ACTIONS, [things, *groups]),
            allow("ThingGroups", ["iot:DescribeThingGroup"], groups),
            allow("ThingType", ["iot:DescribeThingType"], [thing_type]),
            allow("Certificates", CERTIFICATE_ACTIONS, [certificates]),
            allow("Policies", POLICY_ACTIONS, policies),
            allow("ResourcelessLists", RESOURCELESS_ACTIONS, ["*"]),
            allow("RegisterThing", ["iot:RegisterThing"], ["*"]),  # it has no resource type
        ],
    }


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
        self.role_policy = IamRolePolicy(
            self,
            "policy",
            name="provisioning-policy",  # the recipe's troubleshooting command reads it by this name
            role=self.role.id,
            policy=json.dumps(
                provisioning_role_policy(
                    things=account.arn("iot", "thing/*"),
                    certificates=account.arn("iot", "cert/*"),
                    thing_type=fleet.thing_type.arn,
                    groups=[group.arn for group in fleet.groups.values()],  # the groups devices join
                    policies=[policy.arn for policy in fleet.policies.values()],
                )
            ),
        )
        self.managed_policy = IamRolePolicyAttachment(
            self,
            "managed-policy",
            role=self.role.name,
            policy_arn=f"arn:{account.partition}:iam::aws:policy/{MANAGED_POLICY}",
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
        # AWS keeps 5 versions of a template and the provider never deletes one: before each change of the
        # body (this resource is replaced with it, and the template depends on it), prune to 4. The script
        # travels with the synthesized stack as an asset; the deploying machine runs it with the Python
        # that synthesized the stack when it has that file, else with `python3` (which needs boto3).
        self.version_pruning = deploy_script(
            self,
            "version-pruning",
            script="prune_template_versions.py",
            arguments=["--template-name", template_name, "--region", region, "--keep", "4"],
            triggers={"template_body": template_revision(body_text)},
            aws_environment=aws_environment,
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
                self.managed_policy,
                fleet.thing_type,
                *fleet.groups.values(),
                *fleet.policies.values(),
                self.version_pruning,
            ],
        )
        # AWS's hook page asks for "source-arn or source-account" but does not say what IoT sets as
        # aws:SourceArn when it invokes a hook: the account, which IoT sets whatever the ARN is, works
        # under every reading (not verified on AWS; docs/sandbox.md). It lets the account's other IoT
        # resources reach the hook too, which refuses any template but this one (docs/security.md).
        self.hook_permission = LambdaPermission(
            self,
            "hook-permission",
            statement_id="AllowIoTProvisioningTemplate",
            action="lambda:InvokeFunction",
            function_name=hook.function_name,
            principal="iot.amazonaws.com",
            source_account=account.account_id,
        )


def template_revision(body_text: str) -> str:
    """Names one template body: its change replaces the pruning resource."""
    return hashlib.sha256(body_text.encode()).hexdigest()[:16]
