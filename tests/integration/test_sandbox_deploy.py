"""The stack deployed into the local sandbox with real terraform, as a user deploys, verifies and destroys it.

Most tests share the session's deployment; the lifecycle tests (a claim rotation, then `make
destroy`) use a deployment of their own, so the tests pass in any order.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iot_fleet.fleet_provisioning import template_revision
from scripts import device_client as device
from tests.conftest import SUMMARY
from tests.integration.conftest import OTHER_WORKLOAD_EVENTS, ROOT, Deployment, adopted, deployed
from tests.integration.devices import Fleet

pytestmark = pytest.mark.integration

SCRIPTED_OUTPUTS = [
    "provisioning_template_name",
    "device_registry_table_name",
    "provisioning_hook_function_name",
    "provisioning_role_name",
    "claim_certificate_id",
    "claim_certificate_arn",
    "claim_certificate_pem",
]


def test_sandbox_up_twice_is_harmless(deployment: Deployment) -> None:
    pid = deployment.state()["pid"]
    again = deployment.sandbox("up")

    assert again.returncode == 0
    assert "already up" in again.stdout
    assert deployment.state()["pid"] == pid


def test_sandbox_up_on_a_port_in_use_refuses_clearly(deployment: Deployment, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**deployment.env, "SandboxEndpoint": f"http://127.0.0.1:{port}", "IOT_SANDBOX_DIR": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", "up"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert result.returncode == 1
    assert f"127.0.0.1:{port} is in use" in result.stderr
    assert not (tmp_path / "state.json").exists()


def test_verify_passes_against_the_deployed_sandbox_stack(deployment: Deployment) -> None:
    result = deployment.run(sys.executable, "scripts/verify.py", "--stack-dir", str(deployment.stack_dir))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: 7 passed, 0 failed" in result.stdout


@pytest.mark.parametrize("name", SCRIPTED_OUTPUTS)
def test_scripted_output_names_print_values_with_terraform_output_raw(deployment: Deployment, name: str) -> None:
    result = deployment.run("terraform", "output", "-raw", name, cwd=deployment.stack_dir, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_every_synthesized_resource_is_deployed(deployment: Deployment) -> None:
    synthesized = json.loads((deployment.stack_dir / "cdk.tf.json").read_text())
    expected = {f"{kind}.{name}" for kind, items in synthesized["resource"].items() for name in items}
    listed = deployment.run("terraform", "state", "list", cwd=deployment.stack_dir, timeout=120)

    deployed = {line for line in listed.stdout.split() if not line.startswith("data.")}
    assert deployed == expected
    SUMMARY.append(f"sandbox deploy: {len(deployed)} resources")


def test_the_deploy_turned_thing_events_on_and_left_every_other_type_as_it_found_it(deployment: Deployment) -> None:
    """Registry-event settings are the account's: another workload had JOB and CA_CERTIFICATE on before
    the deploy (tests/integration/conftest.py), and they stay on; the rest stay off."""
    settings = deployment.client("iot").describe_event_configurations()["eventConfigurations"]

    on = {kind for kind, setting in settings.items() if setting["Enabled"]}

    assert on == {"THING", *OTHER_WORKLOAD_EVENTS}


def test_second_plan_reports_no_changes(deployment: Deployment) -> None:
    plan = deployment.run(
        "terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color", cwd=deployment.stack_dir
    )

    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr  # 2 would mean a diff


def test_hook_runs_in_the_sandbox_and_logs_to_its_log_group(deployment: Deployment) -> None:
    outputs = json.loads(deployment.run("terraform", "output", "-json", cwd=deployment.stack_dir).stdout)
    function = outputs["provisioning_hook_function_name"]["value"]
    payload = {  # as IoT sends it: the hook refuses a request for any template but the stack's
        "certificateId": "a" * 64,
        "templateArn": outputs["provisioning_template_arn"]["value"],
        "parameters": {"SerialNumber": "SN-404", "DeviceType": "gateway", "Manufacturer": "AcmeIoT"},
    }
    answer = deployment.client("lambda").invoke(FunctionName=function, Payload=json.dumps(payload).encode())

    assert json.loads(answer["Payload"].read()) == {"allowProvisioning": False}
    events = deployment.client("logs").filter_log_events(logGroupName=f"/aws/lambda/{function}")["events"]
    decisions = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
    assert any(d.get("reason") == "NOT_ENROLLED" and d.get("serialNumber") == "SN-404" for d in decisions)


def inventory(deployment: Deployment) -> dict[str, list[Any]]:
    """Everything of ours the sandbox still holds."""
    iot = deployment.client("iot")
    kms = deployment.client("kms")
    live_keys = []
    for key in kms.list_keys()["Keys"]:
        metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
        tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])}
        # Ours carry the stack's default tags (moto keeps a "Default key" of its own).
        if tags.get("ManagedBy") == "cdktf" and metadata["KeyState"] != "PendingDeletion":
            live_keys.append(f"{metadata['KeyId']} {metadata.get('Description')} {metadata['KeyState']}")
    return {
        "tables": deployment.client("dynamodb").list_tables()["TableNames"],
        "functions": deployment.client("lambda").list_functions()["Functions"],
        "roles": [r["RoleName"] for r in deployment.client("iam").list_roles()["Roles"]],
        "log groups": [g["logGroupName"] for g in deployment.client("logs").describe_log_groups()["logGroups"]],
        "topics": deployment.client("sns").list_topics()["Topics"],
        "alarms": deployment.client("cloudwatch").describe_alarms()["MetricAlarms"],
        "dashboards": deployment.client("cloudwatch").list_dashboards()["DashboardEntries"],
        "kms keys": live_keys,
        "things": iot.list_things()["things"],
        "thing types": iot.list_thing_types()["thingTypes"],
        "thing groups": iot.list_thing_groups()["thingGroups"],
        "policies": iot.list_policies()["policies"],
        "certificates": iot.list_certificates()["certificates"],
        "topic rules": iot.list_topic_rules()["rules"],
        "templates": iot.list_provisioning_templates()["templates"],
    }


@dataclass
class Lifecycle:
    """A deployment of its own that lives a fleet's life: deployed in the middle of a claim certificate
    rotation (generations 1 and 2 in force), devices enrolled (scripts/fleet.py) and provisioned (the
    real device client) with either generation, generation 1 then retired (`fleet rotate-claim
    --apply`, a deploy), and what each step did. The whole rotation, from one generation, is
    bench/claim_rotation.py: its extra deploy costs make test a minute."""

    deployment: Deployment
    provisioning: dict[str, str]  # when, with which claim generation -> "provisioned" or the failure
    status: dict[str, Any]  # rotate-claim --json during the overlap
    retired: dict[str, Any]  # rotate-claim --apply --json
    generation_2_ids: list[str]  # claim_certificate_id, and generation 2's id before and after the retirement
    recorded: str  # ClaimCertificateGenerations in the context file afterwards
    old_claim_dropped: bool  # a connection made with generation 1 was closed when it was retired
    plan_after: subprocess.CompletedProcess[str]


def _outputs(deployment: Deployment) -> dict[str, Any]:
    listed = deployment.run("terraform", "output", "-json", cwd=deployment.stack_dir)
    return {name: value["value"] for name, value in json.loads(listed.stdout).items()}


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    base = tmp_path_factory.mktemp("sandbox-lifecycle")
    with deployed(base, {"ClaimCertificateGenerations": "1,2"}, interrupt_first=True) as deployment:
        fleet = Fleet(deployment, base / "devices")  # its claim files: the newest generation, 2
        kinds = ("gateway", "temperature-sensor", "humidity-sensor")
        manifest = base / "fleet.csv"
        manifest.write_text(
            "serialNumber,deviceType,manufacturer\n"
            + "".join(f"LIFE-{n},{kind},AcmeIoT\n" for n, kind in enumerate(kinds, 1))
        )
        code, _, said = fleet.cli("enroll", str(manifest))
        assert code == 0, said
        first = _first_generation_claim(deployment, base)
        second = (fleet.target.claim_cert, fleet.target.claim_key)
        provisioning: dict[str, str] = {}

        def attempt(case: str, serial: str, device_type: str, claim: tuple[str, str]) -> None:
            try:
                fleet.provision(serial, device_type, claim=claim)
                provisioning[case] = "provisioned"
            except device.Failure as failure:
                provisioning[case] = f"exit {failure.code}: {failure}"

        attempt("overlap, generation 1", "LIFE-1", "gateway", first)
        attempt("overlap, generation 2", "LIFE-2", "temperature-sensor", second)
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):  # NOT_ENROLLED: IoT keeps its certificate
            fleet.provision("LIFE-UNKNOWN", "gateway", claim=second, skip_device_check=True)
        context = base / "cdktf.json"  # the rotation's record, as the first --apply left it
        context.write_text(
            (ROOT / "cdktf.json")
            .read_text()
            .replace('"ClaimCertificateGenerations": "1"', '"ClaimCertificateGenerations": "1,2"')
        )
        _, status, said = fleet.cli("rotate-claim", "--context-file", str(context), "--json")
        assert status, said[-3000:]
        drops: list[Any] = []
        old_claim = device.connect(fleet.target, *first, "claim-life-old", 15, on_disconnection=drops.append)
        try:
            _, retired, said = fleet.cli("rotate-claim", "--apply", "--yes", "--context-file", str(context), "--json")
            assert retired, said[-3000:]
            deadline = time.monotonic() + 10
            while not drops and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            old_claim.close()
        attempt("after, generation 1", "LIFE-3", "humidity-sensor", first)
        attempt("after, generation 2", "LIFE-3", "humidity-sensor", second)
        plan = deployment.run(
            "terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color", cwd=deployment.stack_dir
        )
        yield Lifecycle(
            deployment,
            provisioning,
            status,
            retired,
            [
                fleet.outputs["claim_certificate_id"],
                fleet.outputs["claim_certificates"]["2"]["id"],
                _outputs(deployment)["claim_certificates"]["2"]["id"],
            ],
            json.loads(context.read_text())["context"]["ClaimCertificateGenerations"],
            bool(drops),
            plan,
        )


def _first_generation_claim(deployment: Deployment, base: Path) -> tuple[str, str]:
    """Generation 1's certificate and key, as a factory kept them when generation 2 was added (the
    outputs give only the newest generation's: read from the Terraform state here)."""
    state = json.loads(deployment.run("terraform", "show", "-json", cwd=deployment.stack_dir).stdout)
    first = _outputs(deployment)["claim_certificates"]["1"]["id"]
    (values,) = [
        r["values"]
        for r in state["values"]["root_module"]["resources"]
        if r["type"] == "aws_iot_certificate" and r["values"]["id"] == first
    ]
    return (
        device._write_private(base / "claim-1.pem.crt", values["certificate_pem"]),
        device._write_private(base / "claim-1.key", values["private_key"]),
    )


