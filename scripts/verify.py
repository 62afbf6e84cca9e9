#!/usr/bin/env python
"""Verify a deployed provisioning stack against the live system.

Reads `terraform output -json` of the deployed stack and checks, through boto3, what AWS (or the
sandbox) actually holds: one line per check, then a summary; exit 1 if any check fails.
On AWS your usual credentials apply; for the sandbox its endpoint and credentials are found from
its state (scripts/deployed_stack.py); none are hard-coded.

Examples:
  scripts/verify.py                                   # the only stack under cdktf.out/stacks
  scripts/verify.py --stack-dir cdktf.out/stacks/iot-provisioning-prod
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from fleet_shared.registry import INDEXES
from scripts.deployed_stack import DeployedStack, StackError

ROOT = Path(__file__).resolve().parents[1]


# The recipe's "Test Lambda function" payload.
SAMPLE_HOOK_PAYLOAD = {
    "parameters": {"SerialNumber": "TEST123", "DeviceType": "temperature-sensor", "Manufacturer": "TestCorp"}
}


class Verifier:
    def __init__(self, stack: DeployedStack) -> None:
        self.out = stack.outputs
        self.iot = stack.client("iot", max_attempts=2)
        self.dynamodb = stack.client("dynamodb", max_attempts=2)
        self.lambda_ = stack.client("lambda", max_attempts=2)
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
        indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        if table["TableStatus"] != "ACTIVE":
            return f"table is {table['TableStatus']}"
        if set(indexes) != {index.name for index in INDEXES}:
            return f"indexes are {sorted(indexes)}, expected {sorted(index.name for index in INDEXES)}"
        for index in INDEXES:
            keys = {k["KeyType"]: k["AttributeName"] for k in indexes[index.name]["KeySchema"]}
            expected = {"HASH": index.partition_key, **({"RANGE": index.sort_key} if index.sort_key else {})}
            if keys != expected:
                return f"{index.name} is keyed {keys}, expected {expected}: deploy this version"
            if indexes[index.name].get("IndexStatus") != "ACTIVE":
                return f"{index.name} is {indexes[index.name].get('IndexStatus')}"
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
        only = {"id": self.out["claim_certificate_id"], "arn": self.out["claim_certificate_arn"]}
        generations = self.out.get("claim_certificates") or {"1": only}  # a stack from before generations
        for generation, claim in sorted(generations.items()):
            certificate = self.iot.describe_certificate(certificateId=claim["id"])
            status = certificate["certificateDescription"]["status"]
            if status != "ACTIVE":
                return f"claim certificate generation {generation} is {status}"
            attached = self.iot.list_attached_policies(target=claim["arn"])["policies"]
            if [p["policyName"] for p in attached] != [self.out["claim_policy_name"]]:
                return f"generation {generation}'s attached policies are {[p['policyName'] for p in attached]}"
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
        self.check("claim certificates ACTIVE with only the claim policy", self.claim)
        self.check("THING registry events enabled", self.registry_events)
        print(f"verify: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack-dir", type=Path, help="the deployed stack's folder (default: the only one)")
    parser.add_argument("--region", help="AWS region (default: the stack's aws_region output)")
    args = parser.parse_args()
    try:
        stack = DeployedStack.load(args.stack_dir)
    except StackError as error:
        raise SystemExit(f"verify: {error}") from None
    if args.region:
        stack = dataclasses.replace(stack, outputs={**stack.outputs, "aws_region": args.region})
    return Verifier(stack).run()


if __name__ == "__main__":
    sys.exit(main())
