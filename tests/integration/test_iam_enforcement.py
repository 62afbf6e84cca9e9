"""IAM decides the outcome in the sandbox as in AWS: a role that lacks what its caller needs makes
the device's provisioning fail the way a device (and an operator reading the logs) sees it.

Each test changes one role or policy of the deployed stack and puts it back in a finalizer, so the
shared deployment stays as shipped for every other test (the shipped roles pass them all).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.iot_data_plane.provisioning_permissions import TEMPLATE_PERMISSIONS
from scripts import device_client as device
from tests.integration.conftest import Deployment
from tests.integration.test_device_provisioning import Fleet

pytestmark = pytest.mark.integration
DEVICE_TYPE = "temperature-sensor"


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("iam-devices"))


def without_action(fleet: Fleet, role: str, policy: str, action: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Takes `action` out of the role's inline policy; the finalizer puts the policy back as it was."""
    iam = fleet.deployment.client("iam")
    original = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    request.addfinalizer(
        lambda: iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=json.dumps(original))
    )
    statements, taken = [], 0
    for statement in original["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        kept = [a for a in actions if a.lower() != action.lower()]
        taken += len(actions) - len(kept)
        if kept:
            statements.append({**statement, "Action": kept})
    assert taken, f"{action} is not in {role}'s {policy}: nothing to take away"
    changed = json.dumps({**original, "Statement": statements})
    iam.put_role_policy(RoleName=role, PolicyName=policy, PolicyDocument=changed)
    return dict(original)


def without_managed_policy(fleet: Fleet, role: str, request: pytest.FixtureRequest) -> None:
    """Detaches AWS's managed policy from the provisioning role, so its inline policy alone decides;
    the finalizer attaches it again."""
    iam = fleet.deployment.client("iam")
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    (managed,) = [arn for arn in attached if arn.endswith("/service-role/AWSIoTThingsRegistration")]
    request.addfinalizer(lambda: iam.attach_role_policy(RoleName=role, PolicyArn=managed))
    iam.detach_role_policy(RoleName=role, PolicyArn=managed)


def log_messages(fleet: Fleet, group: str, contains: str) -> list[str]:
    logs = fleet.deployment.client("logs")
    try:
        pages = list(logs.get_paginator("filter_log_events").paginate(logGroupName=group))
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [e["message"] for page in pages for e in page["events"] if contains in e["message"]]


def expected_resource(fleet: Fleet, kind: str, thing_name: str) -> str:
    prefix = f"arn:aws:iot:us-east-1:{fleet.deployment.client('sts').get_caller_identity()['Account']}:"
    return {
        "*": "*",
        "thing": f"{prefix}thing/{thing_name}",
        "thingtype": f"{prefix}thingtype/{fleet.outputs['thing_type_name']}",
        "thinggroup": f"{prefix}thinggroup/{fleet.outputs['thing_group_names'][DEVICE_TYPE]}",
        "policy": f"{prefix}policy/{fleet.outputs['device_policy_names'][DEVICE_TYPE]}",
        "cert": f"{prefix}cert/",
    }[kind]


@pytest.mark.parametrize("permission", TEMPLATE_PERMISSIONS, ids=lambda p: p.action)
def test_a_provisioning_role_without_an_action_the_template_needs_fails_register_thing_and_leaves_nothing(
    fleet: Fleet, permission: Any, request: pytest.FixtureRequest
) -> None:
    serial = "SN-IAM-" + permission.action.split(":")[1].upper()[:20]
    thing_name = f"{DEVICE_TYPE}-{serial}"
    fleet.enroll(serial, DEVICE_TYPE)
    without_managed_policy(fleet, fleet.outputs["provisioning_role_name"], request)
    without_action(fleet, fleet.outputs["provisioning_role_name"], "provisioning-policy", permission.action, request)
    things, active, *_ = fleet.footprint()

    with pytest.raises(device.Failure) as refused:
        fleet.provision(serial, DEVICE_TYPE)

    message = str(refused.value)
    assert refused.value.code == device.REGISTER_REJECTED
    assert "403 ACCESS_DENIED" in message
    assert f"is not authorized to perform: {permission.action} on resource: " in message
    assert f"on resource: {expected_resource(fleet, permission.checked_on[0], thing_name)}" in message
    assert fleet.footprint()[:2] == (things, active)  # no thing made, no certificate activated
    assert fleet.iot.list_things(attributeName="serialNumber", attributeValue=serial)["things"] == []


def test_the_managed_policy_aws_documents_alone_provisions_a_device(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """AWSIoTThingsRegistration (attached) covers every step of applying the template without the inline
    policy, as AWS documents it for a provisioning role."""
    iam = fleet.deployment.client("iam")
    role = fleet.outputs["provisioning_role_name"]
    name = "provisioning-policy"
    original = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    request.addfinalizer(
        lambda: iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(original))
    )
    iam.delete_role_policy(RoleName=role, PolicyName=name)
    fleet.enroll("SN-IAM-MANAGED", DEVICE_TYPE)

    provisioned = fleet.provision("SN-IAM-MANAGED", DEVICE_TYPE)

    assert provisioned["thingName"] == f"{DEVICE_TYPE}-SN-IAM-MANAGED"


def test_a_provisioning_role_that_does_not_trust_iot_fails_register_thing(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    iam = fleet.deployment.client("iam")
    role = fleet.outputs["provisioning_role_name"]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    request.addfinalizer(lambda: iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(trust)))
    lambda_trust = json.loads(json.dumps(trust).replace("iot.amazonaws.com", "lambda.amazonaws.com"))
    iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(lambda_trust))
    fleet.enroll("SN-IAM-TRUST", DEVICE_TYPE)

    with pytest.raises(
        device.Failure,
        match=r"403 ACCESS_DENIED: IoT cannot assume the provisioning role .* does not "
        r"trust iot\.amazonaws\.com",
    ):
        fleet.provision("SN-IAM-TRUST", DEVICE_TYPE)


