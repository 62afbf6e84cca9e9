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
