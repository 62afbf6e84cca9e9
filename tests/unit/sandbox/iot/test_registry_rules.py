"""The local IoT registry refuses what AWS refuses, as a boto3 caller (Terraform, the tools) and the
in-process fleet-provisioning service see it: AWS's error code, HTTP status and message, and nothing
left behind. Each test is one row of docs/sandbox.md's "AWS contracts the sandbox enforces"."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox.iot import indexed_lookups, registry_rules
from sandbox.iot_data_plane.local_account import AwsError, LocalAccount

indexed_lookups.install()  # as sandbox/boot.py orders them
registry_rules.install()

PATTERN = "[a-zA-Z0-9:_-]+"
KEYS = (
    "[Member must have length less than or equal to 128, Member must satisfy regular expression pattern: "
    "[a-zA-Z0-9_.,@/:#-]+]"
)
VALUES = (
    "[Member must have length less than or equal to 800, Member must satisfy regular expression pattern: "
    r"[a-zA-Z0-9_.,@/:#=\[\]-]*]"
)
ARABIC_INDIC_THREE = "\u0663"  # a digit to Python's \d, not to AWS's [0-9]


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("iot", region_name="us-east-1")


def refused(call: Callable[..., Any], **request: Any) -> tuple[int, str, str]:
    """The HTTP status, error code and message AWS's answer to the request carries."""
    with pytest.raises(ClientError) as error:
        call(**request)
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def invalid(value: str, member: str, constraint: str) -> tuple[int, str, str]:
    """AWS's answer to one field failing its request validation."""
    message = f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    return 400, "InvalidRequestException", message


def everything(iot: Any) -> dict[str, list[Any]]:
    return {
        "things": iot.list_things()["things"],
        "thing types": iot.list_thing_types()["thingTypes"],
        "thing groups": iot.list_thing_groups()["thingGroups"],
        "policies": iot.list_policies()["policies"],
    }


NEAR_MISS_NAMES = ["bad name!", "gateway-SN-1\n", f"sensor-{ARABIC_INDIC_THREE}", "caf\u00e9", "a/b", "dev*"]


@pytest.mark.parametrize("name", NEAR_MISS_NAMES)
@pytest.mark.parametrize(
    ("operation", "member"),
    [("create_thing", "thingName"), ("create_thing_type", "thingTypeName"), ("create_thing_group", "thingGroupName")],
)
def test_a_name_outside_awss_pattern_is_refused_and_nothing_is_created(
    iot: Any, operation: str, member: str, name: str
) -> None:
    answer = refused(getattr(iot, operation), **{member: name})

    assert answer == invalid(name, member, f"Member must satisfy regular expression pattern: {PATTERN}")
    assert everything(iot) == {"things": [], "thing types": [], "thing groups": [], "policies": []}


def test_a_name_over_128_characters_is_refused_and_one_of_128_is_accepted(iot: Any) -> None:
    longest = ("aZ09:_-" * 19)[:128]  # every kind of character the pattern allows
    too_long = longest + "x"

    for operation, member in (
        ("create_thing", "thingName"),
        ("create_thing_type", "thingTypeName"),
        ("create_thing_group", "thingGroupName"),
    ):
        answer = refused(getattr(iot, operation), **{member: too_long})
        assert answer == invalid(too_long, member, "Member must have length less than or equal to 128")
    assert everything(iot) == {"things": [], "thing types": [], "thing groups": [], "policies": []}

    iot.create_thing_type(thingTypeName=longest)
    iot.create_thing_group(thingGroupName=longest)
    iot.create_thing(thingName=longest, thingTypeName=longest)
    iot.create_thing(thingName="a")
    assert iot.describe_thing(thingName=longest)["thingTypeName"] == longest
    assert iot.describe_thing_group(thingGroupName=longest)["thingGroupName"] == longest