def test_a_hook_role_without_update_item_makes_the_hook_deny_with_registry_error(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    function = fleet.outputs["provisioning_hook_function_name"]
    role = fleet.deployment.client("lambda").get_function(FunctionName=function)["Configuration"]["Role"]
    without_action(fleet, role.rsplit("/", 1)[-1], f"{function}-policy", "dynamodb:UpdateItem", request)
    fleet.enroll("SN-IAM-HOOK", DEVICE_TYPE)

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-IAM-HOOK", DEVICE_TYPE)

    assert fleet.registry("SN-IAM-HOOK")["status"] == "enrolled"  # the claim was refused: still enrollable
    (line,) = log_messages(fleet, f"/aws/lambda/{function}", '"SN-IAM-HOOK"')
    decision = json.loads(line)
    assert (decision["decision"], decision["reason"]) == ("deny", "REGISTRY_ERROR")
    assert "AccessDeniedException" in decision["detail"]
    assert "is not authorized to perform: dynamodb:UpdateItem on resource: " in decision["detail"]


def test_iot_does_not_invoke_a_hook_whose_function_policy_does_not_allow_the_template(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    lam = fleet.deployment.client("lambda")
    function = fleet.outputs["provisioning_hook_function_name"]
    (statement,) = json.loads(lam.get_policy(FunctionName=function)["Policy"])["Statement"]
    lam.remove_permission(FunctionName=function, StatementId=statement["Sid"])
    account = statement["Condition"]["StringEquals"]["AWS:SourceAccount"]  # the stack's: only its account's IoT
    request.addfinalizer(
        lambda: lam.add_permission(
            FunctionName=function,
            StatementId=statement["Sid"],
            Action="lambda:InvokeFunction",
            Principal="iot.amazonaws.com",
            SourceAccount=account,
        )
    )
    other_template = fleet.outputs["provisioning_template_arn"] + "-2"
    lam.add_permission(
        FunctionName=function,
        StatementId="another-template",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=other_template,
    )
    request.addfinalizer(lambda: lam.remove_permission(FunctionName=function, StatementId="another-template"))
    fleet.enroll("SN-IAM-HOOKPERM", DEVICE_TYPE)

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-IAM-HOOKPERM", DEVICE_TYPE)

    assert fleet.registry("SN-IAM-HOOKPERM")["status"] == "enrolled"  # the hook never ran
    assert log_messages(fleet, f"/aws/lambda/{function}", '"SN-IAM-HOOKPERM"') == []


def zipped(code: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("probe.py", code)
    return buffer.getvalue()


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_a_topic_rule_invokes_only_a_function_whose_policy_allows_that_rule(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    lam, iot = fleet.deployment.client("lambda"), fleet.iot
    role = lam.get_function(FunctionName=fleet.outputs["registry_events_function_name"])["Configuration"]["Role"]
    probe = lam.create_function(
        FunctionName="iam-probe",
        Runtime="python3.13",
        Role=role,
        Handler="probe.handler",
        Code={"ZipFile": zipped("def handler(event, context):\n    print('probe saw', event['thingName'])\n")},
    )["FunctionArn"]
    request.addfinalizer(lambda: lam.delete_function(FunctionName="iam-probe"))
    iot.create_topic_rule(
        ruleName="iam_probe",
        topicRulePayload={
            "sql": "SELECT * FROM '$aws/events/thing/+/created'",
            "ruleDisabled": False,
            "actions": [{"lambda": {"functionArn": probe}}],
        },
    )
    request.addfinalizer(lambda: iot.delete_topic_rule(ruleName="iam_probe"))
    rule_arn = iot.get_topic_rule(ruleName="iam_probe")["ruleArn"]
    lam.add_permission(
        FunctionName="iam-probe",
        StatementId="another-rule",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=rule_arn + "_other",
    )
    for serial in ("SN-IAM-RULE-1", "SN-IAM-RULE-2"):
        fleet.enroll(serial, DEVICE_TYPE)

    fleet.provision("SN-IAM-RULE-1", DEVICE_TYPE, skip_device_check=True)
    assert not eventually(lambda: bool(log_messages(fleet, "/aws/lambda/iam-probe", "probe saw")), 2.0)

    lam.add_permission(
        FunctionName="iam-probe",
        StatementId="this-rule",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=rule_arn,
    )
    fleet.provision("SN-IAM-RULE-2", DEVICE_TYPE, skip_device_check=True)
    assert eventually(lambda: bool(log_messages(fleet, "/aws/lambda/iam-probe", "SN-IAM-RULE-2")))
    assert log_messages(fleet, "/aws/lambda/iam-probe", "SN-IAM-RULE-1") == []


def test_the_audit_rule_writes_only_while_its_role_may_put_log_events(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    group = fleet.outputs["audit_log_group_name"]
    rules = [fleet.iot.get_topic_rule(ruleName=r["ruleName"])["rule"] for r in fleet.iot.list_topic_rules()["rules"]]
    (role_arn,) = [
        a["cloudwatchLogs"]["roleArn"]
        for r in rules
        for a in r["actions"]
        if a.get("cloudwatchLogs", {}).get("logGroupName") == group
    ]
    for serial in ("SN-IAM-AUDIT-1", "SN-IAM-AUDIT-2"):
        fleet.enroll(serial, DEVICE_TYPE)
    fleet.provision("SN-IAM-AUDIT-1", DEVICE_TYPE, skip_device_check=True)
    assert eventually(lambda: bool(log_messages(fleet, group, "SN-IAM-AUDIT-1")))

    without_action(fleet, role_arn.rsplit("/", 1)[-1], "write-audit-log", "logs:PutLogEvents", request)
    fleet.provision("SN-IAM-AUDIT-2", DEVICE_TYPE, skip_device_check=True)

    assert fleet.registry("SN-IAM-AUDIT-2")["status"] == "provisioned"  # a failing action fails nothing else
    assert not eventually(lambda: bool(log_messages(fleet, group, "SN-IAM-AUDIT-2")), 2.0)
