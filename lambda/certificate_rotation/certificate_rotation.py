"""Certificate rotation: a provisioned device trades its certificate for one from its own CSR.

AWS IoT has no rotation service; this is the pattern AWS's blog "How to manage IoT device certificate
rotation using AWS IoT" describes (a CSR on a request topic, a function that calls
CreateCertificateFromCsr and answers on a reply topic, the old certificate retired only once the new
one is proven). Devices publish on ``fleet/rotation/<thing>/<step>``, which the topic rule that invokes
this function selects; its SQL adds who is asking (``clientid()``,
``principal()``: the certificate id of the connection) and the topic, so nothing in the payload can
claim another device's identity. Answers are published on ``fleet/rotation/<thing>/<step>/accepted``
or ``/rejected``, which only that thing's policy lets it receive.

- ``request`` {requestId, certificateSigningRequest}, with the device's current certificate: a new
  certificate for the CSR's key (ACTIVE, the current certificate's policies and the thing attached),
  recorded as pending in the registry item; the answer carries its PEM. A new request replaces a
  pending one that was never confirmed (its certificate is removed).
- ``confirm`` {requestId}, connected with the new certificate (which proves it works): the registry
  item's certificate becomes the new one, and the old one is detached and REVOKED (kept for audit;
  a revoked certificate can never be activated again).

The registry item keeps ``certificateHistory``, the newest events (issued, confirmed, retired,
abandoned, replaced) with each certificate id and time. A pending rotation never confirmed is removed
by the reconciler after ROTATION_CONFIRM_SECONDS. Errors a device can cause get a rejected answer; AWS
errors raise (the function's Errors metric), after a rejected answer when one can still be sent; the
stack turns Lambda's retries of a failed event off (the device repeats its request itself).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from botocore.exceptions import ClientError

from fleet_shared import registry, runtime
from fleet_shared.runtime import log

_CONFIG = runtime.config(read_timeout=5)
_DYNAMODB = runtime.client("dynamodb", _CONFIG)
_IOT = runtime.client("iot", _CONFIG)
_IOT_DATA = runtime.client("iot-data", _CONFIG)
TABLE_NAME = os.environ.get("TABLE_NAME", "")
# One rotation request per device per interval: each request costs about ten IoT control-plane calls
# (quotas RegisterThing shares) and a certificate. The same requestId again is the same request.
ROTATION_INTERVAL_SECONDS = int(os.environ.get("ROTATION_INTERVAL_SECONDS", "3600"))
# The newest events an item keeps in certificateHistory (fleet_shared.registry says why).
HISTORY_LIMIT = int(os.environ.get("CERTIFICATE_HISTORY_LIMIT", registry.CERTIFICATE_HISTORY_LIMIT))
REQUEST_ATTEMPTS = 3  # tries of one request (one requestId) in its slot: a repeat after a failure, not a loop
TOPIC_ROOT = "fleet/rotation"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOPIC = re.compile(r"(?:\$aws/rules/[^/]+/)?fleet/rotation/([^/]+)/(request|confirm)")
_CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}")
MAX_CSR_CHARACTERS = 8192  # an RSA-4096 CSR is about 1,700; anything far larger is not one


class Refused(Exception):
    """A request the device must be told about: (status, error code, message) as in IoT's own APIs."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def publish(thing: str, step: str, outcome: str, body: Mapping[str, Any]) -> None:
    _IOT_DATA.publish(topic=f"{TOPIC_ROOT}/{thing}/{step}/{outcome}", qos=1, payload=json.dumps(body).encode())


def _item_of(thing: str) -> dict[str, Any]:
    """The registry item of the device this thing is (by the thing's serialNumber attribute)."""
    try:
        attributes = _IOT.describe_thing(thingName=thing).get("attributes") or {}
    except ClientError as error:
        if _error_code(error) == "ResourceNotFoundException":
            raise Refused(404, "ResourceNotFound", f"thing {thing} does not exist") from None
        raise
    serial = attributes.get("serialNumber")
    item = (
        _DYNAMODB.get_item(TableName=TABLE_NAME, Key={"serialNumber": {"S": serial}}, ConsistentRead=True).get("Item")
        if serial
        else None
    )
    if not item or item.get("thingName", {}).get("S") != thing:
        raise Refused(404, "ResourceNotFound", f"no registry entry for thing {thing}")
    if registry.text(item, "status") != registry.PROVISIONED:
        raise Refused(403, "NotProvisioned", f"device {serial} is {item.get('status', {}).get('S')}, not provisioned")
    return item


