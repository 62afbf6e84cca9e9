"""IoT APIs moto lacks, as the sandbox adds them (sandbox/iot/missing_apis.py): provisioning
templates with versions, tags and a hook; event configurations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.sandbox.support import function

BODY = json.dumps({"Parameters": {}, "Resources": {}})


def test_provisioning_template_round_trip_with_versions_tags_and_hook(iot: Any) -> None:
    hook = function("hook", "def handler(event, context):\n    return {'allowProvisioning': False}\n")
    created = iot.create_provisioning_template(
        templateName="Fleet-dev-fleet",
        templateBody=BODY,
        enabled=True,
        type="FLEET_PROVISIONING",
        provisioningRoleArn="arn:aws:iam::123456789012:role/p",
        tags=[{"Key": "Project", "Value": "Fleet"}],
        preProvisioningHook={"targetArn": hook, "payloadVersion": "2020-04-01"},
    )

    described = iot.describe_provisioning_template(templateName="Fleet-dev-fleet")
    assert (described["enabled"], described["defaultVersionId"], described["templateBody"]) == (True, 1, BODY)
    assert described["preProvisioningHook"] == {"targetArn": hook, "payloadVersion": "2020-04-01"}
    assert iot.list_tags_for_resource(resourceArn=created["templateArn"])["tags"] == [
        {"Key": "Project", "Value": "Fleet"}
    ]
    new_body = json.dumps({"Parameters": {"A": {"Type": "String"}}, "Resources": {}})
    iot.create_provisioning_template_version(templateName="Fleet-dev-fleet", templateBody=new_body, setAsDefault=True)
    assert iot.describe_provisioning_template(templateName="Fleet-dev-fleet")["templateBody"] == new_body
    assert len(iot.list_provisioning_template_versions(templateName="Fleet-dev-fleet")["versions"]) == 2
    iot.delete_provisioning_template(templateName="Fleet-dev-fleet")
    assert iot.list_provisioning_templates()["templates"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"templateBody": "not json"}, "not valid JSON"),
        (
            {"preProvisioningHook": {"targetArn": "arn:aws:lambda:us-east-1:123456789012:function:none"}},
            "does not exist",
        ),
        ({"type": "JITP", "preProvisioningHook": {"targetArn": "x"}}, "FLEET_PROVISIONING"),
    ],
)
def test_template_refused_as_aws_refuses_it(iot: Any, change: dict[str, Any], message: str) -> None:
    request = {"templateName": "ok", "templateBody": BODY, "provisioningRoleArn": "arn:aws:iam::1:role/p", **change}
    with pytest.raises(ClientError) as refused:
        iot.create_provisioning_template(**request)
    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    assert message in refused.value.response["Error"]["Message"]
    assert iot.list_provisioning_templates()["templates"] == []


def test_event_configurations_and_tags_given_at_create(iot: Any) -> None:
    assert iot.describe_event_configurations()["eventConfigurations"]["THING"] == {"Enabled": False}
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": True}})
    assert iot.describe_event_configurations()["eventConfigurations"]["THING"] == {"Enabled": True}

    group = iot.create_thing_group(thingGroupName="g", tags=[{"Key": "Env", "Value": "dev"}])
    assert iot.list_tags_for_resource(resourceArn=group["thingGroupArn"])["tags"] == [{"Key": "Env", "Value": "dev"}]
    iot.untag_resource(resourceArn=group["thingGroupArn"], tagKeys=["Env"])
    assert iot.list_tags_for_resource(resourceArn=group["thingGroupArn"])["tags"] == []
