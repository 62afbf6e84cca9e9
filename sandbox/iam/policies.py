"""IAM policy evaluation: does a set of policy documents allow one action on one resource?

moto's own evaluator checks only actions, against the resource "*", and passes most conditions
(research report, section C), and no maintained, permissively licensed Python evaluator exists,
so this is a small one written to AWS's documented evaluation logic
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny in any applicable statement wins; otherwise an Allow is required; otherwise the
request is implicitly denied. Action/NotAction match case-insensitively, Resource/NotResource
case-sensitively, both with `*` and `?`. Conditions: the String, Arn, Bool and Null operators, with
their Not and IfExists forms and the ForAnyValue/ForAllValues set prefixes (each request value is
tested on its own, a negated operator holding for a value no policy value matches; with the key
absent ForAllValues holds and ForAnyValue does not:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html).

Fail closed: a statement whose condition uses an operator this module does not implement, or a
condition key the request context cannot answer, is treated as not matching when it would allow
and as matching when it would deny. The same holds for a policy variable (`${...}`) in a Resource,
a NotPrincipal, and any other element this module cannot evaluate exactly.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALLOW, DENY = "Allow", "Deny"

# A key a request context knows to be absent (standard IAM semantics) differs from a key the
# sandbox cannot answer (fail closed): absent keys map to ABSENT.
ABSENT: Any = None
ContextValue = str | bool | Sequence[str] | None


class Unevaluable(Exception):
    """Part of a statement this module cannot evaluate exactly: the statement fails closed."""


@functools.lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (slashes and colons included), `?` one character."""
    text = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(text, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


def _arn_match(pattern: str, value: str) -> bool:
    """ArnEquals/ArnLike: each of the six colon-separated parts is matched on its own."""
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value]


# operator -> (compare(policy_value, context_value), negated)
def _string_equals(p: str, v: str) -> bool:
    return p == v


def _string_equals_ignore_case(p: str, v: str) -> bool:
    return p.lower() == v.lower()


def _string_like(p: str, v: str) -> bool:
    return wildcard_match(p, v)


def _bool(p: str, v: str) -> bool:
    return p.lower() == v.lower()