def test_every_field_that_names_a_registry_object_is_checked_before_the_object_is_looked_up(iot: Any) -> None:
    """moto answered these 404 (no such object); AWS's validation answers first, with 400."""
    iot.create_thing(thingName="dev-1")
    iot.create_thing_group(thingGroupName="fleet")

    assert refused(iot.create_thing, thingName="dev-2", thingTypeName="a b") == invalid(
        "a b", "thingTypeName", f"Member must satisfy regular expression pattern: {PATTERN}"
    )
    assert refused(iot.create_thing_group, thingGroupName="child", parentGroupName="fleet\n") == invalid(
        "fleet\n", "parentGroupName", f"Member must satisfy regular expression pattern: {PATTERN}"
    )
    assert refused(iot.update_thing, thingName="dev 1", attributePayload={"attributes": {"a": "1"}}) == invalid(
        "dev 1", "thingName", f"Member must satisfy regular expression pattern: {PATTERN}"
    )
    assert refused(iot.update_thing_group, thingGroupName="fleet!", thingGroupProperties={}) == invalid(
        "fleet!", "thingGroupName", f"Member must satisfy regular expression pattern: {PATTERN}"
    )
    assert [t["thingName"] for t in iot.list_things()["things"]] == ["dev-1"]
    assert [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]] == ["fleet"]


def test_the_fleet_service_in_process_gets_the_same_refusal_as_an_http_caller(iot: Any) -> None:
    account = LocalAccount("us-east-1")
    name = f"sensor-{ARABIC_INDIC_THREE}"

    with pytest.raises(AwsError) as error:
        account.create_thing(name, None, {"firmwareVersion": "v1.0.0"})
    assert (error.value.status, error.value.code, error.value.message) == refused(iot.create_thing, thingName=name)
    with pytest.raises(AwsError) as error:
        account.create_thing("sensor-1", None, {"firmwareVersion": f"v1{ARABIC_INDIC_THREE}.0.0"})
    assert (error.value.status, error.value.code) == (400, "InvalidRequestException")
    assert "at 'attributePayload.attributes' failed to satisfy constraint: Map value" in error.value.message
    assert iot.list_things()["things"] == []


@pytest.mark.parametrize(
    "value",
    ["v1.0.0\n", f"v1{ARABIC_INDIC_THREE}.0.0", "v1 0", "plant\u00a01", pytest.param("x" * 801, id="801 characters")],
)
def test_an_attribute_value_outside_awss_rule_is_refused(iot: Any, value: str) -> None:
    attributes = {"firmwareVersion": value}

    answer = refused(iot.create_thing, thingName="dev-1", attributePayload={"attributes": attributes})

    shown = f"{{firmwareVersion={value}}}"  # AWS prints the map as Java does
    assert answer == invalid(shown, "attributePayload.attributes", f"Map value must satisfy constraint: {VALUES}")
    assert iot.list_things()["things"] == []


@pytest.mark.parametrize(
    "name", ["firmware version", "fw\n", f"fw{ARABIC_INDIC_THREE}", pytest.param("x" * 129, id="129 characters"), ""]
)
def test_an_attribute_name_outside_awss_rule_is_refused(iot: Any, name: str) -> None:
    answer = refused(iot.create_thing, thingName="dev-1", attributePayload={"attributes": {name: "1"}})

    assert answer == invalid(
        f"{{{name}=1}}", "attributePayload.attributes", f"Map keys must satisfy constraint: {KEYS}"
    )
    assert iot.list_things()["things"] == []


def test_attributes_at_awss_limits_are_accepted(iot: Any) -> None:
    attributes = {
        ("k_.,@/:#-" * 15)[:128]: ("v_.,@/:#=[]-09AZ" * 50)[:800],  # every allowed kind, at both maxima
        "location": "",  # a value may be empty
        "firmwareVersion": "v1.0.0",
    }

    iot.create_thing(thingName="dev-1", attributePayload={"attributes": attributes})

    assert iot.describe_thing(thingName="dev-1")["attributes"] == attributes


