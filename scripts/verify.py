#!/usr/bin/env python
"""Verify a deployed provisioning stack against the live system.

Reads `terraform output -json` of the deployed stack and checks, through boto3, what AWS (or the
sandbox) actually holds: one line per check, then a summary; exit 1 if any check fails.
Endpoints and credentials come from the environment as for any boto3 tool (for the sandbox:
eval "$(pipenv run python -m sandbox env)"), none are hard-coded.

Examples:
  scripts/verify.py                                   # the only stack under cdktf.out/stacks
  scripts/verify.py --stack-dir cdktf.out/stacks/iot-provisioning-prod
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ROOT = Path(__file__).resolve().parents[1]
# The recipe's "Test Lambda function" payload.
SAMPLE_HOOK_PAYLOAD = {"parameters": {"SerialNumber": "TEST123", "DeviceType": "temperature-sensor",
                                    "Manufacturer": "TestCorp"}}  # fmt: skip


def terraform_outputs(stack_dir: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["terraform", "output", "-json"], cwd=stack_dir, capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise SystemExit(f"verify: `terraform output -json` failed in {stack_dir}:\n{result.stderr.strip()}")
    outputs = {name: value["value"] for name, value in json.loads(result.stdout or "{}").items()}
    if not outputs:
        raise SystemExit(f"verify: {stack_dir} has no outputs: is the stack deployed?")
    return outputs


class Verifier:
    def __init__(self, outputs: dict[str, Any], region: str | None) -> None:
        self.out = outputs
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        session = boto3.session.Session(region_name=region or outputs.get("aws_region"))
        self.iot = session.client("iot", config=config)
        self.dynamodb = session.client("dynamodb", config=config)
        self.lambda_ = session.client("lambda", config=config)
        self.passed = 0
        self.failed = 0

    def check(self, description: str, test: Callable[[], str | None]) -> None:
        """Runs one check; ``test`` returns a problem (or None) or raises."""
        try:
            problem = test()
        except (ClientError, BotoCoreError, KeyError, ValueError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem:
            self.failed += 1
            print(f"FAIL  {description}: {problem}")
        else:
            self.passed += 1
            print(f"ok    {description}")

    def template(self) -> str | None:
        name = self.out["provisioning_template_name"]
        template = self.iot.describe_provisioning_template(templateName=name)
        function = self.lambda_.get_function(FunctionName=self.out["provisioning_hook_function_name"])
        hook = template.get("preProvisioningHook", {})
        if not template.get("enabled"):
            return "template is disabled"
        if hook.get("targetArn") != function["Configuration"]["FunctionArn"]:
            return f"hook is {hook.get('targetArn')}, expected the hook function"
        if hook.get("payloadVersion") != "2020-04-01":
            return f"hook payload version is {hook.get('payloadVersion')}"
        return None

    def table(self) -> str | None:
        table = self.dynamodb.describe_table(TableName=self.out["device_registry_table_name"])["Table"]
        indexes = {i["IndexName"]: i.get("IndexStatus") for i in table.get("GlobalSecondaryIndexes", [])}
        if table["TableStatus"] != "ACTIVE":
            return f"table is {table['TableStatus']}"
        if set(indexes) != {"deviceType-index", "status-index"} or set(indexes.values()) != {"ACTIVE"}:
            return f"indexes are {indexes}"
        return None

    def hook(self) -> str | None:
        response = self.lambda_.invoke(
            FunctionName=self.out["provisioning_hook_function_name"], Payload=json.dumps(SAMPLE_HOOK_PAYLOAD).encode()
        )
        answer = json.loads(response["Payload"].read())
        if response.get("FunctionError"):
            return f"function error: {answer}"
        if not isinstance(answer, dict) or not isinstance(answer.get("allowProvisioning"), bool):
            return f"answer is not in the AWS hook shape: {answer}"
        if set(answer) - {"allowProvisioning", "parameterOverrides"}:
            return f"answer has keys IoT does not read: {answer}"
        return None

    def groups(self) -> str | None:
        root = self.out["thing_group_root_name"]
        self.iot.describe_thing_group(thingGroupName=root)
        for device_type, name in self.out["thing_group_names"].items():
            group = self.iot.describe_thing_group(thingGroupName=name)
            parent = group.get("thingGroupMetadata", {}).get("parentGroupName")
            if parent != root:
                return f"{device_type} group {name} has parent {parent}, expected {root}"
        return None

    def policies(self) -> str | None:
        allowed = self.out["allowed_device_types"].split(",")
        names = self.out["device_policy_names"]
        if set(names) != set(allowed):
            return f"policies for {sorted(names)}, device types {sorted(allowed)}"
        for name in names.values():
            document = self.iot.get_policy(policyName=name)["policyDocument"]
            if "${iot:Connection.Thing.ThingName}" not in document:
                return f"{name} is not scoped to the connecting thing"
        return None

    def claim(self) -> str | None:
        certificate = self.iot.describe_certificate(certificateId=self.out["claim_certificate_id"])
        status = certificate["certificateDescription"]["status"]
        if status != "ACTIVE":
            return f"claim certificate is {status}"
        attached = self.iot.list_attached_policies(target=self.out["claim_certificate_arn"])["policies"]
        if [p["policyName"] for p in attached] != [self.out["claim_policy_name"]]:
            return f"attached policies are {[p['policyName'] for p in attached]}"
        return None

    def registry_events(self) -> str | None:
        events = self.iot.describe_event_configurations()["eventConfigurations"]
        if not events.get("THING", {}).get("Enabled"):
            return "THING registry events are off: devices would never reach 'provisioned'"
        return None

    def run(self) -> int:
        self.check(f"provisioning template {self.out['provisioning_template_name']} enabled, hook set", self.template)
        self.check(f"registry table {self.out['device_registry_table_name']} ACTIVE with its indexes", self.table)
        self.check("hook answers the recipe's sample payload in the AWS shape", self.hook)
        self.check(f"thing groups under {self.out['thing_group_root_name']}", self.groups)
        self.check("an IoT policy per device type, scoped to the thing", self.policies)
        self.check("claim certificate ACTIVE with only the claim policy", self.claim)
        self.check("THING registry events enabled", self.registry_events)
        print(f"verify: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def default_stack_dir() -> Path:
    stacks = sorted((ROOT / "cdktf.out" / "stacks").glob("*/cdk.tf.json"))
    if len(stacks) != 1:
        raise SystemExit(f"verify: give --stack-dir (found {len(stacks)} synthesized stacks)")
    return stacks[0].parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-dir", type=Path, help="the deployed stack's folder (default: the only one)")
    parser.add_argument("--region", help="AWS region (default: the stack's aws_region output)")
    args = parser.parse_args()
    outputs = terraform_outputs(args.stack_dir or default_stack_dir())
    return Verifier(outputs, args.region).run()


if __name__ == "__main__":
    sys.exit(main())
