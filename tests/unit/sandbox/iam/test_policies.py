"""The sandbox's IAM evaluator against AWS's documented evaluation logic, near misses included."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.iam.policies import (
    ABSENT,
    Decision,
    Principal,
    Request,
    denial_message,
    evaluate,
    parse_document,
    wildcard_match,
)

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/device-registry"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
THING = "arn:aws:iot:us-east-1:123456789012:thing/gateway-SN1"
VIA = "dynamodb.us-east-1.amazonaws.com"
RULE_PATTERN = "arn:aws:iot:us-east-1*:rule/fleet_thing_created"
CALLED_VIA = ["athena.amazonaws.com", "dynamodb.amazonaws.com"]


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def decide(statements: list[dict[str, Any]], action: str, resource: str, **context: Any) -> Decision:
    policy = parse_document({"Version": "2012-10-17", "Statement": statements})
    return evaluate([policy], Request(action, resource, {k.lower(): v for k, v in context.items()}))


def allowed(statements: list[dict[str, Any]], action: str, resource: str, **context: Any) -> bool:
    return decide(statements, action, resource, **context).allowed


# Action and NotAction --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("dynamodb:UpdateItem", "dynamodb:UpdateItem", True),
        ("DynamoDB:updateitem", "dynamodb:UpdateItem", True),  # actions are case-insensitive
        ("dynamodb:UpdateItem", "dynamodb:UpdateItems", False),  # whole name, not a prefix
        ("dynamodb:Update*", "dynamodb:UpdateItem", True),
        ("dynamodb:Update*", "dynamodb:GetItem", False),
        ("dynamodb:?etItem", "dynamodb:GetItem", True),
        ("dynamodb:?etItem", "dynamodb:BatchGetItem", False),  # ? is exactly one character
        ("dynamodb:*", "dynamodbx:GetItem", False),  # the service prefix is matched whole
        ("*", "iot:CreateThing", True),
        ("iot:Describe*", "iot:ListThings", False),
    ],
)
def test_action_patterns_match_case_insensitively_with_star_and_question_mark(
    pattern: str, action: str, expected: bool
) -> None:
    assert allowed([allow(pattern)], action, TABLE) is expected


def test_not_action_allows_everything_but_the_named_actions() -> None:
    statements = [{"Effect": "Allow", "NotAction": ["iam:*", "kms:Decrypt"], "Resource": "*"}]
    assert allowed(statements, "dynamodb:GetItem", TABLE)
    assert not allowed(statements, "iam:PassRole", "*")
    assert not allowed(statements, "KMS:decrypt", KEY)  # NotAction is case-insensitive too


def test_a_deny_with_not_action_denies_everything_but_the_named_actions() -> None:
    statements = [allow("*"), {"Effect": "Deny", "NotAction": "dynamodb:GetItem", "Resource": "*"}]
    assert allowed(statements, "dynamodb:GetItem", TABLE)
    decision = decide(statements, "dynamodb:PutItem", TABLE)
    assert not decision.allowed and decision.explicit_deny


# Resource and NotResource -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        (TABLE, TABLE, True),
        (TABLE.upper(), TABLE, False),  # resources are case-sensitive
        ("arn:aws:iot:us-east-1:123456789012:thing/*", THING, True),
        ("arn:aws:iot:us-east-1:123456789012:thing/*", "arn:aws:iot:us-east-1:123456789012:thinggroup/gateways", False),
        ("arn:aws:iot:*:123456789012:thing/*", THING, True),  # * spans a whole ARN part
        ("arn:aws:iot:us-east-1:*", THING, True),  # and colons and slashes too
        ("arn:aws:iot:us-east-1:123456789012:thing/gateway-SN?", THING, True),
        ("arn:aws:iot:us-east-1:123456789012:thing/gateway-SN?", THING + "0", False),
        ("arn:aws:dynamodb:us-east-1:123456789012:table/device.registry", TABLE, False),  # . is not a wildcard
        ("arn:aws:dynamodb:us-east-1:123456789012:table/device-registry/index/*", TABLE, False),
    ],
)
def test_resource_patterns_match_case_sensitively(pattern: str, resource: str, expected: bool) -> None:
    assert allowed([allow("dynamodb:GetItem", pattern), allow("iot:*", pattern)], "iot:DescribeThing", resource) is (
        expected
    )


def test_not_resource_allows_every_resource_but_the_named_ones() -> None:
    statements = [{"Effect": "Allow", "Action": "iot:*", "NotResource": "arn:aws:iot:*:*:thing/gateway-*"}]
    assert allowed(statements, "iot:DescribeThing", "arn:aws:iot:us-east-1:123456789012:thing/sensor-1")
    assert not allowed(statements, "iot:DescribeThing", THING)


def test_a_statement_without_resource_fails_closed() -> None:
    assert not allowed([{"Effect": "Allow", "Action": "iot:*"}], "iot:DescribeThing", THING)
    assert not allowed([allow("*"), {"Effect": "Deny", "Action": "iot:*"}], "iot:DescribeThing", THING)


# Evaluation order -------------------------------------------------------------------------------------
def test_an_explicit_deny_wins_over_any_allow_in_any_policy() -> None:
    allow_all = parse_document({"Statement": [allow("*")]})
    deny_one = parse_document({"Statement": [deny("dynamodb:UpdateItem", TABLE)]})
    for order in ([allow_all, deny_one], [deny_one, allow_all]):
        decision = evaluate(order, Request("dynamodb:UpdateItem", TABLE))
        assert not decision.allowed and decision.explicit_deny
    assert evaluate([allow_all, deny_one], Request("dynamodb:GetItem", TABLE)).allowed


def test_without_an_allow_the_request_is_implicitly_denied() -> None:
    decision = decide([allow("dynamodb:GetItem", TABLE)], "dynamodb:UpdateItem", TABLE)
    assert not decision.allowed and not decision.explicit_deny
    assert not evaluate([], Request("dynamodb:GetItem", TABLE)).allowed


def test_a_deny_for_another_resource_does_not_apply() -> None:
    assert allowed([allow("*"), deny("*", TABLE + "-other")], "dynamodb:GetItem", TABLE)


# Conditions ----------------------------------------------------------------------------------------
VIA_DYNAMODB = {"StringEquals": {"kms:ViaService": "dynamodb.us-east-1.amazonaws.com"}}


def test_string_equals_on_kms_via_service() -> None:
    statements = [allow(["kms:Decrypt"], KEY, Condition=VIA_DYNAMODB)]
    assert allowed(statements, "kms:Decrypt", KEY, **{"kms:ViaService": "dynamodb.us-east-1.amazonaws.com"})
    assert not allowed(statements, "kms:Decrypt", KEY, **{"kms:ViaService": "dynamodb.eu-west-1.amazonaws.com"})
    assert not allowed(statements, "kms:Decrypt", KEY, **{"kms:ViaService": ABSENT})  # called directly
    assert not allowed(statements, "kms:Decrypt", KEY, **{"KMS:VIASERVICE": "DYNAMODB.us-east-1.amazonaws.com"})


def test_condition_keys_are_case_insensitive_and_values_case_sensitive() -> None:
    statements = [allow("kms:Decrypt", KEY, Condition={"StringEquals": {"KMS:viaService": VIA}})]
    assert allowed(statements, "kms:Decrypt", KEY, **{"kms:viaservice": VIA})
    assert not allowed(statements, "kms:Decrypt", KEY, **{"kms:viaservice": VIA.upper()})
    ignore_case = [allow("kms:Decrypt", KEY, Condition={"StringEqualsIgnoreCase": {"kms:ViaService": VIA.upper()}})]
    assert allowed(ignore_case, "kms:Decrypt", KEY, **{"kms:ViaService": VIA})


def test_if_exists_and_negated_operators_when_the_key_is_absent() -> None:
    if_exists = [allow("*", Condition={"StringEqualsIfExists": {"aws:SourceAccount": "123456789012"}})]
    assert allowed(if_exists, "iot:DescribeThing", THING, **{"aws:SourceAccount": ABSENT})
    assert allowed(if_exists, "iot:DescribeThing", THING, **{"aws:SourceAccount": "123456789012"})
    assert not allowed(if_exists, "iot:DescribeThing", THING, **{"aws:SourceAccount": "999999999999"})
    negated = [allow("*", Condition={"StringNotEquals": {"aws:SourceAccount": "999999999999"}})]
    assert allowed(negated, "iot:DescribeThing", THING, **{"aws:SourceAccount": ABSENT})
    assert not allowed(negated, "iot:DescribeThing", THING, **{"aws:SourceAccount": "999999999999"})
    plain = [allow("*", Condition={"StringEquals": {"aws:SourceAccount": "123456789012"}})]
    assert not allowed(plain, "iot:DescribeThing", THING, **{"aws:SourceAccount": ABSENT})


def test_string_like_and_arn_like_wildcards() -> None:
    rule = "arn:aws:iot:us-east-1:123456789012:rule/fleet_thing_created"
    like = [allow("*", Condition={"ArnLike": {"aws:SourceArn": "arn:aws:iot:*:123456789012:rule/fleet_*"}})]
    assert allowed(like, "lambda:InvokeFunction", "*", **{"aws:SourceArn": rule})
    elsewhere = rule.replace("123456789012", "999999999999")
    assert not allowed(like, "lambda:InvokeFunction", "*", **{"aws:SourceArn": elsewhere})
    # ArnLike matches part by part: a wildcard in one part cannot swallow the colon of the next
    parts = [allow("*", Condition={"ArnLike": {"aws:SourceArn": RULE_PATTERN}})]
    assert not allowed(parts, "lambda:InvokeFunction", "*", **{"aws:SourceArn": rule})
    string_like = [allow("*", Condition={"StringLike": {"aws:SourceArn": RULE_PATTERN}})]
    assert allowed(string_like, "lambda:InvokeFunction", "*", **{"aws:SourceArn": rule})
    not_like = [allow("*", Condition={"ArnNotLike": {"aws:SourceArn": "arn:aws:iot:*:*:rule/other*"}})]
    assert allowed(not_like, "lambda:InvokeFunction", "*", **{"aws:SourceArn": rule})


def test_bool_and_null() -> None:
    secure = [allow("*"), deny("*", Condition={"Bool": {"aws:SecureTransport": "false"}})]
    assert allowed(secure, "dynamodb:GetItem", TABLE, **{"aws:SecureTransport": True})
    assert not allowed(secure, "dynamodb:GetItem", TABLE, **{"aws:SecureTransport": False})
    null = [allow("*", Condition={"Null": {"aws:SourceArn": "true"}})]
    assert allowed(null, "dynamodb:GetItem", TABLE, **{"aws:SourceArn": ABSENT})
    assert not allowed(null, "dynamodb:GetItem", TABLE, **{"aws:SourceArn": "arn:aws:iot:us-east-1:1:rule/r"})


def test_several_values_are_alternatives_and_several_keys_all_must_hold() -> None:
    statement = allow(
        "*",
        Condition={
            "StringEquals": {"aws:SourceAccount": ["111111111111", "123456789012"], "kms:ViaService": VIA},
        },
    )
    both = {"aws:SourceAccount": "123456789012", "kms:ViaService": VIA}
    assert allowed([statement], "kms:Decrypt", KEY, **both)
    assert not allowed([statement], "kms:Decrypt", KEY, **{**both, "kms:ViaService": "s3.us-east-1.amazonaws.com"})


def test_for_any_value_and_for_all_values_on_a_multi_valued_key() -> None:
    any_value = [allow("*", Condition={"ForAnyValue:StringEquals": {"aws:CalledVia": "dynamodb.amazonaws.com"}})]
    assert allowed(any_value, "kms:Decrypt", KEY, **{"aws:CalledVia": CALLED_VIA})
    all_values = [allow("*", Condition={"ForAllValues:StringEquals": {"aws:CalledVia": "dynamodb.amazonaws.com"}})]
    assert not allowed(all_values, "kms:Decrypt", KEY, **{"aws:CalledVia": CALLED_VIA})


@pytest.mark.parametrize(
    "condition",
    [
        {"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}},  # an operator it does not implement
        {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
        {"StringEquals": {"aws:PrincipalTag/team": "iot"}},  # a key the request context cannot answer
        {"StringEqualsAnyCase": {"aws:SourceAccount": "123456789012"}},  # not an operator at all
    ],
)
def test_conditions_it_cannot_evaluate_fail_closed(condition: dict[str, Any]) -> None:
    context = {"aws:SourceAccount": "123456789012"}
    assert not allowed([allow("*", Condition=condition)], "dynamodb:GetItem", TABLE, **context)  # Allow ignored
    denied = decide([allow("*"), deny("*", Condition=condition)], "dynamodb:GetItem", TABLE, **context)
    assert not denied.allowed and denied.explicit_deny  # Deny applies


def test_a_policy_variable_in_resource_fails_closed() -> None:
    resource = "arn:aws:iot:us-east-1:123456789012:thing/${aws:username}"
    assert not allowed([allow("iot:*", resource)], "iot:DescribeThing", THING)
    assert not allowed([allow("*"), deny("iot:*", resource)], "iot:DescribeThing", THING)


def test_unreadable_policies_fail_closed() -> None:
    assert not evaluate([parse_document("{not json")], Request("iot:DescribeThing", THING)).allowed
    assert not allowed([{"Effect": "allow", "Action": "*", "Resource": "*"}], "iot:DescribeThing", THING)
    assert not allowed([allow("*", NotPrincipal={"AWS": "*"})], "iot:DescribeThing", THING)


# Resource-based and trust policies ---------------------------------------------------------------------
def test_a_resource_based_statement_applies_only_to_its_principal() -> None:
    function = "arn:aws:lambda:us-east-1:123456789012:function:hook"
    template = "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/fleet"
    policy = parse_document(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "iot.amazonaws.com"},
                    "Action": "lambda:InvokeFunction",
                    "Resource": function,
                    "Condition": {"ArnLike": {"AWS:SourceArn": template}},
                }
            ]
        }
    )

    def invoke(principal: Principal, source: Any) -> bool:
        request = Request("lambda:InvokeFunction", function, {"aws:sourcearn": source}, principal)
        return evaluate([policy], request).allowed

    assert invoke(Principal("Service", "iot.amazonaws.com"), template)
    assert not invoke(Principal("Service", "iot.amazonaws.com"), template + "-other")
    assert not invoke(Principal("Service", "iot.amazonaws.com"), ABSENT)
    assert not invoke(Principal("Service", "events.amazonaws.com"), template)


def test_denial_messages_take_aws_form() -> None:
    request = Request("dynamodb:UpdateItem", TABLE)
    principal = "arn:aws:sts::123456789012:assumed-role/hook-role/hook"
    assert denial_message(principal, request, Decision(False), "identity-based") == (
        f"User: {principal} is not authorized to perform: dynamodb:UpdateItem on resource: {TABLE} "
        "because no identity-based policy allows the dynamodb:UpdateItem action"
    )
    assert denial_message(principal, request, Decision(False, explicit_deny=True), "identity-based").endswith(
        "with an explicit deny in an identity-based policy"
    )


def test_wildcards_treat_regular_expression_characters_literally() -> None:
    assert wildcard_match("a+b(c)[d]", "a+b(c)[d]")
    assert not wildcard_match("a+b", "aab")


# Set operators (reference_policies_condition-single-vs-multi-valued-context-keys.html) -----------------
@pytest.mark.parametrize(
    ("operator", "absent", "expected"),
    [
        ("ForAllValues:StringEquals", ABSENT, True),  # "returns true if there are no context keys in the request"
        ("ForAllValues:StringEquals", [], True),  # "... or if the context key value resolves to a null dataset"
        ("ForAllValues:StringNotEquals", ABSENT, True),
        ("ForAnyValue:StringEquals", ABSENT, False),  # "returns false if there are no context keys"
        ("ForAnyValue:StringEquals", [], False),
        ("ForAnyValue:StringNotEquals", ABSENT, False),
        ("ForAnyValue:StringEqualsIfExists", ABSENT, True),  # IfExists: a missing key makes it true
        ("ForAllValues:StringEqualsIfExists", ABSENT, True),
    ],
)
def test_set_operators_on_a_key_the_request_does_not_hold(operator: str, absent: Any, expected: bool) -> None:
    condition = {operator: {"aws:CalledVia": ["athena.amazonaws.com"]}}
    assert allowed([allow("*", Condition=condition)], "dynamodb:GetItem", TABLE, **{"aws:CalledVia": absent}) is (
        expected
    )


def test_a_deny_with_for_all_values_on_an_absent_key_applies() -> None:
    statements = [
        allow("*"),
        deny(
            "dynamodb:*",
            Condition={
                "ForAllValues:StringEquals": {"aws:CalledVia": ["cloudformation.amazonaws.com"]},
            },
        ),
    ]
    decision = decide(statements, "dynamodb:DeleteTable", TABLE, **{"aws:CalledVia": ABSENT})
    assert not decision.allowed and decision.explicit_deny


@pytest.mark.parametrize(
    ("operator", "policy_values", "request_values", "expected"),
    [
        # negated operators apply to each request value: "owner" matches none of [team, env]
        ("ForAnyValue:StringNotEquals", ["team", "env"], ["team", "owner"], True),
        ("ForAnyValue:StringNotEquals", ["team", "env"], ["team", "env"], False),
        ("ForAnyValue:StringNotEquals", ["a", "b"], ["a", "c"], True),
        ("ForAllValues:StringNotEquals", ["secret"], ["secret", "team"], False),  # "secret" is in the set
        ("ForAllValues:StringNotEquals", ["secret"], ["team", "env"], True),
        ("ForAnyValue:StringNotLike", ["team*"], ["team-a", "owner"], True),
        ("ForAllValues:StringNotLike", ["team*"], ["team-a", "owner"], False),
        ("ForAnyValue:StringEquals", ["team", "env"], ["owner", "env"], True),
        ("ForAllValues:StringEquals", ["team", "env"], ["owner", "env"], False),
        ("ForAllValues:StringEquals", ["team", "env"], ["team", "env"], True),
    ],
)
def test_set_operators_compare_each_request_value(
    operator: str, policy_values: list[str], request_values: list[str], expected: bool
) -> None:
    condition = {operator: {"aws:TagKeys": policy_values}}
    assert allowed([allow("*", Condition=condition)], "iam:TagRole", "*", **{"aws:TagKeys": request_values}) is (
        expected
    )
