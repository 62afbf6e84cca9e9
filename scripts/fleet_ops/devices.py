"""A device as IoT and the registry hold it together: what `show` reports, and what `revoke` and
`decommission` change in both.

The certificates go first (revoked, or deleted): AWS refuses the device's reconnection and closes
its open connections within a few minutes, whatever happens to the registry write that follows,
which is retried and, if it still fails, reported (running the command again records it). The
registry then says revoked or decommissioned, so the hook refuses the serial from then on; a
certificate an attempt got meanwhile is found and revoked or deleted after the write. The IoT side
is changed in an order AWS accepts (a certificate is detached from its policies and things and
deactivated before it is deleted; a thing loses its principals before it is deleted). Every step
tolerates what is already gone, so an interrupted run is finished by running it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fleet_shared.registry import THING_NAME_RESERVATION_PREFIX
from scripts.deployed_stack import DeployedStack
from scripts.fleet_ops import manifest
from scripts.fleet_ops import registry as reg
from scripts.fleet_ops.certificates import not_after
from scripts.fleet_ops.manifest import derived_thing_name

DETACH_RETRIES = 6  # AWS applies detachments eventually: a delete right after one may still be refused
REGISTRY_ATTEMPTS = 4  # a registry write after the certificates changed: tried this often, then reported

NEVER_ACTIVATED = ("PENDING_ACTIVATION", "INACTIVE")  # a refused attempt's certificate


class Refused(Exception):
    """The operation is refused for this device; nothing was changed. The message says why."""


class Unrecorded(Exception):
    """The device's certificates were revoked or deleted, but the registry write failed every attempt:
    the message says what was done and that running the command again records it."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _missing(error: ClientError) -> bool:
    return _code(error) == "ResourceNotFoundException"


