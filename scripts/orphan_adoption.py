"""Adopting what an interrupted deploy created but never recorded in Terraform's state.

Terraform records a resource only after the provider's create call returns. Interrupted in between
(Ctrl-C cancels the provider's calls in flight, SIGKILL or a lost connection ends them), a create that
already reached AWS leaves an object no state knows, and the next apply stops on "already exists".
This module decides, from Terraform's own machine-readable output (`apply -json` diagnostics,
`show -json` of a saved plan), which such objects may be imported, and how: the import blocks to plan
with, which of them found nothing, and whether the plan that imports them is safe to apply.
`scripts/deploy.py` runs Terraform around it; `scripts/unfinished_deploy.py` keeps the evidence.

What is adopted, and why it is safe:
- Only resources that a create started by a deploy from this stack folder, against this state, may
  have made and the state does not hold (the mark of scripts/unfinished_deploy.py), never a name the
  mark saw AWS refuse as taken. Anything else under the stack's names (another deployment of the same stack,
  someone else's object) is adopted only when the operator says so (`make deploy ADOPT=1`), after an
  apply whose every error is "already exists" on creating a resource of a type below.
- Only resources of this stack's configuration that the state does not hold, each imported under the
  name the stack gives it (an import finds nothing where nothing was left behind).
- A taggable object must also carry the stack's `Project` and `Environment` tags (the provider's
  default tags, sent with every create). Tags are a second check, not proof: anyone allowed to create
  the object can give it those tags. An untaggable one (a Lambda permission, a KMS alias) has no
  second check.
- Never when the plan would delete or replace an adopted object: adoption only records what exists.
- One round: the apply after adopting is final, whatever it says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# How the provider (hashicorp/aws 5.100.0) imports each type the stack names deterministically: the
# resource's own attributes, joined (each type's "Import" section in the provider's documentation).
# Types whose create is an upsert on AWS (PutMetricAlarm, PutRolePolicy, PutDashboard, PutRule,
# PutTargets, CreateTopic) never stop an apply on "already exists": their create takes the leftover
# over. Alarms are listed all the same, so a leftover alarm is reported as adopted like the rest.
IMPORT_ID: dict[str, tuple[tuple[str, ...], str]] = {
    "aws_cloudwatch_log_group": (("name",), ""),
    "aws_cloudwatch_metric_alarm": (("alarm_name",), ""),
    "aws_dynamodb_table": (("name",), ""),
    "aws_iam_role": (("name",), ""),
    "aws_iot_policy": (("name",), ""),
    "aws_iot_provisioning_template": (("name",), ""),
    "aws_iot_thing_group": (("name",), ""),
    "aws_iot_thing_type": (("name",), ""),
    "aws_iot_topic_rule": (("name",), ""),
    "aws_kms_alias": (("name",), ""),
    "aws_lambda_function": (("function_name",), ""),
    "aws_lambda_permission": (("function_name", "statement_id"), "/"),
}
UNTAGGABLE = {"aws_kms_alias", "aws_lambda_permission"}

# AWS's error codes for a create that found its name taken, as the provider quotes them.
ALREADY_EXISTS = re.compile(
    r"\b(EntityAlreadyExists|ResourceAlreadyExistsException|AlreadyExistsException)\b"
    r"|ResourceInUseException: Table already exists"
    r"|ResourceConflictException: (Function already exist|The statement id \(.*\) provided already exists)"
)
NOT_FOUND_ON_IMPORT = "Cannot import non-existent remote object"
IMPORT_TARGET = re.compile(r'import an existing object to "([^"]+)"')
IMPORT_FILE = "adopt-unrecorded.tf.json"  # beside cdk.tf.json during the round only


class NotAdoptable(Exception):
    """The failure is not one adoption may resolve; the message says why."""


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    summary: str
    detail: str
    address: str | None

    @classmethod
    def from_json(cls, message: Mapping[str, Any]) -> Diagnostic:
        """One `"type": "diagnostic"` line of Terraform's machine-readable UI."""
        d = message.get("diagnostic", {})
        return cls(d.get("severity", "error"), d.get("summary", ""), d.get("detail", ""), d.get("address"))

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def diagnostics(lines: Iterable[str]) -> list[Diagnostic]:
    """The diagnostics in Terraform's `-json` output (other lines, and non-JSON lines, are skipped)."""
    found = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "diagnostic":
            found.append(Diagnostic.from_json(message))
    return found


def resource_type(address: str) -> str:
    return address.split(".", 1)[0]


def is_already_exists(diagnostic: Diagnostic) -> bool:
    """An error that AWS refused a create because the name was taken."""
    return diagnostic.is_error and bool(ALREADY_EXISTS.search(f"{diagnostic.summary} {diagnostic.detail}"))


def already_existing(errors: Iterable[Diagnostic], recorded: set[str]) -> list[str]:
    """The addresses an apply could not create because their name was taken. Raises NotAdoptable when
    any error is something else: adoption resolves that one failure and nothing more."""
    errors = [e for e in errors if e.is_error]
    if not errors:
        raise NotAdoptable("the apply reported no error to resolve")
    taken, other = [], []
    for error in errors:
        if error.address and resource_type(error.address) in IMPORT_ID and is_already_exists(error):
            if error.address in recorded:  # in state: not something an interruption left behind
                other.append(error)
            else:
                taken.append(error.address)
        else:
            other.append(error)
    if other:
        said = "; ".join(f"{e.address or 'Terraform'}: {e.summary}"[:300] for e in other)
        raise NotAdoptable(f"not only 'already exists': {said}")
    return sorted(set(taken))


@dataclass(frozen=True)
class Candidate:
    address: str
    import_id: str


