"""IoT certificates from the sandbox CA (sandbox/iot/certificates_from_sandbox_ca.py) and the
device-certificate validity switch (sandbox/iot_data_plane/certificate_validity.py)."""

from __future__ import annotations

import datetime
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def sandbox_ca(tmp_path: Path) -> Iterator[Any]:
    from moto.core.config import default_user_config
    from moto.iot.models import IoTBackend

    from sandbox.iot import certificates_from_sandbox_ca as iot_certificates_from_sandbox_ca
    from sandbox.iot_data_plane.certificate_authority import CertificateAuthority

    saved = (
        IoTBackend._generate_certificate_pem,
        IoTBackend.create_certificate_from_csr,
        dict(default_user_config.get("iot", {})),
    )
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    iot_certificates_from_sandbox_ca.install(authority)
    yield authority
    IoTBackend._generate_certificate_pem, IoTBackend.create_certificate_from_csr = saved[0], saved[1]  # type: ignore[method-assign]
    default_user_config["iot"] = saved[2]


def test_issued_certificates_chain_to_the_sandbox_ca_with_aws_ids(iot: Any, sandbox_ca: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.iot_data_plane.certificate_authority import certificate_id

    created = iot.create_keys_and_certificate(setAsActive=True)
    certificate = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    certificate.verify_directly_issued_by(sandbox_ca.certificate)
    assert created["certificateId"] == certificate_id(created["certificatePem"])
    key = serialization.load_pem_private_key(created["keyPair"]["PrivateKey"].encode(), password=None)
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]

    device_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")]))
        .sign(device_key, hashes.SHA256())
    )
    from_csr = iot.create_certificate_from_csr(
        certificateSigningRequest=csr.public_bytes(serialization.Encoding.PEM).decode(), setAsActive=True
    )
    issued = x509.load_pem_x509_certificate(from_csr["certificatePem"].encode())
    issued.verify_directly_issued_by(sandbox_ca.certificate)
    assert issued.public_key().public_numbers() == device_key.public_key().public_numbers()  # type: ignore[union-attr]
    described = iot.describe_certificate(certificateId=from_csr["certificateId"])["certificateDescription"]
    assert described["status"] == "ACTIVE"
    # DescribeCertificate gives the certificate's own validity (moto made up "now plus a day").
    assert described["validity"]["notAfter"].timestamp() == issued.not_valid_after_utc.timestamp()
    assert described["validity"]["notBefore"].timestamp() == issued.not_valid_before_utc.timestamp()


def test_the_validity_switch_changes_only_certificates_issued_after_it_and_refuses_bad_values(
    iot: Any, sandbox_ca: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m sandbox certificate-validity` against a running HTTP front: certificates issued from
    then on get the validity asked for, refused values change nothing, `default` restores the start setting."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from werkzeug.serving import make_server

    from sandbox.iot_data_plane import certificate_validity

    def elsewhere(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b"local AWS"]

    def lifetime() -> float:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        issued = iot.create_certificate_from_csr(certificateSigningRequest=pem, setAsActive=True)
        certificate = x509.load_pem_x509_certificate(issued["certificatePem"].encode())
        return (certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds()

    switch = certificate_validity.CertificateValiditySwitch(elsewhere, sandbox_ca)
    server = make_server("127.0.0.1", 0, switch, True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.port}"
    try:
        assert lifetime() > 9 * 365 * 86400  # the start setting: 10 years
        assert certificate_validity.main(["25"], endpoint) == 0
        assert "valid 25 s" in capsys.readouterr().out
        assert 20 < lifetime() <= 25
        # Over HTTP, CreateKeysAndCertificate is how Terraform makes the claim certificate: not a device's.
        claim = x509.load_pem_x509_certificate(
            iot.create_keys_and_certificate(setAsActive=True)["certificatePem"].encode()
        )
        assert (claim.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days > 9 * 365
        for bad in ("0", "-5", "1.5", "soon", str(10 * 365 * 86400 + 1)):
            assert certificate_validity.main([bad], endpoint) == 2
            assert "give whole seconds from 1 to" in capsys.readouterr().err
        with pytest.raises(ValueError, match="seconds=0"):  # the server refuses what the CLI would not send
            certificate_validity.request(endpoint, "PUT", 0)
        assert certificate_validity.request(endpoint, "GET") == {"seconds": 25, "default": False}
        assert 20 < lifetime() <= 25
        assert certificate_validity.main(["default"], endpoint) == 0
        assert "the sandbox's start setting" in capsys.readouterr().out
        assert lifetime() > 9 * 365 * 86400
        with pytest.raises(urllib.error.HTTPError) as passed_on:  # any other path: the local AWS answers
            urllib.request.urlopen(f"{endpoint}/_sandbox/other")  # noqa: S310 - local http
        assert passed_on.value.read() == b"local AWS"
    finally:
        server.shutdown()
    assert certificate_validity.main([], endpoint) == 1  # nothing answers: says so
    assert "does not answer" in capsys.readouterr().err
