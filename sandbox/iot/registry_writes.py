"""The IoT registry writes the local AWS serves over HTTP, counted for the broker's access rules."""

from __future__ import annotations

import threading
from typing import Any


class RegistryWrites:
    """Counts the IoT write requests the local AWS has served over HTTP: registry changes made by
    Terraform, operators' tools or functions, not by the fleet-provisioning service in-process.

    The broker's access rules follow the registry by a pass over every certificate; with thousands
    of devices that pass is worth running only when something outside the service changed.
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
    _lock = threading.Lock()
    _count = 0
    _access_changes = 0

    @classmethod
    def count(cls) -> int:
        with cls._lock:
            return cls._count

    @classmethod
    def access_changes(cls) -> int:
        """How many of the writes were policy or thing-principal changes (ACCESS_ACTIONS)."""
        with cls._lock:
            return cls._access_changes

    @classmethod
    def install(cls) -> None:
        from moto.iot.responses import IoTResponse

        if IoTResponse.__dict__.get("_sandbox_counted", False):
            return
        call_action = IoTResponse.call_action

        def counted(self: IoTResponse) -> Any:
            try:
                return call_action(self)
            finally:
                if self.method not in ("GET", "HEAD"):  # IoT reads with GET (a POST read costs one spare pass)
                    try:
                        access = self._get_action() in cls.ACCESS_ACTIONS
                    except Exception:  # noqa: BLE001 - unknown action: assume access changed (re-describe)
                        access = True
                    with cls._lock:
                        cls._count += 1
                        cls._access_changes += access

        IoTResponse.call_action = counted
        IoTResponse._sandbox_counted = True
