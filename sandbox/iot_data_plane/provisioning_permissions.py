"""What applying a fleet-provisioning template asks of the template's provisioning role: per step of
applying it, the IAM action and the resource it is checked on, with the sources.

AWS documents the provisioning role only by its managed policy, service-role/AWSIoTThingsRegistration
(attach it to a role that trusts iot.amazonaws.com), not which of the policy's actions each step
needs; the steps below are the API calls applying this kind of template amounts to, and which
resources AWS authorizes each action against is the Service Authorization Reference's. The
sandbox checks exactly these, all before it changes anything (see fleet_provisioning).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MANAGED_POLICY = "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSIoTThingsRegistration.html"
AUTHORIZATION_REFERENCE = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html"
TEMPLATE_RESOURCES = "https://docs.aws.amazon.com/iot/latest/developerguide/provision-template.html#resources-section"
PROVISIONING_ROLE = "https://docs.aws.amazon.com/iot/latest/developerguide/provision-wo-cert.html"
REGISTER_THING = "https://docs.aws.amazon.com/iot/latest/apireference/API_RegisterThing.html"


def _managed_policy_actions() -> tuple[str, ...]:
    """AWSIoTThingsRegistration's actions, from the AWS managed policies moto ships (AWS's text)."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    document = json.loads(aws_managed_policies_data)["AWSIoTThingsRegistration"]["Document"]
    return tuple(action for statement in document["Statement"] for action in statement["Action"])


# One statement, Resource "*".
MANAGED_POLICY_ACTIONS = _managed_policy_actions()


@dataclass(frozen=True)
class Permission:
    step: str  # what applying the template does
    template_resource: str  # the template's resource type the step belongs to
    when: str  # when the step happens
    action: str
    # The ARN(s) the request names: thing, thingtype, thinggroup, policy, cert, or *. Which of them AWS
    # authorizes the action against is the Service Authorization Reference's (sandbox.iam.authorization_reference).
    checked_on: tuple[str, ...]
    sources: tuple[str, ...] = (MANAGED_POLICY, AUTHORIZATION_REFERENCE)


# In the order the sandbox applies them: every read first, then the writes.
TEMPLATE_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "provision a thing from the template",
        "(template)",
        "always",
        "iot:RegisterThing",
        ("*",),
        (MANAGED_POLICY, AUTHORIZATION_REFERENCE, REGISTER_THING),
    ),
    Permission("look the thing up", "AWS::IoT::Thing", "always", "iot:DescribeThing", ("thing",)),
    Permission(
        "read its thing type",
        "AWS::IoT::Thing",
        "ThingTypeName given",
        "iot:DescribeThingType",
        ("thingtype",),
    ),
    Permission(
        "read each of its thing groups",
        "AWS::IoT::Thing",
        "ThingGroups given",
        "iot:DescribeThingGroup",
        ("thinggroup",),
    ),
    Permission("read the policy it names", "AWS::IoT::Policy", "PolicyName given", "iot:GetPolicy", ("policy",)),
    Permission(
        "read the device's certificate",
        "AWS::IoT::Certificate",
        "CertificateId given",
        "iot:DescribeCertificate",
        ("cert",),
    ),
    Permission(
        "create the thing",
        "AWS::IoT::Thing",
        "the thing does not exist yet",
        "iot:CreateThing",
        ("thing",),
    ),
    Permission(
        "add it to each thing group",
        "AWS::IoT::Thing",
        "ThingGroups given",
        "iot:AddThingToThingGroup",
        ("thing", "thinggroup"),
    ),
    Permission(
        "attach the policy to the certificate",
        "AWS::IoT::Policy",
        "PolicyName given",
        "iot:AttachPolicy",
        ("cert",),
    ),
    Permission(
        "attach the certificate to the thing",
        "AWS::IoT::Certificate",
        "always",
        "iot:AttachThingPrincipal",
        ("cert",),
    ),
    Permission(
        "activate the certificate",
        "AWS::IoT::Certificate",
        "Status ACTIVE",
        "iot:UpdateCertificate",
        ("cert",),
    ),
)

# Actions of the managed policy no step of a fleet template with a CertificateId and a PolicyName
# takes, and what a template would take each for.
NOT_TAKEN = {
    "iot:AttachPrincipalPolicy": "the deprecated form of AttachPolicy",
    "iot:CreatePolicy": "a policy resource given by PolicyDocument",
    "iot:UpdateThing": "an existing thing with OverrideSettings REPLACE or MERGE",
    "iot:UpdateThingGroupsForThing": "an existing thing's group memberships",
    "iot:RemoveThingFromThingGroup": "an existing thing's group memberships with REPLACE",
    "iot:DetachPolicy": "replacing a certificate's policy",
    "iot:DetachThingPrincipal": "replacing a thing's certificate",
    "iot:ListAttachedPolicies": "reading a certificate's policies",
    "iot:ListPrincipalPolicies": "reading a certificate's policies, deprecated form",
    "iot:ListPrincipalThings": "reading a certificate's things",
    "iot:ListThingPrincipals": "reading a thing's certificates",
    "iot:ListThingGroupsForThing": "reading an existing thing's groups",
    "iot:ListPolicyPrincipals": "reading a policy's targets, deprecated form",
    "iot:ListTargetsForPolicy": "reading a policy's targets",
    "iot:CreateCertificateFromCsr": "a certificate resource given by CertificateSigningRequest",
    "iot:RegisterCertificate": "a certificate resource given by CertificatePem",
    "iot:AddThingToBillingGroup": "a BillingGroup (the template has none)",
    "iot:DescribeBillingGroup": "a BillingGroup (the template has none)",
    "iot:RemoveThingFromBillingGroup": "a BillingGroup (the template has none)",
}
