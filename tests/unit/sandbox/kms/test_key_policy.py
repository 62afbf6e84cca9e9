"""The sandbox's reading of a KMS key policy for a service principal (CloudWatch publishing an alarm to
an encrypted topic): what allows, what does not, and what it refuses to guess about."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.kms.key_policy import service_may_use

ACCOUNT = "123456789012"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234"
CONTEXT = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:a"}
ACTIONS = ["kms:GenerateDataKey", "kms:Decrypt"]


def allow(**overrides: Any) -> dict[str, Any]:
    statement = {
        "Sid": "CW",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
    }
    statement.update(overrides)
    return statement


def may(*statements: dict[str, Any]) -> tuple[bool, str]:
    return service_may_use({"Statement": list(statements)}, "cloudwatch.amazonaws.com", ACTIONS, KEY, CONTEXT)


@pytest.mark.parametrize(
    "statement",
    [
        allow(),
        allow(Principal="*"),
        allow(Principal={"Service": ["events.amazonaws.com", "cloudwatch.amazonaws.com"]}),
        allow(Action="kms:*"),
        allow(Condition={"StringEquals": {"aws:SourceAccount": ACCOUNT}}),
        allow(Condition={"ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:*"}}),
        allow(Condition={"StringEqualsIfExists": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}}),
    ],
)
def test_a_statement_granting_cloudwatch_both_actions_lets_it_use_the_key(statement: dict[str, Any]) -> None:
    assert may(statement) == (True, "")


@pytest.mark.parametrize(
    ("statements", "why"),
    [
        (
            [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
            "no statement allows it",
        ),
        ([allow(Action="kms:Decrypt")], "kms:GenerateDataKey"),
        ([allow(Condition={"StringEquals": {"aws:SourceAccount": "999999999999"}})], "does not hold"),
        ([allow(Condition={"StringEquals": {"kms:CallerAccount": ACCOUNT}})], "not in the request context"),
        ([allow(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}})], "not evaluated by the sandbox"),
        ([allow(), allow(Effect="Deny", Action="kms:Decrypt")], "denies"),
        ([allow(NotResource="x")], "NotPrincipal/NotAction/NotResource"),
    ],
)
def test_a_policy_that_does_not_clearly_allow_refuses_and_says_why(statements: list[dict[str, Any]], why: str) -> None:
    allowed, reason = may(*statements)

    assert not allowed
    assert why in reason
