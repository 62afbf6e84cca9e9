"""The device registry: its table's layout (key, indexes, thing-name reservations), the statuses a
device moves through, and the certificate history every writer keeps the same way.

Pure Python with no dependencies: the stack creates the table from it, the functions write by it, the
operator tools (scripts/fleet_ops, verify.py) and the tests read by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PARTITION_KEY = "serialNumber"
# A reservation holds a thing name for one serial: an item keyed "thingName#<name>", which no serial can
# be (the hook's serial rule has no '#'). It has no deviceType or status, so no index lists it.
THING_NAME_RESERVATION_PREFIX = "thingName#"

# A device's status, in the order of its life: enrolled by the operator; provisioning once the hook
# admitted an attempt; provisioned when its thing holds the attempt's certificate; failed when the
# attempt never finished (the device may try again); revoked or decommissioned by the operator.
ENROLLED = "enrolled"
PROVISIONING = "provisioning"
PROVISIONED = "provisioned"
FAILED = "failed"
REVOKED = "revoked"
DECOMMISSIONED = "decommissioned"
STATUSES = (ENROLLED, PROVISIONING, PROVISIONED, FAILED, REVOKED, DECOMMISSIONED)

# The newest events an item keeps in certificateHistory; older ones are dropped and counted
# (certificateEventsDropped), so no device can grow its item towards DynamoDB's 400 KB.
CERTIFICATE_HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str | None = None


# All devices of a type; all devices in a status, and (by its sort key) those of one type in a status,
# read without touching any other item.
TYPE_INDEX = Index("deviceType-index", "deviceType")
STATUS_INDEX = Index("status-index", "status", sort_key="deviceType")
# Devices with a rotation waiting for its confirmation, oldest request first: a sparse index (only
# items with a rotationState are in it), so the reconciler finds abandoned rotations without reading
# the fleet.
ROTATION_INDEX = Index("rotation-index", "rotationState", sort_key="rotationRequestedAt")
INDEXES = (TYPE_INDEX, STATUS_INDEX, ROTATION_INDEX)


def text(item: Mapping[str, Any], name: str) -> str:
    """A string attribute of an item as the low-level DynamoDB API returns it ("" when absent)."""
    return str(item.get(name, {}).get("S", ""))


def history(item: Mapping[str, Any], *events: dict[str, Any], limit: int) -> tuple[str, str, dict[str, Any]]:
    """(SET clause, condition, values) that record `events` after the item's certificateHistory as read:
    the newest `limit` kept, the older counted in certificateEventsDropped, and certificateEvents
    counting every event ever recorded. The condition holds only while no other event was recorded since
    `item` was read (a concurrent writer's events are never overwritten: the write fails instead)."""
    held = list(item.get("certificateHistory", {}).get("L", []))
    recorded = int(item.get("certificateEvents", {}).get("N", len(held)))
    dropped = int(item.get("certificateEventsDropped", {}).get("N", "0"))
    kept = held + list(events)
    cut = max(0, len(kept) - limit)
    values = {
        ":history": {"L": kept[cut:]},
        ":events": {"N": str(recorded + len(events))},
        ":dropped": {"N": str(dropped + cut)},
    }
    if "certificateEvents" in item:
        condition = "certificateEvents = :recorded"
        values[":recorded"] = {"N": str(recorded)}
    else:  # written before events were counted: the list itself says nothing was added
        condition = "attribute_not_exists(certificateEvents) AND " + (
            "size(certificateHistory) = :held" if held else "attribute_not_exists(certificateHistory)"
        )
        if held:
            values[":held"] = {"N": str(len(held))}
    clause = "certificateHistory = :history, certificateEvents = :events, certificateEventsDropped = :dropped"
    return clause, condition, values
