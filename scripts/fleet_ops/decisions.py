"""Why a device was refused: the pre-provisioning hook's decisions for its serial (one JSON line per
decision in the hook's log group: time, reason code, detail, certificate), read with the registry
item and the certificates, and said in words a support engineer can repeat to a customer."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from fleet_shared.registry import DECOMMISSIONED, PROVISIONED, PROVISIONING, REVOKED
from scripts.fleet_ops.hook_rules import hook

# What each of the hook's reason codes means for the device, and what to do about it.
EXPLANATIONS = {
    hook.ALLOWED: "the hook allowed it; IoT then applied the template",
    hook.INVALID_PARAMETERS: "the device sent parameters the hook refuses (fix the device's firmware or its "
    "factory data)",
    hook.DEVICE_TYPE_NOT_ALLOWED: "the device sent a device type the stack does not allow (AllowedDeviceTypes)",
    hook.NOT_ENROLLED: "the serial is not in the registry: enroll it (fleet enroll MANIFEST)",
    hook.DEVICE_TYPE_MISMATCH: "the device sent another device type than the one it was enrolled with",
    hook.MANUFACTURER_MISMATCH: "the device sent another manufacturer than the one it was enrolled with",
    hook.THING_NAME_MISMATCH: "the device asked for another thing name than the one it was enrolled with",
    hook.PROVISIONING_IN_PROGRESS: "another attempt, with another certificate, was provisioning this serial: "
    "the reconciler completes it (its thing holds its certificate) or marks it failed StaleClaimMinutes after "
    "it began, and then the device may try again; many of these for one serial are someone retrying it",
    hook.THING_NAME_TAKEN: "open enrollment: the serial's thing name is reserved for another serial, or a thing "
    "of that name is another device's (provision it under another serial, or enroll it with its own thing name)",
    hook.ALREADY_PROVISIONED: "the serial was provisioned already: a replay, a clone, or a device that lost "
    "its certificate (decommission it and enroll it again under a new serial)",
    hook.ATTEMPT_FAILED: "this certificate's own attempt failed and the reconciler revoked it: the device must "
    "create a new certificate (CreateKeysAndCertificate or CreateCertificateFromCsr) and try again",
    hook.REVOKED: "the device was revoked: it may never provision again",
    hook.DECOMMISSIONED: "the device was decommissioned: it may never provision again",
    hook.NOT_ENROLLABLE: "the registry item is in a status the hook cannot admit from",
    hook.ATTESTATION_FAILED: "the device did not prove it holds its enrolled factory key (no signature, a "
    "wrong one, or no key enrolled while RequireAttestation is on): a device carrying the claim certificate "
    "but not the real device's key, or a factory key enrolled wrongly (compare fleet show's fingerprint "
    "with the factory's record)",
    hook.REGISTRY_ERROR: "the hook could not write the registry (DynamoDB throttling, KMS or permissions): "
    "the device may retry",
    hook.INTERNAL_ERROR: "the hook failed unexpectedly (see its log): the device may retry",
}


@dataclass(frozen=True)
class HookDecision:
    time: str  # UTC, ISO 8601
    decision: str  # allow | deny
    reason: str
    detail: str
    certificate_id: str
    claim_certificate_id: str
    thing_name: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hook_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def decisions(
    logs: Any, function_name: str, serial_number: str, *, since_days: float, limit: int
) -> list[HookDecision]:
    """The hook's decisions for this serial in the last `since_days` days, oldest first (at most `limit`,
    the newest). The JSON filter makes CloudWatch send only this serial's lines; each line is checked
    again here (a local AWS that ignores filter patterns sends them all)."""
    if serial_problem(serial_number):
        return []  # the hook logs a request it cannot parse without its serial
    start = int((time.time() - since_days * 86400) * 1000)
    pattern = '{ $.serialNumber = "' + serial_number + '" }'
    found: list[HookDecision] = []
    paginator = logs.get_paginator("filter_log_events")
    pages = paginator.paginate(logGroupName=hook_log_group(function_name), startTime=start, filterPattern=pattern)
    for page in pages:
        for event in page.get("events", []):
            try:
                record = json.loads(event.get("message", ""))
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("serialNumber") != serial_number or "reason" not in record:
                continue
            found.append(
                HookDecision(
                    time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["timestamp"] / 1000)),
                    decision=str(record.get("decision", "")),
                    reason=str(record["reason"]),
                    detail=str(record.get("detail") or ""),
                    certificate_id=str(record.get("certificateId") or ""),
                    claim_certificate_id=str(record.get("claimCertificateId") or ""),
                    thing_name=str(record.get("thingName") or ""),
                )
            )
    found.sort(key=lambda d: d.time)
    return found[-limit:]


def serial_problem(serial_number: str) -> str | None:
    """Why the hook would refuse this serial whatever the registry says (None when it is well formed)."""
    try:
        hook.parse_request(
            {
                "certificateId": "0" * 64,
                "parameters": {"SerialNumber": serial_number, "DeviceType": "x", "Manufacturer": "x"},
            }
        )
    except hook.Invalid as invalid:
        if "SerialNumber" in str(invalid):
            return str(invalid)
    return None


def findings(
    serial_number: str,
    item: dict[str, Any] | None,
    found: list[HookDecision],
    certificates: list[dict[str, Any]],
    thing: dict[str, Any] | None,
    since_days: float,
) -> list[str]:
    """What a support engineer needs to say, most decisive first."""
    said: list[str] = []
    malformed = serial_problem(serial_number)
    if malformed:
        said.append(
            f"this serial can never provision: the hook refuses it as {hook.INVALID_PARAMETERS} "
            f"({malformed}); such refusals are logged without a serial"
        )
    if found:
        last = found[-1]
        said.append(
            f"last decision {last.time}: {last.reason}: {EXPLANATIONS.get(last.reason, 'unknown reason')}"
            + (f" ({last.detail})" if last.detail else "")
        )
    else:
        said.append(
            f"no provisioning request with this serial reached the hook in the last {since_days:g} days: "
            "a device refused earlier (claim certificate refused at connect, certificate creation "
            "rejected) or sending another serial never reaches it"
        )
    if item is None:
        said.append("the registry has no item for it: the hook refuses it as NOT_ENROLLED")
    else:
        status = item.get("status")
        if status == REVOKED:
            said.append(
                f"registry: revoked at {item.get('revokedAt', '?')} ({item.get('revocationReason', 'no reason')})"
            )
        elif status == DECOMMISSIONED:
            said.append(f"registry: decommissioned at {item.get('decommissionedAt', '?')}")
        elif status == PROVISIONED:
            said.append(f"registry: provisioned at {item.get('provisionedAt', '?')} as {item.get('thingName')}")
        elif status == PROVISIONING:
            said.append(
                f"registry: provisioning since {item.get('provisioningStartedAt', '?')}: the hook allowed "
                "it, the thing-created event has not completed it (still under way, or the template or "
                "the registry event failed); the reconciler completes it or marks it failed "
                "StaleClaimMinutes after it began"
            )
        else:
            said.append(
                f"registry: {status} as {item.get('deviceType')} from {item.get('manufacturer')}, "
                f"thing name {item.get('thingName') or '(derived)'}"
            )
    for certificate in certificates:
        said.append(
            f"certificate {certificate['certificateId'][:12]}…: {certificate['status']}, "
            f"valid until {certificate['notAfter']}"
        )
    if item is not None and item.get("status") == PROVISIONED and thing is None:
        said.append("the registry says provisioned but the thing does not exist")
    return said
