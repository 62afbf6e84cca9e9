"""Pre-provisioning hook for the fleet-provisioning template.

IoT calls it with the device's RegisterThing parameters and waits at most 5 s for
``{"allowProvisioning": bool, "parameterOverrides": {...}}``; anything else denies the device.
The handler is thin: validate the event, decide, make the one conditional registry write, answer.
Every path that is not a clean allow denies (fail closed) and logs one JSON line with the reason,
which is also an embedded-metric-format record (counts by decision, reason and device type, and
ProvisioningErrors: 1 when the hook denied because the registry or the hook itself failed).

Attestation: a device enrolled with a factory public key (EC P-256) must send AttestationSignature, its
ECDSA signature over attestation_message(serial, new certificate id, template name); the hook checks it
against the enrolled key before its write. With REQUIRE_ATTESTATION every device must have a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from ecdsa import BadSignatureError, NIST256p, VerifyingKey
from ecdsa.util import sigdecode_der, sigdecode_string

from fleet_shared import registry, runtime

# Parameter rules, each matched against the whole value (fullmatch) with ASCII classes only: `$`
# would accept a trailing newline and `\d` any Unicode digit, values AWS then refuses as thing
# attributes ([a-zA-Z0-9_.,@/:#=\[\]-]*) after the serial was claimed.
SERIAL_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,63}")
MANUFACTURER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,@/:#-]{0,63}")
FIRMWARE_VERSION = re.compile(r"v(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})")
LOCATION = re.compile(r"[A-Za-z0-9_.,@/:#-]{1,128}")
THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
KNOWN_PARAMETERS = {
    "SerialNumber",
    "DeviceType",
    "Manufacturer",
    "FirmwareVersion",
    "Location",
    "ThingName",
    "AttestationSignature",
}
MAX_PARAMETER_LENGTH = 256
TEMPLATE_ARN = re.compile(r"arn:[a-z-]+:iot:[a-z0-9-]*:[0-9]*:provisioningtemplate/([0-9A-Za-z_-]{1,36})")
# The first line of every attested message: a factory key's signature made for anything else (another
# protocol using the same key) can never pass for one.
ATTESTATION_CONTEXT = "aws-iot-fleet-attestation/1"
FACTORY_KEY_ATTRIBUTE = "factoryPublicKey"  # base64 DER SubjectPublicKeyInfo, as enrolled

# Reason codes: one per way a request ends. Operators search logs and metrics by them.
ALLOWED = "ALLOWED"
INVALID_PARAMETERS = "INVALID_PARAMETERS"
DEVICE_TYPE_NOT_ALLOWED = "DEVICE_TYPE_NOT_ALLOWED"
NOT_ENROLLED = "NOT_ENROLLED"
DEVICE_TYPE_MISMATCH = "DEVICE_TYPE_MISMATCH"
MANUFACTURER_MISMATCH = "MANUFACTURER_MISMATCH"
THING_NAME_MISMATCH = "THING_NAME_MISMATCH"
THING_NAME_TAKEN = "THING_NAME_TAKEN"
ATTEMPT_FAILED = "ATTEMPT_FAILED"
PROVISIONING_IN_PROGRESS = "PROVISIONING_IN_PROGRESS"
ALREADY_PROVISIONED = "ALREADY_PROVISIONED"
REVOKED = "REVOKED"
DECOMMISSIONED = "DECOMMISSIONED"
NOT_ENROLLABLE = "NOT_ENROLLABLE"
ATTESTATION_FAILED = "ATTESTATION_FAILED"
REGISTRY_ERROR = "REGISTRY_ERROR"
INTERNAL_ERROR = "INTERNAL_ERROR"

# Denials because the hook could not decide (the registry or the hook itself failed), not because of
# the device: counted as ProvisioningErrors, which an alarm watches (Lambda's Errors never sees them).
ERROR_REASONS = frozenset({REGISTRY_ERROR, INTERNAL_ERROR})

STATUS_REASONS = {
    registry.PROVISIONING: PROVISIONING_IN_PROGRESS,
    registry.PROVISIONED: ALREADY_PROVISIONED,
    registry.REVOKED: REVOKED,
    registry.DECOMMISSIONED: DECOMMISSIONED,
}


@dataclass(frozen=True)
class Settings:
    table_name: str
    allowed_device_types: frozenset[str]
    require_enrollment: bool
    metrics_namespace: str
    debug: bool
    # Every device must be enrolled with a factory key and sign with it (otherwise only those enrolled with one).
    require_attestation: bool = False
    # The client-id prefix of claim connections (the claim policy's only Connect resource): no thing
    # name may take it, or the claim certificate could connect as that thing and knock it off.
    claim_client_id_prefix: str = "claim-"
    # This stack's provisioning template: IoT of the account may invoke the hook (its function policy
    # names the account), so a request for any other template is refused. Empty: no check (tests only).
    template_name: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            table_name=environ.get("TABLE_NAME", ""),
            allowed_device_types=frozenset(
                t.strip() for t in environ.get("ALLOWED_DEVICE_TYPES", "").split(",") if t.strip()
            ),
            require_enrollment=environ.get("REQUIRE_ENROLLMENT", "true").lower() != "false",
            metrics_namespace=environ.get("METRICS_NAMESPACE", "IoTProvisioning"),
            debug=environ.get("IOT_PROVISIONING_DEBUG", "false").lower() == "true",
            require_attestation=environ.get("REQUIRE_ATTESTATION", "false").lower() == "true",
            claim_client_id_prefix=environ.get("CLAIM_CLIENT_ID_PREFIX", "claim-"),
            template_name=environ.get("PROVISIONING_TEMPLATE_NAME", ""),
        )


@dataclass(frozen=True)
class Request:
    """A RegisterThing request that passed validation."""

    serial_number: str
    device_type: str
    manufacturer: str
    firmware_version: str
    location: str
    thing_name: str | None
    certificate_id: str
    claim_certificate_id: str
    template_name: str = ""
    attestation_signature: str | None = None

    @property
    def derived_thing_name(self) -> str:
        return f"{self.device_type}-{self.serial_number}"


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    detail: str = ""
    thing_name: str | None = None

    def answer(self) -> dict[str, Any]:
        """The hook response in exactly the shape IoT reads."""
        if self.allow and self.thing_name:
            return {"allowProvisioning": True, "parameterOverrides": {"ThingName": self.thing_name}}
        return {"allowProvisioning": False}


class Invalid(ValueError):
    """The event cannot be a valid RegisterThing request; the message says why."""


def valid(pattern: re.Pattern[str], value: str) -> bool:
    """The value matches the rule as a whole (the enrollment tools validate with this too)."""
    return pattern.fullmatch(value) is not None


def _text(parameters: Mapping[str, Any], name: str, pattern: re.Pattern[str], required: bool) -> str | None:
    value = parameters.get(name)
    if value is None or value == "":
        if required:
            raise Invalid(f"{name} is required")
        return None
    if not isinstance(value, str) or not valid(pattern, value):
        raise Invalid(f"{name} does not match {pattern.pattern}")
    return value


def parse_request(event: Any) -> Request:
    """Validates the hook event; raises Invalid with the first problem found."""
    if not isinstance(event, Mapping):
        raise Invalid("event is not an object")
    parameters = event.get("parameters")
    if not isinstance(parameters, Mapping):
        raise Invalid("parameters is not an object")
    unknown = sorted(str(k)[:64] for k in parameters if k not in KNOWN_PARAMETERS)
    if unknown:
        raise Invalid(f"unknown parameter {unknown[0]}")
    for name, value in parameters.items():
        if isinstance(value, str) and len(value) > MAX_PARAMETER_LENGTH:
            raise Invalid(f"{name} is longer than {MAX_PARAMETER_LENGTH}")
    device_type = parameters.get("DeviceType")
    if not isinstance(device_type, str) or not device_type:
        raise Invalid("DeviceType is required")
    certificate_id = event.get("certificateId")
    if not isinstance(certificate_id, str) or not re.fullmatch(r"[0-9a-f]{64}", certificate_id):
        raise Invalid("certificateId is not a certificate id")
    claim_certificate_id = event.get("claimCertificateId", "")
    if not isinstance(claim_certificate_id, str):
        raise Invalid("claimCertificateId is not a string")
    template_arn = event.get("templateArn", "")
    template_name = TEMPLATE_ARN.fullmatch(template_arn) if isinstance(template_arn, str) else None
    return Request(
        serial_number=_text(parameters, "SerialNumber", SERIAL_NUMBER, True) or "",
        device_type=device_type,
        manufacturer=_text(parameters, "Manufacturer", MANUFACTURER, True) or "",
        firmware_version=_text(parameters, "FirmwareVersion", FIRMWARE_VERSION, False) or "",
        location=_text(parameters, "Location", LOCATION, False) or "",
        thing_name=_text(parameters, "ThingName", THING_NAME, False),
        certificate_id=certificate_id,
        claim_certificate_id=claim_certificate_id[:64],
        template_name=template_name.group(1) if template_name else "",
        attestation_signature=_signature(parameters.get("AttestationSignature")),
    )


# The template's default for AttestationSignature (constructs/iot_fleet/documents.py). The hook gets the
# parameters the device sent, not defaults; a device that sends this word, like one that sends nothing
# or "", has sent no signature.
NO_ATTESTATION_SIGNATURE = "none"


def _signature(value: Any) -> str | None:
    if value is None or value in ("", NO_ATTESTATION_SIGNATURE):
        return None
    if not isinstance(value, str):
        raise Invalid("AttestationSignature is not a string")
    return value


def attestation_message(serial_number: str, certificate_id: str, template_name: str) -> bytes:
    """What a device signs with its factory key: the attempt it vouches for, one field per line."""
    return "\n".join((ATTESTATION_CONTEXT, serial_number, certificate_id, template_name)).encode()


def factory_key(text: str) -> VerifyingKey:
    """An EC P-256 public key from PEM or base64 DER SubjectPublicKeyInfo; ValueError if it is not one."""
    try:
        der = base64.b64decode(
            "".join(line for line in text.strip().splitlines() if not line.startswith("-----")), validate=True
        )
        key = VerifyingKey.from_der(der, hashfunc=hashlib.sha256)
    except Exception as error:  # noqa: BLE001 - ecdsa raises several types for bad input
        raise ValueError(f"not an EC public key (PEM or base64 DER SubjectPublicKeyInfo): {error}"[:200]) from None
    if key.curve != NIST256p:
        raise ValueError(f"the key is on {key.curve.name}; only NIST P-256 (secp256r1) is accepted")
    return key


def verify_attestation(enrolled_key: str, signature: str | None, message: bytes) -> str | None:
    """None when `signature` (base64 of DER or raw r||s ECDSA-SHA256) is the enrolled key's over `message`,
    else why not."""
    if signature is None:
        return "the device is enrolled with a factory key and sent no AttestationSignature"
    try:
        key = factory_key(enrolled_key)
    except ValueError as error:
        return f"the enrolled factory key cannot be used: {error}"
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return "AttestationSignature is not base64"
    # 64 bytes is the fixed-size r||s form secure elements often produce; anything else must be DER.
    decode = sigdecode_string if len(raw) == 64 else sigdecode_der
    try:
        key.verify(raw, message, hashfunc=hashlib.sha256, sigdecode=decode)
    except BadSignatureError:
        return "AttestationSignature is not the enrolled factory key's signature of this attempt"
    except Exception:  # noqa: BLE001 - malformed DER raises several types
        return "AttestationSignature is not an ECDSA signature (DER or 64-byte r||s)"
    return None


def refusal(request: Request, old_item: Mapping[str, Any] | None, enrolled_key: str = "", prefix: str = "") -> Decision:
    """Why the conditional claim was refused, from the item as it was (the same rules as the condition)."""
    if not old_item:
        return Decision(False, NOT_ENROLLED, "serial number is not in the registry")
    status = _attribute(old_item, "status")
    same_certificate = _attribute(old_item, "certificateId") == request.certificate_id
    claimable = (
        status == registry.ENROLLED
        or (status == registry.FAILED and not same_certificate)
        or (status == registry.PROVISIONING and same_certificate)
    )
    if status == registry.FAILED and same_certificate:
        return Decision(
            False,
            ATTEMPT_FAILED,
            "this certificate's attempt failed and the reconciler revoked the "
            "certificate: the device must create a new certificate and try again",
        )
    if not claimable and status == registry.PROVISIONING:
        started = _attribute(old_item, "provisioningStartedAt")
        return Decision(
            False,
            PROVISIONING_IN_PROGRESS,
            f"another certificate's attempt is under way since "
            f"{started}; the reconciler completes it, or marks it failed (then the device may try "
            "again) once StaleClaimMinutes have passed",
        )
    if not claimable and status in STATUS_REASONS:
        return Decision(False, STATUS_REASONS[status], f"registry status is {status}")
    if not claimable:
        return Decision(False, NOT_ENROLLABLE, f"registry status is {status or 'missing'}")
    enrolled_name = _attribute(old_item, "thingName")
    if prefix and enrolled_name.startswith(prefix):
        return Decision(
            False,
            INVALID_PARAMETERS,
            f"the enrolled thing name {enrolled_name} takes the claim client-id "
            f"prefix {prefix!r} (ClaimClientIdPrefix): enroll it under another name",
        )
    key = _attribute(old_item, FACTORY_KEY_ATTRIBUTE)
    if key != enrolled_key:
        detail = (
            "the device is enrolled with a factory key and sent no AttestationSignature"
            if not enrolled_key
            else "the enrolled factory key changed while the signature was checked"
        )
        return Decision(False, ATTESTATION_FAILED, detail)
    if _attribute(old_item, "deviceType") != request.device_type:
        return Decision(False, DEVICE_TYPE_MISMATCH, "device type differs from the enrollment")
    manufacturer = _attribute(old_item, "manufacturer")
    if manufacturer and manufacturer != request.manufacturer:
        return Decision(False, MANUFACTURER_MISMATCH, "manufacturer differs from the enrollment")
    return Decision(False, THING_NAME_MISMATCH, "ThingName differs from the enrolled thing name")


def _attribute(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name, {})
    return str(value.get("S", "")) if isinstance(value, Mapping) else ""


class Registry:
    """The one conditional write that claims an enrolled serial for this provisioning attempt."""

    def __init__(self, client: Any, table_name: str, iot: Any = None) -> None:
        self._client = client
        self._table = table_name
        self._iot = iot  # open enrollment only: whether a thing of the name already exists

    def factory_key_of(self, serial_number: str) -> tuple[bool, str]:
        """(enrolled, its factory key or "") from a consistent read: the key the signature is checked with."""
        item = self._client.get_item(
            TableName=self._table,
            Key={"serialNumber": {"S": serial_number}},
            ConsistentRead=True,
            ProjectionExpression="serialNumber, " + FACTORY_KEY_ATTRIBUTE,
        ).get("Item")
        return item is not None, _attribute(item or {}, FACTORY_KEY_ATTRIBUTE)

    def claim(
        self, request: Request, require_enrollment: bool, now: str, enrolled_key: str = "", prefix: str = ""
    ) -> Decision:
        """`enrolled_key`: the factory key the device's signature was verified with ("" for none); the
        write happens only if the item still holds exactly that key, and (`prefix`, the claim client-id
        prefix) only if its enrolled thing name does not start with the prefix."""
        values: dict[str, Any] = {
            ":provisioning": {"S": registry.PROVISIONING},
            ":enrolled": {"S": registry.ENROLLED},
            ":failed": {"S": registry.FAILED},
            ":none": {"S": "none"},
            ":type": {"S": request.device_type},
            ":manufacturer": {"S": request.manufacturer},
            ":certificate": {"S": request.certificate_id},
            ":claim": {"S": request.claim_certificate_id or "unknown"},
            ":now": {"S": now},
            ":derived": {"S": request.derived_thing_name},
            ":firmware": {"S": request.firmware_version or "unknown"},
        }
        names = {"#status": "status", "#key": FACTORY_KEY_ATTRIBUTE}
        updates = [
            "#status = :provisioning",
            # The attempt this one replaces (one the reconciler marked failed; it revoked its certificate).
            "previousCertificateId = if_not_exists(certificateId, :none)",
            "certificateId = :certificate",
            "claimCertificateId = :claim",
            "provisioningStartedAt = :now",
            "updatedAt = :now",
            "firmwareVersion = :firmware",
            "thingName = if_not_exists(thingName, :derived)",
        ]
        # Claimable: enrolled; failed (the reconciler found the attempt's thing without the attempt's
        # certificate, and revoked it: retryable with a new certificate, never with the revoked one); or
        # provisioning by this very certificate (the same attempt, retried by IoT or by this function's
        # client after an answer was lost: allowed again, same thing name). A `provisioning` claim of
        # another certificate is never taken over here, however old: its template may have given the
        # device its thing and certificate while only the registry event failed, and only the reconciler
        # looks at IoT before it lets the serial go.
        claimable = (
            "(#status = :enrolled OR (#status = :failed AND certificateId <> :certificate)"
            " OR (#status = :provisioning AND certificateId = :certificate))"
        )
        if require_enrollment:
            condition = (
                f"{claimable} AND deviceType = :type"
                " AND (attribute_not_exists(manufacturer) OR manufacturer = :manufacturer)"
            )
        else:
            # Open enrollment (RequireEnrollment=false): any valid serial registers once.
            condition = f"attribute_not_exists(serialNumber) OR ({claimable} AND deviceType = :type)"
            updates += [
                "deviceType = :type",
                "manufacturer = if_not_exists(manufacturer, :manufacturer)",
                "enrolledAt = if_not_exists(enrolledAt, :now)",
            ]
        if prefix:
            values[":prefix"] = {"S": prefix}
            condition = f"({condition}) AND (attribute_not_exists(thingName) OR NOT begins_with(thingName, :prefix))"
        if enrolled_key:
            values[":key"] = {"S": enrolled_key}
            condition = f"({condition}) AND #key = :key"
        else:
            condition = f"({condition}) AND attribute_not_exists(#key)"
        if request.thing_name is not None:
            values[":thing"] = {"S": request.thing_name}
            if request.thing_name == request.derived_thing_name:
                condition = f"({condition}) AND (attribute_not_exists(thingName) OR thingName = :thing)"
            else:
                condition = f"({condition}) AND thingName = :thing"
        if not require_enrollment:
            return self._claim_with_name(request, now, updates, condition, names, values, enrolled_key, prefix)
        try:
            result = self._client.update_item(
                TableName=self._table,
                Key={"serialNumber": {"S": request.serial_number}},
                UpdateExpression="SET " + ", ".join(updates),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return refusal(request, error.response.get("Item"), enrolled_key, prefix)
            raise
        thing_name = _attribute(result.get("Attributes", {}), "thingName") or request.derived_thing_name
        return Decision(True, ALLOWED, thing_name=thing_name)

    def _claim_with_name(
        self,
        request: Request,
        now: str,
        updates: list[str],
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        enrolled_key: str,
        prefix: str,
    ) -> Decision:
        """Open enrollment: no manifest reserved the serial's thing name, so the claim takes the
        reservation in the same transaction, and a name reserved for another serial, or a thing of that
        name that is another device's, is refused: a new serial never gets an existing device's thing."""
        item = (
            self._client.get_item(
                TableName=self._table,
                Key={"serialNumber": {"S": request.serial_number}},
                ConsistentRead=True,
                ProjectionExpression="thingName",
            ).get("Item")
            or {}
        )
        name = _attribute(item, "thingName") or request.derived_thing_name
        key = {"serialNumber": {"S": registry.THING_NAME_RESERVATION_PREFIX + name}}
        held = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get("Item")
        if held is not None and _attribute(held, "reservedFor") != request.serial_number:
            return Decision(False, THING_NAME_TAKEN, f"thing name {name} is reserved for another serial")
        if held is None and self._thing_of_another(name, request.serial_number):
            return Decision(False, THING_NAME_TAKEN, f"a thing named {name} exists and is not this serial's")
        reservation = {
            "TableName": self._table,
            "Key": key,
            "UpdateExpression": "SET reservedFor = :serial, reservedAt = if_not_exists(reservedAt, :now)",
            "ConditionExpression": "attribute_not_exists(serialNumber) OR reservedFor = :serial",
            "ExpressionAttributeValues": {":serial": {"S": request.serial_number}, ":now": {"S": now}},
        }
        # The name answered is the one reserved: an item renamed since it was read fails the claim.
        if _attribute(item, "thingName"):
            condition = f"({condition}) AND thingName = :reserved_name"
            values = {**values, ":reserved_name": {"S": name}}
        else:
            condition = f"({condition}) AND attribute_not_exists(thingName)"
        claim = {
            "TableName": self._table,
            "Key": {"serialNumber": {"S": request.serial_number}},
            "UpdateExpression": "SET " + ", ".join(updates),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            self._client.transact_write_items(TransactItems=[{"Update": claim}, {"Update": reservation}])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = error.response.get("CancellationReasons") or [{}, {}]
            if any(reason.get("Code") == "TransactionConflict" for reason in reasons):
                # Another write to the serial or its name was under way (DynamoDB cancels the later one).
                return Decision(
                    False,
                    PROVISIONING_IN_PROGRESS,
                    "another attempt for this serial or its thing "
                    "name was being written at the same moment; the device may try again",
                )
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                old = reasons[0].get("Item") or self._client.get_item(
                    TableName=self._table, Key=claim["Key"], ConsistentRead=True
                ).get("Item")
                return refusal(request, old, enrolled_key, prefix)
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                return Decision(False, THING_NAME_TAKEN, f"thing name {name} was reserved for another serial meanwhile")
            raise
        return Decision(True, ALLOWED, thing_name=name)

    def _thing_of_another(self, name: str, serial_number: str) -> bool:
        """A thing of this name exists and does not carry this serial (a device provisioned before names
        were reserved, or one made outside the fleet)."""
        try:
            thing = self._iot.describe_thing(thingName=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise
        return bool((thing.get("attributes") or {}).get("serialNumber") != serial_number)


def reserved_thing_name(request: Request, prefix: str) -> str | None:
    """The thing name this request names or derives if it takes the claim client-id prefix."""
    for name in (request.thing_name, request.derived_thing_name):
        if prefix and name and name.startswith(prefix):
            return name
    return None


def decide(request: Request, settings: Settings, registry: Registry, now: str) -> Decision:
    if request.device_type not in settings.allowed_device_types:
        return Decision(False, DEVICE_TYPE_NOT_ALLOWED, "device type is not in AllowedDeviceTypes")
    reserved = reserved_thing_name(request, settings.claim_client_id_prefix)
    if reserved:
        return Decision(
            False,
            INVALID_PARAMETERS,
            f"thing name {reserved} takes the claim client-id prefix "
            f"{settings.claim_client_id_prefix!r} (ClaimClientIdPrefix)",
        )
    enrolled_key = ""
    if settings.require_attestation or request.attestation_signature is not None:
        # Checked before the write, so a refused attempt changes nothing; the write then requires the
        # same key (a key changed in between refuses the write instead of admitting an old signature).
        enrolled, enrolled_key = registry.factory_key_of(request.serial_number)
        if enrolled and not enrolled_key and settings.require_attestation:
            return Decision(
                False, ATTESTATION_FAILED, "the device is enrolled without a factory key, and RequireAttestation is on"
            )
        if enrolled_key:
            message = attestation_message(request.serial_number, request.certificate_id, request.template_name)
            problem = verify_attestation(enrolled_key, request.attestation_signature, message)
            if problem:
                return Decision(False, ATTESTATION_FAILED, problem)
    # Without a signature the write requires the item to have no key: a keyed device never provisions
    # unsigned, attestation required or not.
    return registry.claim(request, settings.require_enrollment, now, enrolled_key, settings.claim_client_id_prefix)


def log_decision(
    settings: Settings,
    decision: Decision,
    event: Any,
    request: Request | None,
    elapsed_ms: float,
) -> None:
    """One JSON line per decision: the audit record and the EMF metric in one."""
    device_type = request.device_type if request else "unknown"
    if device_type not in settings.allowed_device_types:
        device_type = "other"  # keep metric dimensions bounded whatever a device sends
    record: dict[str, Any] = {
        "level": "INFO" if decision.allow else "WARNING",
        "message": "provisioning allowed" if decision.allow else "provisioning denied",
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason,
        "detail": decision.detail,
        "DeviceType": device_type,
        "Decision": "allow" if decision.allow else "deny",
        "Reason": decision.reason,
        "serialNumber": request.serial_number if request else None,
        "thingName": decision.thing_name,
        "certificateId": request.certificate_id if request else None,
        "claimCertificateId": request.claim_certificate_id if request else None,
        "durationMs": round(elapsed_ms, 1),
        "ProvisioningRequests": 1,
        "ProvisioningErrors": 1 if decision.reason in ERROR_REASONS else 0,
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": settings.metrics_namespace,
                    "Dimensions": [["Decision", "Reason"], ["Decision", "DeviceType"]],
                    "Metrics": [{"Name": "ProvisioningRequests", "Unit": "Count"}],
                },
                {
                    # One series for the whole hook (0 or 1 per decision): an alarm on it needs no
                    # dimension values and sees a registry or KMS outage whatever the devices send.
                    "Namespace": settings.metrics_namespace,
                    "Dimensions": [[]],
                    "Metrics": [{"Name": "ProvisioningErrors", "Unit": "Count"}],
                },
            ],
        },
    }
    if settings.debug:
        record["event"] = _redacted(event)
    sys.stdout.write(json.dumps(record, default=str) + "\n")  # one write: lines never interleave
    sys.stdout.flush()


def _redacted(event: Any) -> Any:
    if isinstance(event, Mapping):
        return {k: ("<redacted>" if k == "certificatePem" else v) for k, v in event.items()}
    return repr(event)[:512]


# Created once per container. Timeouts and retries fit the 5 s IoT gives the hook in all:
# two attempts of at most 0.5 s connect + 1.5 s read each, inside a 4 s function timeout.
_CONFIG = runtime.config(connect_timeout=0.5, read_timeout=1.5, attempts=2)
_DYNAMODB = runtime.client("dynamodb", _CONFIG)
_SETTINGS = Settings.from_environment(os.environ)
_IOT = runtime.client("iot", _CONFIG)
_REGISTRY = Registry(_DYNAMODB, _SETTINGS.table_name, _IOT)
# The decision runs on a worker thread so the handler can stop waiting at its own deadline: a
# registry slower than the function's remaining time is a REGISTRY_ERROR logged and answered, not a
# Lambda timeout that logs nothing (a claim written late is one whose thing never gets the certificate:
# the reconciler marks it failed after StaleClaimMinutes, and the device may try again).
_DECIDING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="decide")
ANSWER_MARGIN_SECONDS = 0.25  # left for the log line and the answer
DEFAULT_BUDGET_SECONDS = 3.5  # without a Lambda context (tests, local calls)


def _budget(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds = remaining() / 1000 if callable(remaining) else DEFAULT_BUDGET_SECONDS
    return max(0.05, seconds - ANSWER_MARGIN_SECONDS)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    started = time.perf_counter()
    request: Request | None = None
    budget = _budget(context)
    try:
        request = parse_request(event)
        if _SETTINGS.template_name and request.template_name != _SETTINGS.template_name:
            raise Invalid(
                f"the request is for template {request.template_name or '(none)'}, not this stack's "
                f"{_SETTINGS.template_name}"
            )
        now = runtime.now()
        decision = _DECIDING.submit(decide, request, _SETTINGS, _REGISTRY, now).result(timeout=budget)
    except Invalid as error:
        decision = Decision(False, INVALID_PARAMETERS, str(error))
    except FutureTimeout:
        decision = Decision(
            False,
            REGISTRY_ERROR,
            f"the registry did not answer within {budget * 1000:.0f} ms (the function's remaining time)",
        )
    except (ClientError, BotoCoreError) as error:
        decision = Decision(False, REGISTRY_ERROR, f"{type(error).__name__}: {error}"[:500])
    except Exception as error:  # noqa: BLE001 - fail closed: nothing unexpected may allow a device
        decision = Decision(False, INTERNAL_ERROR, f"{type(error).__name__}: {error}"[:500])
        print(json.dumps({"level": "ERROR", "message": "hook error", "error": repr(error)[:500]}), file=sys.stderr)
    log_decision(_SETTINGS, decision, event, request, (time.perf_counter() - started) * 1000)
    return decision.answer()
