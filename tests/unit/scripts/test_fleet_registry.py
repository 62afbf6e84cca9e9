"""Enrollment into the registry as devices provision meanwhile: conditional writes only, thing names
held by one serial at a time, nothing moved back past `enrolled`, re-runs that change nothing."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from scripts.fleet_ops import registry as reg
from scripts.fleet_ops.manifest import Device, derived_thing_name
from tests.unit.support import TABLE, Registry, event

pytestmark = pytest.mark.usefixtures("aws")


def device(
    serial: str, device_type: str = "temperature-sensor", thing_name: str = "", line: int = 2, **extra: str
) -> Device:
    return Device(
        line=line,
        serial_number=serial,
        device_type=device_type,
        manufacturer="AcmeIoT",
        thing_name=thing_name or derived_thing_name(device_type, serial),
        **extra,
    )


@pytest.fixture
def fleet(registry: Registry) -> reg.Registry:
    return reg.Registry(registry.client, TABLE)


def enroll(fleet: reg.Registry, *devices: Device) -> tuple[reg.Plan, list[reg.Enrollment]]:
    plan = fleet.plan(list(devices))
    return plan, fleet.enroll(plan.writes()) + [e for e in plan.enrollments if e not in plan.writes()]


def outcomes(results: list[reg.Enrollment]) -> dict[str, str]:
    return {e.device.serial_number: e.outcome for e in results}


def reservation(registry: Registry, thing_name: str) -> dict[str, str] | None:
    return registry.get(reg.reservation_key(thing_name))


def test_new_devices_are_enrolled_with_their_thing_name_reserved(fleet: reg.Registry, registry: Registry) -> None:
    _, results = enroll(
        fleet,
        device("SN-0001", firmware_version="v1.0.0", location="plant-1"),
        device("SN-0002", "gateway", thing_name="gw-hall-2", line=3),
    )

    assert outcomes(results) == {"SN-0001": reg.NEW, "SN-0002": reg.NEW}
    item = registry.get("SN-0001")
    assert item is not None
    assert {
        k: item[k] for k in ("status", "deviceType", "manufacturer", "thingName", "firmwareVersion", "location")
    } == {
        "status": "enrolled",
        "deviceType": "temperature-sensor",
        "manufacturer": "AcmeIoT",
        "thingName": "temperature-sensor-SN-0001",
        "firmwareVersion": "v1.0.0",
        "location": "plant-1",
    }
    assert (reservation(registry, "gw-hall-2") or {}).get("reservedFor") == "SN-0002"
    # Reservations hold no deviceType or status: no index lists them.
    assert sorted(i["serialNumber"] for i in fleet.devices(status="enrolled")) == ["SN-0001", "SN-0002"]


def test_enrolling_the_same_rows_again_changes_nothing(fleet: reg.Registry, registry: Registry) -> None:
    enroll(fleet, device("SN-0001"), device("SN-0002"))
    before = registry.items()

    plan, results = enroll(fleet, device("SN-0001"), device("SN-0002"))

    assert plan.writes() == []
    assert outcomes(results) == {"SN-0001": reg.UNCHANGED, "SN-0002": reg.UNCHANGED}
    assert sorted(registry.items(), key=str) == sorted(before, key=str)


def test_a_device_that_starts_provisioning_after_the_plan_is_left_as_the_hook_made_it(
    fleet: reg.Registry, registry: Registry, hook: ModuleType
) -> None:
    """BatchWriteItem would put the item back to enrolled (it takes no conditions); the conditional
    write refuses, and the row is reported untouched."""
    enroll(fleet, device("SN-0001"))
    plan = fleet.plan([device("SN-0001", firmware_version="v2.0.0")])
    assert [e.outcome for e in plan.writes()] == [reg.UPDATED]

    assert hook.handler(event(SerialNumber="SN-0001")) == {
        "allowProvisioning": True,
        "parameterOverrides": {"ThingName": "temperature-sensor-SN-0001"},
    }
    results = fleet.enroll(plan.writes())

    assert [(e.outcome, e.detail) for e in results] == [(reg.UNTOUCHED, "already provisioning")]
    item = registry.get("SN-0001") or {}
    assert (item["status"], item["certificateId"], item["firmwareVersion"]) == ("provisioning", "a" * 64, "v1.0.0")


@pytest.mark.parametrize("status", ["provisioning", "provisioned", "revoked", "decommissioned", "failed"])
def test_a_row_for_a_device_past_enrolled_is_reported_and_untouched(
    fleet: reg.Registry, registry: Registry, status: str
) -> None:
    registry.enroll("SN-0001", status=status, thingName="temperature-sensor-SN-0001", certificateId="c" * 64)
    before = registry.items()

    plan, results = enroll(fleet, device("SN-0001", "gateway"))

    assert plan.writes() == []
    assert [(e.outcome, e.detail) for e in results] == [(reg.UNTOUCHED, f"already {status}")]
    assert registry.items() == before


def test_a_thing_name_is_held_by_one_serial_only(fleet: reg.Registry, registry: Registry) -> None:
    enroll(fleet, device("SN-0001", thing_name="line-7"))

    plan = fleet.plan([device("SN-0002", thing_name="line-7", line=9)])

    assert plan.writes() == []
    assert [str(p) for p in plan.problems] == ["line 9: thing name line-7 is held by serial SN-0001"]
    assert registry.get("SN-0002") is None


def test_two_enrollments_racing_for_one_thing_name_leave_it_to_one_serial(
    fleet: reg.Registry, registry: Registry
) -> None:
    """Both plans saw the name free; the second writer is refused at its reservation, writes nothing."""
    first = fleet.plan([device("SN-0001", thing_name="line-7")])
    second = fleet.plan([device("SN-0002", thing_name="line-7")])

    assert outcomes(fleet.enroll(first.writes())) == {"SN-0001": reg.NEW}
    results = fleet.enroll(second.writes())

    assert [(e.outcome, e.detail) for e in results] == [(reg.CONFLICT, "thing name line-7 is held by serial SN-0001")]
    assert registry.get("SN-0002") is None
    holders = [i for i in registry.items() if i.get("thingName", {}).get("S") == "line-7"]
    assert [h["serialNumber"]["S"] for h in holders] == ["SN-0001"]


def test_a_new_thing_name_for_an_enrolled_device_frees_the_old_one_in_the_same_write(
    fleet: reg.Registry, registry: Registry
) -> None:
    enroll(fleet, device("SN-0001", thing_name="old-name", location="plant-1"))

    _, results = enroll(fleet, device("SN-0001", thing_name="new-name"))

    assert outcomes(results) == {"SN-0001": reg.UPDATED}
    item = registry.get("SN-0001") or {}
    assert item["thingName"] == "new-name" and "location" not in item  # the manifest is what the device is
    assert reservation(registry, "old-name") is None
    assert (reservation(registry, "new-name") or {})["reservedFor"] == "SN-0001"
    assert outcomes(enroll(fleet, device("SN-0002", thing_name="old-name"))[1]) == {"SN-0002": reg.NEW}


def test_a_reservation_left_by_an_interrupted_enrollment_blocks_others_and_returns_to_its_serial(
    fleet: reg.Registry, registry: Registry
) -> None:
    """A run stopped between its two writes leaves the reservation without an item using it."""
    registry.client.put_item(
        TableName=TABLE,
        Item=reg.typed(
            {
                "serialNumber": reg.reservation_key("line-7"),
                "reservedFor": "SN-0001",
                "reservationToken": "t",
                "reservedAt": "x",
            }
        ),
    )

    assert [str(p) for p in fleet.plan([device("SN-0002", thing_name="line-7")]).problems] == [
        "line 2: thing name line-7 is held by serial SN-0001"
    ]
    _, results = enroll(fleet, device("SN-0001", thing_name="line-7"))

    assert outcomes(results) == {"SN-0001": reg.NEW}
    assert (registry.get("SN-0001") or {})["thingName"] == "line-7"
    assert (reservation(registry, "line-7") or {})["reservationToken"] != "t"


def test_a_new_device_enrolled_by_someone_else_meanwhile_keeps_their_enrollment_and_no_stray_reservation(
    fleet: reg.Registry, registry: Registry
) -> None:
    plan = fleet.plan([device("SN-0001", thing_name="mine")])
    enroll(fleet, device("SN-0001", thing_name="theirs"))  # another operator, first

    results = fleet.enroll(plan.writes())

    assert [e.outcome for e in results] == [reg.UPDATED]  # the row is applied to the enrolled device
    assert (registry.get("SN-0001") or {})["thingName"] == "mine"
    assert reservation(registry, "theirs") is None  # given back with the move
    assert [i["serialNumber"]["S"] for i in registry.items() if i["serialNumber"]["S"].startswith("thingName#")] == [
        "thingName#mine"
    ]


def test_a_device_enrolled_before_reservations_gets_its_thing_name_fixed_and_reserved(
    fleet: reg.Registry, registry: Registry
) -> None:
    registry.enroll("SN-0001", manufacturer="AcmeIoT")  # as scripts wrote the table before: no thing name

    _, results = enroll(fleet, device("SN-0001"))

    assert outcomes(results) == {"SN-0001": reg.UPDATED}
    assert (registry.get("SN-0001") or {})["thingName"] == "temperature-sensor-SN-0001"
    assert (reservation(registry, "temperature-sensor-SN-0001") or {})["reservedFor"] == "SN-0001"


def test_the_hook_gives_a_device_the_thing_name_it_was_enrolled_with(fleet: reg.Registry, hook: ModuleType) -> None:
    enroll(fleet, device("SN-0001", thing_name="line-7-sensor"))

    assert hook.handler(event(SerialNumber="SN-0001"))["parameterOverrides"] == {"ThingName": "line-7-sensor"}


def test_lists_by_status_and_type_read_only_the_matching_devices(fleet: reg.Registry) -> None:
    devices = [device(f"SN-{n:04d}", ("gateway", "temperature-sensor")[n % 2], line=n) for n in range(20)]
    enroll(fleet, *devices)
    fleet.client.update_item(
        TableName=TABLE,
        Key={"serialNumber": {"S": "SN-0000"}},
        UpdateExpression="SET #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": {"S": "provisioned"}},
    )

    page = fleet.page(status="enrolled", device_type="gateway")
    everything = [i for p in fleet.pages() for i in p.items]

    assert sorted(i["serialNumber"] for i in page.items) == [f"SN-{n:04d}" for n in range(2, 20, 2)]
    assert page.scanned == 9  # the query read the 9 matches, not the 40 items of the table
    assert len(everything) == 20  # a listing without filters leaves the reservations out
    first = fleet.page(status="enrolled", limit=5)
    rest = fleet.page(status="enrolled", next_token=first.next_token)
    assert len(first.items) == 5 and len(rest.items) == 14
    assert not {i["serialNumber"] for i in first.items} & {i["serialNumber"] for i in rest.items}


def test_a_move_is_refused_from_the_statuses_named(fleet: reg.Registry, registry: Registry) -> None:
    enroll(fleet, device("SN-0001"))

    assert fleet.move("SN-0001", reg.REVOKED, unless=[reg.REVOKED], fields={"revocationReason": "lost"})
    assert not fleet.move("SN-0001", reg.REVOKED, unless=[reg.REVOKED], fields={"revocationReason": "again"})
    assert not fleet.move("SN-0404", reg.REVOKED, unless=[], fields={})
    item: dict[str, Any] = registry.get("SN-0001") or {}
    assert (item["status"], item["revocationReason"]) == ("revoked", "lost")
    assert registry.get("SN-0404") is None
