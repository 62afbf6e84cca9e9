"""Constant-time lookups of things, certificates and their attachments in moto's IoT registry.

moto finds a thing by name, and a certificate by id or ARN, by scanning every one it holds, although
it stores them keyed by ARN and id; and it finds a principal's policies or things, a thing's
principals and a policy's targets by scanning every attachment in the account. A sandbox that has
provisioned a few thousand devices then spends more time scanning than serving (each registration
and each rotation looks them up several times), and deleting a fleet's certificates one by one costs
the square of its size. These lookups go straight to the key. moto stores every thing under its ARN
(built from its name) and every certificate under its id (a certificate's ARN ends with it), so a miss
there is a miss: a thing that does not exist yet (each registration asks before creating one) is
answered without a scan. Attachments stay in moto's own dicts, which also index them by each side of
their key. Delete when moto indexes them itself.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from moto.iot.exceptions import DeleteConflictException, ResourceNotFoundException, ThingStillAttached
from moto.iot.models import FakeCertificate, FakePolicy, IoTBackend


class Attachments(OrderedDict[tuple[str, str], Any]):
    """moto's attachment dict (principal_policies, principal_things): keyed by (principal, policy or
    thing name), in the order made, and also indexed by each side of the key. moto adds and removes
    attachments by key only (`d[k] = v`, `del d[k]`); any other change is refused rather than left
    out of the indexes."""

    def __init__(self) -> None:
        super().__init__()
        self.by_principal: dict[str, dict[tuple[str, str], None]] = {}
        self.by_other: dict[str, dict[tuple[str, str], None]] = {}

    def __setitem__(self, key: tuple[str, str], value: Any) -> None:
        super().__setitem__(key, value)
        self.by_principal.setdefault(key[0], {})[key] = None
        self.by_other.setdefault(key[1], {})[key] = None

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        for index, side in ((self.by_principal, key[0]), (self.by_other, key[1])):
            keys = index[side]
            del keys[key]
            if not keys:
                del index[side]

    def _unsupported(self, *_: Any, **__: Any) -> Any:
        raise TypeError("change IoT attachments by key only (d[k] = v, del d[k])")

    pop = popitem = clear = update = setdefault = _unsupported

    def of_principal(self, principal: str) -> list[tuple[str, str]]:
        return list(self.by_principal.get(principal, ()))

    def of_other(self, name: str) -> list[tuple[str, str]]:
        return list(self.by_other.get(name, ()))


def _indexed(backend: IoTBackend, name: str) -> Attachments:
    """The backend's attachment dict `name`, made an indexed one the first time it is asked for (a
    backend made before install() holds moto's plain dict)."""
    attachments = getattr(backend, name)
    if not isinstance(attachments, Attachments):
        indexed = Attachments()
        for key, value in attachments.items():
            indexed[key] = value
        setattr(backend, name, indexed)
        attachments = indexed
    return attachments


def policies(backend: IoTBackend) -> Attachments:
    return _indexed(backend, "principal_policies")


def things(backend: IoTBackend) -> Attachments:
    return _indexed(backend, "principal_things")


def install() -> None:
    """Call before sandbox.iot.registry_rules, which wraps the delete_thing this replaces."""
    if IoTBackend.__dict__.get("_sandbox_indexed", False):
        return
    if IoTBackend.delete_thing.__module__ != "moto.iot.models":
        raise RuntimeError("install sandbox.iot.indexed_lookups before the patches that wrap IoTBackend.delete_thing")
    scan_principal = IoTBackend._get_principal
    remove_policy = IoTBackend.delete_policy
    validate_delete = IoTBackend._validation_delete

    def describe_thing(self: IoTBackend, thing_name: str) -> Any:
        arn = f"arn:{self.partition}:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        thing = self.things.get(arn)
        if thing is None or thing.thing_name != thing_name:
            raise ResourceNotFoundException()  # what moto's scan raises when nothing matches
        return thing

    def describe_certificate(self: IoTBackend, certificate_id: str) -> Any:
        certificate = self.certificates.get(certificate_id)
        if certificate is None:
            raise ResourceNotFoundException()  # what moto's scan raises when nothing matches
        return certificate

    def _get_principal(self: IoTBackend, principal_arn: str) -> Any:
        if ":cert/" in principal_arn:
            certificate = self.certificates.get(principal_arn.rsplit("/", 1)[-1])
            if certificate is None or certificate.arn != principal_arn:
                raise ResourceNotFoundException()
            return certificate
        return scan_principal(self, principal_arn)  # thing groups by key; Cognito identities

    def list_attached_policies(self: IoTBackend, target: str) -> list[FakePolicy]:
        attached = policies(self)
        return [attached[key][1] for key in attached.of_principal(target)]

    def list_policy_principals(self: IoTBackend, policy_name: str) -> list[str]:
        return [principal for principal, _ in policies(self).of_other(policy_name)]

    def list_principal_things(self: IoTBackend, principal_arn: str) -> list[str]:
        return [thing for _, thing in things(self).of_principal(principal_arn)]

    def list_thing_principals(self: IoTBackend, thing_name: str) -> list[str]:
        try:
            self.describe_thing(thing_name)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(
                f"Failed to list principals for thing {thing_name} because the thing does not exist in your account"
            ) from None
        return [principal for principal, _ in things(self).of_other(thing_name)]

    def delete_thing(self: IoTBackend, thing_name: str) -> None:
        thing = self.describe_thing(thing_name)
        if things(self).of_other(thing_name):
            raise ThingStillAttached(thing_name)
        for billing_group in self.billing_groups.values():  # as moto's delete_thing, without its scan
            if thing.arn in billing_group.things:
                billing_group.things.remove(thing.arn)
                thing.billing_group_name = None
        del self.things[thing.arn]

    def _validation_delete(self: IoTBackend, cert: FakeCertificate, force_delete: bool = False) -> None:
        attached_things = things(self).of_principal(cert.arn)
        attached_policies = policies(self).of_principal(cert.arn)
        if cert.status == "ACTIVE" or attached_things or (attached_policies and not force_delete):
            validate_delete(self, cert, force_delete)  # moto's, for its own exception and message
            raise DeleteConflictException(f"Things or policies must be detached before deletion (arn: {cert.arn})")

    def delete_policy(self: IoTBackend, policy_name: str) -> None:
        if policies(self).of_other(policy_name):
            raise DeleteConflictException(
                f"The policy cannot be deleted as the policy is attached to one or more principals (name={policy_name})"
            )
        remove_policy(self, policy_name)  # moto's: the same check by a scan, then its versions

    IoTBackend.describe_thing = describe_thing
    IoTBackend.describe_certificate = describe_certificate
    IoTBackend._get_principal = _get_principal
    IoTBackend.list_attached_policies = list_attached_policies
    IoTBackend.list_principal_policies = lambda self, principal_arn: list_attached_policies(self, principal_arn)
    IoTBackend.list_policy_principals = list_policy_principals
    IoTBackend.list_principal_things = list_principal_things
    IoTBackend.list_thing_principals = list_thing_principals
    IoTBackend.delete_thing = delete_thing
    IoTBackend._validation_delete = _validation_delete
    IoTBackend.delete_policy = delete_policy
    IoTBackend._sandbox_indexed = True
