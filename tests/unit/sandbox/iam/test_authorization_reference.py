"""The resources AWS authorizes each action against, from the Service Authorization Reference."""

from __future__ import annotations

import fnmatch
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.iam.authorization_reference import (
    ReferenceMismatch,
    _wildcards_meet,
    authorized_resource,
    expand,
    grants_type,
    lookup,
    meet,
    statement_mismatches,
    supported_context,
)

ARN = "arn:aws:iot:us-east-1:123456789012"


def test_an_action_s_resource_types_are_the_reference_s() -> None:
    assert [t.name for t in lookup("iot:AttachPolicy").resource_types] == ["cert", "thinggroup"]
    assert [t.name for t in lookup("dynamodb:GetItem").resource_types] == ["table"]
    assert lookup("iot:ListAttachedPolicies").resource_types == ()
    assert lookup("IOT:listattachedpolicies").action == "iot:ListAttachedPolicies"  # IAM ignores case


def test_a_service_condition_key_is_set_only_for_the_actions_the_reference_lists_it_for() -> None:
    context = {"cloudwatch:namespace": "Fleet", "aws:SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/r"}
    assert supported_context("cloudwatch:PutMetricData", context) == context
    assert supported_context("cloudwatch:ListMetrics", context) == {"aws:SourceArn": context["aws:SourceArn"]}
    kms = {"kms:ViaService": "dynamodb.us-east-1.amazonaws.com", "kms:EncryptionContext:aws:dynamodb:tableName": "t"}
    assert supported_context("kms:Decrypt", kms) == kms  # a ${...} key stands for any text
    assert supported_context("kms:DescribeKey", {"kms:EncryptionContext:x": "y"}) == {}
    assert supported_context("iot:AttachThingPrincipal", {"iot:thingArn": "arn"}) == {"iot:thingArn": "arn"}
    assert supported_context("iot:Publish", {"iot:thingArn": "arn"}) == {}


def test_an_action_with_no_resource_type_is_authorized_against_star_only() -> None:
    assert authorized_resource("iot:ListAttachedPolicies", f"{ARN}:cert/abc") == "*"
    assert authorized_resource("cloudwatch:PutMetricData", "*") == "*"


def test_a_typed_action_is_authorized_against_the_resource_and_a_resource_of_another_type_is_refused() -> None:
    assert authorized_resource("iot:AttachPolicy", f"{ARN}:cert/abc") == f"{ARN}:cert/abc"
    assert authorized_resource("iot:AttachPolicy", f"{ARN}:thinggroup/g") == f"{ARN}:thinggroup/g"
    with pytest.raises(
        ReferenceMismatch, match=r"iot:AttachPolicy is never authorized against '.*:thing/t' \(a thing\)"
    ):
        authorized_resource("iot:AttachPolicy", f"{ARN}:thing/t")


def test_an_arn_is_of_the_most_specific_type_it_fits() -> None:
    """A table's index ARN also fits the table's format, a log stream's the group's: neither passes as one."""
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/registry"
    assert authorized_resource("dynamodb:GetItem", table) == table
    with pytest.raises(ReferenceMismatch, match=r"\(a index\)"):
        authorized_resource("dynamodb:GetItem", f"{table}/index/status-index")
    assert authorized_resource("dynamodb:Query", f"{table}/index/status-index") == f"{table}/index/status-index"
    stream = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/hook:log-stream:2026/12/07/x"
    assert authorized_resource("logs:PutLogEvents", stream) == stream
    with pytest.raises(ReferenceMismatch, match=r"\(a log-stream\)"):
        authorized_resource("logs:DescribeLogStreams", stream)


def test_an_action_the_reference_does_not_know_is_refused() -> None:
    with pytest.raises(ReferenceMismatch, match="iot:AttachPolicies: no such action"):
        authorized_resource("iot:AttachPolicies", "*")
    assert statement_mismatches("iot:AttachPolicies", "*") == [
        "iot:AttachPolicies: no such action in the Service Authorization Reference"
    ]


