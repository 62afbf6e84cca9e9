"""The IoT registry writes the local AWS serves over HTTP, and which certificates each one changed, for
the broker's access rules."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any


class _Request(threading.local):
    """The certificates the IoT write request served on this thread has changed so far (None while no
    HTTP write is being served: the fleet-provisioning service's own calls put their rules in force
    themselves); `untraced` when a change reached something that is not a certificate."""

    certificates: set[str] | None = None
    untraced = False


class RegistryWrites:
    """Counts the IoT write requests the local AWS has served over HTTP: registry changes made by
    Terraform, operators' tools or functions, not by the fleet-provisioning service in-process.

    A write that can change what a certificate may do (its status, its policies, its thing, a version
    of one of its policies) names the certificates it changed: the broker's rules for exactly those are
    brought up to date before its HTTP answer leaves (`listener`), so a certificate a function has just
    activated is in force when the device hears of it, as a registration's is. Any other write is only
    counted: the broker's rules follow those by a pass over every certificate (worth running only when
    something outside the service and the traced writes changed, since it grows with the fleet).
    """

    # Writes that change what a certificate may do without changing the certificate itself.
    ACCESS_ACTIONS = frozenset(
        {
            "AttachPolicy",
            "DetachPolicy",
            "AttachPrincipalPolicy",
            "DetachPrincipalPolicy",
            "CreatePolicyVersion",
            "SetDefaultPolicyVersion",
            "DeletePolicyVersion",
            "DeletePolicy",
            "AttachThingPrincipal",
            "DetachThingPrincipal",
            "DeleteThing",
        }
    )
    # Writes whose every effect on access is on the certificates they name (traced below). DeleteThing
    # and DeletePolicy change none: AWS refuses them while a certificate is attached.
    TRACED_ACTIONS = ACCESS_ACTIONS | frozenset(
        {"UpdateCertificate", "DeleteCertificate", "CreateCertificateFromCsr", "CreateKeysAndCertificate"}
    )
    _lock = threading.Lock()
    _count = 0
    _access_changes = 0
    _request = _Request()
    # Called with the certificate ids a traced write changed, before its answer is sent (the fleet
    # service sets it when it starts; None: nobody needs them).
    listener: Callable[[set[str]], None] | None = None

    @classmethod
    def count(cls) -> int:
        """How many writes the broker's rules must follow by a pass (the traced ones are followed already)."""
        with cls._lock:
            return cls._count

    @classmethod
    def access_changes(cls) -> int:
        """How many of those were policy or thing-principal changes (ACCESS_ACTIONS)."""
        with cls._lock:
            return cls._access_changes

    @classmethod
    def changed(cls, certificate_id: str) -> None:
        if cls._request.certificates is not None:
            cls._request.certificates.add(certificate_id)

    @classmethod
    def changed_principal(cls, principal: str) -> None:
        if ":cert/" in principal:
            cls.changed(principal.rsplit("/", 1)[-1])
        elif cls._request.certificates is not None:
            cls._request.untraced = True  # a thing group's policy reaches its things' certificates

    @classmethod
    def install(cls) -> None:
        from moto.iot.models import IoTBackend
        from moto.iot.responses import IoTResponse

        if IoTResponse.__dict__.get("_sandbox_counted", False):
            return
        call_action = IoTResponse.call_action

        def counted(self: IoTResponse) -> Any:
            if self.method in ("GET", "HEAD"):  # IoT reads with GET (a POST read costs one spare pass)
                return call_action(self)
            request = cls._request
            request.certificates, request.untraced = set(), False
            try:
                return call_action(self)
            finally:
                certificates, untraced = request.certificates, request.untraced
                request.certificates = None
                try:
                    action = self._get_action()
                except Exception:  # noqa: BLE001 - unknown action: assume access changed (re-describe)
                    action = ""
                traced = action in cls.TRACED_ACTIONS and not untraced and cls.listener is not None
                if traced and certificates and cls.listener is not None:
                    try:
                        cls.listener(certificates)
                    except Exception as error:  # noqa: BLE001 - the write stands; a pass follows it instead
                        print(f"iot: the broker's rules for {sorted(certificates)} failed: {error}", flush=True)
                        traced = False
                if not traced:
                    with cls._lock:
                        cls._count += 1
                        cls._access_changes += action in cls.ACCESS_ACTIONS or not action

        IoTResponse.call_action = counted
        IoTResponse._sandbox_counted = True
        _trace(IoTBackend)


def _trace(backend: type) -> None:
    """Wraps the backend methods of the traced writes so that each records the certificates it changed."""

    def traced(name: str, record: Callable[[Any, dict[str, Any], Any], None]) -> None:
        method = getattr(backend, name)
        signature = inspect.signature(method)

        @functools.wraps(method)
        def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            if RegistryWrites._request.certificates is not None:
                try:
                    record(self, signature.bind(self, *args, **kwargs).arguments, result)
                except Exception:  # noqa: BLE001 - the write stands: a pass over the registry follows it
                    RegistryWrites._request.untraced = True
            return result

        setattr(backend, name, recorded)

    for name in ("update_certificate", "delete_certificate"):
        traced(name, lambda _, given, __: RegistryWrites.changed(given["certificate_id"]))
    for name in ("attach_policy", "detach_policy"):
        traced(name, lambda _, given, __: RegistryWrites.changed_principal(given["target"]))
    for name in (
        "attach_principal_policy",
        "detach_principal_policy",
        "attach_thing_principal",
        "detach_thing_principal",
    ):
        traced(name, lambda _, given, __: RegistryWrites.changed_principal(given["principal_arn"]))

    def of_policy(iot: Any, given: dict[str, Any], _: Any) -> None:
        for principal in iot.list_policy_principals(given["policy_name"]):
            RegistryWrites.changed_principal(principal)

    for name in ("create_policy_version", "set_default_policy_version", "delete_policy_version"):
        traced(name, of_policy)

    def created(_: Any, __: dict[str, Any], result: Any) -> None:
        certificate = result[0] if isinstance(result, tuple) else result
        RegistryWrites.changed(certificate.certificate_id)

    for name in ("create_certificate_from_csr", "create_keys_and_certificate"):
        traced(name, created)
