"""The operator CLI (scripts/fleet.py) against the deployed sandbox stack, run as an operator runs it,
with devices provisioning through the real device client: what the operator reads, and what the
registry, IoT and the devices see afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import device_client as device
from tests.integration.conftest import Deployment
from tests.integration.devices import Fleet

pytestmark = pytest.mark.integration
HEADER = "serialNumber,deviceType,manufacturer,firmwareVersion,location,thingName"


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("cli-devices"))


def manifest(tmp_path: Path, *rows: str, name: str = "batch.csv") -> str:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return str(path)


def registry_items(fleet: Fleet, prefix: str) -> dict[str, dict[str, Any]]:
    items = fleet.dynamodb.scan(TableName=fleet.table)["Items"]
    return {i["serialNumber"]["S"]: i for i in items if i["serialNumber"]["S"].startswith(prefix)}


def test_a_bad_manifest_is_refused_whole_with_each_bad_row_on_its_line(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.cli("enroll", manifest(tmp_path, "CLI-HELD-1,gateway,AcmeIoT,,,cli-line-9"))[0] == 0
    path = manifest(
        tmp_path,
        "CLI-BAD-1,gateway,AcmeIoT,v1.0.0,plant-1,",  # line 2: fine
        "CLI-BAD-2,toaster,AcmeIoT,,,",  # 3: a type the stack does not allow
        "CLI-BAD-1,gateway,AcmeIoT,,,",  # 4: serial repeated
        "CLI-BAD-3,gateway,AcmeIoT,,,gateway-CLI-BAD-1",  # 5: thing name repeated (line 2's)
        "CLI BAD 4,gateway,AcmeIoT,,,",  # 6: a serial the hook refuses
        "CLI-BAD-5,gateway,AcmeIoT,,,cli-line-9",  # 7: thing name another serial holds in the registry
        name="bad.csv",
    )

    code, report, _ = fleet.cli("enroll", path, "--json")

    assert code == 1
    assert [(p["line"], p["serialNumber"]) for p in report["problems"]] == [
        (3, "CLI-BAD-2"),
        (4, "CLI-BAD-1"),
        (5, "CLI-BAD-3"),
        (6, "CLI BAD 4"),
        (7, "CLI-BAD-5"),
    ]
    messages = [p["message"] for p in report["problems"]]
    assert "device type toaster is not allowed" in messages[0]
    assert messages[1:3] == ["serial CLI-BAD-1 is also on line 2", "thing name gateway-CLI-BAD-1 is also on line 2"]
    assert "SerialNumber does not match" in messages[3]
    assert messages[4] == "thing name cli-line-9 is held by serial CLI-HELD-1"
    assert (report["written"], registry_items(fleet, "CLI-BAD")) == (False, {})  # not even the good row

    missing = tmp_path / "missing.csv"
    missing.write_text("serialNumber,deviceType\nCLI-BAD-6,gateway\n")
    code, report, _ = fleet.cli("enroll", str(missing), "--json")
    assert (code, [(p["line"], p["message"]) for p in report["problems"]]) == (
        1,
        [(1, "missing column 'manufacturer' (required: serialNumber, deviceType, manufacturer)")],
    )

    code, report, _ = fleet.cli("enroll", path, "--skip-invalid", "--json")
    assert (code, report["counts"]) == (3, {"enrolled": 1})  # 3: rows were skipped
    assert set(registry_items(fleet, "CLI-BAD")) == {"CLI-BAD-1"}


def test_enrolling_again_changes_nothing_and_leaves_a_provisioned_device_as_it_is(fleet: Fleet, tmp_path: Path) -> None:
    path = manifest(
        tmp_path, "CLI-AGAIN-1,temperature-sensor,AcmeIoT,v1.0.0,,cli-line-3-probe", "CLI-AGAIN-2,gateway,AcmeIoT,,,"
    )
    code, report, _ = fleet.cli("enroll", path, "--json")
    assert (code, report["counts"]) == (0, {"enrolled": 2})
    provisioned = fleet.provision("CLI-AGAIN-1", "temperature-sensor", skip_device_check=True)
    assert provisioned["thingName"] == "cli-line-3-probe"  # fixed at enrollment; the hook gave it
    before = registry_items(fleet, "CLI-AGAIN")

    code, _, said = fleet.cli("enroll", path)

    assert code == 0
    assert "nothing to change: the registry already holds every row as given (1 unchanged, 1 untouched)" in said
    assert "CLI-AGAIN-1" in said and "already provisioned" in said  # reported, left as it is
    assert registry_items(fleet, "CLI-AGAIN") == before
    changed = manifest(
        tmp_path, "CLI-AGAIN-1,gateway,OtherCorp,v9.9.9,,", "CLI-AGAIN-2,gateway,AcmeIoT,v2.0.0,,", name="changed.csv"
    )
    code, report, _ = fleet.cli("enroll", changed, "--json")
    assert (code, report["counts"]) == (0, {"updated": 1, "untouched": 1})
    after = registry_items(fleet, "CLI-AGAIN")
    assert after["CLI-AGAIN-1"] == before["CLI-AGAIN-1"]
    assert after["CLI-AGAIN-2"]["firmwareVersion"]["S"] == "v2.0.0"


def test_list_by_status_and_type_reads_only_the_matching_devices(fleet: Fleet, tmp_path: Path) -> None:
    rows = [f"CLI-LIST-{n},{('pressure-sensor', 'humidity-sensor')[n % 2]},AcmeIoT,,," for n in range(6)]
    assert fleet.cli("enroll", manifest(tmp_path, *rows))[0] == 0
    fleet.provision("CLI-LIST-0", "pressure-sensor", skip_device_check=True)

    code, listed, _ = fleet.cli("list", "--status", "enrolled", "--type", "pressure-sensor", "--json")

    assert code == 0
    assert all((d["status"], d["deviceType"]) == ("enrolled", "pressure-sensor") for d in listed["devices"])
    assert {"CLI-LIST-2", "CLI-LIST-4"} <= {d["serialNumber"] for d in listed["devices"]}
    assert "CLI-LIST-0" not in {d["serialNumber"] for d in listed["devices"]}
    assert listed["scannedCount"] == listed["count"]  # the index read nothing but the matches
    table_size = fleet.dynamodb.scan(TableName=fleet.table, Select="COUNT")["ScannedCount"]
    assert listed["scannedCount"] < table_size
    _, first, _ = fleet.cli("list", "--type", "humidity-sensor", "--limit", "2", "--json")
    _, rest, _ = fleet.cli("list", "--type", "humidity-sensor", "--next-token", first["nextToken"], "--json")
    shown = [d["serialNumber"] for d in first["devices"] + rest["devices"]]
    assert first["count"] == 2 and len(shown) == len(set(shown)) and {"CLI-LIST-1", "CLI-LIST-3"} <= set(shown)


def test_show_gives_the_registry_item_thing_groups_certificate_expiry_and_shadow(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.cli("enroll", manifest(tmp_path, "CLI-SHOW-1,gateway,AcmeIoT,v1.2.3,plant-1,"))[0] == 0
    provisioned = fleet.provision("CLI-SHOW-1", "gateway", skip_device_check=True)

    code, shown, _ = fleet.cli("show", "CLI-SHOW-1", "--json")

    assert code == 0
    assert shown["registry"]["status"] == "provisioned"
    assert shown["thing"]["thingTypeName"] == fleet.outputs["thing_type_name"]
    assert shown["thing"]["attributes"]["serialNumber"] == "CLI-SHOW-1"
    assert shown["groups"] == [fleet.outputs["thing_group_names"]["gateway"]]
    (certificate,) = shown["certificates"]
    assert (certificate["certificateId"], certificate["status"]) == (provisioned["certificateId"], "ACTIVE")
    assert certificate["notAfter"] > time.strftime("%Y-%m-%d")
    assert certificate["policies"] == [fleet.outputs["device_policy_names"]["gateway"]]
    assert shown["shadow"]["desired"]["logLevel"] == "INFO"  # the gateway's initial shadow
    assert fleet.cli("show", "CLI-NOBODY-1")[0] == 1


def test_why_names_the_hook_reason_for_each_refusal_the_demo_shows(fleet: Fleet, tmp_path: Path) -> None:
    """The demo's four refusals: unknown serial, revoked device, wrong type, replay."""
    assert (
        fleet.cli(
            "enroll",
            manifest(
                tmp_path,
                "CLI-WHY-REVOKED,humidity-sensor,AcmeIoT,,,",
                "CLI-WHY-TYPE,humidity-sensor,AcmeIoT,,,",
                "CLI-WHY-REPLAY,humidity-sensor,AcmeIoT,,,",
            ),
        )[0]
        == 0
    )
    assert fleet.cli("revoke", "CLI-WHY-REVOKED", "--reason", "lost in transit")[0] == 0
    fleet.provision("CLI-WHY-REPLAY", "humidity-sensor", skip_device_check=True)
    cases = {
        "CLI-WHY-UNKNOWN": ("humidity-sensor", "NOT_ENROLLED"),
        "CLI-WHY-REVOKED": ("humidity-sensor", "REVOKED"),
        "CLI-WHY-TYPE": ("gateway", "DEVICE_TYPE_MISMATCH"),
        "CLI-WHY-REPLAY": ("humidity-sensor", "ALREADY_PROVISIONED"),
    }
    for serial, (device_type, _) in cases.items():
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
            fleet.provision(serial, device_type, skip_device_check=True)

    for serial, (_, reason) in cases.items():
        code, answer, _ = fleet.cli("why", serial, "--json")
        assert code == 0
        assert answer["decisions"][-1]["reason"] == reason, serial
        assert answer["findings"][0].startswith(f"last decision {answer['decisions'][-1]['time']}: {reason}: ")
    _, replay, _ = fleet.cli("why", "CLI-WHY-REPLAY", "--json")
    assert [d["reason"] for d in replay["decisions"]] == ["ALLOWED", "ALREADY_PROVISIONED"]
    code, _, said = fleet.cli("why", "CLI-WHY-REVOKED")
    assert "registry: revoked at" in said and "(lost in transit)" in said