def test_devices_provision_with_either_claim_generation_during_the_overlap_and_only_the_new_one_after(
    lifecycle: Lifecycle,
) -> None:
    assert lifecycle.provisioning == {
        "overlap, generation 1": "provisioned",  # devices already built with the old claim keep provisioning
        "overlap, generation 2": "provisioned",
        "after, generation 1": lifecycle.provisioning["after, generation 1"],
        "after, generation 2": "provisioned",
    }
    # Retired: refused at connect (the certificate is gone), as a device carrying it finds out.
    assert lifecycle.provisioning["after, generation 1"].startswith(f"exit {device.CLAIM_CONNECT}:")
    assert lifecycle.old_claim_dropped  # and a connection open with it was closed


def test_a_make_deploy_interrupted_midway_converges_on_the_next_and_a_plan_then_shows_no_changes(
    lifecycle: Lifecycle,
) -> None:
    """Ctrl-C in the middle of `make deploy` (the lifecycle's first deploy): Terraform stops gracefully
    with part of the stack recorded in state. Some of it is then forgotten by the state, as a create
    cut short between AWS and Terraform's record leaves it, and their creates marked unfinished; the next
    `make deploy`, knowing the last one did not finish, adopts what those creates left, creates the rest,
    and a plan right after finds nothing to change."""
    interruption = lifecycle.deployment.interruption
    assert interruption is not None
    total = interruption.synthesized
    assert interruption.interrupted.returncode != 0
    assert "Interrupt received" in interruption.interrupted.stdout, interruption.interrupted.stdout[-3000:]
    assert 0 < len(interruption.recorded) < total  # stopped midway, with what it had created recorded
    # The mark read Terraform's own output: every create that completed was recorded, and every resource
    # recorded was a create started (one cancelled after AWS made it, the registry table waiting on its
    # backups for one, is recorded tainted with its create failed).
    assert interruption.marked["created"] <= interruption.recorded <= interruption.marked["creating"]
    assert interruption.again.returncode == 0, (interruption.again.stdout + interruption.again.stderr)[-4000:]
    assert "the last deploy of this stack did not finish" in interruption.again.stdout
    assert interruption.forgotten  # roles and IoT policies are recorded before the registry table exists
    assert set(interruption.forgotten) <= adopted(interruption.again.stdout)
    assert interruption.plan.returncode == 0, interruption.plan.stdout[-3000:]
    SUMMARY.append(
        f"make deploy interrupted with {len(interruption.recorded)} of {total} resources recorded, "
        f"{len(interruption.forgotten)} of them then forgotten; the next make deploy adopted "
        f"{len(adopted(interruption.again.stdout))} and converged, plan: no changes"
    )


