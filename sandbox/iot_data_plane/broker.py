"""The sandbox's IoT data plane: mosquitto with mutual TLS from the sandbox CA, access rules derived
from the deployed IoT policies, a CRL for revoked certificates, and the reply-routing plugin.

Access rules are not written by hand: every ACTIVE certificate gets exactly what its attached IoT
policies allow (client ids and topics, with ${iot:Connection.Thing.ThingName} bound to the thing
attached to the certificate); everything else is denied. The rules are one file per certificate,
which the broker plugin reads at each check, so they are in force as soon as they are written. The
CRL is regenerated when a certificate is revoked and mosquitto reloads it on SIGHUP.
"""

from __future__ import annotations

import fnmatch
import getpass
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.iot_data_plane.certificate_authority import CertificateAuthority, write_private
from sandbox.iot_data_plane.local_account import LocalAccount
from sandbox.request_pipeline.model_validation import validator

SERVICE_ID = "sandbox-fleet-service"
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60.0  # a broker that keeps exiting is broken, not interrupted
PROBE_ID = "sandbox-probe"  # `sandbox up` connects with it: no rules, so a working broker refuses it at CONNECT
THING_VARIABLE = "${iot:Connection.Thing.ThingName}"
_RESOURCE_ARN = re.compile(r"arn:[^:]+:iot:[^:]*:[^:]*:(topic|topicfilter|client)/(.+)")  # fullmatch: no line breaks


class DataPlaneError(RuntimeError):
    """The broker cannot be prepared or started; the message says what to install or change."""


def mqtt_topic(pattern: str) -> str | None:
    """An IoT policy topic pattern as an MQTT filter for the broker (None when it cannot be expressed).

    In a policy `+` and `#` are plain characters, not MQTT wildcards: a pattern holding one grants
    nothing here rather than more than AWS would.
    """
    if "+" in pattern or "#" in pattern:
        return None
    if pattern.endswith("/*"):
        pattern = pattern[:-2] + "/#"
    elif pattern == "*":
        pattern = "#"
    return None if "*" in pattern or "?" in pattern else pattern


MQTT_ACTIONS = ("iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe")
_SATISFIED_BY_AN_ATTACHED_THING = {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}


def _named(statement: dict[str, Any], key: str) -> set[str]:
    """The MQTT actions a statement's Action (or NotAction) names: case-insensitive, wildcards as IoT's."""
    names = statement.get(key, [])
    patterns = [names] if isinstance(names, str) else list(names)
    return {a for a in MQTT_ACTIONS for p in patterns if fnmatch.fnmatchcase(a.lower(), str(p).lower())}


def _actions(statement: dict[str, Any]) -> set[str]:
    """The MQTT actions a statement covers; a NotAction statement covers all of them (fail closed for a
    Deny; an Allow written with NotAction grants nothing here, see access_rules)."""
    return set(MQTT_ACTIONS) if "NotAction" in statement else _named(statement, "Action")


def access_rules(thing: str | None, policies: list[dict[str, Any]]) -> list[str]:
    """The broker plugin's rules for one certificate, from its policies' Allow statements.

    Lines: "client <pattern>" (iot:Connect on client/<pattern>; fnmatch, as IoT's * and ?),
    "publish <topic filter>" (iot:Publish on topic/), "receive <topic filter>" (iot:Receive on
    topic/) and "subscribe <topic filter>" (iot:Subscribe on topicfilter/). Policy variables
    other than the thing name, wildcards MQTT cannot express, Allow statements with NotAction or
    with a condition other than "a thing is attached", and a thing name AWS would refuse grant
    nothing; an action that any Deny names (NotAction: every action) is granted nowhere, since the
    broker cannot subtract a Deny (fail closed).
    """
    if thing is not None and validator("iot").check_shape("ThingName", thing, "thingName") is not None:
        thing = None  # a name AWS would never accept (its model's ThingName) must not become part of a rule
    statements = [s for policy in policies for s in policy.get("Statement", [])]
    denied = set().union(*(_actions(s) for s in statements if s.get("Effect") == "Deny"))
    rules: set[str] = set()
    for statement in statements:
        actions = _actions(statement) - denied
        if statement.get("Effect") != "Allow" or "NotAction" in statement or not actions:
            continue
        condition = statement.get("Condition")
        if condition and not (condition == _SATISFIED_BY_AN_ATTACHED_THING and thing is not None):
            continue  # a condition the broker cannot evaluate grants nothing
        resources = statement.get("Resource", [])
        for resource in [resources] if isinstance(resources, str) else resources:
            match = _RESOURCE_ARN.fullmatch(resource)
            if not match:
                continue
            kind, pattern = match.groups()
            if THING_VARIABLE in pattern:
                if thing is None:
                    continue  # a thing-scoped grant means nothing to a certificate with no thing
                pattern = pattern.replace(THING_VARIABLE, thing)
            if "${" in pattern:
                continue
            if kind == "client":
                if "iot:Connect" in actions:
                    rules.add(f"client {pattern}")
                continue
            topic = mqtt_topic(pattern)
            if topic is None:
                continue
            if kind == "topic" and "iot:Publish" in actions:
                rules.add(f"publish {topic}")
            if kind == "topic" and "iot:Receive" in actions:
                rules.add(f"receive {topic}")
            if kind == "topicfilter" and "iot:Subscribe" in actions:
                rules.add(f"subscribe {topic}")
    return sorted(rules)


