"""Reconciles the device registry with the IoT registry, on a schedule (EventBridge).

Provisioning can stop after the hook's allow: the template fails, RegisterThing is throttled, the
device drops, the registry-events function fails, or a thing of that name already existed so no
created event came. The serial then stays `provisioning`. Each run:

- completes a `provisioning` item older than the stale window whose thing exists with the attempt's
  certificate attached (writing the initial shadow if it has none), as the registry-events function
  would have;
- marks one without such a thing `failed` (retryable: the hook lets the device try again) and
  revokes the attempt's certificate if AWS created it;
- revokes the certificate of the attempt a newer one replaced (`previousCertificateId`);
- removes the new certificate of a rotation never confirmed within ROTATION_CONFIRM_SECONDS (the
  device's current certificate keeps working) and records it abandoned in the item's history;
- publishes fleet metrics as embedded-metric log lines: devices by status and type, days until each
  claim certificate expires (the claim-certificate expiry alarm watches them), and its own outcomes.

It deletes no certificate it cannot tie to this stack's registry. Certificates made over MQTT whose
RegisterThing never came stay PENDING_ACTIVATION, which authenticates nothing (whether AWS later
removes them is not documented); any of them may be another workload's, since every
fleet-provisioning template in the account and region makes them.

Every outcome is one JSON log line; an error raises (the run's Errors metric shows it) after the
other items were still reconciled.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fleet_shared import registry, runtime
from fleet_shared.runtime import log

_CONFIG = runtime.config(read_timeout=10)
_DYNAMODB = runtime.client("dynamodb", _CONFIG)
_IOT = runtime.client("iot", _CONFIG)
_IOT_DATA = runtime.client("iot-data", _CONFIG)
TABLE_NAME = os.environ.get("TABLE_NAME", "")
STATUS_INDEX = os.environ.get("STATUS_INDEX", registry.STATUS_INDEX.name)
STALE_CLAIM_SECONDS = int(os.environ.get("STALE_CLAIM_SECONDS", "600"))
ROTATION_CONFIRM_SECONDS = int(os.environ.get("ROTATION_CONFIRM_SECONDS", "600"))
ROTATION_INDEX = os.environ.get("ROTATION_INDEX", registry.ROTATION_INDEX.name)
HISTORY_LIMIT = int(os.environ.get("CERTIFICATE_HISTORY_LIMIT", registry.CERTIFICATE_HISTORY_LIMIT))
CLAIM_CERTIFICATE_IDS = [c for c in os.environ.get("CLAIM_CERTIFICATE_IDS", "").split(",") if c]
METRICS_NAMESPACE = os.environ.get("METRICS_NAMESPACE", "IoTProvisioning")
INITIAL_SHADOWS: dict[str, Any] = json.loads(os.environ.get("INITIAL_SHADOWS", "{}"))


def _items(status: str, projection: str | None = None) -> Iterator[dict[str, Any]]:
    """The registry items in one status, through the status index (never a scan), page by page."""
    query: dict[str, Any] = {
        "TableName": TABLE_NAME,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#status = :status",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":status": {"S": status}},
    }
    if projection:
        query["ProjectionExpression"] = projection
    for page in _DYNAMODB.get_paginator("query").paginate(**query):
        yield from page["Items"]


def _certificate(certificate_id: str) -> dict[str, Any] | None:
    try:
        return dict(_IOT.describe_certificate(certificateId=certificate_id)["certificateDescription"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def revoke(certificate_id: str, why: str, thing_name: str) -> bool:
    """Revokes a certificate AWS issued for a dead attempt; False when there is nothing to revoke, or
    when the certificate is attached to the device's thing (then it is the device's own: kept)."""
    if not certificate_id or certificate_id == "none":
        return False
    if _thing_has(thing_name, certificate_id):
        log(
            message="certificate kept: it is attached to the device's thing",
            result="kept",
            certificateId=certificate_id,
            thingName=thing_name,
            reason=why,
        )
        return False
    certificate = _certificate(certificate_id)
    if certificate is None or certificate["status"] == "REVOKED":
        return False
    _IOT.update_certificate(certificateId=certificate_id, newStatus="REVOKED")
    log(message="certificate revoked", result="revoked", certificateId=certificate_id, reason=why)
    return True


def _thing_has(thing_name: str, certificate_id: str) -> bool:
    """The thing exists and the attempt's certificate is attached to it."""
    try:
        pages = _IOT.get_paginator("list_thing_principals").paginate(thingName=thing_name)
        return any(p.rsplit("/", 1)[-1] == certificate_id for page in pages for p in page["principals"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise


def _update(serial: str, certificate_id: str, started: str, expression: str, values: dict[str, Any]) -> bool:
    """One conditional write on an item still in this attempt as read (False when the item moved on
    meanwhile, a retry of the same attempt included: the hook's allow of it sets provisioningStartedAt
    again, and the template it runs may be attaching the certificate right now)."""
    try:
        _DYNAMODB.update_item(
            TableName=TABLE_NAME,
            Key={"serialNumber": {"S": serial}},
            UpdateExpression=expression,
            ConditionExpression="#status = :provisioning AND certificateId = :certificate AND "
            "provisioningStartedAt = :started",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":provisioning": {"S": registry.PROVISIONING},
                ":certificate": {"S": certificate_id},
                ":started": {"S": started},
                **values,
            },
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _ensure_shadow(thing_name: str, device_type: str) -> None:
    shadow = INITIAL_SHADOWS.get(device_type)
    if shadow is None:
        return
    try:
        _IOT_DATA.get_thing_shadow(thingName=thing_name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        _IOT_DATA.update_thing_shadow(thingName=thing_name, payload=json.dumps({"state": {"desired": shadow}}).encode())


def reconcile_stale(item: dict[str, Any], now: float, outcomes: Counter[str]) -> None:
    serial, certificate_id = registry.text(item, "serialNumber"), registry.text(item, "certificateId")
    thing_name = registry.text(item, "thingName") or f"{registry.text(item, 'deviceType')}-{serial}"
    stamp = runtime.timestamp(now)
    started = registry.text(item, "provisioningStartedAt")
    attempt = _certificate(certificate_id) if _thing_has(thing_name, certificate_id) else None
    if attempt is not None and attempt["status"] == "ACTIVE":  # the device holds its thing
        _ensure_shadow(thing_name, registry.text(item, "deviceType"))
        completed = {
            ":provisioned": {"S": registry.PROVISIONED},
            ":now": {"S": stamp},
            ":reconciler": {"S": "reconciler"},
        }
        expression = "SET #status = :provisioned, provisionedAt = :now, updatedAt = :now, completedBy = :reconciler"
        if _update(serial, certificate_id, started, expression, completed):
            outcomes["completed"] += 1
            log(message="provisioning completed", result="completed", serialNumber=serial, thingName=thing_name)
            previous = registry.text(item, "previousCertificateId")
            if previous != certificate_id and revoke(previous, "replaced by a newer attempt", thing_name):
                outcomes["revoked"] += 1
        return
    minutes = STALE_CLAIM_SECONDS // 60
    reason = f"no thing {thing_name} with the attempt's certificate {minutes} minutes after the hook allowed it"
    if attempt is not None:
        reason = f"the attempt's certificate is on thing {thing_name} but {attempt['status']}, not ACTIVE, {minutes} "
        reason += "minutes after the hook allowed it"
    failed = {":failed": {"S": registry.FAILED}, ":reason": {"S": reason}, ":now": {"S": stamp}}
    if _update(
        serial,
        certificate_id,
        started,
        "SET #status = :failed, failureReason = :reason, failedAt = :now, updatedAt = :now",
        failed,
    ):
        outcomes["failed"] += 1
        log(
            message="provisioning failed",
            result="failed",
            serialNumber=serial,
            certificateId=certificate_id,
            reason=reason,
        )
        for dead in {certificate_id, registry.text(item, "previousCertificateId")}:
            if revoke(dead, "its provisioning attempt failed", thing_name):
                outcomes["revoked"] += 1


def remove_certificate(certificate_id: str, thing_name: str) -> None:
    """Deactivates, detaches and deletes a certificate (one never confirmed); a missing one is done."""
    certificate = _certificate(certificate_id)
    if certificate is None:
        return
    arn = certificate["certificateArn"]
    _IOT.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")  # stops working first
    try:
        _IOT.detach_thing_principal(thingName=thing_name, principal=arn)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    for policy in _IOT.list_attached_policies(target=arn)["policies"]:
        _IOT.detach_policy(policyName=policy["policyName"], target=arn)
    _IOT.delete_certificate(certificateId=certificate_id)


def abandon_rotations(now: float, outcomes: Counter[str]) -> None:
    """Rotations requested longer than ROTATION_CONFIRM_SECONDS ago and never confirmed."""
    query = {
        "TableName": TABLE_NAME,
        "IndexName": ROTATION_INDEX,
        "KeyConditionExpression": "rotationState = :pending AND rotationRequestedAt < :before",
        "ExpressionAttributeValues": {
            ":pending": {"S": "pending"},
            ":before": {"S": runtime.timestamp(now - ROTATION_CONFIRM_SECONDS)},
        },
    }
    for page in _DYNAMODB.get_paginator("query").paginate(**query):
        for item in page["Items"]:
            serial, pending = registry.text(item, "serialNumber"), registry.text(item, "pendingCertificateId")
            stamp = runtime.timestamp(now)
            event = {"M": {"event": {"S": "abandoned"}, "certificateId": {"S": pending}, "at": {"S": stamp}}}
            # The index is read eventually consistently: an item behind the table fails the condition and
            # is taken up by a later run.
            recorded, unchanged, events = registry.history(item, event, limit=HISTORY_LIMIT)
            try:  # the registry first: a confirmation racing this one then fails instead of half-applying
                _DYNAMODB.update_item(
                    TableName=TABLE_NAME,
                    Key={"serialNumber": {"S": serial}},
                    UpdateExpression=f"SET updatedAt = :now, {recorded} REMOVE pendingCertificateId, "
                    "rotationState, rotationRequestedAt, rotationRequestId, rotationReservedBy",
                    ConditionExpression="pendingCertificateId = :pending AND rotationRequestedAt = :requested "
                    f"AND {unchanged}",
                    ExpressionAttributeValues={
                        ":now": {"S": stamp},
                        ":pending": {"S": pending},
                        ":requested": item["rotationRequestedAt"],
                        **events,
                    },
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    continue  # confirmed, asked again or recorded meanwhile: a later run looks again
                raise
            remove_certificate(pending, registry.text(item, "thingName"))
            outcomes["abandoned"] += 1
            log(message="rotation abandoned", result="abandoned", serialNumber=serial, certificateId=pending)


def publish_fleet_metrics(now: float) -> None:
    for status in registry.STATUSES:
        by_type = Counter(registry.text(item, "deviceType") for item in _items(status, "deviceType"))
        runtime.metric(METRICS_NAMESPACE, "Devices", sum(by_type.values()), "Count", Status=status)
        for device_type, count in sorted(by_type.items()):
            runtime.metric(METRICS_NAMESPACE, "Devices", count, "Count", Status=status, DeviceType=device_type)
    for certificate_id in CLAIM_CERTIFICATE_IDS:
        certificate = _certificate(certificate_id)
        if certificate is None:
            continue
        not_after = certificate["validity"]["notAfter"]
        expires = not_after.timestamp() if isinstance(not_after, datetime) else float(not_after)
        runtime.metric(
            METRICS_NAMESPACE,
            "ClaimCertificateDaysToExpiry",
            round((expires - now) / 86400, 2),
            "None",
            CertificateId=certificate_id,
        )


def handler(event: Any = None, context: Any = None) -> dict[str, Any]:
    now = time.time()
    stale_before = runtime.timestamp(now - STALE_CLAIM_SECONDS)
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    for item in _items(registry.PROVISIONING):
        started = registry.text(item, "provisioningStartedAt")
        if not started or started >= stale_before:
            continue
        try:
            reconcile_stale(item, now, outcomes)
        except (ClientError, BotoCoreError) as error:  # the others are still reconciled; the run then fails
            errors.append(f"{registry.text(item, 'serialNumber')}: {type(error).__name__}: {error}"[:300])
    steps = (
        lambda: abandon_rotations(now, outcomes),
        lambda: publish_fleet_metrics(now),
    )
    for step in steps:
        try:
            step()
        except (ClientError, BotoCoreError) as error:
            errors.append(f"{type(error).__name__}: {error}"[:300])
    for outcome in ("completed", "failed", "revoked", "abandoned"):
        runtime.metric(METRICS_NAMESPACE, "ReconcilerOutcomes", outcomes[outcome], "Count", Outcome=outcome)
    summary = {
        "completed": outcomes["completed"],
        "failed": outcomes["failed"],
        "revoked": outcomes["revoked"],
        "abandoned": outcomes["abandoned"],
        "errors": len(errors),
    }
    log(
        message="reconciled",
        result="errors" if errors else "ok",
        at=datetime.now(UTC).isoformat(),
        **summary,
        errorSamples=errors[:5],
    )
    if errors:
        raise RuntimeError(f"reconciling failed for {len(errors)} item(s) or step(s): {errors[0]}")
    return summary
