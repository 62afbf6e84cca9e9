"""What applying a fleet-provisioning template asks of the template's provisioning role: per step of
applying it, the IAM action and the resource it is checked on, with the sources.

AWS documents the provisioning role only by its managed policy, service-role/AWSIoTThingsRegistration
(attach it to a role that trusts iot.amazonaws.com), not which of the policy's actions each step
needs; the steps below are the API calls applying this kind of template amounts to, and each
action's resource types are the Service Authorization Reference's (an asterisk marks a required
type). The sandbox checks exactly these, all before it changes anything (see fleet_provisioning).
"""

from __future__ import annotations

from dataclasses import dataclass

MANAGED_POLICY = "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSIoTThingsRegistration.html"
AUTHORIZATION_REFERENCE = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html"
TEMPLATE_RESOURCES = "https://docs.aws.amazon.com/iot/latest/developerguide/provision-template.html#resources-section"
PROVISIONING_ROLE = "https://docs.aws.amazon.com/iot/latest/developerguide/provision-wo-cert.html"
REGISTER_THING = "https://docs.aws.amazon.com/iot/latest/apireference/API_RegisterThing.html"

# AWSIoTThingsRegistration, version v3 (moto ships the same text): one statement, Resource "*".
MANAGED_POLICY_ACTIONS = tuple(
    f"iot:{name}"
    for name in (
        "AddThingToBillingGroup",
        "AddThingToThingGroup",
        "AttachPolicy",
        "AttachPrincipalPolicy",
        "AttachThingPrincipal",
        "CreateCertificateFromCsr",
        "CreatePolicy",
        "CreateThing",
        "DescribeBillingGroup",
        "DescribeCertificate",
        "DescribeThing",
        "DescribeThingGroup",
        "DescribeThingType",
        "DetachPolicy",
        "DetachThingPrincipal",
        "GetPolicy",
        "ListAttachedPolicies",
        "ListPolicyPrincipals",
        "ListPrincipalPolicies",
        "ListPrincipalThings",
        "ListTargetsForPolicy",
        "ListThingGroupsForThing",
        "ListThingPrincipals",
        "RegisterCertificate",
        "RegisterThing",
        "RemoveThingFromBillingGroup",
        "RemoveThingFromThingGroup",
        "UpdateCertificate",
        "UpdateThing",
        "UpdateThingGroupsForThing",
    )
)


@dataclass(frozen=True)
class Permission:
    step: str  # what applying the template does
    template_resource: str  # the template's resource type the step belongs to
    when: str  # when the step happens
    action: str
    resource_types: tuple[str, ...]  # the Service Authorization Reference's, "*" = required
    checked_on: tuple[str, ...]  # the ARN(s) the sandbox checks it on: thing, thingtype, thinggroup, policy, cert, *
    sources: tuple[str, ...] = (MANAGED_POLICY, AUTHORIZATION_REFERENCE)


# In the order the sandbox applies them: every read first, then the writes.
TEMPLATE_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "provision a thing from the template",
        "(template)",
        "always",
        "iot:RegisterThing",
        (),
        ("*",),
        (MANAGED_POLICY, AUTHORIZATION_REFERENCE, REGISTER_THING),
    ),
    Permission("look the thing up", "AWS::IoT::Thing", "always", "iot:DescribeThing", ("thing*",), ("thing",)),
    Permission(
        "read its thing type",
        "AWS::IoT::Thing",
        "ThingTypeName given",
        "iot:DescribeThingType",
        ("thingtype*",),
        ("thingtype",),
    ),
    Permission(
        "read each of its thing groups",
        "AWS::IoT::Thing",
        "ThingGroups given",
        "iot:DescribeThingGroup",
        ("thinggroup*",),
        ("thinggroup",),
    ),
    Permission(
        "read the policy it names", "AWS::IoT::Policy", "PolicyName given", "iot:GetPolicy", ("policy*",), ("policy",)
    ),
    Permission(
        "read the device's certificate",
        "AWS::IoT::Certificate",
        "CertificateId given",
        "iot:DescribeCertificate",
        ("cert*",),
        ("cert",),
    ),
    Permission(
        "create the thing",
        "AWS::IoT::Thing",
        "the thing does not exist yet",
        "iot:CreateThing",
        ("billinggroup", "thing*"),
        ("thing",),
    ),
    Permission(
        "add it to each thing group",
        "AWS::IoT::Thing",
        "ThingGroups given",
        "iot:AddThingToThingGroup",
        ("thing*", "thinggroup*"),
        ("thing", "thinggroup"),
    ),
    Permission(
        "attach the policy to the certificate",
        "AWS::IoT::Policy",
        "PolicyName given",
        "iot:AttachPolicy",
        ("cert", "thinggroup"),
        ("cert",),
    ),
    Permission(
        "attach the certificate to the thing",
        "AWS::IoT::Certificate",
        "always",
        "iot:AttachThingPrincipal",
        ("cert",),
        ("cert",),
    ),
    Permission(
        "activate the certificate",
        "AWS::IoT::Certificate",
        "Status ACTIVE",
        "iot:UpdateCertificate",
        ("cert*",),
        ("cert",),
    ),
)

# Actions of the managed policy no step of a fleet template with a CertificateId and a PolicyName
# takes, and why the stack's role still holds (or leaves out) each.
NOT_TAKEN = {
    "iot:AttachPrincipalPolicy": "the deprecated form of AttachPolicy (resource type cert)",
    "iot:CreatePolicy": "a policy resource given by PolicyDocument (resource type policy*)",
    "iot:UpdateThing": "an existing thing with OverrideSettings REPLACE or MERGE (resource type thing*)",
    "iot:UpdateThingGroupsForThing": "an existing thing's group memberships (thing*, thinggroup)",
    "iot:RemoveThingFromThingGroup": "an existing thing's group memberships with REPLACE (thing*, thinggroup*)",
    "iot:DetachPolicy": "replacing a certificate's policy (cert, thinggroup)",
    "iot:DetachThingPrincipal": "replacing a thing's certificate (cert)",
    "iot:ListAttachedPolicies": "reading a certificate's policies (cert, thinggroup)",
    "iot:ListPrincipalPolicies": "reading a certificate's policies, deprecated form (cert)",
    "iot:ListPrincipalThings": "reading a certificate's things (cert)",
    "iot:ListThingPrincipals": "reading a thing's certificates (thing*)",
    "iot:ListThingGroupsForThing": "reading an existing thing's groups (thing*)",
    "iot:ListPolicyPrincipals": "reading a policy's targets, deprecated form (policy*)",
    "iot:ListTargetsForPolicy": "reading a policy's targets (policy*)",
    "iot:CreateCertificateFromCsr": "a certificate resource given by CertificateSigningRequest (no resource type: "
    'only Resource "*" can grant it)',
    "iot:RegisterCertificate": "a certificate resource given by CertificatePem (no resource type: only "
    'Resource "*" can grant it)',
    "iot:AddThingToBillingGroup": "a BillingGroup (the template has none)",
    "iot:DescribeBillingGroup": "a BillingGroup (the template has none)",
    "iot:RemoveThingFromBillingGroup": "a BillingGroup (the template has none)",
}
