"""The device registry table's layout: its key, its indexes and its thing-name reservations.

Pure Python (no cdktf), so the construct that creates the table and the tools that query it
(scripts/fleet_ops, verify.py) read the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

PARTITION_KEY = "serialNumber"
# A reservation holds a thing name for one serial: an item keyed "thingName#<name>", which no serial can
# be (the hook's serial rule has no '#'). It has no deviceType or status, so no index lists it.
THING_NAME_RESERVATION_PREFIX = "thingName#"


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
