"""The hook's zip as synth builds it, on the Lambda runtime's Python: whatever it imports beyond what that
runtime provides (the standard library and boto3) must ship inside it. The sandbox runs handlers on the
project's Python with its site-packages, so only this test can catch a dependency left out of the zip."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iot_fleet.fleet_function import RUNTIME
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

LAMBDA_PYTHON = Path("/root/.pyenv/versions/3.13.0/bin/python")  # the runtime's Python version (python3.13)
# What Lambda's Python runtime provides besides the standard library: boto3 and what it depends on.
RUNTIME_LIBRARIES = ("boto3", "botocore", "jmespath", "s3transfer", "python-dateutil", "urllib3", "six")

# Run as Lambda lays the path out: the package first (the working directory, as /var/task is), then the
# runtime's libraries (PYTHONPATH), then the standard library; `-S`: no site-packages of any kind.
PROBE = r"""
import json, sys
package, key, message, signature = sys.argv[1:5]
import ecdsa, six  # before the runtime's copy of six: the package's own
from_package = [m.__file__.startswith(package) for m in (ecdsa, six)]
import provisioning_hook as hook
import fleet_shared
from_package.append(fleet_shared.__file__.startswith(package))
outside = sorted(
    name for name, module in sys.modules.items()
    if getattr(module, "__file__", None) and "site-packages" in module.__file__
)
print(json.dumps({
    "python": sys.version.split()[0],
    "from_package": from_package,
    "hook": hook.__file__,
    "valid": hook.verify_attestation(key, signature, message.encode()),
    "tampered": hook.verify_attestation(key, signature, message.encode() + b"x"),
    "outside": outside,
}))
"""


def copy_distribution(name: str, target: Path) -> None:
    distribution = metadata.distribution(name)
    for file in distribution.files or ():
        if file.parts[0] in ("..", "bin") or "__pycache__" in file.parts:
            continue
        destination = target / file
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(str(distribution.locate_file(file))), destination)


def test_the_hook_zip_imports_and_verifies_a_signature_on_the_lambda_runtimes_python(
    synth: Synth, tmp_path: Path
) -> None:
    hook = synth.named("aws_lambda_function", f"{synth.config.prefix}-provisioning-hook")
    assert hook["runtime"] == RUNTIME == "python3.13"
    package = tmp_path / "package"
    with zipfile.ZipFile(synth.directory / hook["filename"]) as archive:
        names = archive.namelist()
        archive.extractall(package)
    assert "ecdsa/keys.py" in names and "six.py" in names and "fleet_shared/registry.py" in names
    assert any(n.startswith("ecdsa-") and n.endswith("/LICENSE") for n in names)  # its licence travels with it
    assert not [n for n in names if "/test_" in n or n.startswith("test_")]
    runtime = tmp_path / "runtime"
    for name in RUNTIME_LIBRARIES:
        copy_distribution(name, runtime)

    key = ec.generate_private_key(ec.SECP256R1())
    enrolled = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    message = "\n".join(["aws-iot-fleet-attestation/1", "SN-0001", "a" * 64, "Fleet-dev-fleet"])
    signature = base64.b64encode(key.sign(message.encode(), ec.ECDSA(hashes.SHA256()))).decode()
    probe = subprocess.run(
        [str(LAMBDA_PYTHON), "-S", "-c", PROBE, str(package), enrolled, message, signature],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=package,
        env={"PYTHONPATH": str(runtime), "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"hook package: {len(names)} files, imported on Python {result['python']}")

    assert result["python"].startswith("3.13.")
    assert result["from_package"] == [True, True, True]  # ecdsa, six and the functions' shared package
    assert result["hook"].startswith(str(package))
    assert result["valid"] is None
    assert "not the enrolled factory key's signature" in result["tampered"]
    assert result["outside"] == []  # nothing came from an installed site-packages
