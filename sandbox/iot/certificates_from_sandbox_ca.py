"""IoT certificates issued by the sandbox CA, with AWS's certificate ids and their real validity.

moto signs CreateKeysAndCertificate results with a throw-away self-signed key, ignores the key in a
CreateCertificateFromCsr request, and ids certificates by a hash of the PEM text. Here both calls
issue from the sandbox CA (so the local broker's mutual TLS accepts them), the CSR's own public key
is certified (the device keeps its private key), ids are the SHA-256 of the DER encoding, and
DescribeCertificate's validity is the certificate's own (moto makes up "now plus a day").
Device certificates (CreateCertificateFromCsr, and CreateKeysAndCertificate over MQTT: inside
`device_certificates()`) are valid for the CA's device_validity (SandboxCertificateValiditySeconds at
start, `python -m sandbox certificate-validity` while it runs);
CreateKeysAndCertificate over HTTP (how Terraform makes the claim certificate) keeps 10 years.
Delete when moto can be given a CA to sign with.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from moto.core.config import default_user_config
from moto.iot.models import FakeCertificate, IoTBackend

from sandbox.iot_data_plane.certificate_authority import VALIDITY, CertificateAuthority

_DEVICE = threading.local()


@contextlib.contextmanager
def device_certificates() -> Iterator[None]:
    """Certificates created by this thread inside the block are device certificates (see above)."""
    _DEVICE.active = True
    try:
        yield
    finally:
        _DEVICE.active = False


def _identity() -> str:
    """A unique subject: the broker knows each certificate by it (use_identity_as_username)."""
    return f"sandbox-cert-{secrets.token_hex(10)}"


def install(authority: CertificateAuthority) -> None:
    default_user_config.setdefault("iot", {})["use_valid_cert"] = True  # ids = SHA-256 of DER, as AWS

    def _generate_certificate_pem(self: IoTBackend, domain_name: str, subject: x509.Name, key: Any = None) -> str:
        if key is None:
            raise ValueError("the sandbox CA certifies a key it is given, never a throw-away one")
        validity = authority.device_validity if getattr(_DEVICE, "active", False) else VALIDITY
        return authority.issue(key.public_key(), _identity(), validity=validity)

    def create_certificate_from_csr(self: IoTBackend, csr: str, set_as_active: bool) -> Any:
        request = x509.load_pem_x509_csr(csr.encode())
        if not request.is_signature_valid:
            from moto.iot.exceptions import InvalidRequestException

            raise InvalidRequestException("The certificate signing request signature is not valid")
        public_key = request.public_key()
        if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            from moto.iot.exceptions import InvalidRequestException

            raise InvalidRequestException("AWS IoT certifies RSA and EC keys only")
        pem = authority.issue(public_key, _identity(), validity=authority.device_validity)
        return self.register_certificate(pem, ca_certificate_pem=None, set_as_active=set_as_active, status="INACTIVE")

    IoTBackend._generate_certificate_pem = _generate_certificate_pem
    IoTBackend.create_certificate_from_csr = create_certificate_from_csr
    if not getattr(FakeCertificate.__init__, "_sandbox_validity", False):
        original_init = FakeCertificate.__init__

        def __init__(self: FakeCertificate, certificate_pem: str, *args: Any, **kwargs: Any) -> None:
            original_init(self, certificate_pem, *args, **kwargs)
            try:
                parsed = x509.load_pem_x509_certificate(certificate_pem.encode())
            except ValueError:
                return  # not a certificate moto can read either: it keeps its own dates
            self.validity_not_before = parsed.not_valid_before_utc.replace(tzinfo=None)
            self.validity_not_after = parsed.not_valid_after_utc.replace(tzinfo=None)

        __init__._sandbox_validity = True  # type: ignore[attr-defined]
        FakeCertificate.__init__ = __init__
