"""Pure builders for the IoT policy documents and the fleet-provisioning template body.

They return plain dicts (unit-tested without synth). ``terraform_string`` serializes one for a
Terraform argument: IoT policy variables are escaped so Terraform passes them through literally,
and ARN placeholders are swapped for Terraform references after escaping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from iot_fleet.device_catalogue import DeviceType

THING = "${iot:Connection.Thing.ThingName}"
ARN_PREFIX = "@IOT_ARN_PREFIX@"  # replaced by arn:<partition>:iot:<region>:<account>: at synth
CERTIFICATE_ID = "AWS::IoT::Certificate::Id"

# Parameters the template declares. The device sends the first six in RegisterThing (AttestationSignature
# only the hook reads; declared with a default so a device without a factory key need not send it);
# the hook always supplies ThingName through parameterOverrides. No default is empty: AWS does not say
# whether a template parameter may default to "" (not verified on AWS). AttestationSignature's default
# only satisfies IoT's template engine (no resource references it; the hook gets the parameters the
# device sent, not defaults); a device that sends the word itself is read as sending no signature.
DEVICE_PARAMETERS = (
    "SerialNumber",
    "DeviceType",
    "Manufacturer",
    "FirmwareVersion",
    "Location",
    "AttestationSignature",
)
HOOK_OVERRIDES = ("ThingName",)
NO_ATTESTATION_SIGNATURE = "none"
PARAMETER_DEFAULTS = {
    "FirmwareVersion": "unknown",
    "Location": "unknown",
    "AttestationSignature": NO_ATTESTATION_SIGNATURE,
}
# Claim connections use client ids starting with this (ClaimClientIdPrefix): the claim policy allows no
# other, and no thing name may start with it, so the claim certificate can never connect as a device.
CLAIM_CLIENT_ID_PREFIX = "claim-"
MAPPING = "DeviceTypes"


def claim_topics(template_name: str) -> tuple[str, ...]:
    """The only MQTT topics a claim certificate may use: its half of the fleet-provisioning API."""
    return (
        "$aws/certificates/create/*",
        "$aws/certificates/create-from-csr/*",
        f"$aws/provisioning-templates/{template_name}/provision/*",
    )


def claim_policy(
    template_name: str, arn_prefix: str = ARN_PREFIX, client_id_prefix: str = CLAIM_CLIENT_ID_PREFIX
) -> dict[str, Any]:
    """The claim certificate's policy: connect with a client id of the prefix ("" allows any, so the
    claim certificate could also connect as a provisioned thing and knock it off), and the provisioning
    topics of this template."""
    topics = claim_topics(template_name)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn_prefix}client/{client_id_prefix}*"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{arn_prefix}topic/{t}" for t in topics],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn_prefix}topicfilter/{t}" for t in topics],
            },
        ],
    }


ROTATION_TOPICS = "fleet/rotation"  # lambda/certificate_rotation: <root>/<thing>/<request|confirm>[/<outcome>]
# The rotation rule's SQL. Named fields only (no `*`): the sender's identity comes from the rule's
# functions, and a payload field of the same name cannot replace it. clientid() is the thing name
# (the device policy's Connect), principal() the id of the certificate the device connected with.
ROTATION_SQL = (
    "SELECT requestId, certificateSigningRequest, topic() AS topic, clientid() AS clientId, "  # noqa: S608
    f"principal() AS principal FROM '{ROTATION_TOPICS}/+/+'"
)


def device_topics(device_type: DeviceType) -> dict[str, list[str]]:
    """Topics a device of this type may publish to and subscribe to/receive on, for its own thing.

    Every type may rotate its certificate: publish its requests and receive the answers on its own
    rotation topics (one resource for both, see device_policy).

    It publishes only the shadow requests it needs (get and update, no delete) but may subscribe to
    and receive every topic of its own shadow: one resource instead of one per reply topic, which
    keeps the largest type's policy within AWS's 2,048 characters in every partition.
    """
    shadow = f"$aws/things/{THING}/shadow"
    publish = [f"devices/{THING}/{t}" for t in device_type.publish]
    publish += [f"{shadow}/get", f"{shadow}/update"]
    receive = [f"devices/{THING}/{t}" for t in device_type.subscribe]
    receive += [f"{shadow}/*"]
    if "named-shadows" in device_type.capabilities:
        publish.append(f"{shadow}/name/*")
    if "jobs" in device_type.capabilities:
        publish.append(f"$aws/things/{THING}/jobs/*")
        receive.append(f"$aws/things/{THING}/jobs/*")
    publish.append(f"{ROTATION_TOPICS}/{THING}/*")
    receive.append(f"{ROTATION_TOPICS}/{THING}/*")
    return {"publish": publish, "receive": receive}


def device_policy(device_type: DeviceType, arn_prefix: str = ARN_PREFIX) -> dict[str, Any]:
    """Least privilege for one device type: every resource is scoped to the connecting thing.

    A topic both published and received is named once, in a statement with both actions (a policy
    is limited in size, and each resource costs a whole ARN).
    """
    topics = device_topics(device_type)
    both = [t for t in topics["publish"] if t in topics["receive"]]
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": "iot:Connect",
            "Resource": f"{arn_prefix}client/{THING}",
            "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
        }
    ]
    for actions, names in (
        ("iot:Publish", [t for t in topics["publish"] if t not in both]),
        ("iot:Receive", [t for t in topics["receive"] if t not in both]),
        (["iot:Publish", "iot:Receive"], both),
    ):
        if names:
            statements.append(
                {"Effect": "Allow", "Action": actions, "Resource": [f"{arn_prefix}topic/{t}" for t in names]}
            )
    # Subscribing delivers nothing by itself: each message is checked against Receive, which stays
    # exact. So a type receiving several of its own devices/ topics subscribes with one filter for
    # them (one ARN instead of several keeps the gateway's policy within 2,048 characters everywhere).
    own = f"devices/{THING}/"
    filters = topics["receive"]
    if sum(t.startswith(own) for t in filters) > 1:
        filters = [f"{own}*", *(t for t in filters if not t.startswith(own))]
    statements.append(
        {
            "Effect": "Allow",
            "Action": "iot:Subscribe",
            "Resource": [f"{arn_prefix}topicfilter/{t}" for t in filters],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


# AWS IoT counts a policy document's characters without whitespace, at most 2,048 (CreatePolicy).
POLICY_DOCUMENT_MAX = 2048
_PARTITIONS = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-iso-", "aws-iso"),
)


def partition_of(region: str) -> str:
    return next((partition for start, partition in _PARTITIONS if region.startswith(start)), "aws")


def arn_prefix_for(region: str, account: str = "123456789012") -> str:
    """The IoT ARN prefix AWS will see for this region (every account id has 12 digits)."""
    return f"arn:{partition_of(region)}:iot:{region}:{account}:"


def policy_size(document: Mapping[str, Any]) -> int:
    """A policy's size as AWS IoT counts it: characters of its JSON, whitespace excluded."""
    return sum(1 for character in json.dumps(document) if not character.isspace())


