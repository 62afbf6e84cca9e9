"""Each parameter is stated once, in iot_fleet/parameters.py: cdktf.json's context, StackConfig's defaults
and docs/reference.md's table must say what it says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from iot_fleet.config import StackConfig, load_config
from iot_fleet.parameters import PARAMETERS, markdown_table

ROOT = Path(__file__).resolve().parents[3]


def documented_table(text: str) -> str:
    start = text.index("| Parameter | Description | Default |")
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
