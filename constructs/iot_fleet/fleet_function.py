"""A Lambda function of the stack with its own log group and a role that can do only what it is given."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cdktf import AssetType, TerraformAsset
from cdktf_cdktf_provider_aws.dynamodb_table import DynamodbTable
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from constructs import Construct

from iot_fleet.acknowledge import acknowledge
from iot_fleet.log_group import log_group
from iot_fleet.naming import AccountContext

LAMBDA_SOURCES = Path(__file__).resolve().parents[2] / "lambda"
SHARED = LAMBDA_SOURCES / "shared" / "fleet_shared"  # the functions' shared package (lambda/shared)
RUNTIME = "python3.13"
_STAGING = Path(tempfile.mkdtemp(prefix="iot-fleet-lambda-"))
atexit.register(shutil.rmtree, _STAGING, True)

# Shared deviations, acknowledged on every function (reasons apply to both).
FUNCTION_ACKNOWLEDGEMENTS = {
    "CKV_AWS_117": "No VPC: the functions reach only DynamoDB and IoT through their public endpoints; "
    "a VPC would add NAT or endpoints and cold-start latency to a 5 s hook budget.",
    "CKV_AWS_115": "Reserved concurrency fails to deploy on accounts whose concurrency limit is 10; "
    "RegisterThing itself is throttled upstream (about 10 TPS), so the functions cannot run away.",
    "CKV_AWS_173": "The environment holds only resource names and settings, no secrets; Lambda encrypts it at "
    "rest with its AWS-managed key.",
    "CKV_AWS_272": "Code signing needs signed artifacts in S3 from a signing profile; the stack deploys from a "
    "local asset so it also works offline. Enable it in the pipeline that publishes releases.",
}


def stage_source(name: str, packages: Sequence[str] = ()) -> Path:
    """A clean copy of ``lambda/<name>`` with the shared package beside its module: caches and test
    files would change the asset hash.

    ``packages``: distributions installed here (pure Python, pinned in Pipfile.lock) that the function
    imports and Lambda's runtime lacks; each is copied in whole, file by file from its installed record,
    so the zip carries exactly what this project runs and tests."""
    source = LAMBDA_SOURCES / name
    target = _STAGING / name
    if not target.exists():
        clean = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
        shutil.copytree(source, target, ignore=clean)
        shutil.copytree(SHARED, target / SHARED.name, ignore=clean)  # every function imports it
        for package in packages:
            vendor(package, target)
    return target


def vendor(package: str, target: Path) -> None:
    """Copies an installed distribution's files (modules and its dist-info, licence included) into target."""
    distribution = metadata.distribution(package)
    for file in distribution.files or ():
        parts = file.parts
        if parts[0] in ("..", "bin") or "__pycache__" in parts or file.name.startswith("test_"):
            continue  # scripts, caches and the package's own tests are not needed at run time
        if file.suffix in (".so", ".pyd"):
            raise ValueError(f"{package} has compiled code ({file}); the Lambda package takes pure Python only")
        destination = target / file
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(str(distribution.locate_file(file))), destination)


# The policies attached to a certificate: the Service Authorization Reference gives the action no
# resource type, so only "*" grants it there (the IoT Developer Guide's table names cert and
# thinggroup; "*" works under either reading). Read-only: it shows the names and ARNs of the policies
# attached to any target in the account, not their documents.
LIST_ATTACHED_POLICIES: dict[str, Any] = {"Effect": "Allow", "Action": ["iot:ListAttachedPolicies"], "Resource": "*"}


@dataclass(frozen=True)
class FunctionSettings:
    """What every function of the stack is built with: where it runs, the registry it works on, the
    stack's key, and where its logs and metrics go."""

    account: AccountContext
    key: KmsKey
    table: DynamodbTable
    log_retention_days: int
    metrics_namespace: str
    iot_data_endpoint: str  # the account's IoT data endpoint ("" in the sandbox: its broker is its own)

    def registry_key_use(self) -> dict[str, Any]:
        """Using the stack's key, only through DynamoDB (the registry table is encrypted with it)."""
        return {
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": self.key.arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"dynamodb.{self.account.region}.amazonaws.com"}},
        }


class FleetFunction(Construct):
    """Function + log group (retention, KMS) + execution role limited to ``statements``."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        function_name: str,
        source: str,
        handler: str,
        description: str,
        environment: Mapping[str, str],
        statements: Sequence[Mapping[str, Any]],
        account: AccountContext,
        key: KmsKey,
        log_retention_days: int,
        timeout: int,
        memory_size: int = 256,
        extra_acknowledgements: Mapping[str, str] | None = None,
        packages: Sequence[str] = (),
        reserved_concurrency: int = 0,
    ) -> None:
        """`reserved_concurrency`: executions reserved for the function, also its most at once (0: no
        reservation and no cap, not Lambda's 0, which stops every invocation)."""
        super().__init__(scope, id_)
        self.log_group = log_group(
            self, "logs", name=f"/aws/lambda/{function_name}", key=key, retention_days=log_retention_days
        )
        self.role = IamRole(
            self,
            "role",
            name=f"{function_name}-role",
            assume_role_policy=account.trust_policy("lambda.amazonaws.com"),
        )
        logging = {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{self.log_group.arn}:*",
        }
        self.policy = IamRolePolicy(
            self,
            "policy",
            name=f"{function_name}-policy",
            role=self.role.id,
            policy=json.dumps({"Version": "2012-10-17", "Statement": [logging, *statements]}),
        )
        # X-Ray accepts no resource-level permissions; AWS's managed policy is the narrow way.
        tracing = IamRolePolicyAttachment(
            self,
            "tracing",
            role=self.role.name,
            policy_arn=f"arn:{account.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess",
        )
        asset = TerraformAsset(self, "code", path=str(stage_source(source, packages)), type=AssetType.ARCHIVE)
        self.function = LambdaFunction(
            self,
            "function",
            function_name=function_name,
            description=description,
            role=self.role.arn,
            runtime=RUNTIME,
            handler=handler,
            filename=asset.path,
            source_code_hash=asset.asset_hash,
            timeout=timeout,
            memory_size=memory_size,
            environment={"variables": dict(environment)},
            tracing_config={"mode": "Active"},
            reserved_concurrent_executions=reserved_concurrency or None,
            depends_on=[self.log_group, self.policy, tracing],
        )
        acknowledgements = {**FUNCTION_ACKNOWLEDGEMENTS, **(extra_acknowledgements or {})}
        if reserved_concurrency:
            del acknowledgements["CKV_AWS_115"]  # the function has its reservation
        acknowledge(self.function, **acknowledgements)