_OPERATORS: dict[str, tuple[Any, bool]] = {
    "stringequals": (_string_equals, False),
    "stringnotequals": (_string_equals, True),
    "stringequalsignorecase": (_string_equals_ignore_case, False),
    "stringnotequalsignorecase": (_string_equals_ignore_case, True),
    "stringlike": (_string_like, False),
    "stringnotlike": (_string_like, True),
    "arnequals": (_arn_match, False),
    "arnlike": (_arn_match, False),
    "arnnotequals": (_arn_match, True),
    "arnnotlike": (_arn_match, True),
    "bool": (_bool, False),
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        raise Unevaluable(f"condition value {value!r} is not a string")
    return value


@dataclass(frozen=True)
class Condition:
    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    key: str
    values: tuple[str, ...]

    def holds(self, context: Mapping[str, ContextValue]) -> bool:
        """Whether the condition holds; Unevaluable when its operator or key is one it cannot answer."""
        name = self.operator.lower()
        qualifier = ""
        if ":" in name:
            qualifier, name = name.split(":", 1)
            if qualifier not in ("foranyvalue", "forallvalues"):
                raise Unevaluable(f"operator {self.operator}")
        if_exists = name.endswith("ifexists") and name != "ifexists"
        if if_exists:
            name = name[: -len("ifexists")]
        key = self.key.lower()
        if key not in context:
            raise Unevaluable(f"condition key {self.key}")
        present = context[key]
        if name == "null":
            if qualifier or if_exists:
                raise Unevaluable(f"operator {self.operator}")
            wanted = {_text(v).lower() for v in self.values}
            return ("true" if present is ABSENT else "false") in wanted
        if name not in _OPERATORS:
            raise Unevaluable(f"operator {self.operator}")
        compare, negated = _OPERATORS[name]
        values = (
            []
            if present is ABSENT
            else [_text(v) for v in (present if isinstance(present, (list, tuple)) else [present])]
        )
        if present is ABSENT or (qualifier and not values):
            # AWS: a missing key makes a condition false, a negated one true, an IfExists one true; with a
            # set prefix ForAllValues is true and ForAnyValue false (an empty set counts as missing).
            if if_exists:
                return True
            if qualifier:
                return qualifier == "forallvalues"
            return negated

        def holds_for(value: str) -> bool:
            """The operator on one request value: a negated one holds when no policy value matches it."""
            matched = any(compare(p, value) for p in self.values)
            return not matched if negated else matched

        if qualifier == "forallvalues":
            return all(holds_for(v) for v in values)
        if qualifier == "foranyvalue":
            return any(holds_for(v) for v in values)
        if len(values) != 1:
            raise Unevaluable(f"multi-valued key {self.key} needs ForAnyValue or ForAllValues")
        return holds_for(values[0])


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    principals: Mapping[str, tuple[str, ...]] | None = None  # resource-based and trust policies
    conditions: tuple[Condition, ...] = ()
    problem: str = ""  # what this module cannot evaluate in the statement (fails closed)
    sid: str = ""

    def _action_matches(self, action: str) -> bool:
        if self.not_actions is not None:
            return not any(wildcard_match(p, action, ignore_case=True) for p in self.not_actions)
        return any(wildcard_match(p, action, ignore_case=True) for p in self.actions)

    def _resource_matches(self, resource: str) -> bool:
        patterns = self.not_resources if self.not_resources is not None else self.resources
        if patterns is None:
            if self.principals is not None:  # a trust policy: the resource is the role it is attached to
                return True
            raise Unevaluable("statement names no Resource")
        if any("${" in p for p in patterns):
            raise Unevaluable("policy variable in Resource")
        matched = any(wildcard_match(p, resource) for p in patterns)
        return not matched if self.not_resources is not None else matched

    def _principal_matches(self, principal: Principal | None) -> bool:
        if self.principals is None:
            if principal is not None and principal.kind != "AWS":
                raise Unevaluable("resource-based statement names no Principal")
            return True
        if principal is None:
            raise Unevaluable("statement names a Principal but the request has none")
        if "*" in self.principals.get("*", ()):
            return True
        names = self.principals.get(principal.kind, ())
        if principal.kind == "AWS":
            return any(
                n == "*" or n in (principal.name, principal.account, f"arn:aws:iam::{principal.account}:root")
                for n in names
            )
        return principal.name in names

    def applies(self, request: Request) -> bool:
        """Whether the statement applies to the request, failing closed: an Allow it cannot
        evaluate does not apply, a Deny it cannot evaluate does."""
        try:
            if self.problem:
                raise Unevaluable(self.problem)
            if not self._action_matches(request.action):
                return False
            if not self._resource_matches(request.resource):
                return False
            if not self._principal_matches(request.principal):
                return False
            return all(condition.holds(request.context) for condition in self.conditions)
        except Unevaluable:
            return self.effect == DENY


@dataclass(frozen=True)
class Principal:
    """Who asks: kind "Service" (name iot.amazonaws.com) or "AWS" (name an ARN), with its account."""

    kind: str
    name: str
    account: str = ""


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)  # keys lower-case
    principal: Principal | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool = False
    statement: str = ""  # the Sid (or index) of the deciding statement, for messages and tests
    policy_type: str = ""  # which kind of policy decided a denial ("permissions boundary"), if not the caller's


def _strings(value: Any, element: str) -> tuple[str, ...]:
    items = _as_list(value)
    if not all(isinstance(item, str) for item in items):
        raise Unevaluable(f"{element} holds a non-string")
    return tuple(items)


