"""The deployed stack as every tool sees it: its folder, `terraform output -json`, where it runs
(the sandbox or AWS) and how to reach it (boto3 clients, the MQTT endpoint, port and CA).

One place for what the device client, the fleet simulator, the operator CLI, the demo and verify
each need, so they cannot disagree about which stack, which endpoint or which credentials.
The target follows from the outputs: only a stack synthesized for AWS has `iot_data_endpoint`
(the sandbox's broker is its own, found in the sandbox's state).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STACKS = ROOT / "cdktf.out" / "stacks"
TERRAFORM_TIMEOUT = 120
STACK_NAME_PREFIX = "iot-provisioning-"  # iot_fleet.config.StackConfig.stack_name
SANDBOX_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}


class StackError(Exception):
    """The stack cannot be found, read or reached; the message says what to do."""


def default_stack_dir() -> Path:
    """The only synthesized stack under cdktf.out/stacks (several: the caller must choose one)."""
    stacks = sorted(p.parent for p in STACKS.glob("*/cdk.tf.json"))
    if len(stacks) != 1:
        found = ", ".join(p.name for p in stacks) or "none"
        raise StackError(f"give --stack-dir: {len(stacks)} synthesized stacks under {STACKS} ({found})")
    return stacks[0]


def terraform_outputs(stack_dir: Path) -> dict[str, Any]:
    """`terraform output -json` of the deployed stack, as {name: value}."""
    try:
        result = subprocess.run(
            ["terraform", "output", "-json"],
            cwd=stack_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=TERRAFORM_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(f"`terraform output -json` could not run in {stack_dir}: {error}") from None
    if result.returncode != 0:
        raise StackError(f"`terraform output -json` failed in {stack_dir}: {result.stderr.strip()[:400]}")
    outputs = {name: value["value"] for name, value in json.loads(result.stdout or "{}").items()}
    if not outputs:
        raise StackError(f"{stack_dir} has no outputs: is the stack deployed (make deploy)?")
    return outputs


@dataclass(frozen=True)
class MqttEndpoint:
    """Where devices connect: host, port and the CA bundle to trust ("" = the system store)."""

    host: str
    port: int
    ca_file: str


@dataclass(frozen=True)
class DeployedStack:
    directory: Path
    outputs: dict[str, Any]
    _clients: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, directory: Path | None = None) -> DeployedStack:
        directory = Path(directory) if directory else default_stack_dir()
        return cls(directory, terraform_outputs(directory))

    def output(self, name: str) -> Any:
        try:
            return self.outputs[name]
        except KeyError:
            raise StackError(
                f"the deployed stack in {self.directory} has no output {name}: deploy this version (make deploy)"
            ) from None

    # Where it runs --------------------------------------------------------------------------------
    @property
    def on_aws(self) -> bool:
        return bool(self.outputs.get("iot_data_endpoint"))

    @property
    def target(self) -> str:
        return "aws" if self.on_aws else "sandbox"

    @property
    def region(self) -> str:
        return str(self.outputs.get("aws_region") or "us-east-1")

    @property
    def environment(self) -> str:
        """The stack's Environment parameter (dev, staging, prod): its output, else its folder's name."""
        return str(self.outputs.get("environment") or self.directory.name.removeprefix(STACK_NAME_PREFIX))

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def allowed_device_types(self) -> tuple[str, ...]:
        return tuple(t for t in str(self.output("allowed_device_types")).split(",") if t)

    @property
    def claim_client_id_prefix(self) -> str:
        """The client-id prefix of claim connections ("claim-" for a stack deployed before it was an output)."""
        return str(self.outputs.get("claim_client_id_prefix", "claim-"))

    @property
    def require_attestation(self) -> bool:
        return str(self.outputs.get("require_attestation", "false")) == "true"

    @property
    def table_name(self) -> str:
        return str(self.output("device_registry_table_name"))

    def sandbox(self) -> Any:
        """The running sandbox's state (sandbox.state.SandboxState); refuses clearly when it is down."""
        from sandbox.state import SandboxState

        state = SandboxState.load()
        if state is None:
            raise StackError("the stack is deployed in the sandbox, which is not running: start it (make sandbox-up)")
        return state

    # How to reach it ------------------------------------------------------------------------------
    def aws_environment(self) -> dict[str, str]:
        """Environment variables that point boto3 and the AWS CLI at the stack ({} on AWS: yours apply)."""
        if self.on_aws:
            return {}
        return {
            "AWS_ENDPOINT_URL": self.sandbox().endpoint,
            "AWS_ACCESS_KEY_ID": SANDBOX_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": SANDBOX_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, service: str, *, max_attempts: int | None = None, read_timeout: float = 30.0) -> Any:
        """A boto3 client for the stack's account and region (the sandbox's endpoint and credentials
        there). Clients are cached per service: boto3 clients are thread-safe and costly to build."""
        key = f"{service}/{max_attempts}/{read_timeout}"
        if key not in self._clients:
            import boto3
            from botocore.config import Config

            # On AWS, standard retries absorb the IoT and DynamoDB throttling bulk operations meet.
            attempts = max_attempts or (8 if self.on_aws else 3)
            config = Config(
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=5,
                read_timeout=read_timeout,
                max_pool_connections=64,
            )
            options: dict[str, Any] = {"region_name": self.region, "config": config}
            if service == "iot-data" and self.on_aws:
                options["endpoint_url"] = f"https://{self.outputs['iot_data_endpoint']}"
            elif not self.on_aws:
                options.update(SANDBOX_CREDENTIALS, endpoint_url=self.sandbox().endpoint)
            self._clients[key] = boto3.session.Session().client(service, **options)
        return self._clients[key]

    def mqtt(self) -> MqttEndpoint:
        """AWS: the iot:Data-ATS endpoint on 8883, trusted through the system store (Amazon's roots).
        Sandbox: its broker, trusted through the sandbox CA."""
        if self.on_aws:
            return MqttEndpoint(str(self.outputs["iot_data_endpoint"]), 8883, "")
        state = self.sandbox()
        if not state.mqtt_port:
            raise StackError("the sandbox's state names no MQTT port: restart it (make sandbox-down sandbox-up)")
        return MqttEndpoint(state.mqtt_endpoint, state.mqtt_port, state.ca_file)