def test_rotate_claim_shows_each_generations_use_and_retires_the_old_one_changing_nothing_else(
    lifecycle: Lifecycle,
) -> None:
    """The retirement is a deploy that destroys one certificate, its policy attachment and its expiry
    alarm, and changes only the reconciler's list of claim certificates to watch; the remaining
    generation is not replaced, and a plan afterwards finds no drift."""
    assert (lifecycle.status["inForce"], lifecycle.status["next"]["action"]) == ([1, 2], "retire")
    assert [(g["number"], g["status"], g["provisioned"]) for g in lifecycle.status["generations"]] == [
        (1, "ACTIVE", 1),
        (2, "ACTIVE", 1),
    ]
    assert (lifecycle.retired["inForce"], lifecycle.retired["terraform"]) == (
        [2],
        {"added": 0, "changed": 1, "destroyed": 3},
    )
    assert lifecycle.recorded == "2"
    assert len(set(lifecycle.generation_2_ids)) == 1
    assert lifecycle.plan_after.returncode == 0, lifecycle.plan_after.stdout[-3000:]


@dataclass
class Destroyed:
    """The lifecycle's deployment, destroyed and stopped as a user does it (`make destroy`, then
    `sandbox down`), and what that left behind."""

    deployment: Deployment
    before: dict[str, list[Any]]
    destroy: subprocess.CompletedProcess[str]
    leftovers: dict[str, list[Any]]
    down: subprocess.CompletedProcess[str]
    group: list[int]  # processes of the stopped sandbox's group still running