def test_a_revoked_device_is_disconnected_and_can_neither_connect_nor_provision_again(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert fleet.cli("enroll", manifest(tmp_path, "CLI-REVOKE-1,pressure-sensor,AcmeIoT,,,"))[0] == 0
    result = fleet.provision("CLI-REVOKE-1", "pressure-sensor", skip_device_check=True)
    drops: list[Any] = []
    connected = device.connect(
        fleet.target,
        result["certificateFile"],
        result["privateKeyFile"],
        result["thingName"],
        15,
        on_disconnection=drops.append,
    )
    try:
        code, revoked, _ = fleet.cli("revoke", "CLI-REVOKE-1", "--reason", "reported stolen", "--json")
        assert (code, revoked["certificatesRevoked"]) == (0, [result["certificateId"]])
        deadline = time.monotonic() + 10
        while not drops and time.monotonic() < deadline:
            time.sleep(0.1)
        assert drops, "the broker did not disconnect the revoked device"  # as AWS IoT does
    finally:
        connected.close()

    with pytest.raises(Exception):  # noqa: B017 - the SDK reports a refused TLS handshake in several ways
        device.connect(fleet.target, result["certificateFile"], result["privateKeyFile"], result["thingName"], 10)
    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("CLI-REVOKE-1", "pressure-sensor", skip_device_check=True)
    assert fleet.cli("why", "CLI-REVOKE-1", "--json")[1]["decisions"][-1]["reason"] == "REVOKED"
    item = fleet.registry("CLI-REVOKE-1")
    assert (item["status"], item["revocationReason"]) == ("revoked", "reported stolen")
    certificate = fleet.iot.describe_certificate(certificateId=result["certificateId"])["certificateDescription"]
    assert certificate["status"] == "REVOKED"
    code, again, _ = fleet.cli("revoke", "CLI-REVOKE-1", "--reason", "second report", "--json")
    assert (code, again["alreadyRevoked"], again["reason"]) == (0, True, "reported stolen")


def test_decommission_leaves_no_thing_or_certificate_and_runs_again_harmlessly(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.cli("enroll", manifest(tmp_path, "CLI-GONE-1,gateway,AcmeIoT,,,"))[0] == 0
    result = fleet.provision("CLI-GONE-1", "gateway")
    thing = result["thingName"]

    code, done, _ = fleet.cli("decommission", "CLI-GONE-1", "--json")

    assert (code, done["certificatesDeleted"], done["thingsDeleted"]) == (0, [result["certificateId"]], [thing])
    assert thing not in [t["thingName"] for t in fleet.iot.list_things()["things"]]
    assert result["certificateId"] not in [c["certificateId"] for c in fleet.iot.list_certificates()["certificates"]]
    assert (
        thing
        not in fleet.iot.list_things_in_thing_group(thingGroupName=fleet.outputs["thing_group_names"]["gateway"])[
            "things"
        ]
    )
    assert fleet.registry("CLI-GONE-1")["status"] == "decommissioned"
    code, again, _ = fleet.cli("decommission", "CLI-GONE-1", "--json")
    assert (code, again["alreadyDecommissioned"], again["thingsDeleted"]) == (0, True, [])
    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("CLI-GONE-1", "gateway", skip_device_check=True)
    before = fleet.footprint("CLI-GONE-1", "CLI-NOBODY-2")
    code, _, said = fleet.cli("decommission", "CLI-NOBODY-2")
    assert (code, "no device CLI-NOBODY-2 in the registry" in said) == (1, True)
    assert fleet.footprint("CLI-GONE-1", "CLI-NOBODY-2") == before


def test_expiring_lists_claim_and_device_certificates_soonest_first(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.cli("enroll", manifest(tmp_path, "CLI-EXPIRY-1,temperature-sensor,AcmeIoT,,,"))[0] == 0
    result = fleet.provision("CLI-EXPIRY-1", "temperature-sensor", skip_device_check=True)

    _, within_ten_years, _ = fleet.cli("expiring", "--days", "3700", "--json")
    _, within_a_month, _ = fleet.cli("expiring", "--days", "30", "--json")

    entries = within_ten_years["certificates"]
    assert {
        "kind": "claim",
        "name": "generation 1",
        "certificate_id": fleet.outputs["claim_certificate_id"],
    }.items() <= (next(e for e in entries if e["kind"] == "claim").items())
    device_entry = next(e for e in entries if e["name"] == "CLI-EXPIRY-1")
    assert (device_entry["certificate_id"], device_entry["status"]) == (result["certificateId"], "ACTIVE")
    assert 3000 < device_entry["days_left"] <= 3650  # the sandbox CA issues for ten years
    assert [e["not_after"] for e in entries] == sorted(e["not_after"] for e in entries)
    assert within_a_month["certificates"] == []