def _arn(certificate_id: str) -> str:
    return str(_IOT.describe_certificate(certificateId=certificate_id)["certificateDescription"]["certificateArn"])


def _not_after(certificate_id: str) -> str:
    """The certificate's notAfter as IoT reports it (the Lambda runtime has no X.509 parser)."""
    validity = _IOT.describe_certificate(certificateId=certificate_id)["certificateDescription"]["validity"]
    return validity["notAfter"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(kind: str, certificate_id: str, **extra: str) -> dict[str, Any]:
    return {
        "M": {
            "event": {"S": kind},
            "certificateId": {"S": certificate_id},
            "at": {"S": runtime.now()},
            **{k: {"S": v} for k, v in extra.items()},
        }
    }


def require_active(principal: str) -> None:
    """A revoked or deactivated certificate still connected (AWS closes its connections only within
    a few minutes) may not rotate, whatever the registry says: a revoke whose registry write failed
    must not let the connection it left open get a working certificate."""
    try:
        status = _IOT.describe_certificate(certificateId=principal)["certificateDescription"]["status"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        status = "deleted"
    if status != "ACTIVE":
        raise Refused(403, "CertificateNotActive", f"the connection's certificate is {status}, not ACTIVE")


def reserve(serial: str, current: str, request_id: str) -> None:
    """Takes the device's rotation slot for this request before any certificate is made: one request per
    ROTATION_INTERVAL_SECONDS. The same requestId again (a device repeating a request that failed) may
    use the slot it holds, at most REQUEST_ATTEMPTS times in all."""
    now = time.time()
    names = {"#status": "status"}
    values = {":provisioned": {"S": registry.PROVISIONED}, ":current": {"S": current}, ":request": {"S": request_id}}
    held = "#status = :provisioned AND certificateId = :current"
    try:
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial}},
            UpdateExpression="SET rotationReservedAt = :now, rotationReservedBy = :request, rotationAttempts = :one",
            ConditionExpression=f"{held} AND (attribute_not_exists(rotationReservedAt) OR "
            "rotationReservedAt <= :since)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                **values,
                ":now": {"S": runtime.timestamp(now)},
                ":one": {"N": "1"},
                ":since": {"S": runtime.timestamp(now - ROTATION_INTERVAL_SECONDS)},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return
    except ClientError as error:
        if _error_code(error) != "ConditionalCheckFailedException":
            raise
        old = error.response.get("Item") or {}
    if registry.text(old, "status") != registry.PROVISIONED or registry.text(old, "certificateId") != current:
        raise Refused(409, "ConflictingRotation", "the device's registry entry changed meanwhile: retry")
    minutes = ROTATION_INTERVAL_SECONDS / 60
    limit = Refused(
        429,
        "RotationLimitExceeded",
        f"one rotation request per {minutes:g} minutes per device (and "
        f"{REQUEST_ATTEMPTS} attempts of it); the last began at {registry.text(old, 'rotationReservedAt')}: ask "
        "again after that interval",
    )
    if registry.text(old, "rotationReservedBy") != request_id:
        raise limit
    try:
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial}},
            UpdateExpression="ADD rotationAttempts :one",
            ConditionExpression=f"{held} AND rotationReservedBy = :request AND rotationAttempts < :attempts",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":one": {"N": "1"}, ":attempts": {"N": str(REQUEST_ATTEMPTS)}},
        )
    except ClientError as error:
        if _error_code(error) != "ConditionalCheckFailedException":
            raise
        raise limit from None


def retire(certificate_id: str, thing: str, *, delete: bool) -> None:
    """Detaches the certificate from the thing and its policies, then revokes it (retired: kept for
    audit) or deactivates and deletes it (never confirmed). Safe to repeat; a missing one is done."""
    try:
        arn = _arn(certificate_id)
    except ClientError as error:
        if _error_code(error) == "ResourceNotFoundException":
            return
        raise
    # Status first: the certificate stops working before anything else changes.
    _IOT.update_certificate(certificateId=certificate_id, newStatus="INACTIVE" if delete else "REVOKED")
    try:
        _IOT.detach_thing_principal(thingName=thing, principal=arn)
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
    for page in _IOT.get_paginator("list_attached_policies").paginate(target=arn):
        for policy in page["policies"]:
            _IOT.detach_policy(policyName=policy["policyName"], target=arn)
    if delete:
        _IOT.delete_certificate(certificateId=certificate_id)