@pytest.fixture(scope="module")
def destroyed(lifecycle: Lifecycle) -> Iterator[Destroyed]:
    deployment = lifecycle.deployment
    before = inventory(deployment)
    assert before["templates"] and before["functions"] and before["tables"]
    started = time.monotonic()
    destroy = deployment.run(
        "make", "-o", "setup", "--no-print-directory", "destroy", f"CDKTF_OUT={deployment.out_dir}", cwd=ROOT
    )
    deployment.timings["make destroy"] = time.monotonic() - started
    leftovers = {kind: items for kind, items in inventory(deployment).items() if items}
    pid = deployment.state()["pid"]
    down = deployment.sandbox("down")
    group = [int(p.name) for p in Path("/proc").glob("[0-9]*") if _in_group(p, pid) and _running(p)]
    SUMMARY.append(
        "sandbox timings: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in deployment.timings.items())
    )
    yield Destroyed(deployment, before, destroy, leftovers, down, group)


def test_make_destroy_decommissions_the_provisioned_devices_and_leaves_nothing_behind(destroyed: Destroyed) -> None:
    assert len(destroyed.before["things"]) == 3  # provisioned devices, with their certificates and policies
    assert destroyed.destroy.returncode == 0, (destroyed.destroy.stdout + destroyed.destroy.stderr)[-4000:]
    # 4 certificates: the devices' 3 and the refused attempt's, still PENDING_ACTIVATION (the hook's log
    # names it; its token's hour is not over)
    assert "decommissioned 3 devices of iot-provisioning-dev (4 certificates and 3 things deleted)" in (
        destroyed.destroy.stdout
    )
    assert destroyed.leftovers == {}


def test_sandbox_down_stops_every_process_it_started(destroyed: Destroyed) -> None:
    assert destroyed.down.returncode == 0, destroyed.down.stderr
    assert destroyed.group == []
    assert not (destroyed.deployment.sandbox_dir / "state.json").exists()


