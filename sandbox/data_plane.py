"""The sandbox's IoT data plane: mosquitto with mutual TLS from the sandbox CA, access rules derived
from the deployed IoT policies, a CRL for revoked certificates, and the reply-routing plugin.

Access rules are not written by hand: every ACTIVE certificate gets exactly what its attached IoT
policies allow (topics, with ${iot:Connection.Thing.ThingName} bound to the thing attached to the
certificate); everything else is denied. Rules and CRL are regenerated whenever the registry
changes and mosquitto reloads them on SIGHUP.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.certificate_authority import CertificateAuthority

SERVICE_ID = "sandbox-fleet-service"
PLUGIN_SOURCE = Path(__file__).with_name("broker") / "fleet_routing.c"
THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
_TOPIC_ARN = re.compile(r"^arn:[^:]+:iot:[^:]*:[^:]*:(topic|topicfilter)/(.+)$")


class DataPlaneError(RuntimeError):
    """The broker cannot be prepared or started; the message says what to install or change."""


def mqtt_topic(pattern: str) -> str | None:
    """An IoT policy topic pattern as a mosquitto ACL topic (None when it cannot be expressed)."""
    if pattern.endswith("/*"):
        pattern = pattern[:-2] + "/#"
    elif pattern == "*":
        pattern = "#"
    return None if "*" in pattern or "?" in pattern else pattern


def acl_lines(identity: str, thing: str | None, policies: list[dict[str, Any]]) -> list[str]:
    """Mosquitto ACL entries for one certificate identity from its policies' Allow statements."""
    read: set[str] = set()
    write: set[str] = set()
    for policy in policies:
        for statement in policy.get("Statement", []):
            if statement.get("Effect") != "Allow":
                continue
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            resources = statement.get("Resource", [])
            resources = [resources] if isinstance(resources, str) else resources
            for resource in resources:
                match = _TOPIC_ARN.match(resource)
                if not match:
                    continue
                kind, pattern = match.groups()
                if THING_VARIABLE in pattern:
                    if thing is None:
                        continue  # a thing-scoped grant means nothing to a certificate with no thing
                    pattern = pattern.replace(THING_VARIABLE, thing)
                topic = mqtt_topic(pattern)
                if topic is None:
                    continue
                if kind == "topic" and "iot:Publish" in actions:
                    write.add(topic)
                if ("iot:Receive" in actions and kind == "topic") or (
                    "iot:Subscribe" in actions and kind == "topicfilter"
                ):
                    read.add(topic)
    lines = [f"user {identity}"]
    lines += [f"topic readwrite {t}" for t in sorted(read & write)]
    lines += [f"topic read {t}" for t in sorted(read - write)]
    lines += [f"topic write {t}" for t in sorted(write - read)]
    return lines


