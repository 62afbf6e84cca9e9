"""THING registry events turned on with every other event type left as the account had it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox.iot import missing_apis
from scripts.enable_thing_events import enable_thing_events, main

missing_apis.install()


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("iot", region_name="us-east-1")


def settings(iot: Any) -> dict[str, bool]:
    return {kind: s["Enabled"] for kind, s in iot.describe_event_configurations()["eventConfigurations"].items()}


def test_thing_is_turned_on_and_every_other_type_keeps_its_setting(iot: Any) -> None:
    iot.update_event_configurations(eventConfigurations={"JOB": {"Enabled": True}, "CERTIFICATE": {"Enabled": True}})
    before = settings(iot)

    assert enable_thing_events(iot) is True

    after = settings(iot)
    assert after == {**before, "THING": True}
    assert after["JOB"] is True and after["CERTIFICATE"] is True and after["POLICY"] is False


def test_thing_already_on_changes_nothing(iot: Any, capsys: pytest.CaptureFixture[str]) -> None:
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": True}})

    assert main(["--region", "us-east-1"]) == 0

    assert "were on already" in capsys.readouterr().out


class ReplacingIot:
    """An IoT whose UpdateEventConfigurations replaces the whole map (types left out turn off): the
    other reading of AWS's page."""

    def __init__(self, enabled: dict[str, bool]) -> None:
        self.enabled = enabled

    def describe_event_configurations(self) -> dict[str, Any]:
        return {"eventConfigurations": {kind: {"Enabled": on} for kind, on in self.enabled.items()}}

    def update_event_configurations(self, eventConfigurations: dict[str, Any]) -> None:
        self.enabled = {kind: bool(eventConfigurations.get(kind, {}).get("Enabled")) for kind in self.enabled}


def test_the_result_is_the_same_if_an_update_replaces_every_type() -> None:
    account = ReplacingIot({"THING": False, "JOB": True, "POLICY": False, "CERTIFICATE": True})

    enable_thing_events(account)

    assert account.enabled == {"THING": True, "JOB": True, "POLICY": False, "CERTIFICATE": True}
