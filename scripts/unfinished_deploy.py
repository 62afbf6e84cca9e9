"""The mark a deploy keeps in its stack folder until it completes: which creates it started and never
saw answered. That is the evidence `make deploy` adopts on (scripts/orphan_adoption.py says how).

A create that reached AWS and whose answer never reached Terraform's state (Ctrl-C cancels the calls in
flight, a SIGKILL or a lost connection ends them) leaves an object no state knows. Terraform says in its
machine-readable output when it starts each create (`apply_start`) and when one completes
(`apply_complete`), and a create AWS refused because the name was taken says so in its error. The mark
records those events as they come, one JSON object per line, so the next deploy knows which objects can
be this stack's own leftovers: those whose create a deploy from this folder started and never saw
answered. An object of the same name that no such create explains (another checkout's, another
region's or another state's deployment of the same stack, or someone else's) is never adopted on it.

The first line says where the state lives (the backend block and the provider's regions): evidence
about one state says nothing about another's, so a mark about another is set aside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import orphan_adoption

MARK = ".deploy-unfinished"
CREATING = ("create", "replace")  # Terraform's apply hook actions that create an object


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
    creating: frozenset[str]  # every create they started
    answered: frozenset[str]  # of those, the ones Terraform saw end: created and recorded, or refused as taken

    @property
    def in_flight(self) -> frozenset[str]:
        return self.creating - self.answered


class Mark:
    def __init__(self, stack_dir: Path) -> None:
        self.path = stack_dir / MARK

    def read(self, configuration: Mapping[str, Any]) -> tuple[Unfinished | None, str | None]:
        """What the mark records for this stack's state, or None; and why a mark found was set aside."""
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
        if header is None:
            return None, f"the mark {self.path} has no record of where its deploy kept state: set aside"
        if header.get("state") != state_location(configuration):
            return None, (f"the mark {self.path} is about another state ({json.dumps(header.get('state'))}): set aside")
        creating = frozenset(str(e["creating"]) for e in events if "creating" in e)
        answered = frozenset(str(e["answered"]) for e in events if "answered" in e)
        return Unfinished(str(header["started"]), creating, answered), None

    def begin(self, configuration: Mapping[str, Any]) -> None:
        """A new mark: this deploy is the first unfinished one."""
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.path.write_text(json.dumps({"started": started, "state": state_location(configuration)}) + "\n")

    def creating(self, address: str) -> None:
        self._append({"creating": address})

    def answered(self, address: str) -> None:
        self._append({"answered": address})

    def observe(self, line: str) -> None:
        """One line of `terraform apply -json`: records the creates it starts and the answers they get."""
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        hook = message.get("hook") or {}
        address = (hook.get("resource") or {}).get("addr")
        if kind == "apply_start" and address and hook.get("action") in CREATING:
            self.creating(address)
        elif kind == "apply_complete" and address and hook.get("action") in CREATING:
            self.answered(address)
        elif kind == "diagnostic":
            (diagnostic,) = orphan_adoption.diagnostics([line])
            if diagnostic.address and orphan_adoption.is_already_exists(diagnostic):
                self.answered(diagnostic.address)  # AWS refused it: this create made nothing

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _append(self, event: dict[str, str]) -> None:
        # Appended and closed line by line: a deploy killed right after still leaves every line before.
        with self.path.open("a") as mark:
            mark.write(json.dumps(event) + "\n")
