"""Manufacturing manifests: one row per device (CSV with a header, a JSON array, or JSON Lines), read
and checked before anything is written. Each problem is reported with the line it is on.

A row passes when the pre-provisioning hook would accept the RegisterThing parameters it describes
(checked by the hook's own parse_request, so a manifest never enrolls a device the hook would then
refuse as INVALID_PARAMETERS), its type is one the stack allows, and no other row has its serial or
its thing name. Whether the registry agrees (a thing name another serial holds) is the registry's
check, made next (registry.Registry.plan).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.fleet_ops.hook_rules import hook

# Manifest column -> the RegisterThing parameter the device will send with it.
COLUMNS = {
    "serialNumber": "SerialNumber",
    "deviceType": "DeviceType",
    "manufacturer": "Manufacturer",
    "firmwareVersion": "FirmwareVersion",
    "location": "Location",
    "thingName": "ThingName",
}
# Registry-only columns: the device sends none of them. factoryPublicKey: the device's factory key (EC
# P-256, PEM or base64 DER SubjectPublicKeyInfo), whose signature the hook checks (attestation).
REGISTRY_COLUMNS = ("factoryPublicKey",)
ALL_COLUMNS = (*COLUMNS, *REGISTRY_COLUMNS)
REQUIRED = ("serialNumber", "deviceType", "manufacturer")
PLACEHOLDER_CERTIFICATE_ID = "0" * 64  # parse_request checks an event's certificate id; a manifest has none


class ManifestError(ValueError):
    """The manifest cannot be read at all (not one row could be trusted)."""


@dataclass(frozen=True)
class Device:
    """One valid manifest row: what the registry will hold for the device."""

    line: int
    serial_number: str
    device_type: str
    manufacturer: str
    thing_name: str  # the one given, else <type>-<serial> (what the hook derives)
    firmware_version: str = ""
    location: str = ""
    factory_public_key: str = ""  # base64 DER SubjectPublicKeyInfo, as the hook reads it

    def fields(self) -> dict[str, str]:
        """The registry attributes a manifest sets (optional ones only when given)."""
        values = {"deviceType": self.device_type, "manufacturer": self.manufacturer, "thingName": self.thing_name}
        if self.firmware_version:
            values["firmwareVersion"] = self.firmware_version
        if self.location:
            values["location"] = self.location
        if self.factory_public_key:
            values[hook.FACTORY_KEY_ATTRIBUTE] = self.factory_public_key
        return values


@dataclass(frozen=True)
class Problem:
    line: int
    message: str
    serial_number: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class RawRow:
    line: int
    values: dict[str, Any]


def factory_key_text(text: str) -> str:
    """A factory public key as the registry stores it (base64 DER); ValueError says why it is not one."""
    return base64.b64encode(hook.factory_key(text).to_der()).decode()


def fingerprint(stored_key: str) -> str:
    """SHA256:<hex> of the key's DER, to compare with what the factory recorded."""
    return "SHA256:" + hashlib.sha256(base64.b64decode(stored_key)).hexdigest()


def derived_thing_name(device_type: str, serial_number: str) -> str:
    """The thing name the hook gives a device enrolled without one (provisioning_hook.Request)."""
    return f"{device_type}-{serial_number}"