def provisioning_template(
    *,
    thing_type_name: str,
    per_type: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The fleet-provisioning template body.

    ``per_type`` maps each allowed device type to its ``PolicyName`` and ``ThingGroup``: the
    template looks both up by the device's DeviceType, so it can only name resources that exist.
    """
    parameters: dict[str, Any] = {}
    for name in (*DEVICE_PARAMETERS, *HOOK_OVERRIDES):
        parameters[name] = {"Type": "String"}
        if name in PARAMETER_DEFAULTS:
            parameters[name]["Default"] = PARAMETER_DEFAULTS[name]
    parameters[CERTIFICATE_ID] = {"Type": "String"}

    def ref(name: str) -> dict[str, str]:
        return {"Ref": name}

    def lookup(key: str) -> dict[str, Any]:
        return {"Fn::FindInMap": [MAPPING, ref("DeviceType"), key]}

    def topic(suffix: str) -> dict[str, Any]:
        return {"Fn::Join": ["", ["devices/", ref("ThingName"), suffix]]}

    return {
        "Parameters": parameters,
        "Mappings": {MAPPING: {name: dict(values) for name, values in per_type.items()}},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "OverrideSettings": {
                    "AttributePayload": "REPLACE",
                    "ThingTypeName": "REPLACE",
                    "ThingGroups": "DO_NOTHING",
                },
                "Properties": {
                    "ThingName": ref("ThingName"),
                    "ThingTypeName": thing_type_name,
                    "ThingGroups": [lookup("ThingGroup")],
                    "AttributePayload": {
                        "serialNumber": ref("SerialNumber"),
                        "deviceType": ref("DeviceType"),
                        "manufacturer": ref("Manufacturer"),
                        "firmwareVersion": ref("FirmwareVersion"),
                        "location": ref("Location"),
                    },
                },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": ref(CERTIFICATE_ID), "Status": "ACTIVE"},
            },
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": lookup("PolicyName")},
            },
        },
        "DeviceConfiguration": {
            "thingName": ref("ThingName"),
            "deviceType": ref("DeviceType"),
            "telemetryTopic": topic("/telemetry"),
            "commandTopic": topic("/commands"),
        },
    }


def referenced_parameters(node: Any) -> set[str]:
    """Every parameter name the template refers to through Ref or Fn::FindInMap's key."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            found |= referenced_parameters(value)
    elif isinstance(node, list):
        for item in node:
            found |= referenced_parameters(item)
    return found


def terraform_string(document: Mapping[str, Any], arn_prefix: str | None = None) -> str:
    """JSON for a Terraform string argument.

    ``${`` is escaped to ``$${`` so IoT policy variables reach AWS literally; then the ARN
    placeholder becomes ``arn_prefix`` (which may itself hold Terraform references).
    """
    text = json.dumps(document, separators=(",", ":"), sort_keys=False).replace("${", "$${")
    if arn_prefix is not None:
        text = text.replace(ARN_PREFIX, arn_prefix)
    return text
