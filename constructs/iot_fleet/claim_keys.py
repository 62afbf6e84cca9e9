"""Claim keys made on the operator's machine, so that with Target=aws no claim private key reaches
Terraform state: synth keeps one EC P-256 key per claim certificate generation in the factory folder
and the stack certifies its CSR.

The CSR is kept beside its key and reused: an IotCertificate is replaced when its CSR changes, and an
ECDSA signature (hence a new CSR) differs at every signing. Pure Python (no cdktf import).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iot_fleet.config import ConfigError


class ClaimKeyError(ConfigError):
    """A claim key or its CSR in the factory folder cannot be used; the message says which and why."""


def key_path(folder: Path, generation: int) -> Path:
    return folder / f"claim-{generation}.key"


def csr_path(folder: Path, generation: int) -> Path:
    return folder / f"claim-{generation}.csr"


def ensure_generations(folder: Path, generations: Iterable[int], prefix: str) -> None:
    """Makes each generation's key and CSR that does not exist yet, saying where each new key is."""
    for generation in generations:
        if ensure(folder, generation, f"{prefix} claim {generation}"):
            print(
                f"claim key for generation {generation} created: {key_path(folder, generation)} (0600, not in "
                "Terraform state; keep it with the factory's secrets)",
                file=sys.stderr,
            )


def ensure(folder: Path, generation: int, common_name: str) -> bool:
    """Makes generation's key (0600 from the moment it exists) and CSR unless they exist; True if it
    made the key now. A CSR without its key, or one of another key, is refused: certifying it would
    give the factory a certificate no key it holds can use."""
    key_file, csr_file = key_path(folder, generation), csr_path(folder, generation)
    if key_file.exists():
        mode = key_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise ClaimKeyError(
                f"claim key {key_file}: mode {mode:04o} lets others read it; chmod 600 it (and rotate to a new "
                "generation if someone else may have read it)"
            )
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise ClaimKeyError(f"claim key {key_file}: unreadable ({error}); restore it or remove it") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ClaimKeyError(f"claim key {key_file}: not an EC key; restore the key synth made or remove it")
        if csr_file.exists():
            _check_csr(csr_file, key)
        else:
            csr_file.write_bytes(_csr(key, common_name))
        return False
    if csr_file.exists():
        raise ClaimKeyError(
            f"claim CSR {csr_file} has no key beside it ({key_file.name}): restore the key, or remove the CSR "
            "to make a new key (a new key means a new claim certificate: rotate to a new generation instead)"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL: never write into a file someone else created (with a wider mode, or a link elsewhere).
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # a dangling link, or a file made since the check above
        raise ClaimKeyError(f"claim key {key_file}: something is already there; remove it and synth again") from None
    with os.fdopen(descriptor, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # a umask can only narrow 0600; this keeps the mode exact
        out.write(pem)
    csr_file.write_bytes(_csr(key, common_name))
    return True


def _csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _check_csr(csr_file: Path, key: ec.EllipticCurvePrivateKey) -> None:
    try:
        request = x509.load_pem_x509_csr(csr_file.read_bytes())
    except (OSError, ValueError) as error:
        raise ClaimKeyError(f"claim CSR {csr_file}: unreadable ({error}); remove it to make it again") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if request.public_key().public_bytes(serialization.Encoding.DER, public) != key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise ClaimKeyError(f"claim CSR {csr_file}: not made from the key beside it; remove it to make it again")
