"""Certificate expiry: the claim certificates' (the stack's outputs) and the devices' (the registry's
provisioned devices), read from each certificate's own PEM (notAfter), as a TLS peer sees it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from cryptography import x509

from fleet_shared.registry import PROVISIONED, PROVISIONING
from scripts.deployed_stack import DeployedStack

DEVICE_STATUSES = (PROVISIONED, PROVISIONING)  # devices whose certificate is (about to be) in use


def not_after(pem: str) -> datetime | None:
    try:
        return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
    except ValueError:
        return None


@dataclass(frozen=True)
class Expiry:
    kind: str  # "claim" (generation n) or "device"
    name: str  # claim generation, or the device's serial
    certificate_id: str
    status: str
    not_after: str
    days_left: int
    thing_name: str = ""  # a device's thing (rotation is asked of it through its shadow)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expiring(stack: DeployedStack, days: int, *, workers: int = 8) -> list[Expiry]:
    """Claim and device certificates whose notAfter is within `days` days (or past), soonest first."""
    from scripts.fleet_ops.registry import Registry

    iot = stack.client("iot")
    certificates: list[tuple[str, str, str]] = []  # (kind, name, certificate id)
    things: dict[str, str] = {}  # serial -> thing name
    generations = stack.outputs.get("claim_certificates") or {"1": {"id": stack.output("claim_certificate_id")}}
    for generation, claim in sorted(generations.items()):
        certificates.append(("claim", f"generation {generation}", str(claim["id"])))
    registry = Registry(stack.client("dynamodb"), stack.table_name)
    for status in DEVICE_STATUSES:
        for item in registry.devices(status=status):
            if item.get("certificateId"):
                certificates.append(("device", str(item["serialNumber"]), str(item["certificateId"])))
                things[str(item["serialNumber"])] = str(item.get("thingName") or "")
    now = datetime.now(UTC)
    horizon = now + timedelta(days=days)

    def expiry(entry: tuple[str, str, str]) -> Expiry | None:
        kind, name, certificate_id = entry
        try:
            description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        end = not_after(description.get("certificatePem", ""))
        if end is None or end > horizon:
            return None
        return Expiry(
            kind,
            name,
            certificate_id,
            description["status"],
            end.isoformat(),
            (end - now).days,
            things.get(name, "") if kind == "device" else "",
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = [e for e in pool.map(expiry, certificates) if e is not None]
    return sorted(found, key=lambda e: e.not_after)


def history(raw: Any) -> list[dict[str, str]]:
    """A registry item's certificateHistory (a DynamoDB list of maps of strings) as plain events."""
    events = raw if isinstance(raw, list) else []
    return [{k: str(next(iter(v.values()))) for k, v in e.get("M", {}).items()} for e in events if isinstance(e, dict)]


ROTATION_MARK = "certificateRotation"  # scripts/test_provisioning.py rotate --if-requested reads it


@dataclass(frozen=True)
class RotationRequests:
    rotation_id: str
    requested: list[str]  # thing names whose shadow now asks for it
    errors: dict[str, str]  # thing name (or serial) -> why it could not be asked
    seconds: float


def request_rotation(stack: DeployedStack, found: list[Expiry], *, workers: int = 10) -> RotationRequests:
    """Asks each device among `found` to rotate its certificate: its shadow's desired state gets
    certificateRotation = <rotation id>. A connected device sees the change at its next check; one
    offline reads it when it connects (the device client's `rotate --if-requested`), and reports the
    id once rotated. Claim certificates are not devices' (`fleet rotate-claim`)."""
    import time

    started = time.monotonic()
    rotation_id = "rotation-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = stack.client("iot-data")
    payload = json.dumps({"state": {"desired": {ROTATION_MARK: rotation_id}}}).encode()
    # Only ACTIVE certificates can rotate (the function accepts requests from the device's current
    # certificate); a device still provisioning has nothing to rotate yet.
    devices = [e for e in found if e.kind == "device" and e.status == "ACTIVE"]

    def ask(entry: Expiry) -> tuple[str, str | None]:
        if not entry.thing_name:
            return entry.name, "the registry names no thing for this device"
        try:
            data.update_thing_shadow(thingName=entry.thing_name, payload=payload)
        except ClientError as error:
            return entry.thing_name, f"{error.response.get('Error', {}).get('Code')}: {error}"[:300]
        return entry.thing_name, None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(ask, devices))
    return RotationRequests(
        rotation_id,
        [name for name, error in outcomes if error is None],
        {name: error for name, error in outcomes if error is not None},
        round(time.monotonic() - started, 3),
    )
