"""Scripts the deploy runs on the deploying machine, for what the Terraform provider cannot do.

Each script travels with the synthesized stack as an asset and runs from a terraform_data resource's
local-exec, with the Python that synthesized the stack when the deploying machine has that file, else
with `python3` from its PATH (which then needs boto3).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from cdktf import AssetType, DataResource, LocalExecProvisioner, TerraformAsset
from constructs import Construct

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def script_command(python: str, script: str, arguments: list[str]) -> str:
    """The local-exec command (run by /bin/sh -c): `python` if that file can run on the deploying
    machine, else `python3` from its PATH, on the script's path in the synthesized stack."""
    run = " ".join(shlex.quote(part) for part in [script, *arguments])
    return f'py={shlex.quote(python)}; [ -x "$py" ] || py=python3; exec "$py" {run}'


def deploy_script(
    scope: Construct,
    id_: str,
    *,
    script: str,
    arguments: list[str],
    triggers: Mapping[str, str],
    aws_environment: Mapping[str, str],
) -> DataResource:
    """A terraform_data resource that runs scripts/<script> when it is created, and again whenever one of
    `triggers` changes. `aws_environment`: what the script needs besides the deployer's own environment
    to reach the same account as the provider (the sandbox's endpoint and keys; nothing for AWS)."""
    asset = TerraformAsset(scope, f"{id_}-script", path=str(SCRIPTS / script), type=AssetType.FILE)
    return DataResource(
        scope,
        id_,
        triggers_replace=dict(triggers),
        provisioners=[
            LocalExecProvisioner(
                type="local-exec",
                command=script_command(sys.executable, asset.path, arguments),
                environment=dict(aws_environment),
            )
        ],
    )
