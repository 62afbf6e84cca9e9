"""The mark a deploy keeps in its stack folder until it completes: which creates it started, and what
became of them. That is the evidence `make deploy` adopts on (scripts/orphan_adoption.py says how).

A create that reached AWS and whose answer never reached Terraform's state (Ctrl-C cancels the calls in
flight, a SIGKILL or a lost connection ends them, an S3 backend saves state at most every 20 seconds, a
local state file can be cut short and put back from its backup) leaves an object no state knows.
Terraform says in its machine-readable output when it starts each create (`apply_start`), when one
completes (`apply_complete`) or fails (`apply_errored`), and, once the apply ends, why each failed. The
mark records those events as they come, one JSON object per line, and the next deploy takes as
evidence every address whose last event is a create started, completed or failed (for a reason not
yet known: Terraform prints reasons when the apply ends), that the state does not hold: the objects a
deploy from this folder may have made. A create the mark saw AWS refuse because the name was taken
made nothing, and its address is never evidence again in this mark (the name was someone's before
this deploy's create); nor is an object a later apply deleted. An object of the same name that no such
create explains (another checkout's, another region's or another state's deployment of the same stack,
or someone else's) is never adopted on it.

The first line says where the state lives (the backend block and the provider's regions): evidence
about one state says nothing about another's, so a mark about another is set aside (renamed, kept).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import orphan_adoption

MARK = ".deploy-unfinished"
CREATING = ("create", "replace")  # Terraform's apply hook actions that create an object
HOOKS = {"apply_start": "creating", "apply_complete": "created", "apply_errored": "errored"}
EVENTS = ("creating", "created", "errored", "refused", "deleted")


def state_location(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """Where the synthesized stack (cdk.tf.json) keeps its state, and the regions it deploys to."""
    return {
        "backend": configuration.get("terraform", {}).get("backend", {}),
        "regions": sorted(str(p.get("region")) for p in configuration.get("provider", {}).get("aws", [])),
    }


@dataclass(frozen=True)
class Unfinished:
    """What the mark says of the deploys here that did not finish, since the first of them."""

    started: str
    last: dict[str, str]  # each address's last event: creating, created, errored or refused
    refused: frozenset[str]  # addresses whose create AWS refused as taken, at any time

    @property
    def evidence(self) -> frozenset[str]:
        """The addresses whose object a deploy from here may have made (before subtracting the state)."""
        return frozenset(
            a for a, event in self.last.items() if event not in ("refused", "deleted") and a not in self.refused
        )


class Mark:
    def __init__(self, stack_dir: Path) -> None:
        self.path = stack_dir / MARK
        self.unwritten: str | None = None  # why an event could not be recorded, if one could not

    def read(self, configuration: Mapping[str, Any]) -> tuple[Unfinished | None, str | None]:
        """What the mark records for this stack's state, or None; and why a mark found was set aside
        (it is then renamed beside, so a new one can begin)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return None, None
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short when the deploy writing it was killed
                continue
            if isinstance(event, dict):
                events.append(event)
        header = events[0] if events and "started" in events[0] else None
        if header is None or header.get("state") != state_location(configuration):
            kept = self.path.with_name(f"{MARK}.set-aside-{time.strftime('%Y%m%dT%H%M%S')}")
            self.path.rename(kept)
            about = "has no record of where its deploy kept state" if header is None else "is about another state"
            return None, f"the mark of an unfinished deploy here {about}: set aside as {kept}"
        last: dict[str, str] = {}
        refused = set()
        for event in events[1:]:
            for kind in EVENTS:
                if kind in event:
                    last[str(event[kind])] = kind
                    if kind == "refused":
                        refused.add(str(event[kind]))
        return Unfinished(str(header["started"]), last, frozenset(refused)), None

    def begin(self, configuration: Mapping[str, Any], started: str | None = None) -> None:
        """A new mark: this deploy is the first unfinished one (`started`: it carries on an earlier one)."""
        started = started or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.path.write_text(json.dumps({"started": started, "state": state_location(configuration)}) + "\n")

    def creating(self, address: str) -> None:
        self._append("creating", address)

    def observe(self, line: str) -> None:
        """One line of `terraform apply -json`: records the creates it starts and what becomes of them."""
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        hook = message.get("hook") or {}
        address = (hook.get("resource") or {}).get("addr")
        if address and hook.get("action") in CREATING and kind in HOOKS:
            self._append(HOOKS[kind], address)
        elif address and hook.get("action") == "delete" and kind == "apply_complete":
            self._append("deleted", address)  # gone: nothing of it is left to adopt
        elif kind == "diagnostic":
            (diagnostic,) = orphan_adoption.diagnostics([line])
            if diagnostic.address and orphan_adoption.is_already_exists(diagnostic):
                self._append("refused", diagnostic.address)  # AWS refused it: this create made nothing

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _append(self, kind: str, address: str) -> None:
        # Appended and closed line by line: a deploy killed right after still leaves every line before.
        # A mark that cannot be written is reported, never raised: raising here would end the deploy
        # and Terraform with it, before it records what it created.
        try:
            with self.path.open("a+b") as mark:
                line = json.dumps({kind: address}).encode() + b"\n"
                if mark.seek(0, os.SEEK_END):
                    mark.seek(-1, os.SEEK_END)
                    if mark.read(1) != b"\n":  # the last line was cut short by a kill: it stays apart
                        line = b"\n" + line
                mark.write(line)
        except OSError as why:
            self.unwritten = f"the mark {self.path} could not be written ({why})"
