"""The device registry (DynamoDB) as the operator tools change it: enrollment with thing-name
reservations, queries through its indexes, and lifecycle moves (revoked, decommissioned).

Enrollment writes only conditionally, because devices provision while it runs: the hook moves an
item enrolled -> provisioning in one conditional write, and enrollment must never move it back (a
BatchWriteItem would: it takes no conditions). A device's thing name is fixed at enrollment and
reserved by an item of its own ("thingName#<name>", fleet_shared.registry), so no two devices
can hold one thing name. The invariant, kept by every write below: an item holding thing name T has
the reservation of T. Hence:

- a new device (no item, no reservation: nearly every row of a manifest) takes the reservation and
  then creates its item, each a conditional PutItem. If the item cannot be created (another writer
  was first), the reservation is given back only if it still carries this attempt's token: no item
  can hold that token, and a writer that took the reservation over replaced it;
- every other change (an enrolled device's new fields or thing name, a reservation left by an
  interrupted enrollment) is one TransactWriteItems: the item's change, conditioned on the item as it
  was read, with the reservation taken and the old one given back, all or nothing.

An interrupted enrollment can leave a reservation whose serial has no item using it: it blocks that
thing name for other serials (reported as held), and the same serial's next enrollment takes it back.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

# The statuses, also for the tools that read them from this module (`reg.REVOKED`).
from fleet_shared.registry import (
    DECOMMISSIONED as DECOMMISSIONED,
)
from fleet_shared.registry import (
    ENROLLED as ENROLLED,
)
from fleet_shared.registry import (
    FAILED as FAILED,
)
from fleet_shared.registry import (
    PARTITION_KEY,
    STATUS_INDEX,
    THING_NAME_RESERVATION_PREFIX,
    TYPE_INDEX,
)
from fleet_shared.registry import (
    PROVISIONED as PROVISIONED,
)
from fleet_shared.registry import (
    PROVISIONING as PROVISIONING,
)
from fleet_shared.registry import (
    REVOKED as REVOKED,
)
from scripts.fleet_ops.manifest import Device, Problem

MANIFEST_FIELDS = ("deviceType", "manufacturer", "thingName", "firmwareVersion", "location", "factoryPublicKey")
BATCH_GET_MAX = 100  # BatchGetItem's limit per request
WRITE_ATTEMPTS = 5  # a transaction refused because the registry changed meanwhile is planned again

# What enrolling one device did.
NEW, UPDATED, UNCHANGED, UNTOUCHED, CONFLICT = "enrolled", "updated", "unchanged", "untouched", "conflict"


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def reservation_key(thing_name: str) -> str:
    return THING_NAME_RESERVATION_PREFIX + thing_name


def plain(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """A DynamoDB item as {name: value} (strings, numbers as text, lists and maps as they are)."""
    if item is None:
        return None
    return {name: next(iter(value.values())) for name, value in item.items()}


def typed(values: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"S": value} for name, value in values.items()}


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


@dataclass(frozen=True)
class Enrollment:
    """What enrolling one manifest row did (or, in a plan, will do)."""

    device: Device
    outcome: str  # NEW, UPDATED, UNCHANGED, UNTOUCHED (already past enrolled) or CONFLICT
    detail: str = ""


@dataclass
class Plan:
    """Every row's expected outcome, from one read of the registry; conflicts are problems."""

    enrollments: list[Enrollment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def writes(self) -> list[Enrollment]:
        return [e for e in self.enrollments if e.outcome in (NEW, UPDATED)]


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    scanned: int  # items DynamoDB read for this page (what a query or scan is billed by)
    consumed: float  # read capacity units it reported
    next_token: str | None


class Registry:
    def __init__(self, client: Any, table_name: str, *, enrolled_by: str = "fleet enroll") -> None:
        self.client = client
        self.table = table_name
        self.enrolled_by = enrolled_by

    # Reads ----------------------------------------------------------------------------------------
    def get(self, serial_number: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={PARTITION_KEY: {"S": serial_number}}, ConsistentRead=True
        ).get("Item")
        return plain(item)

    def get_many(self, keys: Sequence[str], workers: int = 8) -> dict[str, dict[str, Any]]:
        """The items with these keys (consistent reads), BATCH_GET_MAX a request, several at once."""
        unique = list(dict.fromkeys(keys))
        chunks = [unique[i : i + BATCH_GET_MAX] for i in range(0, len(unique), BATCH_GET_MAX)]
        found: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for items in pool.map(self._batch_get, chunks):
                found.update(items)
        return found

    def _batch_get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        request: dict[str, Any] = {
            self.table: {"Keys": [{PARTITION_KEY: {"S": k}} for k in keys], "ConsistentRead": True}
        }
        found: dict[str, dict[str, Any]] = {}
        for attempt in range(10):
            answer = self.client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(self.table, []):
                values = plain(item) or {}
                found[str(values[PARTITION_KEY])] = values
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(min(2.0, 0.05 * 2**attempt))  # DynamoDB returns what it could not read under load
        raise RuntimeError(f"DynamoDB left {len(request[self.table]['Keys'])} keys unread after 10 attempts")

    def page(
        self,
        *,
        device_type: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> Page:
        """One page of device items: through the status index (by status, and by type within a status:
        its sort key) or the type index; a scan only when nothing filters. `limit`: items read at most."""
        request: dict[str, Any] = {"TableName": self.table, "ReturnConsumedCapacity": "TOTAL"}
        values: dict[str, Any] = {}
        if status:
            request["IndexName"] = STATUS_INDEX.name
            request["ExpressionAttributeNames"] = {"#status": STATUS_INDEX.partition_key}
            values[":status"] = {"S": status}
            condition = "#status = :status"
            if device_type:
                condition += f" AND {STATUS_INDEX.sort_key} = :type"
                values[":type"] = {"S": device_type}
            request["KeyConditionExpression"] = condition
        elif device_type:
            request["IndexName"] = TYPE_INDEX.name
            request["KeyConditionExpression"] = f"{TYPE_INDEX.partition_key} = :type"
            values[":type"] = {"S": device_type}
        else:
            # Everything: the reservations are read too (they are in the table), and left out.
            request["FilterExpression"] = f"NOT begins_with({PARTITION_KEY}, :reservation)"
            values[":reservation"] = {"S": THING_NAME_RESERVATION_PREFIX}
        request["ExpressionAttributeValues"] = values
        if limit:
            request["Limit"] = limit
        if next_token:
            request["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(next_token.encode()))
        answer = (self.client.query if "IndexName" in request else self.client.scan)(**request)
        last = answer.get("LastEvaluatedKey")
        return Page(
            items=[plain(item) or {} for item in answer.get("Items", [])],
            scanned=int(answer.get("ScannedCount", 0)),
            consumed=float(answer.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)),
            next_token=base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None,
        )

    def pages(self, *, device_type: str | None = None, status: str | None = None) -> Iterator[Page]:
        token = None
        while True:
            page = self.page(device_type=device_type, status=status, next_token=token)
            yield page
            token = page.next_token
            if token is None:
                return

    def devices(self, *, device_type: str | None = None, status: str | None = None) -> Iterator[dict[str, Any]]:
        for page in self.pages(device_type=device_type, status=status):
            yield from page.items

    # Enrollment -----------------------------------------------------------------------------------
    def plan(self, devices: Sequence[Device], workers: int = 8) -> Plan:
        """What enrolling these devices will do, from the registry as it is now; a thing name another
        serial holds is a problem of that row."""
        keys = [d.serial_number for d in devices] + [reservation_key(d.thing_name) for d in devices]
        found = self.get_many(keys, workers=workers)
        plan = Plan()
        for device in devices:
            enrollment = classify(
                device, found.get(device.serial_number), found.get(reservation_key(device.thing_name))
            )
            if enrollment.outcome == CONFLICT:
                plan.problems.append(Problem(device.line, enrollment.detail, device.serial_number))
            else:
                plan.enrollments.append(enrollment)
        return plan

    def enroll(
        self,
        enrollments: Sequence[Enrollment],
        *,
        workers: int = 16,
        on_done: Callable[[Enrollment], None] | None = None,
    ) -> list[Enrollment]:
        """Writes the planned enrollments, `workers` at a time; returns what each one did (the registry
        may have moved on since the plan: a device that started provisioning is left untouched)."""
        results: list[Enrollment] = []

        def one(planned: Enrollment) -> Enrollment:
            done = self._enroll(planned)
            if on_done:
                on_done(done)
            return done

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, enrollments))
        return results

    def _enroll(self, planned: Enrollment) -> Enrollment:
        device = planned.device
        if planned.outcome == NEW and self._create(device):
            return Enrollment(device, NEW)
        for _ in range(WRITE_ATTEMPTS):
            item = self.get(device.serial_number)
            reservation = self.get(reservation_key(device.thing_name))
            current = classify(device, item, reservation)
            if current.outcome not in (NEW, UPDATED):
                return current
            if self._change(device, item, reservation):
                return current
        return Enrollment(device, CONFLICT, f"the registry item of {device.serial_number} kept changing; run again")

    def _create(self, device: Device) -> bool:
        """The path of a device new to the registry: two conditional puts (see the module's docstring)."""
        token = uuid.uuid4().hex
        now = now_text()
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._reservation(device, token, now),
                ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
            )
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._new_item(device, now),
                ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise
            self._give_back(device.thing_name, token)
            return False
        return True

    def _give_back(self, thing_name: str, token: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={PARTITION_KEY: {"S": reservation_key(thing_name)}},
                ConditionExpression="reservationToken = :token",
                ExpressionAttributeValues={":token": {"S": token}},
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise

    def _change(self, device: Device, item: dict[str, Any] | None, reservation: dict[str, Any] | None) -> bool:
        """One all-or-nothing change from the item and reservation as read; False when the registry
        changed since (nothing was written)."""
        now = now_text()
        serial = device.serial_number
        writes: list[dict[str, Any]] = []
        if item is None:
            writes.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": self._new_item(device, now),
                        "ConditionExpression": f"attribute_not_exists({PARTITION_KEY})",
                    }
                }
            )
        else:
            writes.append({"Update": self._update(device, item, now)})
        old_thing_name = str(item.get("thingName", "")) if item else ""
        if reservation is None or old_thing_name != device.thing_name:
            # Absent: take it. Ours, but no item uses it (an interrupted enrollment's): take it back,
            # with a new token so that attempt cannot give it away.
            condition = f"attribute_not_exists({PARTITION_KEY})" if reservation is None else "reservedFor = :serial"
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": self._reservation(device, uuid.uuid4().hex, now),
                "ConditionExpression": condition,
            }
            if reservation is not None:
                put["ExpressionAttributeValues"] = {":serial": {"S": serial}}
            writes.append({"Put": put})
        if old_thing_name and old_thing_name != device.thing_name:
            old = self.get(reservation_key(old_thing_name))
            if old is not None and old.get("reservedFor") == serial:
                writes.append(
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": {PARTITION_KEY: {"S": reservation_key(old_thing_name)}},
                            "ConditionExpression": "reservedFor = :serial",
                            "ExpressionAttributeValues": {":serial": {"S": serial}},
                        }
                    }
                )
        try:
            if len(writes) == 1:
                self._write_one(writes[0])
            else:
                self.client.transact_write_items(TransactItems=writes)
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise
        return True

    def _write_one(self, write: dict[str, Any]) -> None:
        """A lone write as the plain call it is (a transaction of one item costs twice as much)."""
        ((kind, request),) = write.items()
        {"Put": self.client.put_item, "Update": self.client.update_item, "Delete": self.client.delete_item}[kind](
            **request
        )

    def _new_item(self, device: Device, now: str) -> dict[str, Any]:
        return typed(
            {
                PARTITION_KEY: device.serial_number,
                "status": ENROLLED,
                **device.fields(),
                "enrolledAt": now,
                "updatedAt": now,
                "enrolledBy": self.enrolled_by,
            }
        )

    def _reservation(self, device: Device, token: str, now: str) -> dict[str, Any]:
        return typed(
            {
                PARTITION_KEY: reservation_key(device.thing_name),
                "reservedFor": device.serial_number,
                "reservationToken": token,
                "reservedAt": now,
            }
        )

    def _update(self, device: Device, item: dict[str, Any], now: str) -> dict[str, Any]:
        """The manifest's fields set, the optional ones it leaves out removed, if the item is still
        enrolled with the thing name it was read with."""
        fields = {**device.fields(), "updatedAt": now, "enrolledBy": self.enrolled_by}
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":f{i}": {"S": value} for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
        gone = [name for name in MANIFEST_FIELDS if name not in fields and name in item]
        if gone:
            names.update({f"#r{i}": name for i, name in enumerate(gone)})
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(gone)))
        names["#status"] = "status"
        values[":enrolled"] = {"S": ENROLLED}
        condition = "#status = :enrolled AND "
        if "thingName" in item:
            condition += "thingName = :oldThing"
            values[":oldThing"] = {"S": str(item["thingName"])}
        else:
            condition += "attribute_not_exists(thingName)"
        return {
            "TableName": self.table,
            "Key": {PARTITION_KEY: {"S": device.serial_number}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    # Lifecycle ------------------------------------------------------------------------------------
    def move(self, serial_number: str, status: str, *, unless: Iterable[str], fields: dict[str, str]) -> bool:
        """Sets the item's status (and fields) unless its status is one of `unless`; False when it was
        (or the item does not exist)."""
        refused = list(unless)
        names = {"#status": "status", **{f"#f{i}": name for i, name in enumerate(fields)}}
        values = {
            ":to": {"S": status},
            **{f":f{i}": {"S": v} for i, v in enumerate(fields.values())},
            **{f":u{i}": {"S": s} for i, s in enumerate(refused)},
        }
        condition = f"attribute_exists({PARTITION_KEY})"
        if refused:
            condition += " AND NOT (#status IN (" + ", ".join(f":u{i}" for i in range(len(refused))) + "))"
        try:
            self.client.update_item(
                TableName=self.table,
                Key={PARTITION_KEY: {"S": serial_number}},
                UpdateExpression="SET #status = :to" + "".join(f", #f{i} = :f{i}" for i in range(len(fields))),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if _condition_failed(error):
                return False
            raise
        return True


def classify(device: Device, item: dict[str, Any] | None, reservation: dict[str, Any] | None) -> Enrollment:
    """What enrolling `device` does to the registry as read: nothing to a device past `enrolled`."""
    if item is not None and item.get("status") != ENROLLED:
        return Enrollment(device, UNTOUCHED, f"already {item.get('status') or 'without a status'}")
    if reservation is not None and reservation.get("reservedFor") != device.serial_number:
        return Enrollment(
            device, CONFLICT, f"thing name {device.thing_name} is held by serial {reservation.get('reservedFor')}"
        )
    if item is None:
        return Enrollment(device, NEW)
    wanted = device.fields()
    same = all(item.get(name) == wanted.get(name) for name in MANIFEST_FIELDS)
    if same and reservation is not None:
        return Enrollment(device, UNCHANGED)
    return Enrollment(device, UPDATED, "" if not same else "thing name reserved")
