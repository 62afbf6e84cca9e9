"""The sandbox with the real stack in it: one sandbox and one `cdktf deploy` per session.

The session uses its own sandbox folder, a free loopback port and its own cdktf output folder, so
it never touches a sandbox or deployment of the developer's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from scripts import unfinished_deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Deployment:
    env: dict[str, str]
    out_dir: Path
    sandbox_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    interruption: Interruption | None = None

    @property
    def stack_dir(self) -> Path:
        (stack,) = (self.out_dir / "stacks").iterdir()
        return stack

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = DEPLOY_TIMEOUT, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command in its own process group; on timeout the whole group (terraform too) is killed."""
        process = subprocess.Popen(
            list(args),
            cwd=cwd or ROOT,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\n[killed after {timeout:.0f} s]"
        return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)

    def sandbox(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "sandbox", command, *args, timeout=120)

    def cdktf(self, command: str, parameters: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`cdktf <command>` into this deployment's folder, with these stack parameters (env overrides)."""
        return self.run(
            "npx",
            "--no-install",
            "cdktf",
            command,
            "--auto-approve",
            "--skip-provider-lock",
            "--output",
            str(self.out_dir),
            env={**self.env, **(parameters or {})},
        )

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.env["SandboxEndpoint"],
            region_name="us-east-1",
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
        )

    def state(self) -> dict[str, Any]:
        return json.loads((self.sandbox_dir / "state.json").read_text())  # type: ignore[no-any-return]


def sandbox_env(base: Path) -> dict[str, str]:
    """The environment of a sandbox of its own in `base`: free loopback ports, its own folder, no AWS."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "SandboxEndpoint": endpoint,
            "SandboxMqttPort": str(free_port()),
            "Target": "sandbox",
            "IOT_SANDBOX_DIR": str(base / "sandbox"),
            "PIPENV_VENV_IN_PROJECT": "1",
            "PIPENV_VERBOSITY": "-1",
            "CHECKPOINT_DISABLE": "1",
            "DISABLE_VERSION_CHECK": "1",
            "CDKTF_DISABLE_PLUGIN_CACHE_ENV": "1",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            "TF_IN_AUTOMATION": "1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": "sandbox",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    if not Path(env.get("TF_CLI_CONFIG_FILE", "")).is_file():
        config = base / "cli.tfrc"
        subprocess.run(
            ["bash", str(ROOT / "scripts/terraform-cli-config.sh"), str(config)], check=True, capture_output=True
        )
        env["TF_CLI_CONFIG_FILE"] = str(config)
    return env


@dataclass
class Interruption:
    """`make deploy` interrupted with Ctrl-C (SIGINT to its process group, as a terminal sends it) once
    the sandbox held the stack's first resources; then some of what it had recorded forgotten by the
    state and their creates marked as started, never completed, as when a create reaches AWS and the
    interruption comes before Terraform records it; then `make deploy` again and a plan."""

    interrupted: subprocess.CompletedProcess[str]
    recorded: set[str]  # the managed resources in Terraform's state after the interruption
    synthesized: int  # resources in the stack it was deploying
    marked: dict[str, set[str]]  # what the interrupted deploy's mark recorded: its creates, and those completed
    forgotten: list[str]  # addresses removed from the state after the interruption
    again: subprocess.CompletedProcess[str]
    plan: subprocess.CompletedProcess[str]  # -detailed-exitcode: 0 means no changes


# Kinds of resource an interruption can leave unrecorded whose create is refused while the name is taken
# (a Lambda function's is retried for minutes first, so none is forgotten here: bench/interrupted_deploy.py).
FORGOTTEN_KINDS = ("aws_iam_role", "aws_iot_policy", "aws_cloudwatch_log_group", "aws_kms_alias")


def make_deploy(deployment: Deployment) -> list[str]:
    return ["make", "-o", "setup", "--no-print-directory", "deploy", f"CDKTF_OUT={deployment.out_dir}"]


def adopted(output: str) -> set[str]:
    """The addresses `make deploy` says it adopted."""
    return {line.split("adopted: ", 1)[1].split(" ")[0] for line in output.splitlines() if "  adopted: " in line}


def forget(deployment: Deployment, kinds: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    """Removes every resource of these kinds from the deployment's state (the objects stay)."""
    listed = deployment.run("terraform", "state", "list", cwd=deployment.stack_dir, env=env)
    forgotten = [a for a in listed.stdout.split() if a.split(".")[0] in kinds]
    if forgotten:
        removed = deployment.run("terraform", "state", "rm", *forgotten, cwd=deployment.stack_dir, env=env)
        assert removed.returncode == 0, removed.stderr
    return forgotten