def test_every_invalid_field_of_a_request_is_reported_in_one_answer(iot: Any) -> None:
    status, code, message = refused(
        iot.create_thing, thingName="dev 1", attributePayload={"attributes": {"bad key": "v\n"}}
    )

    assert (status, code) == (400, "InvalidRequestException")
    assert message.startswith("3 validation errors detected: Value 'dev 1' at 'thingName' failed to satisfy")
    assert message.count("; Value '{bad key=v\n}' at 'attributePayload.attributes'") == 2


def test_a_thing_without_a_type_holds_3_attributes_and_one_with_a_type_50(iot: Any) -> None:
    iot.create_thing_type(thingTypeName="sensor")
    four = {f"a{n}": "1" for n in range(4)}
    fifty_one = {f"a{n}": "1" for n in range(51)}

    assert refused(iot.create_thing, thingName="dev-1", attributePayload={"attributes": four}) == (
        400,
        "InvalidRequestException",
        "A thing without a thing type can have at most 3 attributes: thing dev-1 would have 4",
    )
    assert refused(
        iot.create_thing, thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": fifty_one}
    ) == (
        400,
        "InvalidRequestException",
        "A thing with a thing type can have at most 50 attributes: thing dev-1 would have 51",
    )
    assert iot.list_things()["things"] == []

    three = {f"a{n}": "1" for n in range(3)}
    fifty = {f"a{n}": "1" for n in range(50)}
    iot.create_thing(thingName="plain", attributePayload={"attributes": three})
    iot.create_thing(thingName="typed", thingTypeName="sensor", attributePayload={"attributes": fifty})
    assert iot.describe_thing(thingName="typed")["attributes"] == fifty


def test_update_thing_counts_the_attributes_the_merge_would_leave(iot: Any) -> None:
    three = {"a": "1", "b": "2", "c": "3"}
    iot.create_thing(thingName="dev-1", attributePayload={"attributes": three})

    def update(**request: Any) -> Any:
        return iot.update_thing(thingName="dev-1", **request)

    assert refused(update, attributePayload={"attributes": {"d": "4"}, "merge": True})[2] == (
        "A thing without a thing type can have at most 3 attributes: thing dev-1 would have 4"
    )
    assert iot.describe_thing(thingName="dev-1")["attributes"] == three  # nothing applied
    update(attributePayload={"attributes": {"a": "", "d": "4"}, "merge": True})  # an empty value removes one
    assert iot.describe_thing(thingName="dev-1")["attributes"] == {"b": "2", "c": "3", "d": "4"}
    update(attributePayload={"attributes": {"c": "30"}, "merge": True})  # replacing one adds none
    assert iot.describe_thing(thingName="dev-1")["attributes"] == {"b": "2", "c": "30", "d": "4"}

    iot.create_thing_type(thingTypeName="sensor")
    update(thingTypeName="sensor", attributePayload={"attributes": {"e": "5"}, "merge": True})
    assert refused(update, removeThingType=True)[2] == (
        "A thing without a thing type can have at most 3 attributes: thing dev-1 would have 4"
    )
    assert iot.describe_thing(thingName="dev-1")["thingTypeName"] == "sensor"  # the type stays


def policy(non_whitespace: int, indent: int | None = None) -> str:
    """A valid IoT policy of exactly `non_whitespace` characters besides whitespace."""
    arn = "arn:aws:iot:us-east-1:123456789012:topic/"
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": arn}]}
    padding = non_whitespace - len(json.dumps(document, separators=(",", ":")))
    document["Statement"][0]["Resource"] = arn + "t" * padding
    return json.dumps(document, indent=indent)


def test_a_policy_over_2048_characters_besides_whitespace_is_refused_in_either_call(iot: Any) -> None:
    malformed = (
        400,
        "MalformedPolicyException",
        "policyDocument must have a minimum length of 1, with a maximum "
        "length of 2048, excluding whitespace (this one has 2049)",
    )

    assert refused(iot.create_policy, policyName="device", policyDocument=policy(2049)) == malformed
    assert iot.list_policies()["policies"] == []
    iot.create_policy(policyName="device", policyDocument=policy(200))
    assert refused(iot.create_policy_version, policyName="device", policyDocument=policy(2049)) == malformed
    assert [v["versionId"] for v in iot.list_policy_versions(policyName="device")["policyVersions"]] == ["1"]


