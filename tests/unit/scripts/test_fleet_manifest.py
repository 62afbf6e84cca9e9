"""Manufacturing manifests as an operator writes them: every bad row reported with its line, checked
by the provisioning hook's own rules (so a manifest never enrolls a device the hook would refuse)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scripts.fleet_ops import manifest
from scripts.fleet_ops.hook_rules import hook

ALLOWED = ["temperature-sensor", "gateway"]


def check(tmp_path: Path, text: str, name: str = "batch.csv") -> tuple[list[manifest.Device], list[str]]:
    path = tmp_path / name
    path.write_text(text)
    rows, problems = manifest.read(path)
    devices, invalid = manifest.validate(rows, ALLOWED)
    return devices, [str(p) for p in sorted(problems + invalid, key=lambda p: p.line)]


def test_every_bad_row_of_a_csv_manifest_is_reported_with_its_line(tmp_path: Path) -> None:
    devices, problems = check(
        tmp_path,
        "\n".join(
            [
                "serialNumber,deviceType,manufacturer,firmwareVersion,location,thingName",
                "SN-0001,gateway,AcmeIoT,v1.0.0,plant-1,",  # 2: fine
                "SN-0002,toaster,AcmeIoT,,,",  # 3: type the stack does not allow
                "SN-0001,gateway,AcmeIoT,,,",  # 4: serial repeated
                "SN-0003,gateway,AcmeIoT,,,gateway-SN-0001",  # 5: thing name repeated (line 2's derived one)
                "SN 0004,gateway,AcmeIoT,,,",  # 6: serial the hook refuses
                "SN-0005,gateway,,,,",  # 7: manufacturer missing
                "SN-0006,gateway,AcmeIoT,1.0,,",  # 8: firmware version the hook refuses
                "",  # 9: blank: no device
                "SN-0007,temperature-sensor,AcmeIoT,,,,extra",  # 10: more cells than columns
            ]
        )
        + "\n",
    )

    assert [d.serial_number for d in devices] == ["SN-0001"]
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in (3, 4, 5, 6, 7, 8, 10)]
    assert "device type toaster is not allowed" in problems[0]
    assert "serial SN-0001 is also on line 2" in problems[1]
    assert "thing name gateway-SN-0001 is also on line 2" in problems[2]
    assert "SerialNumber does not match" in problems[3]
    assert "manufacturer is missing" in problems[4]
    assert "FirmwareVersion does not match" in problems[5]


def test_a_missing_or_unknown_column_is_reported_once_on_the_header_line(tmp_path: Path) -> None:
    devices, problems = check(tmp_path, "serialNumber,deviceType,firmware\nSN-0001,gateway,v1.0.0\n")

    assert devices == []
    assert problems == [
        "line 1: unknown column 'firmware'; the columns are serialNumber, deviceType, manufacturer, firmwareVersion, "
        "location, thingName, factoryPublicKey",
        "line 1: missing column 'manufacturer' (required: serialNumber, deviceType, manufacturer)",
    ]


def test_json_rows_keep_the_line_they_start_on(tmp_path: Path) -> None:
    text = (
        '[\n  {"serialNumber": "SN-0001", "deviceType": "gateway", "manufacturer": "AcmeIoT"},\n'
        '  {"serialNumber": "SN-0002",\n   "deviceType": "gateway"},\n'
        '  {"serialNumber": "SN-0003", "deviceType": "gateway", "manufacturer": "AcmeIoT", "colour": "red"},\n'
        '  {"serialNumber": 4, "deviceType": "gateway", "manufacturer": "AcmeIoT"}\n]\n'
    )
    devices, problems = check(tmp_path, text, "batch.json")

    assert [d.serial_number for d in devices] == ["SN-0001"]
    assert problems == [
        "line 3: manufacturer is missing",
        "line 5: unknown field 'colour'; the fields are serialNumber, deviceType, manufacturer, firmwareVersion, "
        "location, thingName, factoryPublicKey",
        "line 6: serialNumber must be a string",
    ]
    one_a_line = '{"serialNumber": "SN-0001", "deviceType": "gateway", "manufacturer": "A"}\n' + (
        '{"serialNumber": "SN-0002", "deviceType": "gateway", "manufacturer": "A"}\n'
    )
    lines, _ = check(tmp_path, one_a_line, "batch.jsonl")
    assert [d.line for d in lines] == [1, 2]


def test_a_manifest_that_cannot_be_read_is_refused_whole(tmp_path: Path) -> None:
    for name, text in (("a.json", '[{"serialNumber": "SN-0001"'), ("b.csv", ""), ("c.json", "[{}")):
        with pytest.raises(manifest.ManifestError):
            check(tmp_path, text, name)


def test_the_thing_name_is_the_given_one_else_the_one_the_hook_derives(tmp_path: Path) -> None:
    devices, problems = check(
        tmp_path,
        "serialNumber,deviceType,manufacturer,thingName\nSN-0001,gateway,AcmeIoT,line-7-gw\nSN-0002,gateway,AcmeIoT,\n",
    )

    assert problems == []
    assert [d.thing_name for d in devices] == ["line-7-gw", "gateway-SN-0002"]
    assert hook.Request("SN-0002", "gateway", "AcmeIoT", "", "", None, "0" * 64, "").derived_thing_name == (
        devices[1].thing_name
    )


def test_rows_are_checked_by_the_hook_itself_so_a_tightened_rule_applies_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source of truth: the manifest has no copy of the hook's patterns to fall out of step with."""
    text = "serialNumber,deviceType,manufacturer\nsn-lower-1,gateway,AcmeIoT\n"
    assert check(tmp_path, text)[1] == []

    monkeypatch.setattr(hook, "SERIAL_NUMBER", re.compile(r"^[A-Z0-9-]{3,64}$"))

    assert check(tmp_path, text)[1] == [
        "line 2: the provisioning hook would refuse it: SerialNumber does not match ^[A-Z0-9-]{3,64}$"
    ]


