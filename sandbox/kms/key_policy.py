"""Whether a KMS key policy lets an AWS service principal use the key, as KMS decides it for a
service acting on the account's behalf (CloudWatch publishing an alarm to an encrypted SNS topic).

A small evaluator, not IAM's: Allow and Deny statements; Principal `*`, `{"AWS": "*"}` or
`{"Service": ...}`; Action and Resource with `*` and `?` wildcards; the String and Arn condition
operators (with IfExists and the Not forms) on the keys in the request context. A key missing from
the context fails a positive operator and satisfies a negated one, as in IAM. A statement using
anything else (NotPrincipal, NotAction, NotResource, another operator, ForAnyValue/ForAllValues)
never allows, and a Deny with a condition it cannot read denies; the reason says so, so a policy
the sandbox cannot read refuses instead of passing silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

NOT_EVALUATED = "is not evaluated by the sandbox"
OPERATORS = {
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
}


@cache
def _wildcard(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{regex}$", 0 if case_sensitive else re.IGNORECASE)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal(statement: Mapping[str, Any], service: str) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return "*" in _listed(principal.get("AWS", [])) or service in _listed(principal.get("Service", []))


def _condition(block: Any, context: Mapping[str, str]) -> str | None:
    """None when every condition holds; otherwise why not."""
    if not isinstance(block, Mapping):
        return "its Condition is not an object"
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in block.items():
        base = operator.removesuffix("IfExists")
        if base not in OPERATORS or not isinstance(tests, Mapping):
            return f"condition operator {operator} {NOT_EVALUATED}"
        negated = "Not" in base
        for key, expected in tests.items():
            actual = lowered.get(key.lower())
            if actual is None:
                if operator.endswith("IfExists") or negated:
                    continue
                return f"{key} is not in the request context"
            like = base.endswith("Like")
            matched = any(
                _wildcard(str(e), case_sensitive=True).match(actual) if like else str(e) == actual
                for e in _listed(expected)
            )
            if matched == negated:
                return f"{operator} {key} does not hold for {actual}"
    return None


def service_may_use(
    policy: str | Mapping[str, Any], service: str, actions: list[str], resource: str, context: Mapping[str, str]
) -> tuple[bool, str]:
    """(True, "") when the policy allows the service principal every action on the key; else (False, why)."""
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = [s for s in _listed(document.get("Statement", [])) if isinstance(s, Mapping)]
    for action in actions:
        allowed, reasons = False, []
        for statement in statements:
            name = statement.get("Sid", "a statement")
            if {"NotPrincipal", "NotAction", "NotResource"} & set(statement):
                reasons.append(f"{name} uses NotPrincipal/NotAction/NotResource, which the sandbox does not evaluate")
                continue
            if not _principal(statement, service):
                continue
            if not any(_wildcard(str(a), case_sensitive=False).match(action) for a in _listed(statement.get("Action"))):
                continue
            if not any(
                _wildcard(str(r), case_sensitive=True).match(resource) for r in _listed(statement.get("Resource", []))
            ):
                continue
            unmet = _condition(statement.get("Condition", {}), context)
            if statement.get("Effect") == "Deny" and (unmet is None or NOT_EVALUATED in unmet):
                return False, f"{name} denies {service} {action}" + (f" ({unmet})" if unmet else "")
            if statement.get("Effect") == "Allow":
                if unmet is None:
                    allowed = True
                else:
                    reasons.append(f"{name} allows {action} only when {unmet}")
        if not allowed:
            why = "; ".join(reasons) or "no statement allows it"
            return False, f"the key policy does not allow {service} to use {action}: {why}"
    return True, ""