def interrupted_deploy(deployment: Deployment, parameters: dict[str, str]) -> Interruption:
    env = {**deployment.env, **parameters}
    log = deployment.out_dir.parent / "interrupted-deploy.log"  # a file: a full pipe would stall Terraform
    with log.open("w") as written:
        process = subprocess.Popen(
            make_deploy(deployment),
            cwd=ROOT,
            env=env,
            text=True,
            stdout=written,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dynamodb = deployment.client("dynamodb")
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        while not dynamodb.list_tables()["TableNames"]:  # the registry: created mid-apply, among others
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    interrupted = subprocess.CompletedProcess(process.args, process.returncode, log.read_text(), "")
    listed = deployment.run("terraform", "state", "list", cwd=deployment.stack_dir, env=env)
    mark = unfinished_deploy.Mark(deployment.stack_dir)
    stack = json.loads((deployment.stack_dir / "cdk.tf.json").read_text())
    unfinished, _ = mark.read(stack)
    last = unfinished.last if unfinished else {}
    marked = {"creating": set(last), "created": {a for a, event in last.items() if event == "created"}}
    forgotten = forget(deployment, FORGOTTEN_KINDS, env)
    for address in forgotten:  # as when the interruption cut these creates off before their answer
        mark.creating(address)
    again = deployment.run(*make_deploy(deployment), env=env)
    plan = deployment.run(
        "terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color", cwd=deployment.stack_dir, env=env
    )
    recorded = {a for a in listed.stdout.split() if not a.startswith("data.")}
    synthesized = sum(map(len, stack["resource"].values()))
    return Interruption(interrupted, recorded, synthesized, marked, forgotten, again, plan)


@contextlib.contextmanager
def deployed(
    base: Path,
    parameters: dict[str, str] | None = None,
    sandbox_settings: dict[str, str] | None = None,
    *,
    interrupt_first: bool = False,
    before_deploy: Callable[[Deployment], None] | None = None,
) -> Iterator[Deployment]:
    """A sandbox of its own with the stack deployed into it (with these stack parameters, for that
    deploy only; `sandbox_settings`: environment the sandbox starts with), stopped on the way out
    whatever the tests did with it in between (stopping forgets everything deployed into it).
    `interrupt_first`: deployed by `make deploy` after one interrupted `make deploy`
    (deployment.interruption says how that went). `before_deploy`: what the account holds before it."""
    env = {**sandbox_env(base), **(sandbox_settings or {})}
    deployment = Deployment(env=env, out_dir=base / "cdktf.out", sandbox_dir=base / "sandbox")
    started = time.monotonic()
    up = deployment.sandbox("up")
    assert up.returncode == 0, up.stdout + up.stderr
    deployment.timings["sandbox up"] = time.monotonic() - started
    try:
        if before_deploy is not None:
            before_deploy(deployment)
        started = time.monotonic()
        if interrupt_first:
            deployment.interruption = interrupted_deploy(deployment, parameters or {})
            deployment.timings["make deploy, interrupted, again, plan"] = time.monotonic() - started
            deploy = deployment.interruption.again
        else:
            deploy = deployment.cdktf("deploy", parameters or {})
            deployment.timings["cdktf deploy"] = time.monotonic() - started
        assert deploy.returncode == 0, (deploy.stdout + deploy.stderr)[-6000:]
        yield deployment
    finally:
        deployment.sandbox("down")


OTHER_WORKLOAD_EVENTS = ("JOB", "CA_CERTIFICATE")  # registry-event types on before the stack is deployed


def another_workload_s_events(deployment: Deployment) -> None:
    deployment.client("iot").update_event_configurations(
        eventConfigurations={kind: {"Enabled": True} for kind in OTHER_WORKLOAD_EVENTS}
    )


# The session's sandbox throttles the fleet-provisioning API at AWS's default rates, as AWS would: every
# fleet test's client then meets throttling where it would on AWS (a burst beyond the quota).
SESSION_SANDBOX = {"SandboxQuotas": "aws"}


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The stack deployed into a sandbox shared by the session's tests (each test leaves it usable), in
    an account where another workload had turned some registry-event types on already, with AWS's
    default fleet-provisioning quotas (SESSION_SANDBOX)."""
    with deployed(
        tmp_path_factory.mktemp("sandbox-session"),
        sandbox_settings=SESSION_SANDBOX,
        before_deploy=another_workload_s_events,
    ) as shared:
        yield shared
