"""Finishes a device's provisioning when IoT reports its thing was created.

Invoked by the topic rule on ``$aws/events/thing/+/created`` (registry events). For a thing
created by the provisioning template (it carries the serialNumber attribute and its registry item
is ``provisioning``), it writes the device type's initial shadow and then moves the item to
``provisioned`` - only when the thing is the one the hook claimed for the serial and holds the
certificate of the item's attempt - and revokes the certificate of an attempt this one replaced,
unless that one is attached to the thing too. Errors raise, so Lambda's asynchronous retries run and
the function's Errors metric shows them (what still fails, the scheduled reconciler completes); a
replayed event is a no-op.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from fleet_shared import registry, runtime
from fleet_shared.runtime import log

_CONFIG = runtime.config(read_timeout=5)
_DYNAMODB = runtime.client("dynamodb", _CONFIG)
_IOT = runtime.client("iot", _CONFIG)
_IOT_DATA = runtime.client("iot-data", _CONFIG)
TABLE_NAME = os.environ.get("TABLE_NAME", "")
INITIAL_SHADOWS: dict[str, Any] = json.loads(os.environ.get("INITIAL_SHADOWS", "{}"))


# IoT attaches the certificate in the RegisterThing call that creates the thing; AWS does not say
# whether the created event can be delivered before the attachment is visible. A short wait covers
# that reading; after it, the error makes Lambda retry the event later (and the reconciler is last).
ATTACHMENT_CHECKS = (0.0, 0.5, 1.0, 2.0)


class NotAttached(RuntimeError):
    """The thing does not (yet) hold the certificate of the item's attempt: nothing is completed."""


def thing_holds(thing_name: str, certificate_id: str) -> bool:
    """The certificate is attached to the thing (a missing thing holds nothing)."""
    try:
        pages = _IOT.get_paginator("list_thing_principals").paginate(thingName=thing_name)
        return any(p.rsplit("/", 1)[-1] == certificate_id for page in pages for p in page["principals"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise


def revoke_replaced(certificate_id: str, serial_number: str, thing_name: str) -> None:
    """The certificate of the attempt this one replaced (the reconciler marked it failed) must not
    stay usable; one still attached to the device's thing is the device's own and is kept."""
    if thing_holds(thing_name, certificate_id):
        log(
            message="replaced certificate kept: it is attached to the device's thing",
            result="kept",
            serialNumber=serial_number,
            thingName=thing_name,
            certificateId=certificate_id,
        )
        return
    try:
        status = _IOT.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return
        raise
    if status != "REVOKED":
        _IOT.update_certificate(certificateId=certificate_id, newStatus="REVOKED")
        log(
            message="replaced certificate revoked",
            result="revoked",
            serialNumber=serial_number,
            certificateId=certificate_id,
        )


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, str]:
    thing_name = event.get("thingName")
    attributes = event.get("attributes") or {}
    serial_number = attributes.get("serialNumber") if isinstance(attributes, Mapping) else None
    if event.get("operation") != "CREATED" or not thing_name or not serial_number:
        log(message="ignored event", result="ignored", thingName=thing_name, operation=event.get("operation"))
        return {"result": "ignored"}

    item = _DYNAMODB.get_item(
        TableName=TABLE_NAME, Key={"serialNumber": {"S": serial_number}}, ConsistentRead=True
    ).get("Item")
    status = item.get("status", {}).get("S") if item else None
    if status != registry.PROVISIONING:
        log(
            message="no provisioning in progress",
            result="skipped",
            serialNumber=serial_number,
            thingName=thing_name,
            status=status,
        )
        return {"result": "skipped"}

    if item.get("thingName", {}).get("S") != thing_name:  # a thing of another name carrying the serial proves nothing
        log(
            message="not the thing claimed for the serial",
            result="skipped",
            serialNumber=serial_number,
            thingName=thing_name,
        )
        return {"result": "skipped"}
    certificate_id = item.get("certificateId", {}).get("S", "")
    for wait in ATTACHMENT_CHECKS:
        time.sleep(wait)
        if thing_holds(thing_name, certificate_id):
            break
    else:
        raise NotAttached(
            f"thing {thing_name} does not hold certificate {certificate_id} of serial {serial_number}'s attempt: "
            "nothing completed (Lambda retries the event; the reconciler completes or fails the attempt)"
        )
    device_type = item.get("deviceType", {}).get("S", "")
    shadow = INITIAL_SHADOWS.get(device_type)
    if shadow is not None:
        _IOT_DATA.update_thing_shadow(thingName=thing_name, payload=json.dumps({"state": {"desired": shadow}}).encode())
    now = runtime.now()
    try:
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial_number}},
            UpdateExpression="SET #status = :provisioned, thingName = :thing, thingId = :thingId, "
            "provisionedAt = :now, updatedAt = :now",
            # The thing must be the one the hook claimed for this serial: a thing of another name
            # carrying this serial attribute proves nothing.
            ConditionExpression="#status = :provisioning AND certificateId = :certificate AND thingName = :thing",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":provisioned": {"S": registry.PROVISIONED},
                ":provisioning": {"S": registry.PROVISIONING},
                ":thing": {"S": thing_name},
                ":thingId": {"S": str(event.get("thingId", ""))},
                ":now": {"S": now},
                ":certificate": {"S": certificate_id},
            },
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        log(message="registry changed meanwhile", result="skipped", serialNumber=serial_number, thingName=thing_name)
        return {"result": "skipped"}
    previous = item.get("previousCertificateId", {}).get("S", "none")
    if previous not in ("none", certificate_id):
        revoke_replaced(previous, serial_number, thing_name)
    log(
        message="device provisioned",
        result="provisioned",
        serialNumber=serial_number,
        thingName=thing_name,
        deviceType=device_type,
        certificateId=certificate_id,
    )
    return {"result": "provisioned"}
