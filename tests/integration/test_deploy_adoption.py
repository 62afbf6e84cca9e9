"""What `make deploy` does with objects the stack names that exist outside its state, against the
sandbox with real Terraform: a small stack of three kinds (an IoT policy, a log group, an IAM role) under
the project's own provider settings and tags, applied by scripts/deploy.py as `make deploy` applies it.

The whole stack meets the same in tests/integration/test_sandbox_deploy.py (an interrupted deploy) and
bench/interrupted_deploy.py (interrupted at many points); here each rule is shown on its own, quickly.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts import deploy, unfinished_deploy
from tests.integration.conftest import Deployment, adopted, sandbox_env

pytestmark = pytest.mark.integration

TAGS = {"Project": "Adoption", "Environment": "dev", "ManagedBy": "cdktf"}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
RESOURCES = {
    "aws_iot_policy": {"claim": {"name": "Adoption-dev-claim-policy", "policy": json.dumps(POLICY)}},
    "aws_cloudwatch_log_group": {"logs": {"name": "/aws/lambda/Adoption-dev-fn", "retention_in_days": 7}},
    "aws_iam_role": {"role": {"name": "Adoption-dev-role", "assume_role_policy": json.dumps(TRUST)}},
}
ADDRESSES = sorted(f"{kind}.{name}" for kind, items in RESOURCES.items() for name in items)


@dataclass
class SmallStack:
    deployment: Deployment
    out: Path

    @property
    def directory(self) -> Path:
        return self.out / "stacks" / "small"

    def write(self, resources: dict[str, Any]) -> None:
        endpoint = self.deployment.env["SandboxEndpoint"]
        self.directory.mkdir(parents=True, exist_ok=True)
        stack = {
            "terraform": {
                "required_providers": {"aws": {"source": "aws", "version": "5.100.0"}},
                "backend": {"local": {"path": str(self.deployment.sandbox_dir / "terraform.small.tfstate")}},
            },
            "provider": {
                "aws": [
                    {
                        "region": "us-east-1",
                        "access_key": "sandbox",
                        "secret_key": "sandbox",
                        "max_retries": 2,
                        "skip_credentials_validation": True,
                        "skip_metadata_api_check": "true",
                        "skip_region_validation": True,
                        "skip_requesting_account_id": True,
                        "endpoints": [{service: endpoint for service in ("iot", "logs", "iam", "sts")}],
                        "default_tags": [{"tags": TAGS}],
                    }
                ]
            },
            "resource": resources,
        }
        (self.directory / "cdk.tf.json").write_text(json.dumps(stack, indent=2))

    def deploy(self, adopt: bool = False) -> subprocess.CompletedProcess[str]:
        said: list[str] = []
        code = deploy.deploy(self.out, self.deployment.env, said.append, synthesize=False, adopt=adopt)
        return subprocess.CompletedProcess(["deploy"], code, "\n".join(said), "")

    def reset(self) -> None:
        """The stack as first written, and no mark of an unfinished deploy (another test's refusal leaves one)."""
        self.write(RESOURCES)
        unfinished_deploy.Mark(self.directory).clear()

    def terraform(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.deployment.run("terraform", *args, cwd=self.directory, timeout=300)

    def recorded(self) -> list[str]:
        return sorted(self.terraform("state", "list").stdout.split())

    def forget(self, *addresses: str) -> None:
        """Removes these from the state where it holds them (the objects stay)."""
        held = [a for a in addresses if a in self.recorded()]
        if held:
            assert self.terraform("state", "rm", *held).returncode == 0

    def plan_changes(self) -> int:
        return self.terraform("plan", "-detailed-exitcode", "-input=false", "-no-color").returncode


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallStack]:
    """A sandbox of its own (a bare one: nothing else is deployed into it) and the small stack in it."""
    base = tmp_path_factory.mktemp("adoption")
    deployment = Deployment(env=sandbox_env(base), out_dir=base / "cdktf.out", sandbox_dir=base / "sandbox")
    up = deployment.sandbox("up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        stack = SmallStack(deployment, base / "cdktf.out")
        stack.write(RESOURCES)
        first = stack.deploy()
        assert first.returncode == 0, first.stdout[-3000:]
        yield stack
    finally:
        deployment.sandbox("down")


def test_an_object_no_unfinished_deploy_here_explains_is_adopted_only_on_the_operator_s_word(
    small: SmallStack,
) -> None:
    """The stack's objects exist and its state does not know them, and no mark says a deploy from this
    folder was creating them (another checkout's deployment of the same stack looks just so): the apply
    stops on "already exists", the deploy adopts nothing and says how to; with ADOPT it adopts them in one
    round, saying which, applies again, and nothing is left to change."""
    small.reset()
    small.forget(*ADDRESSES)

    refused = small.deploy()

    assert refused.returncode == 1
    assert refused.stdout.count("already exists") >= len(ADDRESSES)  # the apply that stopped, quoted
    assert "nothing adopted" in refused.stdout and "make deploy ADOPT=1" in refused.stdout
    assert adopted(refused.stdout) == set() and small.recorded() == []

    again = small.deploy(adopt=True)

    assert again.returncode == 0, again.stdout[-3000:]
    assert adopted(again.stdout) == set(ADDRESSES)
    assert small.recorded() == ADDRESSES
    assert small.plan_changes() == 0


def test_a_create_an_unfinished_deploy_never_saw_answered_is_adopted_and_nothing_else(small: SmallStack) -> None:
    """The mark says a deploy from this folder started creating the role and never saw the answer; the
    log group is unrecorded too, but no create of it is in the mark. The next deploy adopts the role
    before it applies, not the log group: the apply stops on it, and the deploy says so."""
    role, logs = "aws_iam_role.role", "aws_cloudwatch_log_group.logs"
    small.reset()
    small.forget(role, logs)
    mark = unfinished_deploy.Mark(small.directory)
    mark.begin(json.loads((small.directory / "cdk.tf.json").read_text()))
    mark.creating(role)

    again = small.deploy()

    assert again.returncode == 1
    assert "the last deploy of this stack did not finish" in again.stdout
    assert adopted(again.stdout) == {role}
    assert "already exists" in again.stdout and "it had already looked for unrecorded resources" in again.stdout
    assert role in small.recorded() and logs not in small.recorded()


def test_an_object_with_the_stack_s_name_but_not_its_tags_is_not_adopted_even_on_the_operator_s_word(
    small: SmallStack,
) -> None:
    """Someone else's log group under a name the stack now wants: refused, named, and nothing adopted."""
    logs = small.deployment.client("logs")
    if not logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/someone-else")["logGroups"]:
        logs.create_log_group(logGroupName="/aws/lambda/someone-else", tags={"Team": "other"})
    small.reset()
    small.forget(ADDRESSES[0])  # a leftover of the stack's own beside it: adopted only if all are
    resources = json.loads(json.dumps(RESOURCES))
    resources["aws_cloudwatch_log_group"]["theirs"] = {"name": "/aws/lambda/someone-else"}
    small.write(resources)

    again = small.deploy(adopt=True)

    assert again.returncode == 1
    assert "nothing adopted" in again.stdout
    assert "aws_cloudwatch_log_group.theirs" in again.stdout and "does not carry the stack's tags" in again.stdout
    assert adopted(again.stdout) == set()
    assert ADDRESSES[0] not in small.recorded() and "aws_cloudwatch_log_group.theirs" not in small.recorded()
