"""One synth per session: the default stack and a variant (prod, a new catalogue type, two claim
certificate generations from keys synth makes, AWS target, S3 state), both synthesized in this process
with cdktf's Testing helpers; and, for the tests that need it, the AWS target with ClaimKeyInState=true,
synthesized by `python main.py` as an operator runs it (its stderr is what the operator reads)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iot_fleet.config import PARAMETERS, StackConfig, load_config, read_context

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Synth:
    config: StackConfig
    directory: Path
    stack: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.stack["resource"].get(kind, {})

    def one(self, kind: str) -> dict[str, Any]:
        (value,) = self.resources(kind).values()
        return value

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [r for r in self.resources(kind).values() if r.get("name") == name or r.get("function_name") == name]
        assert len(matches) == 1, f"{kind} named {name}: {len(matches)} found"
        return matches[0]

    def reference(self, kind: str, body: dict[str, Any], attribute: str) -> str:
        """The Terraform expression referring to ``attribute`` of the resource whose body is given."""
        (logical,) = [k for k, v in self.resources(kind).items() if v is body]
        return f"${{{kind}.{logical}.{attribute}}}"


def _synth(config: StackConfig, folder: Path) -> Synth:
    from cdktf import Testing

    from iot_fleet.stack import IotProvisioningStack

    app = Testing.app(outdir=str(folder / "app"))
    stack = IotProvisioningStack(app, config.stack_name, config)
    directory = folder / "synth"
    shutil.move(Testing.full_synth(stack), directory)  # out of the system's temporary folder, made by cdktf
    (document,) = directory.rglob("cdk.tf.json")
    return Synth(config, document.parent, json.loads(document.read_text()))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    folder = tmp_path_factory.mktemp("synth")
    return _synth(load_config(read_context(ROOT / "cdktf.json"), environ={}, base_dir=ROOT), folder)


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    folder = tmp_path_factory.mktemp("variant")
    catalogue = folder / "device-types.json"
    catalogue.write_text(json.dumps({"vibration-sensor": {"description": "Vibration monitoring"}}))
    environ = {
        "Environment": "prod",
        "DeviceTypeCatalogue": str(catalogue),
        "AllowedDeviceTypes": "temperature-sensor,humidity-sensor,pressure-sensor,gateway,vibration-sensor",
        "ClaimCertificateGenerations": "1,2",  # a claim rotation's overlap: each generation from its own key
        "Target": "aws",
        "MonitoringEnabled": "false",
        "StateBucket": "fleet-state.example",
        "StateRegion": "eu-west-1",
        "RequireEnrollment": "false",  # open enrollment: the hook may look up things
        "RotationConcurrency": "0",  # an account whose limit leaves no 100 unreserved
        "IOT_FACTORY_DIR": str(folder / "factory"),
    }
    return _synth(load_config(read_context(ROOT / "cdktf.json"), environ=environ, base_dir=ROOT), folder)


@dataclass
class OperatorSynth:
    """`python main.py` as an operator runs it: what it printed, what it wrote, and the stack."""

    stderr: str
    factory: Path
    stack: dict[str, Any]


@pytest.fixture(scope="session")
def opted_in(tmp_path_factory: pytest.TempPathFactory) -> OperatorSynth:
    """Target=aws with ClaimKeyInState=true: AWS IoT makes the claim key and state holds it."""
    folder = tmp_path_factory.mktemp("opted-in")
    parameters = {"Target": "aws", "ClaimKeyInState": "true", "MonitoringEnabled": "false"}
    env = {k: v for k, v in os.environ.items() if k not in PARAMETERS}
    env.update(parameters, CDKTF_OUTDIR=str(folder / "out"), IOT_FACTORY_DIR=str(folder / "factory"))
    synth = subprocess.run(
        [sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert synth.returncode == 0, synth.stderr[-3000:]
    (document,) = (folder / "out").rglob("cdk.tf.json")
    return OperatorSynth(synth.stderr, folder / "factory", json.loads(document.read_text()))


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    config = os.environ.get("TF_CLI_CONFIG_FILE", "")
    if not config or not Path(config).is_file():
        config = str(tmp_path_factory.mktemp("tf") / "cli.tfrc")
        subprocess.run(["bash", str(ROOT / "scripts/terraform-cli-config.sh"), config], check=True, capture_output=True)
    yield {**os.environ, "TF_CLI_CONFIG_FILE": config, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