def test_a_reservation_key_can_never_be_a_serial_the_hook_accepts() -> None:
    from fleet_shared.registry import THING_NAME_RESERVATION_PREFIX

    with pytest.raises(hook.Invalid, match="SerialNumber"):
        hook.parse_request(
            {
                "certificateId": "0" * 64,
                "parameters": {
                    "SerialNumber": THING_NAME_RESERVATION_PREFIX + "gateway-SN-0001",
                    "DeviceType": "gateway",
                    "Manufacturer": "AcmeIoT",
                },
            }
        )


def public_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(curve or ec.SECP256R1()).public_key()


def test_a_factory_key_is_enrolled_from_pem_or_base64_der_and_bad_ones_are_refused_by_line(tmp_path: Path) -> None:
    key = public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    p384 = public_key(ec.SECP384R1()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rows = [
        {"serialNumber": "SN-0001", "deviceType": "gateway", "manufacturer": "A", "factoryPublicKey": pem},
        {
            "serialNumber": "SN-0002",
            "deviceType": "gateway",
            "manufacturer": "A",
            "factoryPublicKey": base64.b64encode(der).decode(),
        },
        {
            "serialNumber": "SN-0003",
            "deviceType": "gateway",
            "manufacturer": "A",
            "factoryPublicKey": base64.b64encode(p384).decode(),
        },
        {"serialNumber": "SN-0004", "deviceType": "gateway", "manufacturer": "A", "factoryPublicKey": "c2VjcmV0"},
    ]
    devices, problems = check(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n", "batch.jsonl")

    assert [d.serial_number for d in devices] == ["SN-0001", "SN-0002"]
    assert devices[0].factory_public_key == devices[1].factory_public_key == base64.b64encode(der).decode()
    assert devices[0].fields()["factoryPublicKey"] == base64.b64encode(der).decode()  # what the hook reads
    assert manifest.fingerprint(devices[0].factory_public_key) == "SHA256:" + hashlib.sha256(der).hexdigest()
    assert problems[0].startswith("line 3: factoryPublicKey:") and "P-256" in problems[0]
    assert problems[1].startswith("line 4: factoryPublicKey: not an EC public key")


def test_while_attestation_is_required_a_row_without_a_factory_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("serialNumber,deviceType,manufacturer\nSN-0001,gateway,AcmeIoT\n")
    rows, _ = manifest.read(path)

    assert manifest.validate(rows, ALLOWED)[1] == []
    _, problems = manifest.validate(rows, ALLOWED, require_factory_key=True)
    assert [str(p) for p in problems] == [
        "line 2: factoryPublicKey is missing, and the stack requires attestation (RequireAttestation)"
    ]


def test_a_thing_name_taking_the_claim_client_id_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text(
        "serialNumber,deviceType,manufacturer,thingName\nSN-0001,gateway,A,claim-boiler\nSN-0002,gateway,A,boiler\n"
    )
    rows, _ = manifest.read(path)

    devices, problems = manifest.validate(rows, ALLOWED)
    assert [d.serial_number for d in devices] == ["SN-0002"]
    assert [str(p) for p in problems] == [
        "line 2: thing name claim-boiler starts with the claim client-id prefix 'claim-' (ClaimClientIdPrefix): "
        "the claim certificate could connect as it"
    ]
    assert [d.serial_number for d in manifest.validate(rows, ALLOWED, claim_client_id_prefix="")[0]] == [
        "SN-0001",
        "SN-0002",
    ]