def test_whitespace_does_not_count_towards_a_policys_2048_characters(iot: Any) -> None:
    pretty = policy(2048, indent=8)
    assert len(pretty) > 2048

    iot.create_policy(policyName="device", policyDocument=pretty)
    iot.create_policy_version(policyName="device", policyDocument=policy(2048, indent=2), setAsDefault=True)

    assert json.loads(iot.get_policy(policyName="device")["policyDocument"]) == json.loads(pretty)


SCALE = 600  # SandboxClockScale for these tests: AWS's 5 minutes last half a second
WAIT = 5 * 60 / SCALE


def test_delete_thing_type_waits_5_scaled_minutes_after_deprecation_and_an_undo_restarts_them(
    iot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SandboxClockScale", str(SCALE))
    wait = (
        400,
        "InvalidRequestException",
        "Cannot delete thing type : sensor. Please wait for 5 minutes after deprecation and then retry",
    )
    iot.create_thing_type(thingTypeName="sensor")

    assert refused(iot.delete_thing_type, thingTypeName="sensor") == wait  # never deprecated
    iot.deprecate_thing_type(thingTypeName="sensor")
    metadata = iot.describe_thing_type(thingTypeName="sensor")["thingTypeMetadata"]
    assert metadata["deprecated"] and metadata["deprecationDate"] >= metadata["creationDate"]
    assert refused(iot.delete_thing_type, thingTypeName="sensor") == wait  # too soon
    time.sleep(WAIT)
    iot.deprecate_thing_type(thingTypeName="sensor", undoDeprecate=True)
    assert "deprecationDate" not in iot.describe_thing_type(thingTypeName="sensor")["thingTypeMetadata"]
    iot.deprecate_thing_type(thingTypeName="sensor")
    assert refused(iot.delete_thing_type, thingTypeName="sensor") == wait  # the undo restarted the wait
    assert iot.describe_thing_type(thingTypeName="sensor")["thingTypeName"] == "sensor"

    time.sleep(WAIT)
    iot.delete_thing_type(thingTypeName="sensor")
    assert iot.list_thing_types()["thingTypes"] == []


def test_delete_thing_type_is_refused_while_a_thing_has_the_type(iot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SandboxClockScale", str(SCALE))
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing(thingName="dev-1", thingTypeName="sensor")
    iot.deprecate_thing_type(thingTypeName="sensor")
    time.sleep(WAIT)

    assert refused(iot.delete_thing_type, thingTypeName="sensor") == (
        400,
        "InvalidRequestException",
        "Cannot delete thing type : sensor. You cannot delete a thing type if it has things associated with it",
    )
    assert iot.describe_thing_type(thingTypeName="sensor")["thingTypeName"] == "sensor"
    iot.update_thing(thingName="dev-1", removeThingType=True)
    iot.delete_thing_type(thingTypeName="sensor")
    assert iot.list_thing_types()["thingTypes"] == []


def test_delete_thing_still_attached_to_a_certificate_is_refused_with_400(iot: Any) -> None:
    certificate = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.create_thing(thingName="dev-1")
    iot.attach_thing_principal(thingName="dev-1", principal=certificate)

    assert refused(iot.delete_thing, thingName="dev-1") == (
        400,
        "InvalidRequestException",
        "Cannot delete. Thing dev-1 is still attached to one or more principals",
    )
    assert iot.describe_thing(thingName="dev-1")["thingName"] == "dev-1"
    iot.detach_thing_principal(thingName="dev-1", principal=certificate)
    iot.delete_thing(thingName="dev-1")
    assert iot.list_things()["things"] == []


def test_delete_thing_group_with_child_groups_is_refused_with_awss_message(iot: Any) -> None:
    iot.create_thing_group(thingGroupName="fleet")
    iot.create_thing_group(thingGroupName="sensors", parentGroupName="fleet")

    assert refused(iot.delete_thing_group, thingGroupName="fleet") == (
        400,
        "InvalidRequestException",
        "Cannot delete thing group : fleet when there are still child groups attached to it",
    )
    assert {g["groupName"] for g in iot.list_thing_groups()["thingGroups"]} == {"fleet", "sensors"}
    iot.delete_thing_group(thingGroupName="sensors")
    iot.delete_thing_group(thingGroupName="fleet")
    assert iot.list_thing_groups()["thingGroups"] == []


def test_create_thing_again_returns_the_thing_with_the_same_configuration_and_refuses_another(iot: Any) -> None:
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing_type(thingTypeName="gateway")
    first = iot.create_thing(thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"a": "1"}})
    again = iot.create_thing(thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"a": "1"}})
    assert {k: again[k] for k in ("thingName", "thingArn", "thingId")} == {
        k: first[k] for k in ("thingName", "thingArn", "thingId")
    }  # the existing thing, as AWS answers an identical CreateThing

    other = "Thing dev-1 already exists in account with different attributes"
    for change in (
        {"attributePayload": {"attributes": {"b": "2"}}},  # other attributes, no type
        {"thingTypeName": "sensor", "attributePayload": {"attributes": {"a": "2"}}},
        {"thingTypeName": "sensor", "attributePayload": {"attributes": {"a": "1", "b": "2"}}},
        {"thingTypeName": "gateway", "attributePayload": {"attributes": {"a": "1"}}},  # another type
        {"attributePayload": {"attributes": {"a": "1"}}},  # no type
        {"thingTypeName": "sensor"},  # no attributes
    ):
        assert refused(iot.create_thing, thingName="dev-1", **change) == (409, "ResourceAlreadyExistsException", other)

    described = iot.describe_thing(thingName="dev-1")  # unchanged by the refused calls
    assert (described["thingId"], described["thingTypeName"], described["attributes"]) == (
        first["thingId"],
        "sensor",
        {"a": "1"},
    )
    bare = iot.create_thing(thingName="dev-2")
    assert iot.create_thing(thingName="dev-2", attributePayload={"attributes": {}})["thingId"] == bare["thingId"]