class Broker:
    """Prepares, runs and reloads mosquitto for the sandbox."""

    def __init__(self, state_dir: Path, port: int, authority: CertificateAuthority, plugin: Path) -> None:
        self.dir = state_dir / "broker"
        self.port = port
        self.authority = authority
        self.built_plugin = plugin
        self.process: subprocess.Popen[bytes] | None = None
        self.rules_dir = self.dir / "rules"
        self._written: dict[str, str] = {}
        self._crl_written = b""
        self._crl_reloads_due = 0
        self._stopping = threading.Event()

    @property
    def endpoint(self) -> str:
        return "127.0.0.1"

    def prepare(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.binary = mosquitto
        if not Path(mosquitto).exists():
            raise DataPlaneError(
                "mosquitto is not installed: run `make setup` (as root it installs Debian's mosquitto)"
            )
        if not self.built_plugin.exists():
            raise DataPlaneError(f"the broker plugin {self.built_plugin} is missing: run `python -m sandbox build`")
        self.dir.mkdir(parents=True, exist_ok=True)
        # This sandbox's own copy: a later build for another sandbox never replaces the file it runs.
        plugin = self.dir / "fleet_routing.so"
        shutil.copyfile(self.built_plugin, plugin)
        server_cert, server_key = self.authority.server_certificate()
        self.service_cert, self.service_key = self.identity(SERVICE_ID)
        self.probe_cert, self.probe_key = self.identity(PROBE_ID)
        shutil.rmtree(self.rules_dir, ignore_errors=True)
        self.rules_dir.mkdir(parents=True)
        self.write_rules({}, b"")
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
                    f"plugin {plugin}",
                    f"plugin_opt_service_client_id {SERVICE_ID}",
                    f"plugin_opt_rules_dir {self.rules_dir}",
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {self.authority.ca_file}",
                    f"certfile {server_cert}",
                    f"keyfile {server_key}",
                    f"crlfile {self.dir / 'crl.pem'}",
                    "require_certificate true",
                    # No use_identity_as_username: with it mosquitto asks no plugin at CONNECT, so a
                    # certificate could take over any client id's session. The plugin checks the
                    # client id at CONNECT and sets the certificate's identity as the user name.
                    "set_tcp_nodelay true",
                    "",
                ]
            )
        )

    def identity(self, name: str) -> tuple[Path, Path]:
        """A certificate (subject CN `name`) and key from the sandbox CA for the sandbox's own clients."""
        cert, key_file = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        if not (cert.exists() and key_file.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            write_private(
                key_file,
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
            cert.write_text(self.authority.issue(key.public_key(), name))
        return cert, key_file

    def start(self) -> None:
        self._stderr = self.dir / "mosquitto.err"
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr.open("ab"),
        )

    def failure(self) -> str | None:
        """Why the broker is not running (None while it runs), with the last lines it wrote."""
        if self.process is None or self.process.poll() is None:
            return None
        said = [
            line
            for log in (self._stderr, self.dir / "mosquitto.log")
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()[-5:]
            if line.strip()
        ]
        return f"mosquitto exited with code {self.process.returncode}" + (": " + " | ".join(said) if said else "")

    def supervise(self) -> None:
        """Restarts mosquitto whenever it exits unasked once the sandbox is up, as a service manager
        would: devices connected at that moment see their connection drop and reconnect, as they would
        on AWS. One that keeps exiting is left down; the health endpoint and `status` then say why."""
        threading.Thread(target=self._supervise, name="broker-supervisor", daemon=True).start()

    def _supervise(self) -> None:
        restarts: list[float] = []
        while not self._stopping.wait(0.5):
            if self.process is None or self.process.poll() is None:
                continue
            why, now = self.failure(), time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW_SECONDS]
            if len(restarts) >= MAX_RESTARTS:
                print(
                    f"sandbox: broker: {why}; it exited {MAX_RESTARTS} times within {RESTART_WINDOW_SECONDS:.0f} s, "
                    f"so it stays down (its log: {self.dir / 'mosquitto.log'})",
                    flush=True,
                )
                return
            print(f"sandbox: broker: {why}; restarting it", flush=True)
            restarts.append(now)
            self.start()

    def stop(self) -> None:
        self._stopping.set()
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

    @property
    def reload_pending(self) -> bool:
        """A CRL change still owes mosquitto a reload signal (see write_rules)."""
        return self._crl_reloads_due > 0

    def write_identity_rules(self, identity: str, text: str) -> None:
        """Writes one certificate identity's rules file (in force for its very next check)."""
        if self._written.get(identity) != text:
            _replace(self.rules_dir / identity, text.encode())
            self._written[identity] = text

    def remove_identity_rules(self, identity: str) -> None:
        """Removes one certificate identity's rules file: its next connection is refused."""
        if self._written.pop(identity, None) is not None:
            (self.rules_dir / identity).unlink(missing_ok=True)

    def write_crl(self, crl: bytes) -> None:
        """Has mosquitto reload the CRL when it changed (see write_rules)."""
        crl = crl or self.crl([])
        if crl != self._crl_written:
            _replace(self.dir / "crl.pem", crl)
            self._crl_written = crl
            # mosquitto drops a SIGHUP that arrives while it is reloading: signal on the next round too.
            self._crl_reloads_due = 2
        if self._crl_reloads_due and self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
            self._crl_reloads_due -= 1

    def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
        """Writes each certificate identity's rules file that changed, removes those of certificates no
        longer ACTIVE, and has mosquitto reload the CRL when it changed."""
        for identity, text in rules.items():
            self.write_identity_rules(identity, text)
        for identity in [i for i in self._written if i not in rules]:
            self.remove_identity_rules(identity)
        self.write_crl(crl)


