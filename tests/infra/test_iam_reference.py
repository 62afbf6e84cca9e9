"""Every policy statement the stack writes names resources of the types AWS authorizes its actions
against, per the Service Authorization Reference (sandbox.iam.authorization_reference): a grant on a
resource AWS never checks for an action grants nothing on AWS, however the sandbox answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sandbox.iam.authorization_reference import expand, grants_type, iam_pattern, statement_mismatches
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

ACCOUNT, REGION = "123456789012", "us-east-1"
# What each Terraform reference in a policy stands for: an ARN of the resource's own type (the type
# is what the check reads), or a name.
ARN_OF = {
    "aws_cloudwatch_log_group": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:group",
    "aws_dynamodb_table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/table",
    "aws_iam_role": f"arn:aws:iam::{ACCOUNT}:role/role",
    "aws_iot_certificate": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/certificate",
    "aws_iot_policy": f"arn:aws:iot:{REGION}:{ACCOUNT}:policy/policy",
    "aws_iot_provisioning_template": f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/template",
    "aws_iot_thing_group": f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/group",
    "aws_iot_thing_type": f"arn:aws:iot:{REGION}:{ACCOUNT}:thingtype/type",
    "aws_iot_topic_rule": f"arn:aws:iot:{REGION}:{ACCOUNT}:rule/rule",
    "aws_kms_key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/key",
    "aws_lambda_function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:function",
    "aws_sns_topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:topic",
}
DATA = {"partition": "aws", "name": REGION, "region": REGION, "account_id": ACCOUNT}
_REFERENCE = re.compile(r"\$\{(data\.)?([a-z0-9_]+)\.[A-Za-z0-9_-]+\.([a-z_]+)\}")


def _resolve(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        data, kind, attribute = match.groups()
        if data:
            assert attribute in DATA, f"no stand-in for {match.group()}"
            return DATA[attribute]
        if attribute == "arn":
            assert kind in ARN_OF, f"no stand-in ARN for {match.group()}: add its type to ARN_OF"
            return ARN_OF[kind]
        return "name"

    return _REFERENCE.sub(value, text)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(synth: Synth) -> list[tuple[str, dict[str, Any]]]:
    """Every identity-based statement the stack writes: the roles' inline policies and the IoT policies
    (their actions and resources are IoT's, from the same reference)."""
    found = []
    for kind in ("aws_iam_role_policy", "aws_iot_policy"):
        for logical, body in synth.resources(kind).items():
            document = json.loads(_resolve(body["policy"]))
            listed = document["Statement"]
            for index, statement in enumerate([listed] if isinstance(listed, dict) else listed):
                found.append((f"{kind}.{logical} statement {index}", statement))
    return found


def problems(statement: dict[str, Any]) -> list[str]:
    """Each action that no resource of the statement grants, and each resource no action applies to."""
    actions, resources = _as_list(statement["Action"]), _as_list(statement["Resource"])
    granted = {
        (action, resource): not statement_mismatches(action, resource) for action in actions for resource in resources
    }
    found = []
    for action in actions:
        if not any(granted[action, resource] for resource in resources):
            found.extend(mismatch for resource in resources for mismatch in statement_mismatches(action, resource))
    for resource in resources:
        if not any(granted[action, resource] for action in actions):
            found.append(f"{resource}: no action of the statement is authorized against it ({actions})")
    return found


@pytest.mark.parametrize("stack", ["synth", "variant"])
def test_every_statement_names_resources_aws_authorizes_its_actions_against(
    stack: str, request: pytest.FixtureRequest
) -> None:
    """The default stack and the variant (prod, Target=aws, a new catalogue type, two claim generations)."""
    examined = statements(request.getfixturevalue(stack))
    assert len(examined) >= 20, "the stack's statements were not found"
    # NotAction and NotResource are not checked here: the stack writes none.
    assert all("Action" in s and "Resource" in s for _, s in examined), [w for w, s in examined if "Action" not in s]

    found = {where: problems(s) for where, s in examined}

    wrong = list(dict.fromkeys(f"{where}: {problem}" for where, listed in found.items() for problem in listed))
    assert not wrong, "grants that do nothing on AWS:\n" + "\n".join(wrong)


def test_the_check_names_a_grant_on_a_resource_aws_never_checks(synth: Synth) -> None:
    """The check catches the defect it exists for: ListAttachedPolicies (no resource type) on cert/*."""
    statement = {
        "Effect": "Allow",
        "Action": ["iot:DescribeCertificate", "iot:ListAttachedPolicies"],
        "Resource": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/*",
    }

    assert problems(statement) == [
        f'iot:ListAttachedPolicies on arn:aws:iot:{REGION}:{ACCOUNT}:cert/*: AWS authorizes it against "*" only '
        "(the action has no resource type)"
    ]


def missing_required(document: list[dict[str, Any]]) -> list[str]:
    """Each action a policy allows but for which no statement of it names a resource of one of the
    types the reference marks required (AWS checks a resource of each: one missing denies the call).

    Read strictly: dynamodb:Query and Scan mark the table required though AWS's own policy examples
    grant a query of an index on the index's ARN alone (developerguide/iam-policy-example-data-crud.html);
    the stack grants both, which works under either reading."""
    found = []
    allows = [s for s in document if s.get("Effect") == "Allow"]
    named = {name for s in allows for name in _as_list(s["Action"]) if "*" not in name and "?" not in name}
    for action in sorted(named):
        (reference,) = expand(action)
        covering = [
            resource
            for s in allows
            if any(iam_pattern(p.lower()).fullmatch(action.lower()) for p in _as_list(s["Action"]))
            for resource in _as_list(s["Resource"])
        ]
        for required in reference.required_types:
            if not any(grants_type(required, resource) for resource in covering):
                found.append(f"{action}: no resource of type {required.name} ({required.arn_format})")
    return found


@pytest.mark.parametrize("stack", ["synth", "variant"])
def test_every_allowed_action_names_a_resource_of_each_type_aws_requires(
    stack: str, request: pytest.FixtureRequest
) -> None:
    synth = request.getfixturevalue(stack)
    documents: dict[str, list[dict[str, Any]]] = {}
    for where, statement in statements(synth):
        documents.setdefault(where.rpartition(" statement ")[0], []).append(statement)
    examined = sum(len(document) for document in documents.values())
    assert examined == len(statements(synth)) and len(documents) >= 10
    wrong = [f"{policy}: {problem}" for policy, document in documents.items() for problem in missing_required(document)]
    assert not wrong, "allowed actions AWS would still deny:\n" + "\n".join(wrong)


def test_the_required_type_check_names_an_action_missing_one_of_its_resources() -> None:
    """AddThingToThingGroup needs the thing and the group: a policy naming only the group allows nothing;
    a query of an index alone is read strictly too."""
    group_only = [
        {
            "Effect": "Allow",
            "Action": "iot:AddThingToThingGroup",
            "Resource": f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/fleet",
        }
    ]
    thing_type = "arn:${Partition}:iot:${Region}:${Account}:thing/${ThingName}"
    assert missing_required(group_only) == [f"iot:AddThingToThingGroup: no resource of type thing ({thing_type})"]
    index_only = [{"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{TABLE}/index/serial"}]
    assert missing_required(index_only) == [
        "dynamodb:Query: no resource of type table (arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName})"
    ]
    assert missing_required([{**index_only[0], "Resource": [TABLE, f"{TABLE}/index/serial"]}]) == []


TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/registry"
