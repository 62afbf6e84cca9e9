"""What a deploy may adopt after an apply stopped on "already exists", decided from Terraform's own
machine-readable output (the diagnostics below are the provider's words, as the sandbox and AWS give them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts import orphan_adoption as adoption

TAGS = {"Project": "IoTProvisioning", "Environment": "dev", "ManagedBy": "cdktf"}

# What hashicorp/aws 5.100.0 says when a create finds its name taken, one line per AWS error code.
TAKEN = {
    "aws_iam_role.hook_role": "creating IAM Role (IoTProvisioning-dev-provisioning-hook-role): operation error IAM: "
    "CreateRole, https response error StatusCode: 409, RequestID: x, EntityAlreadyExists: Role with name "
    "IoTProvisioning-dev-provisioning-hook-role already exists.",
    "aws_iot_policy.claim_policy": "creating IoT Policy (IoTProvisioning-dev-claim-policy): operation error IoT: "
    "CreatePolicy, https response error StatusCode: 409, RequestID: x, ResourceAlreadyExistsException: Policy cannot "
    "be created - name already exists (name=IoTProvisioning-dev-claim-policy)",
    "aws_cloudwatch_log_group.hook_logs": "creating CloudWatch Logs Log Group (/aws/lambda/IoTProvisioning-dev-"
    "provisioning-hook): operation error CloudWatch Logs: CreateLogGroup, https response error StatusCode: 400, "
    "RequestID: x, ResourceAlreadyExistsException: The specified log group already exists",
    "aws_kms_alias.key_alias": "creating KMS Alias (alias/iotprovisioning-dev): operation error KMS: CreateAlias, "
    "https response error StatusCode: 400, RequestID: x, AlreadyExistsException: An alias with the name "
    "arn:aws:kms:us-east-1:123456789012:alias/iotprovisioning-dev already exists",
    "aws_dynamodb_table.registry_table": "creating AWS DynamoDB Table (device-registry-5c46f9f2): operation error "
    "DynamoDB: CreateTable, https response error StatusCode: 400, RequestID: x, ResourceInUseException: Table "
    "already exists: device-registry-5c46f9f2",
    "aws_lambda_function.hook_function": "creating Lambda Function (IoTProvisioning-dev-provisioning-hook): "
    "operation error Lambda: CreateFunction, https response error StatusCode: 409, RequestID: x, "
    "ResourceConflictException: Function already exist: IoTProvisioning-dev-provisioning-hook",
    "aws_lambda_permission.hook_permission": "adding Lambda Permission (IoTProvisioning-dev-provisioning-hook/"
    "AllowIoTProvisioningTemplate): operation error Lambda: AddPermission, https response error StatusCode: 409, "
    "RequestID: x, ResourceConflictException: The statement id (AllowIoTProvisioningTemplate) provided already "
    "exists. Please specify a new statement id, or remove the existing statement.",
}


def error(address: str | None, summary: str, detail: str = "") -> str:
    """One diagnostic line of `terraform apply -json`."""
    diagnostic: dict[str, Any] = {"severity": "error", "summary": summary, "detail": detail}
    if address:
        diagnostic["address"] = address
    return json.dumps(
        {"@level": "error", "@message": f"Error: {summary}", "diagnostic": diagnostic, "type": "diagnostic"}
    )


def test_every_kind_of_taken_name_the_stack_can_meet_is_adoptable() -> None:
    lines = [error(address, summary) for address, summary in TAKEN.items()]
    lines.append(json.dumps({"type": "apply_complete", "@message": "aws_sns_topic.alerts: Creation complete"}))

    assert adoption.already_existing(adoption.diagnostics(lines), recorded=set()) == sorted(TAKEN)


@pytest.mark.parametrize(
    ("lines", "because"),
    [
        ([], "reported no error"),
        (
            [
                error("aws_iam_role.hook_role", TAKEN["aws_iam_role.hook_role"]),
                error("aws_lambda_function.hook_function", "creating Lambda Function: AccessDeniedException: denied"),
            ],
            "not only 'already exists': aws_lambda_function.hook_function: creating Lambda Function: AccessDenied",
        ),
        (
            [
                error(
                    "aws_dynamodb_table.registry_table",
                    "updating DynamoDB Table: ResourceInUseException: Attempt to "
                    "change a resource which is still in use",
                )
            ],
            "not only 'already exists'",
        ),
        ([error("aws_kms_key.key", "creating KMS Key: AlreadyExistsException: x")], "aws_kms_key.key"),
        ([error(None, "Error acquiring the state lock", "ConditionalCheckFailedException")], "Terraform: Error"),
    ],
    ids=["no error", "another error beside", "in use is not taken", "a type the stack does not name", "no address"],
)
def test_any_other_failure_adopts_nothing_and_says_what_failed(lines: list[str], because: str) -> None:
    with pytest.raises(adoption.NotAdoptable) as refused:
        adoption.already_existing(adoption.diagnostics(lines), recorded=set())

    assert because in str(refused.value)


def test_a_taken_name_on_a_resource_the_state_already_holds_is_not_a_leftover() -> None:
    lines = [error("aws_iam_role.hook_role", TAKEN["aws_iam_role.hook_role"])]

    with pytest.raises(adoption.NotAdoptable):
        adoption.already_existing(adoption.diagnostics(lines), recorded={"aws_iam_role.hook_role"})


def plan(changes: dict[str, dict[str, Any]], references: dict[str, dict[str, list[str]]] | None = None) -> Any:
    """The parts of `terraform show -json <plan>` the module reads."""
    return {
        "resource_changes": [
            {"address": a, "type": a.split(".")[0], "change": {"actions": ["create"], "after": after}}
            for a, after in changes.items()
        ],
        "configuration": {
            "root_module": {
                "resources": [
                    {
                        "address": a,
                        "mode": "managed",
                        "type": a.split(".")[0],
                        "expressions": {k: {"references": v} for k, v in (references or {}).get(a, {}).items()},
                    }
                    for a in changes
                ]
                + [{"address": "data.aws_region.region", "mode": "data", "type": "aws_region", "expressions": {}}]
            }
        },
    }


def test_candidates_are_the_named_resources_the_state_lacks_with_the_ids_the_provider_imports_by() -> None:
    planned = plan(
        {
            "aws_lambda_function.hook_function": {"function_name": "IoTProvisioning-dev-provisioning-hook"},
            # unknown until the function exists: its name comes from the function's own
            "aws_lambda_permission.hook_permission": {"statement_id": "AllowIoTProvisioningTemplate"},
            "aws_kms_alias.key_alias": {"name": "alias/iotprovisioning-dev"},
            "aws_iam_role.hook_role": {"name": "IoTProvisioning-dev-provisioning-hook-role"},
            "aws_kms_key.key": {"description": "unnamed: never a candidate"},
            "aws_iot_certificate.claim": {},
            "aws_iot_policy.unknown": {},  # a name unknown until apply: left out
        },
        {
            "aws_lambda_permission.hook_permission": {
                "function_name": [
                    "aws_lambda_function.hook_function.function_name",
                    "aws_lambda_function.hook_function",
                ]
            }
        },
    )

    found = adoption.candidates(planned, recorded={"aws_iam_role.hook_role"})

    assert found == [
        adoption.Candidate("aws_kms_alias.key_alias", "alias/iotprovisioning-dev"),
        adoption.Candidate("aws_lambda_function.hook_function", "IoTProvisioning-dev-provisioning-hook"),
        adoption.Candidate(
            "aws_lambda_permission.hook_permission",
            "IoTProvisioning-dev-provisioning-hook/AllowIoTProvisioningTemplate",
        ),
    ]
    assert adoption.import_blocks(found[:1]) == {
        "import": [{"to": "aws_kms_alias.key_alias", "id": "alias/iotprovisioning-dev"}]
    }


def test_an_import_that_finds_nothing_is_told_apart_from_any_other_error() -> None:
    detail = (
        'While attempting to import an existing object to "aws_iot_policy.claim_policy", the provider '
        "detected that no object exists with the given id."
    )
    lines = [
        error(None, adoption.NOT_FOUND_ON_IMPORT, detail),
        error("aws_iam_role.hook_role", "reading IAM Role: AccessDenied"),
    ]

    missing, other = adoption.not_found(adoption.diagnostics(lines))

    assert missing == {"aws_iot_policy.claim_policy"}
    assert [d.address for d in other] == ["aws_iam_role.hook_role"]


def test_what_depends_on_a_resource_never_created_is_not_looked_for_again() -> None:
    """A plan skips the imports below one that found nothing; nothing below it can have been left."""
    chain = ["aws_cloudwatch_log_group.logs", "aws_lambda_function.fn", "aws_lambda_permission.p"]
    planned = plan(
        {
            chain[0]: {"name": "/aws/lambda/fn"},
            chain[1]: {"function_name": "fn"},
            chain[2]: {"statement_id": "s"},
            "aws_iam_role.role": {"name": "role"},
        },
        {
            chain[1]: {"role": ["aws_iam_role.role.arn", "aws_iam_role.role"]},
            chain[2]: {"function_name": [f"{chain[1]}.function_name", chain[1]]},
        },
    )
    planned["configuration"]["root_module"]["resources"][1]["depends_on"] = [chain[0]]
    everything = adoption.candidates(planned, recorded=set())

    assert [c.address for c in adoption.without_dependents(planned, everything, {chain[0]})] == ["aws_iam_role.role"]
    assert [c.address for c in adoption.without_dependents(planned, everything, {"aws_iam_role.role"})] == [chain[0]]


def importing(address: str, import_id: str, before: dict[str, Any], actions: tuple[str, ...] = ("no-op",)) -> Any:
    kind = address.split(".")[0]
    change = {"actions": list(actions), "importing": {"id": import_id}, "before": before}
    return {"address": address, "type": kind, "change": change}


def test_a_leftover_carrying_the_stack_s_tags_or_untaggable_is_adopted() -> None:
    planned = {
        "resource_changes": [
            importing("aws_iam_role.hook_role", "IoTProvisioning-dev-provisioning-hook-role", {"tags_all": TAGS}),
            importing("aws_cloudwatch_log_group.hook_logs", "/aws/lambda/x", {"tags_all": TAGS}, ("update",)),
            importing("aws_kms_alias.key_alias", "alias/iotprovisioning-dev", {}),
            importing("aws_iot_topic_rule.audit", "IoTProvisioning_dev_audit", {"tags_all": TAGS}),
            importing(
                "aws_lambda_permission.p", "IoTProvisioning-dev-provisioning-hook/AllowIoTProvisioningTemplate", {}
            ),
            {"address": "aws_sns_topic.alerts", "type": "aws_sns_topic", "change": {"actions": ["delete", "create"]}},
        ]
    }

    assert adoption.refusals(planned, TAGS) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            importing(
                "aws_dynamodb_table.registry", "devices", {"tags_all": {"Project": "Billing", "Environment": "dev"}}
            ),
            "does not carry the stack's tags",
        ),
        (
            importing("aws_iam_role.hook_role", "IoTProvisioning-dev-provisioning-hook-role", {"tags_all": {}}),
            "does not carry the stack's tags",
        ),
        (
            importing(
                "aws_dynamodb_table.registry", "device-registry-5c46f9f2", {"tags_all": TAGS}, ("delete", "create")
            ),
            "the plan would replace it",
        ),
    ],
    ids=["another project's table", "an untagged role", "replaced"],
)
def test_an_object_that_is_not_the_stack_s_own_or_that_the_plan_would_replace_is_refused(change: Any, why: str) -> None:
    problems = adoption.refusals({"resource_changes": [change]}, TAGS)

    assert len(problems) == 1
    assert change["address"] in problems[0] and why in problems[0]


def test_without_the_stack_s_default_tags_nothing_is_recognised_as_its_own() -> None:
    change = importing("aws_iam_role.hook_role", "IoTProvisioning-dev-provisioning-hook-role", {"tags_all": TAGS})

    assert adoption.refusals({"resource_changes": [change]}, {}) != []


def test_the_stack_s_tags_are_its_provider_s_default_tags() -> None:
    configuration = {"provider": {"aws": [{"region": "us-east-1", "default_tags": [{"tags": TAGS}]}]}}

    assert adoption.stack_tags(configuration) == TAGS
    assert adoption.stack_tags({"provider": {"aws": [{}]}}) == {}