def _replace(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def _parse(pem: str, issuer: x509.Certificate | None = None) -> tuple[str, int] | None:
    """(subject CN, serial) of a certificate `issuer` signed (any, without one): the broker knows a
    connection by the CN."""
    try:
        parsed = x509.load_pem_x509_certificate(pem.encode())
        if issuer is not None:
            parsed.verify_directly_issued_by(issuer)
        return str(parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value), parsed.serial_number
    except (ValueError, IndexError, TypeError, InvalidSignature):
        return None


@dataclass(frozen=True)
class CertificateAccess:
    status: str
    identity: str = ""  # the certificate's subject CN: the broker's user name for its connections
    rules: str = ""  # ACTIVE: the plugin's rules file ("" while no policy grants it anything)
    serial: int = 0  # REVOKED: for the CRL


class RegistryRules:
    """Rules for every ACTIVE certificate and the serials of REVOKED ones, from the registry.

    Reads the local AWS's IoT registry in-process (sandbox.iot_data_plane.local_account). Each certificate is
    described once per status it is seen in (and again after a policy or thing-principal change:
    refresh(forget=True)), so a refresh costs one pass over the certificates plus whatever changed,
    not a lookup per device. After each pass, `stopped` names the identities of certificates that
    were ACTIVE at the previous pass and are not any more (revoked, deactivated or deleted): AWS
    closes their connections, and so must the broker.
    """

    def __init__(self, account: LocalAccount, issuer: x509.Certificate | None = None) -> None:
        """`issuer`: the sandbox CA; a certificate it did not sign gets no rules (the broker knows a
        connection by its certificate's subject CN alone, so one registered with a copied CN must not
        reach the rules of the certificate it copies)."""
        self.account = account
        self.issuer = issuer
        self._seen: dict[str, CertificateAccess] = {}  # certificate id -> what it may do
        self._ids: dict[str, str] = {}  # identity -> certificate id, for the certificates in _seen
        self.stopped: list[str] = []

    def certificate_id_of(self, identity: str) -> str | None:
        """The id of the certificate the broker knows by this identity (None if it has no rules yet)."""
        return self._ids.get(identity)

    def _describe(self, certificate: Any) -> CertificateAccess | None:
        status, arn = certificate.status, certificate.arn
        parsed = _parse(certificate.certificate_pem, self.issuer)
        if parsed is None:
            return None  # not a certificate the sandbox CA issued: it cannot connect here anyway
        identity, serial = parsed
        if status == "REVOKED":
            return CertificateAccess(status, identity, serial=serial)
        attached = self.account.attached_policy_names(arn)
        if not attached:
            # Not usable (yet: a policy is attached after creation, an access change that makes the
            # next pass describe it again), but known, so that its connections close when it stops.
            return CertificateAccess(status, identity)
        things = self.account.principal_things(arn)
        return self._active(identity, arn, things[0] if things else None, attached)

    def _active(self, identity: str, arn: str, thing: str | None, policies: list[str]) -> CertificateAccess:
        rules = access_rules(thing, [self.account.policy_document(name) for name in policies])
        return CertificateAccess("ACTIVE", identity, rules="\n".join([f"# {arn}", *rules]) + "\n")

    def update(self, certificate_ids: set[str]) -> tuple[dict[str, str | None], bool]:
        """Describes these certificates again (a write named them: sandbox.iot.registry_writes), for the
        rules of just these. Returns (rules file text by identity, None where its rules must go; whether
        the revoked serials changed) and sets `stopped` as refresh() does."""
        files: dict[str, str | None] = {}
        revoked_changed, stopped = False, []
        described: dict[str, CertificateAccess | None] = {}
        for certificate_id in sorted(certificate_ids):  # all read first: a failure changes nothing
            certificate = self.account.certificate(certificate_id)
            active_or_revoked = certificate is not None and certificate.status in ("ACTIVE", "REVOKED")
            described[certificate_id] = self._describe(certificate) if active_or_revoked else None
        for certificate_id, after in described.items():
            before = self._seen.pop(certificate_id, None)
            if before is not None and self._ids.get(before.identity) == certificate_id:
                del self._ids[before.identity]
                if before.status == "ACTIVE" and (after is None or after.status != "ACTIVE"):
                    stopped.append(before.identity)
                files[before.identity] = None
            if after is not None:
                self._seen[certificate_id] = after
                self._ids[after.identity] = certificate_id
                if after.status == "ACTIVE" and after.rules:
                    files[after.identity] = after.rules
            revoked_changed |= (before is not None and before.status == "REVOKED") != (
                after is not None and after.status == "REVOKED"
            )
        self.stopped = sorted(stopped)
        return files, revoked_changed

    def revoked(self) -> list[int]:
        """The serials of the REVOKED certificates, as last described."""
        return sorted(a.serial for a in self._seen.values() if a.status == "REVOKED")

    def refresh(self, forget: bool = False) -> tuple[dict[str, str], list[int]]:
        """(rules file text by certificate identity, revoked serials). `forget`: describe every ACTIVE
        certificate again (its policies or thing may have changed; its status did not)."""
        was_active = {cid: access.identity for cid, access in self._seen.items() if access.status == "ACTIVE"}
        if forget:
            self._seen = {k: v for k, v in self._seen.items() if v.status != "ACTIVE"}
        current: dict[str, CertificateAccess] = {}
        active: set[str] = set()
        for certificate in self.account.certificates():
            certificate_id, status = certificate.certificate_id, certificate.status
            if status not in ("ACTIVE", "REVOKED"):
                continue
            if status == "ACTIVE":
                active.add(certificate_id)
            known = self._seen.get(certificate_id)
            if known is not None and known.status == status:
                current[certificate_id] = known
                continue
            described = self._describe(certificate)
            if described is not None:
                current[certificate_id] = described
        self._seen = current
        self._ids = {access.identity: certificate_id for certificate_id, access in current.items()}
        self.stopped = sorted({identity for cid, identity in was_active.items() if cid not in active})
        rules = {a.identity: a.rules for a in current.values() if a.status == "ACTIVE" and a.rules}
        revoked = sorted(a.serial for a in current.values() if a.status == "REVOKED")
        return rules, revoked