def request(thing: str, principal: str, body: Mapping[str, Any]) -> dict[str, Any]:
    request_id = body.get("requestId")
    csr = body.get("certificateSigningRequest")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise Refused(400, "InvalidRequest", "requestId must be 1-64 characters of [A-Za-z0-9_-]")
    if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr or len(csr) > MAX_CSR_CHARACTERS:
        raise Refused(400, "InvalidCsr", "certificateSigningRequest is not a PEM certificate signing request")
    item = _item_of(thing)
    serial, current = registry.text(item, "serialNumber"), registry.text(item, "certificateId")
    if principal != current:
        raise Refused(403, "NotCurrentCertificate", "only the device's current certificate may request a rotation")
    require_active(principal)
    pending = registry.text(item, "pendingCertificateId")
    if pending and registry.text(item, "rotationRequestId") == request_id:  # the same request again: the same answer
        description = _IOT.describe_certificate(certificateId=pending)["certificateDescription"]
        return {"requestId": request_id, "certificateId": pending, "certificatePem": description["certificatePem"]}
    reserve(serial, current, request_id)
    try:
        created = _IOT.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
    except ClientError as error:
        if _error_code(error) == "InvalidRequestException":
            raise Refused(400, "InvalidCsr", error.response.get("Error", {}).get("Message", "invalid CSR")) from None
        raise
    new_id, new_arn, pem = created["certificateId"], created["certificateArn"], created["certificatePem"]
    try:
        current_arn = _arn(current)
        for page in _IOT.get_paginator("list_attached_policies").paginate(target=current_arn):
            for policy in page["policies"]:
                _IOT.attach_policy(policyName=policy["policyName"], target=new_arn)
        _IOT.attach_thing_principal(thingName=thing, principal=new_arn)
        _IOT.update_certificate(certificateId=new_id, newStatus="ACTIVE")
        # Recorded only while the item still names the certificate that asked (and any pending one
        # this request replaces), and this request holds the slot: two requests racing cannot both
        # become pending.
        issued = _event("issued", new_id, notAfter=_not_after(new_id))
        replaced = [_event("replaced", pending)] if pending else []  # its certificate is removed below
        recorded, unchanged, events = registry.history(item, issued, *replaced, limit=HISTORY_LIMIT)
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial}},
            UpdateExpression="SET pendingCertificateId = :new, rotationState = :pending, rotationRequestedAt = :now, "
            f"rotationRequestId = :request, updatedAt = :now, {recorded}",
            ConditionExpression="#status = :provisioned AND certificateId = :current AND rotationReservedBy = :request "
            f"AND {unchanged} AND "
            + ("pendingCertificateId = :replaced" if pending else "attribute_not_exists(pendingCertificateId)"),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":new": {"S": new_id},
                ":pending": {"S": "pending"},
                ":now": {"S": runtime.now()},
                ":request": {"S": request_id},
                ":provisioned": {"S": registry.PROVISIONED},
                ":current": {"S": current},
                **events,
                **({":replaced": {"S": pending}} if pending else {}),
            },
        )
    except ClientError as error:
        retire(new_id, thing, delete=True)  # nothing half-made stays behind
        if _error_code(error) != "ConditionalCheckFailedException":
            raise
        now_pending = _item_of(thing)
        if registry.text(now_pending, "rotationRequestId") == request_id:  # the device's own repeat won: its answer
            return request(thing, principal, body)
        raise Refused(409, "ConflictingRotation", "the device's registry entry changed meanwhile: retry") from None
    if pending:  # the unconfirmed certificate of the request this one replaced
        retire(pending, thing, delete=True)
        log(message="pending rotation replaced", serialNumber=serial, certificateId=pending)
    log(
        message="rotation requested",
        result="pending",
        serialNumber=serial,
        thingName=thing,
        certificateId=new_id,
        requestId=request_id,
    )
    return {"requestId": request_id, "certificateId": new_id, "certificatePem": pem}