def common_name(certificate_pem: str) -> str:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    return str(certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


class Broker:
    """Prepares, runs and reloads mosquitto for the sandbox."""

    def __init__(self, state_dir: Path, port: int, authority: CertificateAuthority) -> None:
        self.dir = state_dir / "broker"
        self.port = port
        self.authority = authority
        self.process: subprocess.Popen[bytes] | None = None
        self._digest = ""

    @property
    def endpoint(self) -> str:
        return "127.0.0.1"

    def prepare(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.binary = mosquitto
        if not Path(mosquitto).exists():
            raise DataPlaneError(
                "mosquitto is not installed: run `make setup` (apt-get install mosquitto mosquitto-dev)"
            )
        if not Path("/usr/include/mosquitto_broker.h").exists():
            raise DataPlaneError("mosquitto's plugin headers are missing: apt-get install mosquitto-dev")
        self.dir.mkdir(parents=True, exist_ok=True)
        plugin = self.dir / "fleet_routing.so"
        built = subprocess.run(
            ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(plugin), str(PLUGIN_SOURCE)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise DataPlaneError(f"building the reply-routing plugin failed:\n{built.stderr}")
        server_cert, server_key = self.authority.server_certificate()
        self.service_cert, self.service_key = self._service_identity()
        self.write_rules("", b"")
        (self.dir / "mosquitto.conf").write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous false",
                    "persistence false",
                    f"user {getpass.getuser()}",
                    f"log_dest file {self.dir / 'mosquitto.log'}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    f"acl_file {self.dir / 'acl'}",
                    f"plugin {plugin}",
                    f"plugin_opt_service_client_id {SERVICE_ID}",
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {self.authority.ca_file}",
                    f"certfile {server_cert}",
                    f"keyfile {server_key}",
                    f"crlfile {self.dir / 'crl.pem'}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "set_tcp_nodelay true",
                    "",
                ]
            )
        )

    def _service_identity(self) -> tuple[Path, Path]:
        cert, key_file = self.dir / "service.pem", self.dir / "service.key"
        if not (cert.exists() and key_file.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            cert.write_text(self.authority.issue(key.public_key(), SERVICE_ID))
            key_file.write_bytes(
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
            )  # fmt: skip
            key_file.chmod(0o600)
        return cert, key_file

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL, stderr=(self.dir / "mosquitto.err").open("ab"),
        )  # fmt: skip

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def crl(self, revoked_serials: list[int]) -> bytes:
        """The CRL for these serials (signed once per distinct list, so an unchanged one reloads nothing)."""
        key = tuple(sorted(revoked_serials))
        if getattr(self, "_crl_key", None) != key:
            self._crl_key, self._crl_bytes = key, self._sign_crl(list(key))
        return self._crl_bytes

    def _sign_crl(self, revoked_serials: list[int]) -> bytes:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.authority.certificate.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=365))
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        return builder.sign(self.authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def write_rules(self, device_rules: str, crl: bytes) -> bool:
        """Writes the ACL and CRL; returns True (and reloads mosquitto) when they changed."""
        acl = f"user {SERVICE_ID}\ntopic readwrite fp/#\n\n{device_rules}"
        crl = crl or self.crl([])
        digest = hashlib.sha256(acl.encode() + crl).hexdigest()
        if digest == self._digest:
            return False
        for name, data in (("acl", acl.encode()), ("crl.pem", crl)):
            staging = self.dir / f".{name}.tmp"
            staging.write_bytes(data)
            os.replace(staging, self.dir / name)
        self._digest = digest
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
        return True


class RegistryRules:
    """ACL text for every ACTIVE certificate and the serials of REVOKED ones, from the registry.

    Certificates are described once per status they are seen in (and policy documents once per
    name), so a refresh costs one listing plus whatever changed, not a call per device.
    """

    def __init__(self, iot: Any) -> None:
        self.iot = iot
        self._seen: dict[str, tuple[str, str | int]] = {}  # certificate id -> (status, ACL block | serial)
        self._policies: dict[str, dict[str, Any]] = {}

    def _describe(self, summary: dict[str, Any]) -> str | int | None:
        status, arn = summary["status"], summary["certificateArn"]
        pem = self.iot.describe_certificate(certificateId=summary["certificateId"])["certificateDescription"][
            "certificatePem"
        ]
        if status == "REVOKED":
            return int(x509.load_pem_x509_certificate(pem.encode()).serial_number)
        attached = self.iot.list_attached_policies(target=arn)["policies"]
        if not attached:
            return None  # not usable yet (its policy is attached after creation): look again next time
        documents = []
        for policy in attached:
            name = policy["policyName"]
            if name not in self._policies:
                self._policies[name] = json.loads(self.iot.get_policy(policyName=name)["policyDocument"])
            documents.append(self._policies[name])
        things = self.iot.list_principal_things(principal=arn)["things"]
        return "\n".join(acl_lines(common_name(pem), things[0] if things else None, documents))

    def refresh(self) -> tuple[str, list[int]]:
        current: dict[str, tuple[str, str | int]] = {}
        for page in self.iot.get_paginator("list_certificates").paginate(pageSize=250):
            for summary in page["certificates"]:
                certificate_id, status = summary["certificateId"], summary["status"]
                if status not in ("ACTIVE", "REVOKED"):
                    continue
                known = self._seen.get(certificate_id)
                if known is not None and known[0] == status:
                    current[certificate_id] = known
                    continue
                described = self._describe(summary)
                if described is not None:
                    current[certificate_id] = (status, described)
        self._seen = current
        blocks = [entry for status, entry in current.values() if status == "ACTIVE" and isinstance(entry, str)]
        revoked = [entry for status, entry in current.values() if status == "REVOKED" and isinstance(entry, int)]
        return "\n\n".join(sorted(blocks)) + "\n", sorted(revoked)
