"""Each parameter is stated once, in iot_fleet/parameters.py: cdktf.json's context, StackConfig's defaults
and docs/reference.md's table must say what it says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from iot_fleet.config import ConfigError, StackConfig, load_config
from iot_fleet.parameters import BY_NAME, PARAMETERS, markdown_table

ROOT = Path(__file__).resolve().parents[3]


def documented_table(text: str) -> str:
    start = text.index("| Parameter | Description | Allowed | Default |")
    return text[start : text.index("\n\n", start) + 1]


def test_cdktf_json_records_each_parameter_with_its_default_in_the_table_s_order() -> None:
    context = json.loads((ROOT / "cdktf.json").read_text())["context"]

    assert list(context.items()) == [(p.name, p.default) for p in PARAMETERS]


def test_stack_config_defaults_are_the_table_s_defaults_read_as_values() -> None:
    fields = {f.name for f in dataclasses.fields(StackConfig)}

    assert {p.field for p in PARAMETERS} <= fields
    assert load_config({p.name: p.default for p in PARAMETERS}, environ={}, base_dir=ROOT) == StackConfig()


def test_the_reference_s_parameter_table_is_the_generated_one() -> None:
    documented = documented_table((ROOT / "docs" / "reference.md").read_text())

    assert documented == markdown_table(), "docs/reference.md differs: python -m iot_fleet.parameters prints the table"


def test_the_comparison_sees_a_changed_description_or_default() -> None:
    table = markdown_table()
    changed = table.replace("| `IoTProvisioning` |", "| `Fleet` |")

    assert changed != table
    assert documented_table(f"# Parameters\n\n{changed}\nafter\n") != table


# A value each parameter's own check refuses, given alone with every other parameter at its default.
REFUSED = {
    "ProjectName": "A" * 25,
    "Environment": "production",
    "DeviceRegistryTableName": "ab",
    "AllowedDeviceTypes": "gateway,gateway",
    "LogRetentionDays": "31",
    "AlertEmail": "ops",
    "AwsRegion": "us-east",
    "ClaimCertificateGenerations": "2,1",
    "ClaimClientIdPrefix": "claim*",
    "StaleClaimMinutes": "61",
    "RotationIntervalMinutes": "0",
    "RotationConcurrency": "101",
    "ClaimExpiryWarningDays": "0",
    "Target": "azure",
    "SandboxEndpoint": "http://10.0.0.1:4566",
    "StateBucket": "192.168.0.1",
    "StateRegion": "mars",
}


def test_every_parameter_with_a_check_has_a_refused_example_here() -> None:
    assert set(REFUSED) == {p.name for p in PARAMETERS if p.check is not None}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_value_its_check_refuses_stops_the_config_with_the_check_s_words(name: str) -> None:
    parameter = BY_NAME[name]
    assert parameter.check is not None
    environ = {name: REFUSED[name]}
    if name == "StateRegion":
        environ["StateBucket"] = "state-bucket"  # a region is refused without a bucket for another reason

    with pytest.raises(ConfigError) as refused:
        load_config({p.name: p.default for p in PARAMETERS}, environ=environ, base_dir=ROOT)

    assert str(refused.value) == f"{name}={REFUSED[name]}: invalid; allowed: {parameter.check.allowed}"