def _running(proc: Path) -> bool:
    """Alive, not merely an exited process waiting for its parent to collect it."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _in_group(proc: Path, pgid: int) -> bool:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid
    except (OSError, IndexError, ValueError):
        return False


def test_deploy_against_a_stopped_sandbox_fails_fast_saying_what_to_do(destroyed: Destroyed) -> None:
    deployment = destroyed.deployment
    assert deployment.sandbox("status").returncode == 3
    started = time.monotonic()
    result = deployment.run(
        "terraform", "apply", "-auto-approve", "-input=false", "-no-color", cwd=deployment.stack_dir, timeout=90
    )
    elapsed = time.monotonic() - started

    assert result.returncode != 0
    assert elapsed < 60
    assert "connection refused" in result.stderr
    hint = deployment.run("make", "--no-print-directory", "_deploy-hint", cwd=ROOT, timeout=60)
    assert "the sandbox is not answering: not running" in hint.stdout
    assert str(deployment.sandbox_dir / "server.log") in hint.stdout  # where to look
    assert "run 'make deploy' again" in hint.stdout


def test_a_template_change_applies_when_the_template_already_has_five_versions(deployment: Deployment) -> None:
    """AWS keeps 5 versions of a template and the provider deletes none, so without pruning a change
    to a template with 5 versions fails (VersionsLimitExceededException). The stack prunes first: a
    changed body applies, then the original body again, each leaving at most 5 and the newest default."""
    document = deployment.stack_dir / "cdk.tf.json"
    original = document.read_text()
    stack = json.loads(original)
    (template,) = stack["resource"]["aws_iot_provisioning_template"].values()
    (pruning,) = [
        body
        for body in stack["resource"]["terraform_data"].values()
        if "prune_template_versions.py" in body["provisioner"][0]["local-exec"]["command"]
    ]
    name, original_body = template["name"], template["template_body"]
    iot = deployment.client("iot")
    while len(iot.list_provisioning_template_versions(templateName=name)["versions"]) < 5:
        iot.create_provisioning_template_version(templateName=name, templateBody=original_body, setAsDefault=False)
    changed = json.loads(original_body)
    changed["DeviceConfiguration"]["revision"] = "2"
    started = time.monotonic()
    try:
        for body in (json.dumps(changed, separators=(",", ":")), original_body):
            template["template_body"] = body
            pruning["triggers_replace"] = {"template_body": template_revision(body)}
            document.write_text(json.dumps(stack, indent=2))
            # -refresh=false: the state is the one the previous apply left (refreshing 44 resources doubled the time)
            applied = deployment.run(
                "terraform",
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-refresh=false",
                cwd=deployment.stack_dir,
            )
            assert applied.returncode == 0, (applied.stdout + applied.stderr)[-4000:]
            versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
            assert len(versions) <= 5
            assert [v["versionId"] for v in versions if v["isDefaultVersion"]] == [
                max(v["versionId"] for v in versions)
            ]
            assert iot.describe_provisioning_template(templateName=name)["templateBody"] == body
    finally:
        document.write_text(original)
    SUMMARY.append(f"two template changes at 5 versions applied in {time.monotonic() - started:.0f} s")


def test_the_rotation_function_runs_with_its_reservation_and_one_leaving_under_100_unreserved_is_refused(
    deployment: Deployment,
) -> None:
    """As on an AWS account with the default concurrency (1000): the stack's reservation deploys, and one
    that would leave fewer than 100 executions unreserved is refused."""
    functions = deployment.client("lambda")
    outputs = _outputs(deployment)
    rotation = outputs["provisioning_hook_function_name"].replace("provisioning-hook", "certificate-rotation")
    assert functions.get_function_concurrency(FunctionName=rotation)["ReservedConcurrentExecutions"] == 2
    assert functions.get_function_event_invoke_config(FunctionName=rotation)["MaximumRetryAttempts"] == 0

    with pytest.raises(functions.exceptions.InvalidParameterValueException, match="below its minimum value of"):
        functions.put_function_concurrency(FunctionName=rotation, ReservedConcurrentExecutions=901)
    assert functions.get_function_concurrency(FunctionName=rotation)["ReservedConcurrentExecutions"] == 2
