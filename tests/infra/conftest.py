"""One synth per session: the default stack and a variant (prod, a new catalogue type, two claim
certificate generations from CSRs, AWS target), both synthesized in this process with cdktf's Testing
helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iot_fleet.config import StackConfig, load_config, read_context

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


def _synth(config: StackConfig) -> Synth:
    from cdktf import Testing

    from iot_fleet.stack import IotProvisioningStack

    app = Testing.app()
    stack = IotProvisioningStack(app, config.stack_name, config)
    directory = Path(Testing.full_synth(stack))
    (document,) = directory.rglob("cdk.tf.json")
    return Synth(config, document.parent, json.loads(document.read_text()))


@pytest.fixture(scope="session")
def synth() -> Synth:
    return _synth(load_config(read_context(ROOT / "cdktf.json"), environ={}, base_dir=ROOT))


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    folder = tmp_path_factory.mktemp("variant")
    catalogue = folder / "device-types.json"
    catalogue.write_text(json.dumps({"vibration-sensor": {"description": "Vibration monitoring"}}))
    for generation in (1, 2):  # a claim rotation's overlap: each generation from its own key
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"claim-{generation}")]))
            .sign(key, hashes.SHA256())
        )
        (folder / f"claim-{generation}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    environ = {
        "Environment": "prod",
        "DeviceTypeCatalogue": str(catalogue),
        "AllowedDeviceTypes": "temperature-sensor,humidity-sensor,pressure-sensor,gateway,vibration-sensor",
        "ClaimCertificateCsrPath": str(folder / "claim-{generation}.csr"),
        "ClaimCertificateGenerations": "1,2",
        "Target": "aws",
        "MonitoringEnabled": "false",
    }
    return _synth(load_config(read_context(ROOT / "cdktf.json"), environ=environ, base_dir=ROOT))


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    config = os.environ.get("TF_CLI_CONFIG_FILE", "")
    if not config or not Path(config).is_file():
        import subprocess

        config = str(tmp_path_factory.mktemp("tf") / "cli.tfrc")
        subprocess.run(["bash", str(ROOT / "scripts/terraform-cli-config.sh"), config], check=True, capture_output=True)
    yield {**os.environ, "TF_CLI_CONFIG_FILE": config, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
