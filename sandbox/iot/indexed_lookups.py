"""Constant-time lookups of things and certificates in moto's IoT registry.

moto finds a thing by name, and a certificate by id or ARN, by scanning every one it holds, although
it stores them keyed by ARN and id. A sandbox that has provisioned a few thousand devices then spends
more time scanning than serving (each registration looks things and certificates up several times).
These lookups go straight to the key. moto stores every thing under its ARN (built from its name)
and every certificate under its id, so a miss there is a miss: a thing that does not exist yet (each
registration asks before creating one) is answered without a scan. Certificates and principals
still fall back to moto's scan on a miss. Delete when moto indexes them itself.
"""

from __future__ import annotations

from typing import Any

from moto.iot.exceptions import ResourceNotFoundException
from moto.iot.models import IoTBackend


def install() -> None:
    if IoTBackend.__dict__.get("_sandbox_indexed", False):
        return
    scan_certificate = IoTBackend.describe_certificate
    scan_principal = IoTBackend._get_principal

    def describe_thing(self: IoTBackend, thing_name: str) -> Any:
        arn = f"arn:{self.partition}:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        thing = self.things.get(arn)
        if thing is None or thing.thing_name != thing_name:
            raise ResourceNotFoundException()  # what moto's scan raises when nothing matches
        return thing

    def describe_certificate(self: IoTBackend, certificate_id: str) -> Any:
        certificate = self.certificates.get(certificate_id)
        return certificate if certificate is not None else scan_certificate(self, certificate_id)

    def _get_principal(self: IoTBackend, principal_arn: str) -> Any:
        if ":cert/" in principal_arn:
            certificate = self.certificates.get(principal_arn.rsplit("/", 1)[-1])
            if certificate is not None and certificate.arn == principal_arn:
                return certificate
        return scan_principal(self, principal_arn)

    IoTBackend.describe_thing = describe_thing
    IoTBackend.describe_certificate = describe_certificate
    IoTBackend._get_principal = _get_principal
    IoTBackend._sandbox_indexed = True
