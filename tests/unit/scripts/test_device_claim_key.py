"""Where the device client (scripts/test_provisioning.py) finds the claim key of a stack deployed to AWS:
the key state holds (ClaimKeyInState=true), else the file synth made (claim_private_key_file)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from iot_fleet import claim_keys
from scripts import device_client as device
from scripts.deployed_stack import DeployedStack

AWS_OUTPUTS = {
    "iot_data_endpoint": "abc123-ats.iot.eu-west-1.amazonaws.com",
    "provisioning_template_name": "IoTProvisioning-dev-fleet",
    "claim_certificate_pem": "-----BEGIN CERTIFICATE-----\n",
}


def resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, outputs: dict[str, Any]) -> device.Target:
    monkeypatch.setattr(DeployedStack, "load", classmethod(lambda cls, directory=None: cls(tmp_path, outputs)))
    args = argparse.Namespace(
        claim_cert=None,
        claim_key=None,
        template_name=None,
        endpoint=None,
        port=None,
        ca=None,
        stack_dir=None,
        output_dir=str(tmp_path / "devices"),
        system_trust=False,
    )
    return device.resolve_target(args)


def test_the_client_uses_the_key_file_synth_made_and_copies_it_nowhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    claim_keys.ensure(tmp_path / "factory", 1, "claim 1")
    key = claim_keys.key_path(tmp_path / "factory", 1)

    target = resolve(monkeypatch, tmp_path, {**AWS_OUTPUTS, "claim_private_key_file": str(key)})

    assert target.claim_key == str(key)
    assert (target.endpoint, target.port) == (AWS_OUTPUTS["iot_data_endpoint"], 8883)
    assert not (tmp_path / "devices" / "claim.private.key").exists()


def test_a_key_file_missing_on_this_machine_is_refused_saying_what_to_give(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = "/home/operator/project/factory/IoTProvisioning-dev/claim-1.key"

    with pytest.raises(device.Failure) as refused:
        resolve(monkeypatch, tmp_path, {**AWS_OUTPUTS, "claim_private_key_file": elsewhere})

    assert refused.value.code == device.USAGE
    assert str(refused.value) == (
        f"claim key {elsewhere} not found on this machine (synth made it where the stack was synthesized): "
        "give --claim-key"
    )


def test_a_key_in_state_is_written_0600_for_the_connection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = resolve(monkeypatch, tmp_path, {**AWS_OUTPUTS, "claim_private_key": "-----BEGIN EC PRIVATE KEY-----\n"})

    written = tmp_path / "devices" / "claim.private.key"
    assert target.claim_key == str(written)
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    assert written.read_text() == "-----BEGIN EC PRIVATE KEY-----\n"
