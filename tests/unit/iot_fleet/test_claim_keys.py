"""The claim keys synth makes for Target=aws (iot_fleet.claim_keys): one EC P-256 key per generation,
0600, its CSR kept beside it and reused, and anything in the factory folder it cannot trust refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iot_fleet import claim_keys
from iot_fleet.claim_keys import ClaimKeyError


def public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_csr_is_made_from_a_new_p256_key_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "factory" / "IoTProvisioning-dev"
    assert claim_keys.ensure(folder, 1, "IoTProvisioning-dev claim 1") is True

    key = serialization.load_pem_private_key(claim_keys.key_path(folder, 1).read_bytes(), password=None)
    request = x509.load_pem_x509_csr(claim_keys.csr_path(folder, 1).read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert request.is_signature_valid
    assert public_der(request.public_key()) == public_der(key.public_key())  # type: ignore[arg-type]
    assert request.subject.rfc4514_string() == "CN=IoTProvisioning-dev claim 1"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_a_second_synth_reuses_key_and_csr_byte_for_byte_so_the_certificate_is_not_replaced(tmp_path: Path) -> None:
    claim_keys.ensure(tmp_path, 1, "claim 1")
    key, csr = claim_keys.key_path(tmp_path, 1).read_bytes(), claim_keys.csr_path(tmp_path, 1).read_bytes()

    assert claim_keys.ensure(tmp_path, 1, "claim 1") is False
    assert (claim_keys.key_path(tmp_path, 1).read_bytes(), claim_keys.csr_path(tmp_path, 1).read_bytes()) == (key, csr)
    claim_keys.ensure(tmp_path, 2, "claim 2")  # a rotation's new generation: a key of its own
    assert claim_keys.key_path(tmp_path, 2).read_bytes() != key


def test_a_csr_whose_key_is_gone_is_refused_and_no_new_key_is_made(tmp_path: Path) -> None:
    claim_keys.ensure(tmp_path, 1, "claim 1")
    claim_keys.key_path(tmp_path, 1).unlink()

    with pytest.raises(ClaimKeyError, match=r"claim-1.csr has no key beside it \(claim-1.key\)"):
        claim_keys.ensure(tmp_path, 1, "claim 1")
    assert not claim_keys.key_path(tmp_path, 1).exists()


def test_a_csr_of_another_key_is_refused(tmp_path: Path) -> None:
    claim_keys.ensure(tmp_path, 1, "claim 1")
    claim_keys.ensure(tmp_path, 2, "claim 2")
    claim_keys.csr_path(tmp_path, 2).replace(claim_keys.csr_path(tmp_path, 1))

    with pytest.raises(ClaimKeyError, match=r"claim-1.csr: not made from the key beside it"):
        claim_keys.ensure(tmp_path, 1, "claim 1")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    claim_keys.ensure(tmp_path, 1, "claim 1")
    claim_keys.key_path(tmp_path, 1).chmod(0o640)

    with pytest.raises(ClaimKeyError, match=r"claim-1.key: mode 0640 lets others read it; chmod 600 it"):
        claim_keys.ensure(tmp_path, 1, "claim 1")


def test_a_link_planted_where_the_key_goes_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.pem"
    (tmp_path / "factory").mkdir()
    os.symlink(elsewhere, claim_keys.key_path(tmp_path / "factory", 1))

    with pytest.raises(ClaimKeyError, match=r"claim-1.key: something is already there"):
        claim_keys.ensure(tmp_path / "factory", 1, "claim 1")
    assert not elsewhere.exists()
    assert not claim_keys.csr_path(tmp_path / "factory", 1).exists()