def certificate_id_of(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


@dataclass
class Removal:
    """What removing one device's IoT resources did."""

    certificates: list[str] = field(default_factory=list)
    things: list[str] = field(default_factory=list)


@dataclass
class Decommissioned:
    serial_number: str
    already: bool  # the registry already said decommissioned (the IoT side was swept again)
    removed: Removal


@dataclass
class Sweep:
    """What `decommission --all` did: registry devices, then whatever IoT still held of the stack's."""

    devices: int = 0  # registry items moved to decommissioned
    certificates: int = 0
    things: int = 0
    failures: list[str] = field(default_factory=list)


class Devices:
    def __init__(self, stack: DeployedStack) -> None:
        self.stack = stack
        self.iot = stack.client("iot")
        self.registry = reg.Registry(stack.client("dynamodb"), stack.table_name)

    # What claim certificates are: never a device's, never touched by these operations.
    def claim_certificate_ids(self) -> set[str]:
        generations = self.stack.outputs.get("claim_certificates") or {}
        ids = {str(g["id"]) for g in generations.values() if isinstance(g, dict) and g.get("id")}
        return ids | (
            {str(self.stack.outputs["claim_certificate_id"])} if "claim_certificate_id" in self.stack.outputs else set()
        )

    @staticmethod
    def thing_name_of(item: dict[str, Any]) -> str:
        """The device's thing name: the one enrolled, else the hook's derived one."""
        return str(
            item.get("thingName") or derived_thing_name(str(item.get("deviceType", "")), str(item["serialNumber"]))
        )

    def _device(self, serial_number: str) -> dict[str, Any]:
        if serial_number.startswith(THING_NAME_RESERVATION_PREFIX):
            raise Refused(f"{serial_number} is a thing-name reservation, not a device's serial")
        item = self.registry.get(serial_number)
        if item is None:
            raise Refused(f"no device {serial_number} in the registry {self.stack.table_name}")
        return item

    # Reads ----------------------------------------------------------------------------------------
    def thing(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.iot.describe_thing(thingName=name))
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def principals(self, thing_name: str) -> list[str]:
        try:
            return [
                p
                for page in self.iot.get_paginator("list_thing_principals").paginate(thingName=thing_name)
                for p in page["principals"]
            ]
        except ClientError as error:
            if _missing(error):
                return []
            raise

    def certificate(self, certificate_id: str) -> dict[str, Any] | None:
        """Status, dates and policies of a certificate (None once deleted)."""
        try:
            description = self.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except ClientError as error:
            if _missing(error):
                return None
            raise
        expiry = not_after(description.get("certificatePem", ""))
        policies = self.iot.list_attached_policies(target=description["certificateArn"])["policies"]
        return {
            "certificateId": certificate_id,
            "certificateArn": description["certificateArn"],
            "status": description["status"],
            "createdAt": str(description.get("creationDate", "")),
            "notAfter": expiry.isoformat() if expiry else None,
            "policies": [p["policyName"] for p in policies],
        }

    def certificate_ids(self, item: dict[str, Any]) -> list[str]:
        """The device's certificates: those attached to its thing and those the registry names (its
        current one, a rotation's pending one, the one its last rotation retired)."""
        ids = [certificate_id_of(p) for p in self.principals(self.thing_name_of(item)) if ":cert/" in p]
        for name in ("certificateId", "pendingCertificateId", "retiredCertificateId"):
            if item.get(name):
                ids.append(str(item[name]))
        return [i for i in dict.fromkeys(ids) if i not in self.claim_certificate_ids()]

    def show(self, serial_number: str) -> dict[str, Any]:
        item = self._device(serial_number)
        name = self.thing_name_of(item)
        thing = self.thing(name)
        groups: list[str] = []
        shadow = None
        if thing is not None:
            groups = [g["groupName"] for g in self.iot.list_thing_groups_for_thing(thingName=name)["thingGroups"]]
            try:
                payload = self.stack.client("iot-data").get_thing_shadow(thingName=name)["payload"].read()
                shadow = json.loads(payload).get("state")
            except ClientError as error:
                if not _missing(error):
                    raise
        return {
            "registry": item,
            "thing": None
            if thing is None
            else {
                "thingName": name,
                "thingTypeName": thing.get("thingTypeName"),
                "attributes": thing.get("attributes", {}),
                "version": thing.get("version"),
            },
            "groups": groups,
            "factoryKeyFingerprint": manifest.fingerprint(str(item["factoryPublicKey"]))
            if item.get("factoryPublicKey")
            else None,
            "certificates": [c for c in (self.certificate(i) for i in self.certificate_ids(item)) if c],
            "shadow": shadow,
        }

    # Revoke ---------------------------------------------------------------------------------------
    def revoke(self, serial_number: str, reason: str) -> dict[str, Any]:
        """Every certificate of the device REVOKED (AWS refuses its reconnection and closes open ones),
        then the registry revoked (the hook refuses the serial from now on), then any certificate an
        attempt got meanwhile revoked too. Again on a revoked device: its certificates are revoked again
        if needed, the first revocation's time and reason kept."""
        item = self._device(serial_number)
        if item.get("status") == reg.DECOMMISSIONED:
            raise Refused(f"{serial_number} is decommissioned: it has no certificate left to revoke")
        revoked = self._revoke_certificates(item)
        now = reg.now_text()
        try:
            moved = self._recorded(
                lambda: self.registry.move(
                    serial_number,
                    reg.REVOKED,
                    unless=[reg.REVOKED, reg.DECOMMISSIONED],
                    fields={"revokedAt": now, "revocationReason": reason, "updatedAt": now},
                ),
                f"{serial_number}: certificates revoked",
            )
        except Unrecorded as unrecorded:  # what an attempt got meanwhile is revoked all the same
            revoked += self._revoke_certificates(self._device(serial_number))
            raise Unrecorded(
                str(unrecorded).replace(
                    "certificates revoked", "certificates revoked: " + (", ".join(revoked) or "none left to revoke"), 1
                )
            ) from None
        item = self._device(serial_number)  # as it is now: an attempt may have got a certificate meanwhile
        revoked += self._revoke_certificates(item)
        if item.get("status") != reg.REVOKED:
            raise Refused(
                f"{serial_number} became {item.get('status')} meanwhile; its certificates were revoked "
                f"({', '.join(revoked) or 'none left'})"
            )
        return {
            "serialNumber": serial_number,
            "status": reg.REVOKED,
            "alreadyRevoked": not moved,
            "revokedAt": item.get("revokedAt"),
            "reason": item.get("revocationReason"),
            "certificatesRevoked": revoked,
        }

    def _revoke_certificates(self, item: dict[str, Any]) -> list[str]:
        revoked = []
        for certificate_id in self.certificate_ids(item):
            described = self.certificate(certificate_id)
            if described is not None and described["status"] != "REVOKED":
                self.iot.update_certificate(certificateId=certificate_id, newStatus="REVOKED")
                revoked.append(certificate_id)
        return revoked

    @staticmethod
    def _recorded(write: Callable[[], bool], done: str) -> bool:
        """A registry write after the IoT side changed: retried, then reported with what was done."""
        for attempt in range(REGISTRY_ATTEMPTS):
            try:
                return write()
            except (ClientError, BotoCoreError) as error:
                if attempt == REGISTRY_ATTEMPTS - 1:
                    raise Unrecorded(
                        f"{done}; the registry did not record it after {REGISTRY_ATTEMPTS} attempts "
                        f"({error}): run the same command again to record it"
                    ) from error
                time.sleep(0.5 * 2**attempt)
        return False

    # Decommission ---------------------------------------------------------------------------------
    def decommission(self, serial_number: str) -> Decommissioned:
        """The device's certificates and thing deleted, then the registry decommissioned, then whatever
        an attempt made meanwhile deleted too."""
        item = self._device(serial_number)
        removed = self.remove(self.thing_name_of(item), self.certificate_ids(item))
        now = reg.now_text()
        try:
            moved = self._recorded(
                lambda: self.registry.move(
                    serial_number,
                    reg.DECOMMISSIONED,
                    unless=[reg.DECOMMISSIONED],
                    fields={"decommissionedAt": now, "updatedAt": now},
                ),
                f"{serial_number}: certificates and thing deleted",
            )
        except Unrecorded:  # what an attempt made meanwhile goes all the same
            item = self._device(serial_number)
            self.remove(self.thing_name_of(item), self.certificate_ids(item))
            raise
        item = self._device(serial_number)
        again = self.remove(self.thing_name_of(item), self.certificate_ids(item))
        removed.certificates += again.certificates
        removed.things += again.things
        return Decommissioned(serial_number, already=not moved, removed=removed)

    def remove(self, thing_name: str | None, certificate_ids: Iterable[str]) -> Removal:
        """Deletes the thing (with its shadows) and the certificates, after detaching them."""
        removal = Removal()
        claims = self.claim_certificate_ids()
        ids = list(certificate_ids)
        if thing_name:
            ids += [certificate_id_of(p) for p in self.principals(thing_name) if ":cert/" in p]
        for certificate_id in dict.fromkeys(ids):
            if certificate_id not in claims and self._delete_certificate(certificate_id):
                removal.certificates.append(certificate_id)
        if thing_name and self._delete_thing(thing_name):
            removal.things.append(thing_name)
        return removal

    def _delete_certificate(self, certificate_id: str) -> bool:
        try:
            description = self.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except ClientError as error:
            if _missing(error):
                return False
            raise
        arn = description["certificateArn"]
        for page in self.iot.get_paginator("list_attached_policies").paginate(target=arn):
            for policy in page["policies"]:
                self.iot.detach_policy(policyName=policy["policyName"], target=arn)
        for page in self.iot.get_paginator("list_principal_things").paginate(principal=arn):
            for thing in page["things"]:
                self.iot.detach_thing_principal(thingName=thing, principal=arn)
        # Only an ACTIVE certificate must be deactivated before it is deleted (DeleteCertificate); whether
        # AWS lets a PENDING_ACTIVATION one be set INACTIVE is not documented, so it is deleted as it is.
        if description["status"] == "ACTIVE":
            self.iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
        return self._retrying(lambda: self.iot.delete_certificate(certificateId=certificate_id))

    def _delete_thing(self, name: str) -> bool:
        data = self.stack.client("iot-data")
        try:  # AWS keeps a thing's shadows after the thing is deleted
            for shadow in self._named_shadows(name):
                data.delete_thing_shadow(thingName=name, shadowName=shadow)
        except ClientError as error:
            if not _missing(error):
                raise
        try:
            data.delete_thing_shadow(thingName=name)
        except ClientError as error:
            if not _missing(error):
                raise
        if self.thing(name) is None:
            return False
        # AWS drops a deleted thing from its groups itself; the sandbox's local AWS does not.
        for group in self.iot.list_thing_groups_for_thing(thingName=name)["thingGroups"]:
            self.iot.remove_thing_from_thing_group(thingGroupName=group["groupName"], thingName=name)
        return self._retrying(lambda: self.iot.delete_thing(thingName=name))

    def _named_shadows(self, thing_name: str) -> list[str]:
        data = self.stack.client("iot-data")
        names: list[str] = []
        token = None
        while True:
            page = data.list_named_shadows_for_thing(thingName=thing_name, **({"nextToken": token} if token else {}))
            names += page.get("results", [])
            token = page.get("nextToken")
            if not token:
                return names

    @staticmethod
    def _retrying(delete: Callable[[], Any]) -> bool:
        """A delete right after a detachment, retried while AWS still sees the detached resource."""
        for attempt in range(DETACH_RETRIES):
            try:
                delete()
                return True
            except ClientError as error:
                if _missing(error):
                    return False
                if _code(error) not in ("DeleteConflictException", "InvalidRequestException") or (
                    attempt == DETACH_RETRIES - 1
                ):
                    raise
                time.sleep(0.5 * 2**attempt)
        return False

    def in_service(self) -> list[str]:
        """The serials of every registry device not decommissioned yet."""
        return [str(i["serialNumber"]) for i in self.registry.devices() if i.get("status") != reg.DECOMMISSIONED]

    def decommission_all(
        self, serials: list[str], *, workers: int = 8, on_progress: Callable[[str], None] | None = None
    ) -> Sweep:
        """These devices (in_service()), then whatever IoT still holds of the stack's: things of its
        thing type and certificates attached to its device policies (left by an interrupted run, or
        made outside the registry), and the certificates of attempts the hook refused. Afterwards
        `cdktf destroy` finds no device policy attached and no thing of its type, and no certificate
        of the stack's devices is left."""

        def one(serial: str) -> Decommissioned | str:
            try:
                return self.decommission(serial)
            except (ClientError, Refused, Unrecorded) as error:
                return f"{serial}: {error}"
            finally:
                if on_progress:
                    on_progress(serial)

        sweep = Sweep()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(one, serials):
                if isinstance(done, str):
                    sweep.failures.append(done)
                    continue
                sweep.devices += not done.already
                sweep.certificates += len(done.removed.certificates)
                sweep.things += len(done.removed.things)
        things, certificates = self.leftovers()
        for name in things:
            removed = self.remove(name, [])
            sweep.things += len(removed.things)
            sweep.certificates += len(removed.certificates)
        for certificate_id in certificates:
            sweep.certificates += len(self.remove(None, [certificate_id]).certificates)
        return sweep

    def leftovers(self) -> tuple[list[str], list[str]]:
        """Things of the stack's thing type and certificates attached to its device policies."""
        things = [
            t["thingName"]
            for page in self.iot.get_paginator("list_things").paginate(
                thingTypeName=self.stack.output("thing_type_name")
            )
            for t in page["things"]
        ]
        certificates: list[str] = []
        for policy in dict(self.stack.output("device_policy_names")).values():
            try:
                for page in self.iot.get_paginator("list_targets_for_policy").paginate(policyName=policy):
                    certificates += [certificate_id_of(t) for t in page["targets"] if ":cert/" in t]
            except ClientError as error:
                if not _missing(error):
                    raise
        claims = self.claim_certificate_ids()
        certificates += self.refused_attempts()
        return things, [c for c in dict.fromkeys(certificates) if c not in claims]

    def refused_attempts(self) -> list[str]:
        """Certificates made over MQTT for attempts the stack's hook refused, never activated
        (PENDING_ACTIVATION, as IoT leaves them; or INACTIVE) and attached to nothing: the hook's log
        names them, so a destroy removes these and no other certificate of the account."""
        group = f"/aws/lambda/{self.stack.output('provisioning_hook_function_name')}"
        named: list[str] = []
        try:
            pages = (
                self.stack.client("logs")
                .get_paginator("filter_log_events")
                .paginate(logGroupName=group, filterPattern='{ $.decision = "deny" }')
            )
            for page in pages:
                for event in page.get("events", []):
                    try:
                        record = json.loads(event.get("message", ""))
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("decision") == "deny" and record.get("certificateId"):
                        named.append(str(record["certificateId"]))
        except ClientError as error:
            if not _missing(error):
                raise
        refused = []
        for certificate_id in dict.fromkeys(named):
            certificate = self.certificate(certificate_id)
            if certificate is None or certificate["status"] not in NEVER_ACTIVATED or certificate["policies"]:
                continue
            if not self.iot.list_principal_things(principal=certificate["certificateArn"])["things"]:
                refused.append(certificate_id)
        return refused