def confirm(thing: str, principal: str, body: Mapping[str, Any]) -> dict[str, Any]:
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise Refused(400, "InvalidRequest", "requestId must be 1-64 characters of [A-Za-z0-9_-]")
    item = _item_of(thing)
    serial, current = registry.text(item, "serialNumber"), registry.text(item, "certificateId")
    require_active(principal)
    # A repeated confirm finishes what the first may not have: it retires only the certificate that the
    # confirmed rotation of this very request replaced, never the current one (previousCertificateId is
    # not it: the provisioning hook sets that one, to the current certificate on a same-certificate retry).
    replaced = registry.text(item, "retiredCertificateId")
    if (
        current == principal
        and registry.text(item, "confirmedRequestId") == request_id
        and _CERTIFICATE_ID.fullmatch(replaced)
        and replaced != current
    ):
        retire(replaced, thing, delete=False)
        return {"requestId": request_id, "certificateId": principal, "retiredCertificateId": replaced}
    if (
        registry.text(item, "pendingCertificateId") != principal
        or registry.text(item, "rotationRequestId") != request_id
    ):
        raise Refused(403, "NoPendingRotation", "this certificate is not the pending one of this request")
    recorded, unchanged, events = registry.history(
        item, _event("confirmed", principal), _event("retired", current), limit=HISTORY_LIMIT
    )
    try:
        # rotationReservedBy goes: the slot's time stays (the interval runs from the request), but this
        # requestId can no longer pass for a retry of a request in progress.
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial}},
            UpdateExpression="SET certificateId = :new, previousCertificateId = :old, retiredCertificateId = :old, "
            f"confirmedRequestId = :request, certificateRotatedAt = :now, updatedAt = :now, {recorded} "
            "REMOVE pendingCertificateId, rotationState, rotationRequestedAt, rotationRequestId, rotationReservedBy",
            ConditionExpression="#status = :provisioned AND certificateId = :old AND pendingCertificateId = :new "
            f"AND {unchanged}",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":new": {"S": principal},
                ":old": {"S": current},
                ":now": {"S": runtime.now()},
                ":request": {"S": request_id},
                ":provisioned": {"S": registry.PROVISIONED},
                **events,
            },
        )
    except ClientError as error:
        if _error_code(error) == "ConditionalCheckFailedException":
            raise Refused(409, "ConflictingRotation", "the device's registry entry changed meanwhile") from None
        raise
    # The registry says the new certificate is the device's first: a failure here leaves only the
    # old one to retire, which a repeated confirm does.
    retire(current, thing, delete=False)
    log(
        message="rotation confirmed",
        result="rotated",
        serialNumber=serial,
        thingName=thing,
        certificateId=principal,
        retiredCertificateId=current,
    )
    return {"requestId": request_id, "certificateId": principal, "retiredCertificateId": current}


STEPS = {"request": request, "confirm": confirm}


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The topic rule's message: the device's fields plus topic, clientId and principal from the rule."""
    match = _TOPIC.fullmatch(str(event.get("topic", "")))
    client_id, principal = str(event.get("clientId") or ""), str(event.get("principal") or "")
    if not match:
        log(message="ignored message", result="ignored", topic=event.get("topic"))
        return {"result": "ignored"}
    thing, step = match.groups()
    request_id = event.get("requestId") if isinstance(event.get("requestId"), str) else None
    try:
        # The policy lets a device use only its own thing's topics; this holds even if it did not.
        if client_id != thing or not _CERTIFICATE_ID.fullmatch(principal):
            raise Refused(403, "Forbidden", "the topic's thing is not the connected client, or no certificate")
        answer = STEPS[step](thing, principal, event)
    except Refused as refused:
        log(
            message="rotation refused",
            result="rejected",
            step=step,
            thingName=thing,
            errorCode=refused.code,
            reason=refused.message,
        )
        if client_id == thing:  # never answer on a topic the caller does not own
            publish(
                thing,
                step,
                "rejected",
                {
                    "requestId": request_id,
                    "statusCode": refused.status,
                    "errorCode": refused.code,
                    "errorMessage": refused.message,
                },
            )
        return {"result": "rejected", "errorCode": refused.code}
    except Exception:
        publish(
            thing,
            step,
            "rejected",
            {
                "requestId": request_id,
                "statusCode": 500,
                "errorCode": "InternalFailure",
                "errorMessage": "the rotation failed; try again later",
            },
        )
        raise
    publish(thing, step, "accepted", answer)
    return {"result": "accepted", "step": step}
