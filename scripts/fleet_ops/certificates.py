"""Certificate expiry: the claim certificates' (the stack's outputs) and the devices' (the registry's
provisioned devices), read from each certificate's own PEM (notAfter), as a TLS peer sees it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from cryptography import x509

from scripts.deployed_stack import DeployedStack

DEVICE_STATUSES = ("provisioned", "provisioning")  # devices whose certificate is (about to be) in use


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expiring(stack: DeployedStack, days: int, *, workers: int = 8) -> list[Expiry]:
    """Claim and device certificates whose notAfter is within `days` days (or past), soonest first."""
    from scripts.fleet_ops.registry import Registry

    iot = stack.client("iot")
    certificates: list[tuple[str, str, str]] = []  # (kind, name, certificate id)
    generations = stack.outputs.get("claim_certificates") or {"1": {"id": stack.output("claim_certificate_id")}}
    for generation, claim in sorted(generations.items()):
        certificates.append(("claim", f"generation {generation}", str(claim["id"])))
    registry = Registry(stack.client("dynamodb"), stack.table_name)
    for status in DEVICE_STATUSES:
        for item in registry.devices(status=status):
            if item.get("certificateId"):
                certificates.append(("device", str(item["serialNumber"]), str(item["certificateId"])))
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
        return Expiry(kind, name, certificate_id, description["status"], end.isoformat(), (end - now).days)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = [e for e in pool.map(expiry, certificates) if e is not None]
    return sorted(found, key=lambda e: e.not_after)