def _parse_principal(value: Any) -> dict[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, dict):
        raise Unevaluable("Principal is neither * nor an object")
    principals: dict[str, tuple[str, ...]] = {}
    for kind, names in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise Unevaluable(f"Principal type {kind}")
        principals[kind] = _strings(names, "Principal")
    if "*" in principals.get("AWS", ()):
        principals["*"] = ("*",)
    return principals


def _parse_statement(raw: Any, index: int) -> Statement:
    if not isinstance(raw, dict):
        return Statement(effect=DENY, problem="statement is not an object")
    effect = raw.get("Effect")
    sid = str(raw.get("Sid", index))
    if effect not in (ALLOW, DENY):
        return Statement(effect=DENY, problem=f"Effect {effect!r}", sid=sid)
    try:
        if "NotPrincipal" in raw:
            raise Unevaluable("NotPrincipal")
        if ("Action" in raw) == ("NotAction" in raw):
            raise Unevaluable("statement needs exactly one of Action and NotAction")
        if "Resource" in raw and "NotResource" in raw:
            raise Unevaluable("statement has both Resource and NotResource")
        conditions: list[Condition] = []
        block = raw.get("Condition", {})
        if not isinstance(block, dict):
            raise Unevaluable("Condition is not an object")
        for operator, keys in block.items():
            if not isinstance(keys, dict):
                raise Unevaluable(f"Condition {operator} is not an object")
            for key, values in keys.items():
                conditions.append(Condition(operator, key, tuple(_text(v) for v in _as_list(values))))
        return Statement(
            effect=effect,
            actions=_strings(raw["Action"], "Action") if "Action" in raw else (),
            not_actions=_strings(raw["NotAction"], "NotAction") if "NotAction" in raw else None,
            resources=_strings(raw["Resource"], "Resource") if "Resource" in raw else None,
            not_resources=_strings(raw["NotResource"], "NotResource") if "NotResource" in raw else None,
            principals=_parse_principal(raw["Principal"]) if "Principal" in raw else None,
            conditions=tuple(conditions),
            sid=sid,
        )
    except Unevaluable as problem:
        return Statement(effect=effect, problem=str(problem), sid=sid)


@functools.lru_cache(maxsize=2048)
def _parse_text(text: str) -> tuple[Statement, ...]:
    try:
        document = json.loads(text)
    except ValueError:
        return (Statement(effect=DENY, problem="policy is not JSON"),)
    return parse_document(document)


def parse_document(document: Any) -> tuple[Statement, ...]:
    """A policy document (JSON text or parsed) as statements; what cannot be read fails closed."""
    if isinstance(document, str):
        return _parse_text(document)
    if not isinstance(document, dict):
        return (Statement(effect=DENY, problem="policy is not an object"),)
    statements = document.get("Statement", [])
    return tuple(_parse_statement(raw, index) for index, raw in enumerate(_as_list(statements)))


def evaluate(policies: Iterable[Sequence[Statement]], request: Request) -> Decision:
    """AWS's order: any applicable Deny denies; else any applicable Allow allows; else denied."""
    allowed_by = ""
    for statements in policies:
        for statement in statements:
            if not statement.applies(request):
                continue
            if statement.effect == DENY:
                return Decision(False, explicit_deny=True, statement=statement.sid)
            allowed_by = allowed_by or statement.sid or "allow"
    return Decision(bool(allowed_by), statement=allowed_by)


def denial_message(principal_arn: str, request: Request, decision: Decision, policy_type: str) -> str:
    """AWS's form: "User: <arn> is not authorized to perform: <action> on resource: <arn> because ..."
    (policy_type is "identity-based", "resource-based" or "permissions boundary")."""
    action = request.action
    kind = decision.policy_type or policy_type
    noun = kind if kind == "permissions boundary" else f"{kind} policy"
    if decision.explicit_deny:
        why = f"with an explicit deny in {'a' if kind == 'permissions boundary' else 'an'} {noun}"
    else:
        why = f"because no {noun} allows the {action} action"
    return f"User: {principal_arn} is not authorized to perform: {action} on resource: {request.resource} {why}"
