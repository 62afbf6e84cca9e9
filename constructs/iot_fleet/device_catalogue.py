"""The device-type catalogue: what each device type may do, as data (device_types.json).

A type's thing group, IoT policy, template mapping, hook allowance and initial shadow all follow
from its entry, so adding a type never needs code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

BUILT_IN_CATALOGUE = Path(__file__).with_name("device_types.json")
CAPABILITIES = ("named-shadows", "jobs")
DEFAULT_PUBLISH = ("telemetry", "status")
DEFAULT_SUBSCRIBE = ("commands",)
DEFAULT_SHADOW: Mapping[str, Any] = MappingProxyType({"enabled": True, "reportingInterval": 60})

# Device types appear in thing-group, policy and thing names, MQTT topics and thing attributes.
NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # matched whole (fullmatch): `$` allows a newline
NAME_MAX = 32
# Topic suffixes below devices/<thing>/: MQTT-safe levels, a trailing * as the policy wildcard.
TOPIC = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*(/\*)?")
_FIELDS = {"description", "publish", "subscribe", "capabilities", "initialShadow"}


@dataclass(frozen=True, kw_only=True)
class DeviceType:
    """One catalogue entry: what devices of this type publish, subscribe to and start with."""

    name: str
    description: str = ""
    publish: tuple[str, ...] = DEFAULT_PUBLISH
    subscribe: tuple[str, ...] = DEFAULT_SUBSCRIBE
    capabilities: tuple[str, ...] = ()
    initial_shadow: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_SHADOW))

    def __post_init__(self) -> None:
        if not (NAME.fullmatch(self.name) and len(self.name) <= NAME_MAX):
            raise ValueError(f"device type '{self.name}': names are 1-{NAME_MAX} lower-case letters, digits and '-'")
        for topic in (*self.publish, *self.subscribe):
            if not TOPIC.fullmatch(topic):
                raise ValueError(
                    f"device type '{self.name}': topic '{topic}' must be levels of [A-Za-z0-9_-] "
                    "optionally ending in /*"
                )
        unknown = sorted(set(self.capabilities) - set(CAPABILITIES))
        if unknown:
            raise ValueError(
                f"device type '{self.name}': capability '{unknown[0]}' unknown; allowed: {','.join(CAPABILITIES)}"
            )

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> DeviceType:
        if not isinstance(entry, Mapping):
            raise ValueError(f"device type '{name}': the entry must be an object")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise ValueError(
                f"device type '{name}': field '{unknown[0]}' unknown; allowed: {','.join(sorted(_FIELDS))}"
            )
        for key in ("publish", "subscribe", "capabilities"):
            if not isinstance(entry.get(key, []), list):
                raise ValueError(f"device type '{name}': {key} must be a list")
        shadow = entry.get("initialShadow", DEFAULT_SHADOW)
        if not isinstance(shadow, Mapping):
            raise ValueError(f"device type '{name}': initialShadow must be an object")
        return cls(
            name=name,
            description=str(entry.get("description", "")),
            publish=tuple(entry.get("publish", DEFAULT_PUBLISH)),
            subscribe=tuple(entry.get("subscribe", DEFAULT_SUBSCRIBE)),
            capabilities=tuple(entry.get("capabilities", ())),
            initial_shadow=dict(shadow),
        )


def load_catalogue(path: Path | None = None) -> dict[str, DeviceType]:
    """The built-in catalogue, extended (or overridden entry by entry) by the file at ``path``."""
    entries: dict[str, Any] = json.loads(BUILT_IN_CATALOGUE.read_text())
    if path is not None:
        extra = json.loads(path.read_text())
        if not isinstance(extra, dict):
            raise ValueError("the catalogue must be a JSON object of device types")
        entries.update(extra)
    return {name: DeviceType.from_entry(name, entry) for name, entry in entries.items() if name != "//"}


def initial_shadows_document(device_types: Mapping[str, DeviceType]) -> str:
    """Each device type's initial shadow, as the JSON the functions that write shadows are given."""
    return json.dumps({name: dict(t.initial_shadow) for name, t in device_types.items()}, separators=(",", ":"))