def _resolve(plan: Mapping[str, Any], address: str, attribute: str) -> str | None:
    """The value this resource's plan gives the attribute; when unknown until apply, the value of the
    one attribute of another resource its expression refers to (a function's name for its permission)."""
    changes = {c["address"]: c["change"] for c in plan.get("resource_changes", [])}
    after = (changes.get(address) or {}).get("after") or {}
    value = after.get(attribute)
    if isinstance(value, str) and value:
        return value
    configured = {r["address"]: r for r in plan.get("configuration", {}).get("root_module", {}).get("resources", [])}
    references = (configured.get(address, {}).get("expressions", {}).get(attribute) or {}).get("references", [])
    attribute_references = [r for r in references if r.count(".") == 2]
    if len(attribute_references) != 1:
        return None
    target, _, target_attribute = attribute_references[0].rpartition(".")
    value = ((changes.get(target) or {}).get("after") or {}).get(target_attribute)
    return value if isinstance(value, str) and value else None


def candidates(plan: Mapping[str, Any], recorded: set[str]) -> list[Candidate]:
    """Every resource of the configuration of a type above that the state does not hold, with the id
    it would be imported under (those whose id cannot be known before apply are left out)."""
    found = []
    for resource in plan.get("configuration", {}).get("root_module", {}).get("resources", []):
        address, kind = resource["address"], resource.get("type", "")
        if resource.get("mode") != "managed" or kind not in IMPORT_ID or address in recorded:
            continue
        attributes, separator = IMPORT_ID[kind]
        parts = [_resolve(plan, address, attribute) for attribute in attributes]
        if all(parts):
            found.append(Candidate(address, separator.join(p for p in parts if p)))
    return sorted(found, key=lambda c: c.address)


def _references(expressions: Any) -> set[str]:
    """Every `references` entry in a resource's configuration expressions, nested blocks included."""
    if isinstance(expressions, list):
        return set().union(*(_references(e) for e in expressions)) if expressions else set()
    if not isinstance(expressions, dict):
        return set()
    found = set(expressions.get("references", []))
    for key, value in expressions.items():
        if key != "references":
            found |= _references(value)
    return found


def without_dependents(plan: Mapping[str, Any], chosen: list[Candidate], absent: set[str]) -> list[Candidate]:
    """`chosen` less the absent ones and every resource that depends on one of them: Terraform creates
    a resource only after what it depends on, so nothing was left behind below a resource that was
    never created (and a plan does not look at the imports below one whose import failed)."""
    configured = plan.get("configuration", {}).get("root_module", {}).get("resources", [])
    depends: dict[str, set[str]] = {}
    for resource in configured:
        named = _references(resource.get("expressions", {})) | set(resource.get("depends_on", []))
        depends[resource["address"]] = {".".join(r.split(".")[:2]) for r in named if not r.startswith("data.")}
    dropped = set(absent)
    while True:
        more = {address for address, on in depends.items() if on & dropped} - dropped
        if not more:
            break
        dropped |= more
    return [c for c in chosen if c.address not in dropped]


def import_blocks(chosen: Iterable[Candidate]) -> dict[str, Any]:
    """The JSON configuration of Terraform `import` blocks (Terraform 1.5+) for these resources."""
    return {"import": [{"to": c.address, "id": c.import_id} for c in chosen]}


def not_found(probe: Iterable[Diagnostic]) -> tuple[set[str], list[Diagnostic]]:
    """From a plan with import blocks: the addresses whose import found nothing (nothing was left behind
    there), and every other error. Terraform names the address only in the detail of that error."""
    missing, other = set(), []
    for d in probe:
        named = IMPORT_TARGET.search(d.detail)
        address = d.address or (named.group(1) if named else None)
        if d.is_error and d.summary == NOT_FOUND_ON_IMPORT and address:
            missing.add(address)
        elif d.is_error:
            other.append(d)
    return missing, other


def stack_tags(configuration: Mapping[str, Any]) -> dict[str, str]:
    """The provider's default tags in the synthesized stack (cdk.tf.json)."""
    for provider in configuration.get("provider", {}).get("aws", []):
        for block in provider.get("default_tags", []):
            return dict(block.get("tags", {}))
    return {}


def _owned(kind: str, before: Mapping[str, Any], tags: Mapping[str, str]) -> str | None:
    """Why this existing object is not the stack's to adopt, or None when it is."""
    ownership = {k: tags[k] for k in ("Project", "Environment") if k in tags}
    if len(ownership) != 2:
        return "the stack has no Project and Environment default tags to recognise its own objects by"
    if kind in UNTAGGABLE:  # no tags to check: its import id is the stack's own name for it
        return None
    carried = before.get("tags_all") or before.get("tags") or {}
    if any(carried.get(k) != v for k, v in ownership.items()):
        return f"it does not carry the stack's tags {ownership} (it has {dict(carried)})"
    return None


def refusals(plan: Mapping[str, Any], tags: Mapping[str, str]) -> list[str]:
    """What in a plan that imports leftovers makes it unsafe to apply: an imported object that is not
    the stack's own, or one the plan would delete or replace."""
    problems = []
    for change in plan.get("resource_changes", []):
        importing = change["change"].get("importing")
        if not importing:
            continue
        address, actions = change["address"], change["change"].get("actions", [])
        why = _owned(change.get("type", resource_type(address)), change["change"].get("before") or {}, tags)
        if why:
            problems.append(f"{address} (id {importing.get('id')}): {why}")
        if "delete" in actions:
            problems.append(f"{address} (id {importing.get('id')}): the plan would replace it ({', '.join(actions)})")
    return problems