def test_a_statement_grants_nothing_for_an_action_on_a_resource_aws_never_checks_it_against() -> None:
    assert statement_mismatches("iot:ListAttachedPolicies", f"{ARN}:cert/*") == [
        f'iot:ListAttachedPolicies on {ARN}:cert/*: AWS authorizes it against "*" only (the action has no '
        "resource type)"
    ]
    assert statement_mismatches("iot:ListAttachedPolicies", "*") == []
    assert statement_mismatches("iot:ListAttachedPolicies", "arn:aws:iot:*") != []  # only "*" itself
    log_group = "arn:aws:logs:us-east-1:123456789012:log-group:audit"
    assert statement_mismatches("logs:PutLogEvents", f"{log_group}:*") == []  # its streams
    assert statement_mismatches("logs:PutLogEvents", log_group) != []  # the group is not a stream
    topic = f"{ARN}:topic/devices/${{iot:Connection.Thing.ThingName}}/telemetry"
    assert statement_mismatches("iot:Publish", topic) == []
    assert statement_mismatches("iot:Subscribe", topic) != []  # Subscribe is checked on a topicfilter


def test_an_action_pattern_names_every_action_it_matches() -> None:
    listed = {reference.action for reference in expand("iot:ListAttached*")}
    assert listed == {"iot:ListAttachedPolicies"}
    assert len(expand("iot:*")) > 250
    assert expand("iot:[L]istAttachedPolicies") == []  # IAM has no character classes


def test_a_wildcard_action_grants_nothing_only_when_none_of_its_actions_is_granted() -> None:
    assert statement_mismatches("iot:Describe*", f"{ARN}:cert/*") == []  # DescribeCertificate is
    assert statement_mismatches("iot:ListAttached*", f"{ARN}:cert/*") == [
        f"iot:ListAttached* on {ARN}:cert/*: none of the 1 actions it names is granted"
    ]
    assert statement_mismatches("*", "*") == []


def test_a_long_resource_pattern_is_checked_without_running_out_of_stack() -> None:
    topic = f"{ARN}:topic/" + "/".join(["level"] * 150) + "/*"

    assert statement_mismatches("iot:Publish", topic) == []
    assert statement_mismatches("iot:Subscribe", topic) != []


def _brute_force_meet(a: str, b: str) -> bool:
    """Some string over a, b and one other letter, no longer than the literals of both, matches both."""
    longest = sum(c != "*" for c in a + b)
    for length in range(longest + 1):
        for letters in itertools.product("abz", repeat=length):
            text = "".join(letters)
            if fnmatch.fnmatchcase(text, a) and fnmatch.fnmatchcase(text, b):
                return True
    return False


PATTERN = st.text(alphabet="ab*?", max_size=4)


@settings(max_examples=300, deadline=None)
@given(PATTERN, PATTERN)
def test_two_wildcard_patterns_meet_exactly_when_some_string_matches_both(a: str, b: str) -> None:
    assert _wildcards_meet(a, b) == _brute_force_meet(a, b)
    found = meet(a, b)
    assert found is None or (fnmatch.fnmatchcase(found, a) and fnmatch.fnmatchcase(found, b))  # the witness does


def test_a_resource_pattern_names_a_type_by_the_most_specific_type_of_the_arns_it_matches() -> None:
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/registry"
    query = lookup("dynamodb:Query")
    table_type, index_type = query.resource_types
    assert (grants_type(table_type, table), grants_type(index_type, table)) == (True, False)
    assert (grants_type(table_type, f"{table}/index/*"), grants_type(index_type, f"{table}/index/*")) == (False, True)
    everything = "arn:aws:dynamodb:us-east-1:123456789012:table/*"
    assert (grants_type(table_type, everything), grants_type(index_type, everything)) == (True, True)
    (stream,) = lookup("logs:PutLogEvents").resource_types
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/fleet/hook"
    assert (grants_type(stream, f"{group}:*"), grants_type(stream, group)) == (True, False)
