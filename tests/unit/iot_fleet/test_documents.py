"""The documents AWS reads: claim and device policies, and the provisioning template body."""

from __future__ import annotations

import json

import pytest

from iot_fleet import documents
from iot_fleet.config import StackConfig
from iot_fleet.device_catalogue import DeviceType

PREFIX = "arn:aws:iot:us-east-1:123456789012:"
TYPES = StackConfig().device_types


def resources(policy: dict, action: str) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            found |= set(statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]])
    return found


def test_claim_policy_grants_only_the_provisioning_api_of_its_template() -> None:
    policy = documents.claim_policy("Fleet-dev-fleet", PREFIX)
    topics = [
        "$aws/certificates/create/*",
        "$aws/certificates/create-from-csr/*",
        "$aws/provisioning-templates/Fleet-dev-fleet/provision/*",
    ]

    assert resources(policy, "iot:Publish") == {PREFIX + "topic/" + t for t in topics}
    assert resources(policy, "iot:Receive") == {PREFIX + "topic/" + t for t in topics}  # Receive checks topic/
    assert resources(policy, "iot:Subscribe") == {PREFIX + "topicfilter/" + t for t in topics}
    assert resources(policy, "iot:Connect") == {PREFIX + "client/claim-*"}  # the claim client-id prefix only
    granted = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert granted == {"iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe"}
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


@pytest.mark.parametrize("name", sorted(TYPES))
def test_device_policy_scopes_every_resource_to_the_connected_thing(name: str) -> None:
    policy = documents.device_policy(TYPES[name], PREFIX)

    connect = next(s for s in policy["Statement"] if s["Action"] == "iot:Connect")
    assert connect["Resource"] == PREFIX + "client/${iot:Connection.Thing.ThingName}"
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    for statement in policy["Statement"]:
        for resource in statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]:
            assert "${iot:Connection.Thing.ThingName}" in resource, resource
            assert f"{name}-*" not in resource and "client/*" not in resource
    assert PREFIX + "topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/update" in resources(
        policy, "iot:Publish"
    )


def test_gateway_has_extended_permissions_sensors_do_not() -> None:
    gateway = resources(documents.device_policy(TYPES["gateway"], PREFIX), "iot:Publish")
    sensor = resources(documents.device_policy(TYPES["temperature-sensor"], PREFIX), "iot:Publish")
    extended = {r for r in gateway - sensor}
    assert PREFIX + "topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*" in extended
    assert PREFIX + "topic/devices/${iot:Connection.Thing.ThingName}/children/*" in extended
    assert sensor < gateway


def template() -> dict:
    return documents.provisioning_template(
        thing_type_name="P-dev-device",
        per_type={t: {"PolicyName": f"P-dev-{t}-policy", "ThingGroup": f"P-dev-{t}"} for t in TYPES},
    )


def test_no_template_parameter_defaults_to_empty() -> None:
    """AWS does not say whether a template parameter may default to "": none does (docs/sandbox.md)."""
    defaults = {name: p["Default"] for name, p in template()["Parameters"].items() if "Default" in p}
    assert defaults and all(isinstance(value, str) and value for value in defaults.values()), defaults


def test_template_declares_every_parameter_it_references() -> None:
    body = template()
    declared = set(body["Parameters"])
    assert documents.referenced_parameters(body) <= declared
    # Fn::FindInMap keys reference DeviceType, which the referenced set includes.
    assert "DeviceType" in documents.referenced_parameters(body["Resources"]["policy"])


def test_template_joins_groups_via_thing_groups_and_activates_the_certificate() -> None:
    body = template()
    kinds = {r["Type"] for r in body["Resources"].values()}
    assert kinds == {"AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy"}
    thing = body["Resources"]["thing"]["Properties"]
    assert thing["ThingGroups"] == [{"Fn::FindInMap": ["DeviceTypes", {"Ref": "DeviceType"}, "ThingGroup"]}]
    assert thing["ThingTypeName"] == "P-dev-device"
    assert body["Resources"]["certificate"]["Properties"] == {
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
        "Status": "ACTIVE",
    }
    assert set(body["Mappings"]["DeviceTypes"]) == set(TYPES)


def test_terraform_string_escapes_policy_variables_once_and_inserts_the_arn_prefix() -> None:
    text = documents.terraform_string(documents.device_policy(TYPES["gateway"]), "arn:${data.p}:iot:")
    assert "$${iot:Connection.Thing.ThingName}" in text
    assert "$$${" not in text
    assert "arn:${data.p}:iot:client/" in text  # the Terraform reference is not escaped
    assert json.loads(text.replace("$${", "${"))["Version"] == "2012-10-17"


def test_new_catalogue_type_gets_its_own_policy_topics() -> None:
    vibration = DeviceType(name="vibration-sensor", publish=("telemetry", "spectrum"))
    assert PREFIX + "topic/devices/${iot:Connection.Thing.ThingName}/spectrum" in resources(
        documents.device_policy(vibration, PREFIX), "iot:Publish"
    )


# The longest ARN prefix of each partition AWS IoT Core runs in (its longest region names).
LONGEST_REGIONS = ["ap-southeast-2", "cn-northwest-1", "us-gov-west-1"]


@pytest.mark.parametrize("region", LONGEST_REGIONS)
def test_every_policy_fits_aws_iot_s_size_limit_in_every_partition(region: str) -> None:
    prefix = documents.arn_prefix_for(region)
    sizes = {name: documents.policy_size(documents.device_policy(t, prefix)) for name, t in TYPES.items()}
    sizes["claim"] = documents.policy_size(documents.claim_policy("T" * 36, prefix))  # the longest template name

    assert max(sizes.values()) <= documents.POLICY_DOCUMENT_MAX, sizes


def test_policy_size_counts_what_aws_counts_and_the_prefix_has_the_region_s_partition() -> None:
    assert documents.policy_size({"a": "b c"}) == len('{"a":"bc"}')
    assert documents.arn_prefix_for("us-gov-west-1") == "arn:aws-us-gov:iot:us-gov-west-1:123456789012:"
    assert documents.arn_prefix_for("cn-north-1").startswith("arn:aws-cn:iot:cn-north-1:")
    assert documents.arn_prefix_for("eu-west-1").startswith("arn:aws:iot:eu-west-1:")


def test_a_device_publishes_only_get_and_update_of_its_shadow_and_reads_all_of_it() -> None:
    policy = documents.device_policy(TYPES["temperature-sensor"], PREFIX)
    shadow = PREFIX + "topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow"

    assert {r for r in resources(policy, "iot:Publish") if r.startswith(shadow)} == {
        f"{shadow}/get",
        f"{shadow}/update",
    }
    assert f"{shadow}/*" in resources(policy, "iot:Receive")
    assert PREFIX + "topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*" in resources(
        policy, "iot:Subscribe"
    )
    named = [
        r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert len(named) == len(set(named))  # a topic both published and received is named once


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_type_may_rotate_on_its_own_thing_s_rotation_topics_only(name: str) -> None:
    policy = documents.device_policy(TYPES[name], PREFIX)

    own = "fleet/rotation/${iot:Connection.Thing.ThingName}/*"
    assert PREFIX + "topic/" + own in resources(policy, "iot:Publish") & resources(policy, "iot:Receive")
    assert PREFIX + "topicfilter/" + own in resources(policy, "iot:Subscribe")
    assert not [r for r in resources(policy, "iot:Publish") if "rotation" in r and own not in r]