def read(path: Path) -> tuple[list[RawRow], list[Problem]]:
    """The manifest's rows with their line numbers, and the problems of its shape (unknown or missing
    columns, rows that are not objects). CSV unless the file is JSON (.json, .jsonl, .ndjson)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from None
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        return _json_rows(text)
    return _csv_rows(text)


def _csv_rows(text: str) -> tuple[list[RawRow], list[Problem]]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        raise ManifestError("the manifest is empty: it needs a header line naming its columns") from None
    except csv.Error as error:
        raise ManifestError(f"line 1: {error}") from None
    problems = _header_problems(header)
    if problems:
        return [], problems  # every row would repeat the header's problem: report it once
    rows: list[RawRow] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line is no device
            if len(cells) > len(header):
                problems.append(Problem(line, f"{len(cells)} cells, but the header names {len(header)} columns"))
                continue
            rows.append(RawRow(line, {name: cell.strip() for name, cell in zip(header, cells, strict=False) if name}))
    except csv.Error as error:
        problems.append(Problem(reader.line_num, f"not valid CSV: {error}"))
    return rows, problems


def _header_problems(header: Sequence[str]) -> list[Problem]:
    problems = []
    unknown = [name for name in header if name not in ALL_COLUMNS]
    if unknown:
        problems.append(Problem(1, f"unknown column {unknown[0]!r}; the columns are {', '.join(ALL_COLUMNS)}"))
    for name in REQUIRED:
        if name not in header:
            problems.append(Problem(1, f"missing column {name!r} (required: {', '.join(REQUIRED)})"))
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        problems.append(Problem(1, f"column {duplicated[0]!r} appears twice"))
    return problems


def _json_rows(text: str) -> tuple[list[RawRow], list[Problem]]:
    """A JSON array of objects, or one object per line (JSON Lines); each row keeps the line it starts on."""
    decoder = json.JSONDecoder()
    rows: list[RawRow] = []
    problems: list[Problem] = []
    position = _skip_space(text, 0)
    in_array = text.startswith("[", position)
    if in_array:
        position = _skip_space(text, position + 1)
    while position < len(text):
        if in_array and text.startswith("]", position):
            position = _skip_space(text, position + 1)
            if position < len(text):
                problems.append(Problem(_line(text, position), "text after the end of the array"))
            return rows, problems
        line = _line(text, position)
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ManifestError(f"line {error.lineno}: not valid JSON: {error.msg}") from None
        if isinstance(value, dict):
            unknown = [str(name) for name in value if name not in ALL_COLUMNS]
            if unknown:
                problems.append(Problem(line, f"unknown field {unknown[0]!r}; the fields are {', '.join(ALL_COLUMNS)}"))
            else:
                rows.append(RawRow(line, value))
        else:
            problems.append(Problem(line, "a row must be an object of the manifest's fields"))
        position = _skip_space(text, position)
        if in_array and text.startswith(",", position):
            position = _skip_space(text, position + 1)
    if in_array:
        raise ManifestError(f"line {_line(text, position)}: the JSON array is not closed")
    return rows, problems


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def validate(
    rows: Iterable[RawRow],
    allowed_device_types: Sequence[str],
    *,
    claim_client_id_prefix: str = "claim-",
    require_factory_key: bool = False,
) -> tuple[list[Device], list[Problem]]:
    """The rows that pass every check on their own and against each other, and a problem per row that
    does not (the first problem found in it). A thing name may not start with the claim client-id prefix
    (the claim certificate could connect as that thing); `require_factory_key`: the stack requires
    attestation, so a row without a factory key could never provision."""
    devices: list[Device] = []
    problems: list[Problem] = []
    serials: dict[str, int] = {}
    thing_names: dict[str, int] = {}
    for row in rows:
        device, problem = _device(row, allowed_device_types, claim_client_id_prefix, require_factory_key)
        if problem is None and device is not None:
            if device.serial_number in serials:
                problem = Problem(
                    row.line,
                    f"serial {device.serial_number} is also on line {serials[device.serial_number]}",
                    device.serial_number,
                )
            elif device.thing_name in thing_names:
                problem = Problem(
                    row.line,
                    f"thing name {device.thing_name} is also on line {thing_names[device.thing_name]}",
                    device.serial_number,
                )
        if device is not None:
            # A row counts for the duplicate checks even when it is bad in another way: its twin is a
            # duplicate whichever of the two the operator fixes.
            serials.setdefault(device.serial_number, row.line)
            thing_names.setdefault(device.thing_name, row.line)
        if problem is not None:
            problems.append(problem)
        elif device is not None:
            devices.append(device)
    return devices, problems


def _device(
    row: RawRow, allowed_device_types: Sequence[str], prefix: str, require_factory_key: bool
) -> tuple[Device | None, Problem | None]:
    values = row.values
    serial = values.get("serialNumber") if isinstance(values.get("serialNumber"), str) else ""
    for name in REQUIRED:
        if values.get(name) in (None, ""):
            return None, Problem(row.line, f"{name} is missing", str(serial or ""))
    not_text = [name for name, value in values.items() if not isinstance(value, str)]
    if not_text:
        return None, Problem(row.line, f"{not_text[0]} must be a string", str(serial or ""))
    texts: dict[str, str] = {name: str(value) for name, value in values.items() if value != ""}
    thing_name = texts.get("thingName") or derived_thing_name(texts["deviceType"], texts["serialNumber"])
    key = ""
    key_problem = ""
    if "factoryPublicKey" in texts:
        try:
            key = factory_key_text(texts["factoryPublicKey"])
        except ValueError as error:
            key_problem = f"factoryPublicKey: {error}"
    elif require_factory_key:
        key_problem = "factoryPublicKey is missing, and the stack requires attestation (RequireAttestation)"
    device = Device(
        line=row.line,
        serial_number=texts["serialNumber"],
        device_type=texts["deviceType"],
        manufacturer=texts["manufacturer"],
        thing_name=thing_name,
        firmware_version=texts.get("firmwareVersion", ""),
        location=texts.get("location", ""),
        factory_public_key=key,
    )
    # The parameters this device will send, checked by the hook itself; the thing name it will get
    # (given or derived) is checked as the ThingName the hook would accept.
    parameters = {COLUMNS[name]: value for name, value in texts.items() if name in COLUMNS}
    parameters["ThingName"] = thing_name
    try:
        hook.parse_request({"certificateId": PLACEHOLDER_CERTIFICATE_ID, "parameters": parameters})
    except hook.Invalid as invalid:
        return device, Problem(row.line, f"the provisioning hook would refuse it: {invalid}", device.serial_number)
    if prefix and thing_name.startswith(prefix):
        return device, Problem(
            row.line,
            f"thing name {thing_name} starts with the claim client-id prefix {prefix!r} "
            "(ClaimClientIdPrefix): the claim certificate could connect as it",
            device.serial_number,
        )
    if key_problem:
        return device, Problem(row.line, key_problem, device.serial_number)
    if device.device_type not in allowed_device_types:
        return device, Problem(
            row.line,
            f"device type {device.device_type} is not allowed by the stack "
            f"(allowed: {', '.join(allowed_device_types)})",
            device.serial_number,
        )
    return device, None
