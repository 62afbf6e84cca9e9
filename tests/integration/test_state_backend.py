"""Terraform state in S3 (StateBucket), against the sandbox's S3 with real terraform.

What this proves: the synthesized S3 backend initializes; `apply` writes the state to the documented
key, asking for server-side encryption, and leaves no state file on disk; a later `plan` reads it back
from the bucket; a lock someone else holds (the `.tflock` object) stops `plan` with Terraform's lock
error naming the holder, through S3's conditional write (`If-None-Match: *`, which the sandbox's S3
refuses with 412 PreconditionFailed as S3 does), and the state is left untouched.

What it does not prove: S3 IAM (the sandbox's administrator key is not checked, so the permissions the
docs/aws.md lists are AWS's documentation, not a test), encryption itself (moto records the requested
algorithm; it encrypts nothing), bucket versioning, and `terraform init -migrate-state`.

To stay quick it applies one resource of the stack (`-target` the claim policy), under a project name
of its own, in a sandbox of its own, and destroys it on the way out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iot_fleet.config import PARAMETERS
from tests.integration.conftest import ROOT, Deployment, sandbox_env

pytestmark = pytest.mark.integration

BUCKET = "fleet-state-test"
PROJECT = "StateBackend"
STATE_KEY = f"{PROJECT}-dev/terraform.iot-provisioning-dev.tfstate"


@dataclass
class S3Stack:
    deployment: Deployment
    directory: Path
    policy: str  # the one resource applied: the claim policy's Terraform address

    def terraform(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.deployment.run("terraform", *args, "-input=false", "-no-color", cwd=self.directory, timeout=300)

    @property
    def s3(self) -> Any:
        return self.deployment.client("s3")


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Stack]:
    """A sandbox of its own (it needs no stack deployed, so make test runs it beside the session's)."""
    base = tmp_path_factory.mktemp("s3-state")
    deployment = Deployment(env=sandbox_env(base), out_dir=base / "cdktf.out", sandbox_dir=base / "sandbox")
    up = deployment.sandbox("up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        (base / "out").mkdir()
        yield from _s3_stack(deployment, base / "out")
    finally:
        deployment.sandbox("down")


def _s3_stack(deployment: Deployment, out: Path) -> Iterator[S3Stack]:
    deployment.client("s3").create_bucket(Bucket=BUCKET)
    env = {k: v for k, v in deployment.env.items() if k not in PARAMETERS or k in ("SandboxEndpoint", "Target")}
    env.update(StateBucket=BUCKET, ProjectName=PROJECT, CDKTF_OUTDIR=str(out))
    synth = deployment.run(sys.executable, "main.py", cwd=ROOT, env=env)
    assert synth.returncode == 0, synth.stderr[-3000:]
    (directory,) = (out / "stacks").iterdir()
    (policy,) = [
        f"aws_iot_policy.{name}"
        for name, body in json.loads((directory / "cdk.tf.json").read_text())["resource"]["aws_iot_policy"].items()
        if body["name"] == f"{PROJECT}-dev-claim-policy"
    ]
    stack = S3Stack(deployment, directory, policy)
    init = stack.terraform("init")
    assert init.returncode == 0, init.stdout + init.stderr
    apply = stack.terraform("apply", "-auto-approve", f"-target={policy}")
    assert apply.returncode == 0, (apply.stdout + apply.stderr)[-3000:]
    try:
        yield stack
    finally:
        stack.s3.delete_object(Bucket=BUCKET, Key=f"{STATE_KEY}.tflock")
        destroyed = stack.terraform("destroy", "-auto-approve", f"-target={policy}")
        assert destroyed.returncode == 0, (destroyed.stdout + destroyed.stderr)[-3000:]


def test_apply_writes_the_state_to_the_bucket_encrypted_and_none_on_disk(s3_stack: S3Stack) -> None:
    head = s3_stack.s3.head_object(Bucket=BUCKET, Key=STATE_KEY)
    state = json.loads(s3_stack.s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read())

    assert head["ServerSideEncryption"] == "AES256"  # encrypt = true
    assert [
        (r["type"], r["instances"][0]["attributes"]["name"]) for r in state["resources"] if r["mode"] == "managed"
    ] == [("aws_iot_policy", f"{PROJECT}-dev-claim-policy")]
    assert s3_stack.deployment.client("iot").get_policy(policyName=f"{PROJECT}-dev-claim-policy")["policyName"]
    # The only state file on disk is the backend's own settings (.terraform/terraform.tfstate): no resources.
    on_disk = [
        p for p in s3_stack.directory.rglob("*.tfstate*") if p != s3_stack.directory / ".terraform/terraform.tfstate"
    ]
    assert on_disk == []
    assert "resources" not in json.loads((s3_stack.directory / ".terraform/terraform.tfstate").read_text())
    # The lock the apply took was released.
    listed = s3_stack.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PROJECT}-dev/")["Contents"]
    assert [o["Key"] for o in listed] == [STATE_KEY]


def test_a_lock_someone_else_holds_stops_terraform_and_leaves_the_state_as_it_was(s3_stack: S3Stack) -> None:
    before = s3_stack.s3.head_object(Bucket=BUCKET, Key=STATE_KEY)["ETag"]
    held = {
        "ID": "0b4c7a52-6f0e-4c35-9d55-1f1d7c3a9e01",
        "Operation": "OperationTypeApply",
        "Who": "ops@factory-2",
        "Version": "1.11.4",
        "Created": "2026-12-01T11:00:00Z",
        "Path": f"{BUCKET}/{STATE_KEY}",
    }
    s3_stack.s3.put_object(Bucket=BUCKET, Key=f"{STATE_KEY}.tflock", Body=json.dumps(held))
    try:
        locked = s3_stack.terraform("plan", "-lock-timeout=0s", f"-target={s3_stack.policy}")
    finally:
        s3_stack.s3.delete_object(Bucket=BUCKET, Key=f"{STATE_KEY}.tflock")

    assert locked.returncode == 1
    assert "Error acquiring the state lock" in locked.stderr
    assert "PreconditionFailed" in locked.stderr and "ops@factory-2" in locked.stderr
    assert s3_stack.s3.head_object(Bucket=BUCKET, Key=STATE_KEY)["ETag"] == before
    # Released, the next plan takes the lock and reads the bucket's state: the policy exists, nothing to do.
    free = s3_stack.terraform("plan", "-detailed-exitcode", f"-target={s3_stack.policy}")
    assert free.returncode == 0, free.stdout + free.stderr
