"""The IoT registry under many threads (sandbox/iot/indexed_lookups.py,
thread_safe_registry.py): lookups by key, the same answers as moto's scans."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.iot.exceptions import ResourceNotFoundException
from moto.iot.models import iot_backends

from sandbox.iot import indexed_lookups as indexed_iot_lookups
from sandbox.iot import thread_safe_registry


def test_registry_lookups_by_key_answer_as_moto_scans_and_stay_consistent_under_threads(iot: Any) -> None:
    """Things and certificates are found by key (same answers as moto's scan), and registry calls from
    many threads (HTTP requests and the in-process fleet service at once) do not trip over each other."""
    indexed_iot_lookups.install()
    thread_safe_registry.install()
    backend = iot_backends["123456789012"]["us-east-1"]
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing(thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"a": "1"}})
    created = iot.create_keys_and_certificate(setAsActive=True)

    assert backend.describe_thing("dev-1").thing_type.thing_type_name == "sensor"
    assert backend.describe_certificate(created["certificateId"]).arn == created["certificateArn"]
    assert backend._get_principal(created["certificateArn"]).certificate_id == created["certificateId"]
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_thing(thingName="dev-2")
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_certificate(certificateId="0" * 64)

    errors: list[BaseException] = []
    iot.create_thing_group(thingGroupName="fleet")

    def create() -> None:
        for n in range(1500):
            backend.create_thing(f"race-{n}", "", None)
            backend.add_thing_to_thing_group("fleet", None, f"race-{n}", None)

    def list_the_group() -> None:  # moto's HTTP layer walks the listing after the call returns
        for _ in range(300):
            try:
                [thing.thing_name for thing in backend.list_things_in_thing_group("fleet")]
            except RuntimeError as error:
                errors.append(error)

    threads = [threading.Thread(target=create), threading.Thread(target=list_the_group)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so an unlocked walk is caught mid-way
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(backend.things) == 1501
    assert backend.describe_thing("race-1499").thing_name == "race-1499"
    with pytest.raises(ResourceNotFoundException):  # answered from the key alone: no scan
        backend.describe_thing("race-1500")


def test_attachment_lookups_answer_as_moto_and_deleting_a_fleet_does_not_scan_it(iot: Any) -> None:
    """A principal's policies and things, a thing's principals and a policy's targets come from indexes
    that follow every attach and detach; deletes are refused while something is attached, as moto
    refuses them."""
    indexed_iot_lookups.install()
    thread_safe_registry.install()
    backend = iot_backends["123456789012"]["us-east-1"]
    iot.create_policy(policyName="device", policyDocument='{"Version": "2012-10-17", "Statement": []}')
    iot.create_policy(policyName="extra", policyDocument='{"Version": "2012-10-17", "Statement": []}')
    certificates = [iot.create_keys_and_certificate(setAsActive=True) for _ in range(3)]
    arns = [c["certificateArn"] for c in certificates]
    for n, arn in enumerate(arns):
        iot.create_thing(thingName=f"dev-{n}")
        iot.attach_thing_principal(thingName=f"dev-{n}", principal=arn)
        iot.attach_policy(policyName="device", target=arn)
    iot.attach_policy(policyName="extra", target=arns[0])
    iot.attach_thing_principal(thingName="dev-1", principal=arns[0])
    iot.detach_thing_principal(thingName="dev-1", principal=arns[1])

    def names(listed: list[dict[str, Any]]) -> list[str]:
        return sorted(p["policyName"] for p in listed)

    assert names(iot.list_attached_policies(target=arns[0])["policies"]) == ["device", "extra"]
    assert names(iot.list_principal_policies(principal=arns[1])["policies"]) == ["device"]
    assert sorted(iot.list_principal_things(principal=arns[0])["things"]) == ["dev-0", "dev-1"]
    assert iot.list_principal_things(principal=arns[1])["things"] == []
    assert sorted(iot.list_thing_principals(thingName="dev-1")["principals"]) == [arns[0]]
    assert sorted(iot.list_targets_for_policy(policyName="device")["targets"]) == sorted(arns)
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.list_thing_principals(thingName="dev-9")
    with pytest.raises(ClientError, match="DeleteConflict"):
        iot.delete_policy(policyName="extra")
    with pytest.raises(ClientError, match="is still attached to one or more principals"):
        iot.delete_thing(thingName="dev-0")
    iot.update_certificate(certificateId=certificates[2]["certificateId"], newStatus="INACTIVE")
    with pytest.raises(ClientError, match="DeleteConflict"):  # dev-2 and the device policy still attached
        iot.delete_certificate(certificateId=certificates[2]["certificateId"])
    iot.detach_thing_principal(thingName="dev-2", principal=arns[2])
    iot.delete_certificate(certificateId=certificates[2]["certificateId"], forceDelete=True)  # policies go too
    iot.delete_thing(thingName="dev-2")
    iot.detach_policy(policyName="extra", target=arns[0])
    iot.delete_policy(policyName="extra")
    # The indexes hold exactly what moto's own dicts hold.
    for attachments in (backend.principal_policies, backend.principal_things):
        by_principal: dict[str, set[tuple[str, str]]] = {}
        for key in attachments:
            by_principal.setdefault(key[0], set()).add(key)
        assert {k: set(v) for k, v in attachments.by_principal.items()} == by_principal
        assert sum(len(v) for v in attachments.by_other.values()) == len(attachments)
    assert iot.list_thing_principals(thingName="dev-1")["principals"] == [arns[0]]