def test_the_fleet_service_meets_the_same_rule_for_an_existing_thing(iot: Any) -> None:
    account = LocalAccount("us-east-1")
    first = account.create_thing("dev-1", None, {"serialNumber": "SN-1"})
    assert account.create_thing("dev-1", None, {"serialNumber": "SN-1"}).thing_id == first.thing_id
    with pytest.raises(AwsError) as error:
        account.create_thing("dev-1", None, {"serialNumber": "SN-2"})
    assert (error.value.status, error.value.code) == (409, "ResourceAlreadyExistsException")
    assert iot.describe_thing(thingName="dev-1")["attributes"] == {"serialNumber": "SN-1"}


def test_update_certificate_refuses_the_statuses_aws_keeps_for_itself(iot: Any) -> None:
    """API_UpdateCertificate: setting PENDING_TRANSFER or PENDING_ACTIVATION throws; the certificate
    keeps its status."""
    certificate = iot.create_keys_and_certificate(setAsActive=False)["certificateId"]

    for status in ("PENDING_ACTIVATION", "PENDING_TRANSFER"):
        code, kind, message = refused(iot.update_certificate, certificateId=certificate, newStatus=status)
        assert (code, kind) == (400, "InvalidRequestException")
        assert message == f"Certificate status {status} is used internally by AWS IoT and cannot be set"
    iot.update_certificate(certificateId=certificate, newStatus="ACTIVE")

    assert iot.describe_certificate(certificateId=certificate)["certificateDescription"]["status"] == "ACTIVE"
