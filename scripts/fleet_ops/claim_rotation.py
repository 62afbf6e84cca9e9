"""Claim certificate rotation with an overlap: the next generation is deployed beside the current one,
the factory switches to it, and only then is the old generation retired (a second deploy).

The generations in force are the stack parameter ClaimCertificateGenerations (cdktf.json context,
iot_fleet.claim_certificate): Terraform owns every claim certificate throughout, so each step is a
deploy and a later plan shows no drift. This module says where a rotation stands, what the next step
is, and performs it: records the parameter in cdktf.json, then runs the deploy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import deploy as deployment
from scripts.deployed_stack import ROOT, DeployedStack, StackError
from scripts.fleet_ops.certificates import not_after
from scripts.fleet_ops.decisions import hook_log_group

PARAMETER = "ClaimCertificateGenerations"
CONTEXT_FILE = ROOT / "cdktf.json"
APPLY_SUMMARY = re.compile(
    r"Resources: (?:\d+ imported, )?(?P<added>\d+) added, (?P<changed>\d+) changed, (?P<destroyed>\d+) destroyed"
)


@dataclass(frozen=True)
class Generation:
    number: int
    certificate_id: str
    status: str
    not_after: str
    provisioned: int  # devices the hook allowed with it in the looked-at window
    last_used: str  # time of the last of those ("" when none)


@dataclass(frozen=True)
class Step:
    action: str  # "add" (a new generation beside the current one) or "retire" (the older ones)
    generations: tuple[int, ...]  # ClaimCertificateGenerations once the step is deployed

    @property
    def value(self) -> str:
        return ",".join(map(str, self.generations))


def deployed(stack: DeployedStack) -> dict[int, str]:
    """Generation -> certificate id of the claim certificates in force (a stack from before generations:
    its one certificate is generation 1)."""
    generations = stack.outputs.get("claim_certificates")
    if not generations:
        return {1: str(stack.output("claim_certificate_id"))}
    return {int(number): str(claim["id"]) for number, claim in generations.items()}


def configured(context_file: Path = CONTEXT_FILE) -> tuple[int, ...]:
    """The parameter as the next deploy will read it: the environment's, else the context file's."""
    raw = os.environ.get(PARAMETER) or str(json.loads(context_file.read_text()).get("context", {}).get(PARAMETER, "1"))
    return tuple(int(part) for part in raw.split(",") if part.strip())


def next_step(in_force: tuple[int, ...]) -> Step:
    """One generation: add the next. Two: retire all but the newest."""
    if len(in_force) == 1:
        return Step("add", (in_force[0], in_force[0] + 1))
    return Step("retire", (max(in_force),))


def pending_step(in_force: tuple[int, ...], recorded: tuple[int, ...]) -> Step | None:
    """The step recorded in the context file but not deployed yet (its deploy failed or never ran), to
    finish first; None when the record and the stack agree. A record that is no step from what is in
    force is refused: deploying it could retire a generation devices still carry."""
    if recorded == in_force:
        return None
    step = next_step(in_force)
    if step.generations == recorded:
        return step
    raise StackError(
        f"{PARAMETER} is {','.join(map(str, recorded))} where the stack has {','.join(map(str, in_force))} in "
        f"force, which is no rotation step from there: set it back to {','.join(map(str, in_force))} "
        "(cdktf.json, or your environment) and run again"
    )


def generations(stack: DeployedStack, *, since_days: float = 30.0) -> list[Generation]:
    """Each claim generation in force: its certificate's state, and how recently devices provisioned
    with it (from the hook's decisions, which carry the claim certificate's id)."""
    iot = stack.client("iot")
    uses = _uses(stack, since_days)
    found = []
    for number, certificate_id in sorted(deployed(stack).items()):
        description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        end = not_after(description.get("certificatePem", ""))
        count, last = uses.get(certificate_id, (0, ""))
        found.append(
            Generation(number, certificate_id, description["status"], end.isoformat() if end else "", count, last)
        )
    return found


def _uses(stack: DeployedStack, since_days: float) -> dict[str, tuple[int, str]]:
    """Claim certificate id -> (devices allowed with it, time of the last) in the hook's log."""
    logs = stack.client("logs")
    start = int((time.time() - since_days * 86400) * 1000)
    uses: dict[str, tuple[int, str]] = {}
    paginator = logs.get_paginator("filter_log_events")
    group = hook_log_group(str(stack.output("provisioning_hook_function_name")))
    try:
        for page in paginator.paginate(logGroupName=group, startTime=start, filterPattern='{ $.decision = "allow" }'):
            for event in page.get("events", []):
                try:
                    record = json.loads(event.get("message", ""))
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("decision") != "allow":
                    continue
                claim = str(record.get("claimCertificateId") or "")
                count, _ = uses.get(claim, (0, ""))
                moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["timestamp"] / 1000))
                uses[claim] = (count + 1, moment)  # events come oldest first
    except logs.exceptions.ResourceNotFoundException:
        pass  # no decision logged yet
    return uses


def record(generations_: tuple[int, ...], context_file: Path = CONTEXT_FILE) -> None:
    """Writes the parameter into the context file's context (the next `make deploy` keeps it)."""
    document: dict[str, Any] = json.loads(context_file.read_text())
    document.setdefault("context", {})[PARAMETER] = ",".join(map(str, generations_))
    staging = context_file.with_name(f".{context_file.name}.tmp")
    staging.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(staging, context_file)


def applied(output: str) -> dict[str, int] | None:
    """What Terraform's apply reported ("Apply complete! Resources: 2 added, 0 changed, 0 destroyed.")."""
    match = APPLY_SUMMARY.search(output)
    return {k: int(v) for k, v in match.groupdict().items()} if match else None


def deploy(
    stack: DeployedStack, generations_: tuple[int, ...], *, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """The deploy of this stack with these generations as `make deploy` runs it (scripts/deploy.py),
    with the same target, environment and output folder as the deployed stack. `capture`: its output
    is returned instead of printed."""
    said: list[str] = []
    overrides = {PARAMETER: ",".join(map(str, generations_)), "Target": stack.target, "Environment": stack.environment}
    code = deployment.deploy(stack.directory.parents[1], overrides, echo=said.append if capture else print)
    return subprocess.CompletedProcess(["make", "deploy"], code, "\n".join(said), "")
