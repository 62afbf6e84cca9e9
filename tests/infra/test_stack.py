"""What AWS and users see of the synthesized stack: the template, hook wiring, policies, outputs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from iot_fleet import documents
from iot_fleet.fleet_provisioning import template_revision
from tests.conftest import SUMMARY
from tests.infra.conftest import ROOT, OperatorSynth, Synth

pytestmark = pytest.mark.infra

RECIPE_OUTPUTS = [
    "provisioning_template_name",
    "provisioning_template_arn",
    "device_registry_table_name",
    "provisioning_hook_function_name",
    "provisioning_role_name",
    "claim_certificate_id",
    "claim_certificate_arn",
    "claim_certificate_pem",
    "claim_private_key",
    "thing_group_names",
    "device_policy_names",
    "iot_data_endpoint",
]
TEMPLATE_RESOURCE_TYPES = {"AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy"}


def literal(text: str) -> str:
    """A Terraform string as AWS receives it once Terraform has unescaped $${ (references stay)."""
    return text.replace("$${", "${")


def template_body(synth: Synth) -> dict[str, Any]:
    return json.loads(literal(synth.one("aws_iot_provisioning_template")["template_body"]))


def policy_resources(policy: dict[str, Any], action: str) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            resource = statement["Resource"]
            found |= set(resource if isinstance(resource, list) else [resource])
    return found


def test_constructs_is_the_installed_library_not_our_folder() -> None:
    import constructs

    assert "site-packages" in str(constructs.__file__)


def test_template_body_references_only_declared_or_hook_supplied_parameters(synth: Synth) -> None:
    body = template_body(synth)
    supplied = set(body["Parameters"]) | set(documents.HOOK_OVERRIDES)
    assert documents.referenced_parameters(body) <= supplied
    assert set(documents.HOOK_OVERRIDES) <= set(body["Parameters"])  # overrides must be declared too


def test_template_uses_only_resource_types_aws_allows_and_fits_the_size_limit(synth: Synth) -> None:
    text = literal(synth.one("aws_iot_provisioning_template")["template_body"])
    body = json.loads(text)
    assert {r["Type"] for r in body["Resources"].values()} <= TEMPLATE_RESOURCE_TYPES
    assert len(text) <= 10_240
    assert "Conditions" not in body and "Fn::If" not in text


def test_every_policy_and_group_the_template_can_name_exists(synth: Synth) -> None:
    body = template_body(synth)
    mapping = body["Mappings"]["DeviceTypes"]
    assert set(mapping) == set(synth.config.allowed_device_types)
    policy_names = {p["name"] for p in synth.resources("aws_iot_policy").values()}
    group_names = {g["name"] for g in synth.resources("aws_iot_thing_group").values()}
    for device_type, entry in mapping.items():
        assert entry["PolicyName"] in policy_names, device_type
        assert entry["ThingGroup"] in group_names, device_type
        group = synth.named("aws_iot_thing_group", entry["ThingGroup"])
        root = synth.named("aws_iot_thing_group", f"{synth.config.prefix}-devices")
        assert group["parent_group_name"] == synth.reference("aws_iot_thing_group", root, "name")
    thing = body["Resources"]["thing"]["Properties"]
    assert thing["ThingTypeName"] == synth.one("aws_iot_thing_type")["name"]


def test_template_is_an_enabled_fleet_template_calling_the_hook(synth: Synth) -> None:
    template = synth.one("aws_iot_provisioning_template")
    hook = synth.named("aws_lambda_function", f"{synth.config.prefix}-provisioning-hook")
    assert template["enabled"] is True
    assert template["type"] == "FLEET_PROVISIONING"
    assert len(template["name"]) <= 36 and re.fullmatch(r"[0-9A-Za-z_-]+", template["name"])
    assert template["pre_provisioning_hook"] == {
        "payload_version": "2020-04-01",
        "target_arn": synth.reference("aws_lambda_function", hook, "arn"),
    }


def deploy_script(stack: Synth, script: str) -> tuple[str, dict[str, Any]]:
    """The terraform_data resource that runs scripts/<script> at deploy: its logical name and body."""
    (found,) = [
        (logical, body)
        for logical, body in stack.resources("terraform_data").items()
        if script in body["provisioner"][0]["local-exec"]["command"]
    ]
    return found


def test_every_template_change_prunes_old_versions_first(synth: Synth, variant: Synth) -> None:
    """AWS keeps 5 template versions and the provider deletes none: a terraform_data resource, replaced
    whenever the body changes and run before the template, prunes to 4 with the deployer's AWS access."""
    for stack, environment in ((synth, {"AWS_ENDPOINT_URL": synth.config.sandbox_endpoint}), (variant, {})):
        template = stack.one("aws_iot_provisioning_template")
        logical, pruning = deploy_script(stack, "prune_template_versions.py")
        assert len(stack.resources("terraform_data")) == 2  # and the THING-events script's
        assert f"terraform_data.{logical}" in template["depends_on"]
        assert pruning["triggers_replace"] == {"template_body": template_revision(template["template_body"])}
        (provisioner,) = pruning["provisioner"]
        assert provisioner["local-exec"].get("environment", {}).items() >= environment.items()
        if stack.config.target == "aws":
            assert "environment" not in provisioner["local-exec"] or not provisioner["local-exec"]["environment"]


def run_pruning(stack: Synth, python: str, tmp_path: Path) -> list[str]:
    """Runs the synthesized local-exec command as Terraform does (/bin/sh -c, in the stack's folder),
    with `python` in place of the synthesizing interpreter and a recording `python3` on PATH; returns
    the arguments the interpreter that ran got, the interpreter's name first."""
    _, pruning = deploy_script(stack, "prune_template_versions.py")
    command = pruning["provisioner"][0]["local-exec"]["command"]
    synthesizing = shlex.quote(sys.executable)
    assert command.count(synthesizing) == 1
    recorder = tmp_path / "bin"
    recorder.mkdir(exist_ok=True)
    record = tmp_path / "ran.json"
    for name in ("python3", "synthesizing-python"):
        script = recorder / name
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name}" "$@" > {shlex.quote(str(record))}\n')
        script.chmod(0o755)
    replaced = command.replace(synthesizing, shlex.quote(python.replace("@bin", str(recorder))))
    subprocess.run(
        ["/bin/sh", "-c", replaced],
        cwd=stack.directory,
        check=True,
        env={"PATH": f"{recorder}:/usr/bin:/bin"},
        timeout=30,
    )
    return record.read_text().splitlines()


def test_the_pruning_script_travels_with_the_stack_and_runs_with_the_deployers_python(
    synth: Synth, tmp_path: Path
) -> None:
    """The command names no file of the synthesizing machine but its Python, and falls back to
    `python3` from PATH where that Python does not exist; the script is an asset of the stack."""
    _, pruning = deploy_script(synth, "prune_template_versions.py")
    command = pruning["provisioner"][0]["local-exec"]["command"]
    assert str(ROOT) not in command.replace(shlex.quote(sys.executable), "")
    arguments = [
        "--template-name",
        synth.config.provisioning_template_name,
        "--region",
        synth.config.aws_region,
        "--keep",
        "4",
    ]

    ran = run_pruning(synth, "@bin/synthesizing-python", tmp_path)  # the synthesizing Python exists here
    assert ran[0] == "synthesizing-python" and ran[2:] == arguments
    script = synth.directory / ran[1]
    assert not Path(ran[1]).is_absolute() and script.is_file()  # relative to the stack's folder, inside it
    assert script.read_bytes() == (ROOT / "scripts/prune_template_versions.py").read_bytes()

    ran = run_pruning(synth, "/nonexistent/python3.11", tmp_path)  # another machine: python3 from PATH
    assert ran == ["python3", ran[1], *arguments] and (synth.directory / ran[1]).is_file()


def test_only_this_accounts_iot_may_invoke_the_hook(synth: Synth) -> None:
    """aws:SourceAccount, not the template's ARN as aws:SourceArn: AWS does not say what IoT sets as the
    source ARN when it invokes a hook, and the account works under every reading (docs/sandbox.md)."""
    hook = synth.named("aws_lambda_function", f"{synth.config.prefix}-provisioning-hook")
    permissions = [
        p
        for p in synth.resources("aws_lambda_permission").values()
        if p["function_name"] == synth.reference("aws_lambda_function", hook, "function_name")
    ]
    assert len(permissions) == 1
    (permission,) = permissions
    assert permission["principal"] == "iot.amazonaws.com"
    assert permission["action"] == "lambda:InvokeFunction"
    (caller,) = synth.stack["data"]["aws_caller_identity"]
    assert permission["source_account"] == f"${{data.aws_caller_identity.{caller}.account_id}}"
    assert "source_arn" not in permission


def test_claim_policy_grants_exactly_the_provisioning_topics_of_this_template(synth: Synth) -> None:
    claim = json.loads(literal(synth.named("aws_iot_policy", f"{synth.config.prefix}-claim-policy")["policy"]))
    name = synth.config.provisioning_template_name
    topics = {
        "$aws/certificates/create/*",
        "$aws/certificates/create-from-csr/*",
        f"$aws/provisioning-templates/{name}/provision/*",
    }

    def suffixes(action: str, kind: str) -> set[str]:
        found = policy_resources(claim, action)
        assert all(r.split(":", 5)[5].startswith(kind + "/") for r in found)
        return {r.split(":", 5)[5][len(kind) + 1 :] for r in found}

    assert suffixes("iot:Publish", "topic") == topics
    assert suffixes("iot:Receive", "topic") == topics
    assert suffixes("iot:Subscribe", "topicfilter") == topics
    actions = {a for s in claim["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe"}
    assert suffixes("iot:Connect", "client") == {"claim-*"}  # ClaimClientIdPrefix: no thing name takes it
    assert synth.stack["output"]["claim_client_id_prefix"]["value"] == "claim-"
    attachment = synth.one("aws_iot_policy_attachment")
    assert attachment["target"] == synth.reference("aws_iot_certificate", synth.one("aws_iot_certificate"), "arn")


def test_device_policies_bind_every_resource_to_the_thing_name_never_a_type_wildcard(synth: Synth) -> None:
    names = {f"{synth.config.prefix}-{t}-policy": t for t in synth.config.allowed_device_types}
    seen = set()
    for policy in synth.resources("aws_iot_policy").values():
        if policy["name"] not in names:
            continue
        device_type = names[policy["name"]]
        seen.add(device_type)
        document = json.loads(literal(policy["policy"]))
        connect = next(s for s in document["Statement"] if s["Action"] == "iot:Connect")
        assert connect["Resource"].endswith(":client/${iot:Connection.Thing.ThingName}")
        assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
        for statement in document["Statement"]:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                assert "${iot:Connection.Thing.ThingName}" in resource
                assert f"{device_type}-*" not in resource and f"{device_type}*" not in resource
    assert seen == set(synth.config.allowed_device_types)


def test_hook_function_runtime_timeout_and_least_privilege_role(synth: Synth) -> None:
    prefix = synth.config.prefix
    hook = synth.named("aws_lambda_function", f"{prefix}-provisioning-hook")
    assert re.fullmatch(r"python3\.(1[2-9])", hook["runtime"])
    assert hook["timeout"] < 5
    env = hook["environment"]["variables"]
    assert env["ALLOWED_DEVICE_TYPES"].split(",") == list(synth.config.allowed_device_types)
    assert env["REQUIRE_ENROLLMENT"] == "true"
    assert (env["REQUIRE_ATTESTATION"], env["CLAIM_CLIENT_ID_PREFIX"]) == ("false", "claim-")
    assert env["PROVISIONING_TEMPLATE_NAME"] == synth.config.provisioning_template_name  # it refuses any other
    table = synth.one("aws_dynamodb_table")
    assert env["TABLE_NAME"] == synth.reference("aws_dynamodb_table", table, "name")
    role_policy = next(
        p for p in synth.resources("aws_iam_role_policy").values() if p["name"] == f"{prefix}-provisioning-hook-policy"
    )
    statements = json.loads(role_policy["policy"])["Statement"]
    table_arn = synth.reference("aws_dynamodb_table", table, "arn")
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in s["Action"])]
    # GetItem reads the enrolled factory key before the one conditional write (attestation).
    reads_and_claims = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    assert dynamodb == [{"Effect": "Allow", "Action": reads_and_claims, "Resource": table_arn}]
    assert all("*" not in a for s in statements for a in s["Action"])
    logs = synth.named("aws_cloudwatch_log_group", f"/aws/lambda/{prefix}-provisioning-hook")
    assert logs["retention_in_days"] == synth.config.log_retention_days


def test_registry_table_is_keyed_by_serial_with_type_status_and_rotation_indexes(synth: Synth, variant: Synth) -> None:
    table = synth.one("aws_dynamodb_table")
    assert table["name"] == synth.config.table_name
    assert table["hash_key"] == "serialNumber"
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    # The status index is sorted by type: a list of one type in one status reads only those devices.
    assert {(i["name"], i["hash_key"], i.get("range_key")) for i in table["global_secondary_index"]} == {
        ("deviceType-index", "deviceType", None),
        ("status-index", "status", "deviceType"),
        ("rotation-index", "rotationState", "rotationRequestedAt"),
    }
    assert table["point_in_time_recovery"] == {"enabled": True}
    assert table["server_side_encryption"]["enabled"] is True
    assert table["server_side_encryption"]["kms_key_arn"].startswith("${aws_kms_key.")
    assert table["deletion_protection_enabled"] is False
    assert variant.one("aws_dynamodb_table")["deletion_protection_enabled"] is True


def test_thing_created_events_drive_the_registry_events_function(synth: Synth) -> None:
    # No provider resource for the account-wide event configurations: it would state every type.
    assert synth.resources("aws_iot_event_configurations") == {}
    (thing_events_key, thing_events) = next(
        (k, r)
        for k, r in synth.resources("terraform_data").items()
        if "enable_thing_events.py" in r["provisioner"][0]["local-exec"]["command"]
    )
    events = synth.named("aws_lambda_function", f"{synth.config.prefix}-registry-events")
    rules = {r["name"]: r for r in synth.resources("aws_iot_topic_rule").values()}
    rule = rules[f"{synth.config.prefix}_thing_created".replace("-", "_")]
    assert rule["sql"] == "SELECT * FROM '$aws/events/thing/+/created'"
    assert rule["lambda"] == [{"function_arn": synth.reference("aws_lambda_function", events, "arn")}]
    assert f"terraform_data.{thing_events_key}" in rule["depends_on"]  # THING events are on before the rule
    local_exec = thing_events["provisioner"][0]["local-exec"]
    assert "--region us-east-1" in local_exec["command"]
    # It reaches the sandbox, never the deployer's AWS account.
    assert local_exec["environment"]["AWS_ENDPOINT_URL"] == synth.config.sandbox_endpoint
    shadows = json.loads(events["environment"]["variables"]["INITIAL_SHADOWS"])
    assert set(shadows) == set(synth.config.allowed_device_types)
    assert shadows["temperature-sensor"] == {
        "samplingRate": 30,
        "temperatureUnit": "celsius",
        "alertThreshold": 80,
        "enabled": True,
    }
    audit = rules[f"{synth.config.prefix}_audit".replace("-", "_")]
    assert audit["sql"].endswith("FROM '$aws/events/thing/#'")
    log_group = synth.named("aws_cloudwatch_log_group", f"/aws/iot/{synth.config.prefix}/audit")
    assert audit["cloudwatch_logs"][0]["log_group_name"] == synth.reference(
        "aws_cloudwatch_log_group", log_group, "name"
    )


def test_recipe_outputs_exist_at_stack_level_with_descriptions(synth: Synth, variant: Synth) -> None:
    outputs = variant.stack["output"]  # the AWS target: every recipe output, the data endpoint included
    for name in RECIPE_OUTPUTS:
        # On AWS the claim key is out of state by default: its output is the key's file instead.
        name = "claim_private_key_file" if name == "claim_private_key" else name
        assert name in outputs, name
        assert outputs[name].get("description"), name
    for name in ("claim_certificates", "environment"):  # what the operator tools read besides the recipe's
        assert outputs[name].get("description"), name
    assert outputs["environment"]["value"] == "prod"
    assert synth.stack["output"]["claim_private_key"]["sensitive"] is True
    assert outputs["claim_certificate_pem"]["sensitive"] is True  # the provider marks it; plan refuses otherwise
    assert outputs["provisioning_template_name"]["value"].startswith("${aws_iot_provisioning_template.")
    # The sandbox target (the default) leaves out only the data endpoint: the sandbox knows its broker.
    assert set(RECIPE_OUTPUTS) - set(synth.stack["output"]) == {"iot_data_endpoint"}


def test_the_stack_states_the_terraform_its_s3_lock_file_needs(synth: Synth, variant: Synth) -> None:
    """use_lockfile (the S3 backend's lock) exists from Terraform 1.10: an older one must refuse the stack
    with a version error, not fail at init on an unknown argument."""
    assert variant.stack["terraform"]["backend"]["s3"]["use_lockfile"] is True
    for stack in (synth, variant):
        assert stack.stack["terraform"]["required_version"] == ">= 1.10.0"


def test_sandbox_target_points_every_service_at_the_sandbox_and_keeps_state_beside_it(
    synth: Synth, variant: Synth
) -> None:
    (provider,) = synth.stack["provider"]["aws"]
    (endpoints,) = provider["endpoints"]
    assert set(endpoints.values()) == {synth.config.sandbox_endpoint}
    # The sandbox refuses every access key but its administrator's and its functions' own.
    _, pruning = deploy_script(synth, "prune_template_versions.py")
    assert (
        provider["access_key"]
        == pruning["provisioner"][0]["local-exec"]["environment"]["AWS_ACCESS_KEY_ID"]
        == ("sandbox")
    )
    # Each resource type's API; a type not listed here means a service the sandbox may not cover.
    service = {
        "aws_cloudwatch_log_group": "logs",
        "aws_cloudwatch_metric_alarm": "cloudwatch",
        "aws_cloudwatch_dashboard": "cloudwatch",
        "aws_dynamodb_table": "dynamodb",
        "aws_kms_key": "kms",
        "aws_kms_alias": "kms",
        "aws_sns_topic": "sns",
        "aws_cloudwatch_event_rule": "events",
        "aws_cloudwatch_event_target": "events",
    }
    used = {"sts"}  # the account id
    for kind in synth.stack["resource"]:
        if kind == "terraform_data":
            continue  # Terraform's own (no API)
        prefix = kind.split("_")[1]
        used.add(service.get(kind) or {"iam": "iam", "iot": "iot", "lambda": "lambda"}[prefix])
    assert used <= set(endpoints)
    assert provider["max_retries"] <= 3 and provider["skip_credentials_validation"] is True
    assert synth.stack["terraform"]["backend"]["local"]["path"].startswith(synth.config.sandbox_dir)
    (aws,) = variant.stack["provider"]["aws"]
    assert "endpoints" not in aws and "access_key" not in aws


def test_on_aws_the_claim_certificates_come_from_keys_synth_made_so_no_key_reaches_state(variant: Synth) -> None:
    """Target=aws without ClaimKeyInState: each generation is certified from the CSR of a key synth made
    in the factory folder (0600); nothing in the stack refers to a private key AWS would make."""
    folder = variant.config.claim_key_folder
    csrs = {c.get("csr", "") for c in variant.resources("aws_iot_certificate").values()}
    assert csrs == {(folder / f"claim-{g}.csr").read_text() for g in (1, 2)}  # each generation its own key
    for generation in (1, 2):
        key = folder / f"claim-{generation}.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    outputs = variant.stack["output"]
    assert "claim_private_key" not in outputs
    assert outputs["claim_private_key_file"]["value"] == str(folder / "claim-2.key")  # the newest generation
    assert "private_key" not in json.dumps(variant.stack["output"]).replace("claim_private_key_file", "")
    assert ".private_key}" not in (variant.directory / "cdk.tf.json").read_text()


def test_claim_key_in_state_keeps_aws_made_keys_and_synth_says_what_it_costs(opted_in: OperatorSynth) -> None:
    (certificate,) = opted_in.stack["resource"]["aws_iot_certificate"].values()
    assert "csr" not in certificate  # AWS IoT makes the key; the provider keeps it in state
    output = opted_in.stack["output"]["claim_private_key"]
    assert output["sensitive"] is True and output["value"].endswith(".private_key}")
    assert "claim_private_key_file" not in opted_in.stack["output"]
    warnings = [line for line in opted_in.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: ClaimKeyInState=true: the claim private key will be in Terraform state in plain text; anyone "
        "who can read the state can provision devices as your factory does"
    ]
    assert not opted_in.factory.exists()  # no key made on this machine
    # Without StateBucket, cdktf's local backend: a state file in the project folder (docs/aws.md says so).
    assert opted_in.stack["terraform"]["backend"] == {
        "local": {"path": str(ROOT / "terraform.iot-provisioning-dev.tfstate")}
    }


def test_state_bucket_keeps_state_in_s3_encrypted_and_locked(synth: Synth, variant: Synth) -> None:
    backend = variant.stack["terraform"]["backend"]
    assert backend == {
        "s3": {
            "bucket": "fleet-state.example",
            "key": "IoTProvisioning-prod/terraform.iot-provisioning-prod.tfstate",
            "region": "eu-west-1",
            "encrypt": True,
            "use_lockfile": True,
        }
    }
    assert set(synth.stack["terraform"]["backend"]) == {"local"}  # no StateBucket: a local file


def test_a_claim_rotation_adds_a_generation_without_replacing_the_current_one(synth: Synth, variant: Synth) -> None:
    """Adding generation 2 leaves generation 1 under its address (so a deploy does not replace it);
    both are attached to the claim policy; the recipe's claim outputs name the newest."""
    (current,) = synth.resources("aws_iot_certificate")
    certificates = variant.resources("aws_iot_certificate")
    assert current in certificates and len(certificates) == 2
    (newest,) = set(certificates) - {current}
    policy = variant.named("aws_iot_policy", f"{variant.config.prefix}-claim-policy")
    attached = {
        a["target"]
        for a in variant.resources("aws_iot_policy_attachment").values()
        if a["policy"] == variant.reference("aws_iot_policy", policy, "name")
    }
    assert attached == {f"${{aws_iot_certificate.{name}.arn}}" for name in certificates}
    outputs = variant.stack["output"]
    assert outputs["claim_certificate_id"]["value"] == f"${{aws_iot_certificate.{newest}.id}}"
    assert outputs["claim_certificate_pem"]["value"] == f"${{aws_iot_certificate.{newest}.certificate_pem}}"
    assert set(outputs["claim_certificates"]["value"]) == {"1", "2"}
    reconciler = variant.named("aws_lambda_function", f"{variant.config.prefix}-reconciler")
    watched = reconciler["environment"]["variables"]["CLAIM_CERTIFICATE_IDS"].split(",")
    assert sorted(watched) == sorted(f"${{aws_iot_certificate.{name}.id}}" for name in certificates)  # both expire


def test_new_catalogue_type_yields_group_policy_mapping_and_hook_allowance(variant: Synth) -> None:
    prefix = variant.config.prefix
    assert variant.named("aws_iot_thing_group", f"{prefix}-vibration-sensor")
    policy = json.loads(literal(variant.named("aws_iot_policy", f"{prefix}-vibration-sensor-policy")["policy"]))
    assert any(
        r.endswith("/devices/${iot:Connection.Thing.ThingName}/telemetry")
        for r in policy_resources(policy, "iot:Publish")
    )
    body = template_body(variant)
    assert body["Mappings"]["DeviceTypes"]["vibration-sensor"] == {
        "PolicyName": f"{prefix}-vibration-sensor-policy",
        "ThingGroup": f"{prefix}-vibration-sensor",
    }
    hook = variant.named("aws_lambda_function", f"{prefix}-provisioning-hook")
    assert "vibration-sensor" in hook["environment"]["variables"]["ALLOWED_DEVICE_TYPES"].split(",")
    events = variant.named("aws_lambda_function", f"{prefix}-registry-events")
    shadows = json.loads(events["environment"]["variables"]["INITIAL_SHADOWS"])
    assert shadows["vibration-sensor"] == {"enabled": True, "reportingInterval": 60}


def test_lambda_packages_hold_the_handler_the_shared_package_and_no_bytecode(synth: Synth) -> None:
    for function in synth.resources("aws_lambda_function").values():
        module = function["handler"].split(".")[0]
        archive = synth.directory / function["filename"]
        with zipfile.ZipFile(archive) as package:
            names = package.namelist()
        assert f"{module}.py" in names
        # Every function imports it; the sandbox would find the project's own copy, AWS only the zip's.
        assert {"fleet_shared/__init__.py", "fleet_shared/registry.py", "fleet_shared/runtime.py"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_every_checkov_acknowledgement_carries_a_reason(synth: Synth) -> None:
    for resources in synth.stack["resource"].values():
        for body in resources.values():
            for skip in body.get("//", {}).get("checkov", {}).get("skip", []):
                assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]) and len(skip["comment"]) > 20


def alarms_by_name(synth: Synth) -> dict[str, dict[str, Any]]:
    prefix = f"{synth.config.prefix}-"
    return {a["alarm_name"].removeprefix(prefix): a for a in synth.resources("aws_cloudwatch_metric_alarm").values()}


def test_monitoring_raises_the_recipe_alerts_into_an_encrypted_topic(synth: Synth, variant: Synth) -> None:
    alarms = alarms_by_name(synth)
    assert set(alarms) == {
        "provisioning-failures",
        "hook-errors",
        "hook-denied-on-errors",
        "registry-events-errors",
        "registry-throttling",
        "reconciler-errors",
        "certificate-rotation-errors",
        "claim-certificate-1-expiry",
        "serial-guessing",
    }
    expiry = alarms["claim-certificate-1-expiry"]
    assert (expiry["metric_name"], expiry["statistic"], expiry["comparison_operator"], expiry["threshold"]) == (
        "ClaimCertificateDaysToExpiry",
        "Minimum",
        "LessThanThreshold",
        30,
    )
    # An hour of 5-minute figures: one skipped reconciler run cannot flip it; none for an hour is said.
    assert (expiry["period"], expiry["evaluation_periods"], expiry["treat_missing_data"]) == (3600, 1, "missing")
    assert expiry["insufficient_data_actions"] == expiry["alarm_actions"]
    assert "insufficient_data_actions" not in alarms["provisioning-failures"]
    claim = synth.one("aws_iot_certificate")
    assert expiry["dimensions"] == {"CertificateId": synth.reference("aws_iot_certificate", claim, "id")}
    failures = alarms["provisioning-failures"]
    assert (failures["namespace"], failures["metric_name"]) == ("AWS/IoT", "RegisterThingFailed")
    assert (failures["threshold"], failures["period"], failures["comparison_operator"]) == (
        5,
        300,
        "GreaterThanThreshold",
    )
    assert failures["dimensions"] == {
        "TemplateName": synth.reference(
            "aws_iot_provisioning_template", synth.one("aws_iot_provisioning_template"), "name"
        )
    }
    topic = synth.one("aws_sns_topic")
    assert topic["kms_master_key_id"].startswith("${aws_kms_key.")
    for alarm in alarms.values():
        assert alarm["alarm_actions"] == alarm["ok_actions"] == [synth.reference("aws_sns_topic", topic, "arn")]
    assert synth.resources("aws_sns_topic_subscription") == {}  # no AlertEmail given
    assert synth.one("aws_cloudwatch_dashboard")["dashboard_name"] == f"{synth.config.prefix}-provisioning"
    # MonitoringEnabled=false: no alarms, topic or dashboard; the log groups stay.
    for kind in ("aws_cloudwatch_metric_alarm", "aws_sns_topic", "aws_cloudwatch_dashboard"):
        assert variant.resources(kind) == {}
    assert len(variant.resources("aws_cloudwatch_log_group")) == 5  # audit trail and the four functions


def test_every_alarm_says_what_happened_and_what_to_do(synth: Synth) -> None:
    for name, alarm in alarms_by_name(synth).items():
        description = alarm["alarm_description"]
        assert 80 <= len(description) <= 1024, name  # CloudWatch takes at most 1,024 characters
        assert any(verb in description for verb in ("Check", "Read", "Find")), name  # an instruction, not a label


def test_registry_throttling_watches_the_throttle_events_dynamodb_publishes_per_table(synth: Synth) -> None:
    """DynamoDB publishes ThrottledRequests per TableName *and* Operation only, and Read/WriteThrottleEvents
    per TableName; an alarm on AWS/DynamoDB ignores missing data, so the quiet periods are FILLed with 0."""
    throttling = alarms_by_name(synth)["registry-throttling"]
    queries = {q["id"]: q for q in throttling["metric_query"]}
    (returned,) = [q for q in queries.values() if q.get("return_data")]
    assert returned["expression"] == "FILL(reads, 0) + FILL(writes, 0)"
    table = synth.reference("aws_dynamodb_table", synth.one("aws_dynamodb_table"), "name")
    watched = {
        (q["metric"]["namespace"], q["metric"]["metric_name"], json.dumps(q["metric"]["dimensions"]))
        for q in queries.values()
        if "metric" in q
    }
    assert watched == {
        ("AWS/DynamoDB", "ReadThrottleEvents", json.dumps({"TableName": table})),
        ("AWS/DynamoDB", "WriteThrottleEvents", json.dumps({"TableName": table})),
    }
    assert all(q["metric"]["stat"] == "Sum" and q["metric"]["period"] == 300 for q in queries.values() if "metric" in q)


def test_the_hooks_error_alarm_watches_a_metric_its_decision_records_carry(
    synth: Synth, capsys: pytest.CaptureFixture[str]
) -> None:
    """The alarm's namespace, metric and dimensions match what CloudWatch extracts from the hook's own
    EMF line for a REGISTRY_ERROR denial (with the namespace the stack gives the hook)."""
    import provisioning_hook
    from sandbox.cloudwatch.metrics import extract_emf

    alarm = alarms_by_name(synth)["hook-denied-on-errors"]
    hook = synth.named("aws_lambda_function", f"{synth.config.prefix}-provisioning-hook")
    settings = provisioning_hook.Settings.from_environment(hook["environment"]["variables"])
    decision = provisioning_hook.Decision(False, provisioning_hook.REGISTRY_ERROR, "the registry is down")
    provisioning_hook.log_decision(settings, decision, {}, None, 1.0)
    extracted = extract_emf(capsys.readouterr().out)

    watched = [
        d
        for d in extracted
        if (d.namespace, d.name, d.dimensions)
        == (alarm["namespace"], alarm["metric_name"], alarm.get("dimensions") or {})
    ]
    assert [d.values for d in watched] == [[1.0]]
    assert alarm["statistic"] == "Sum" and alarm["threshold"] == 0


def test_the_stack_key_lets_cloudwatch_alarms_publish_to_the_encrypted_alert_topic(synth: Synth) -> None:
    """SNS asks KMS for a data key on the publisher's behalf: without kms:GenerateDataKey and kms:Decrypt
    for cloudwatch.amazonaws.com in the key policy, AWS drops every alarm notification."""
    from sandbox.kms.key_policy import service_may_use

    key = synth.one("aws_kms_key")
    assert synth.one("aws_sns_topic")["kms_master_key_id"] == synth.reference("aws_kms_key", key, "arn")
    (caller,) = synth.stack["data"]["aws_caller_identity"]
    account = f"${{data.aws_caller_identity.{caller}.account_id}}"  # the deploying account, as Terraform resolves it
    alarm = f"arn:aws:cloudwatch:us-east-1:{account}:alarm:{synth.config.prefix}-hook-errors"
    context = {"aws:SourceAccount": account, "aws:SourceArn": alarm}

    allowed, why = service_may_use(
        key["policy"],
        "cloudwatch.amazonaws.com",
        ["kms:GenerateDataKey", "kms:Decrypt"],
        synth.reference("aws_kms_key", key, "arn"),
        context,
    )
    assert allowed, why
    other_account = {**context, "aws:SourceAccount": "999999999999"}  # a confused deputy elsewhere may not
    assert not service_may_use(key["policy"], "cloudwatch.amazonaws.com", ["kms:Decrypt"], "*", other_account)[0]


def test_checkov_finds_nothing_unacknowledged(synth: Synth) -> None:
    from scripts.checkov_scan import acknowledgements, classify, run_checkov

    report = run_checkov(synth.directory / "cdk.tf.json")
    acknowledged, unacknowledged = classify(report, acknowledgements(synth.stack))
    SUMMARY.append(
        f"checkov {report['summary']['checkov_version']}: passed {report['summary']['passed']}, "
        f"failed {len(unacknowledged)}, skipped {len(acknowledged)} (acknowledged on their resource)"
    )
    assert unacknowledged == []
    assert report["summary"]["parsing_errors"] == 0


def test_terraform_validates_the_synthesized_stack_offline(synth: Synth, terraform_env: dict[str, str]) -> None:
    def terraform(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["terraform", *args],
            cwd=synth.directory,
            env=terraform_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    init = terraform("init", "-backend=false", "-input=false", "-no-color")
    assert init.returncode == 0, init.stderr
    validate = terraform("validate", "-json", "-no-color")
    assert json.loads(validate.stdout)["valid"] is True, validate.stdout
    assert Path(synth.directory, ".terraform").is_dir()


def test_provisioning_role_has_aws_s_managed_policy_and_states_what_the_template_needs(synth: Synth) -> None:
    from iot_fleet.fleet_provisioning import RESOURCELESS_ACTIONS
    from sandbox.iam.authorization_reference import lookup
    from sandbox.iot_data_plane.provisioning_permissions import MANAGED_POLICY_ACTIONS, TEMPLATE_PERMISSIONS

    role = synth.named("aws_iam_role", f"{synth.config.prefix}-provisioning-role")
    role_name = synth.reference("aws_iam_role", role, "name")
    (attachment_key, attachment) = next(
        (k, a) for k, a in synth.resources("aws_iam_role_policy_attachment").items() if a["role"] == role_name
    )
    assert [
        a["policy_arn"] for a in synth.resources("aws_iam_role_policy_attachment").values() if a["role"] == role_name
    ] == [attachment["policy_arn"]]
    assert attachment["policy_arn"].endswith(":iam::aws:policy/service-role/AWSIoTThingsRegistration")

    policy = json.loads(synth.named("aws_iam_role_policy", "provisioning-policy")["policy"])
    granted = {a for s in policy["Statement"] for a in s["Action"]}
    assert granted <= set(MANAGED_POLICY_ACTIONS)
    assert set(MANAGED_POLICY_ACTIONS) - granted == {
        "iot:AddThingToBillingGroup",
        "iot:DescribeBillingGroup",
        "iot:RemoveThingFromBillingGroup",
        "iot:CreateCertificateFromCsr",
        "iot:RegisterCertificate",
    }
    # Each step of applying the template is granted on the stack's resources of its type, and only there;
    # an action the reference gives no resource type is granted on "*".
    covers = {
        "thing": lambda r: r.endswith(":thing/*"),
        "cert": lambda r: r.endswith(":cert/*"),
        "thinggroup": lambda r: r.startswith("${aws_iot_thing_group."),
        "thingtype": lambda r: r.startswith("${aws_iot_thing_type."),
        "policy": lambda r: r.startswith("${aws_iot_policy."),
    }
    for permission in TEMPLATE_PERMISSIONS:
        resources = policy_resources(policy, permission.action)
        if not lookup(permission.action).resource_types:
            assert resources == {"*"}, permission.action
            continue
        for kind in permission.checked_on:
            assert any(covers[kind](r) for r in resources), (permission.action, kind, resources)
    on_everything = {a for s in policy["Statement"] if "*" in s["Resource"] for a in s["Action"]}
    assert on_everything == {"iot:RegisterThing", *RESOURCELESS_ACTIONS}
    assert all(not lookup(action).resource_types for action in on_everything)
    claim = synth.named("aws_iot_policy", synth.config.prefix + "-claim-policy")
    device_policies = policy_resources(policy, "iot:GetPolicy")
    assert synth.reference("aws_iot_policy", claim, "arn") not in device_policies  # only the devices' policies
    assert len(device_policies) == len(synth.config.allowed_device_types)
    template = synth.one("aws_iot_provisioning_template")
    (policy_key,) = [k for k, v in synth.resources("aws_iam_role_policy").items() if v["name"] == "provisioning-policy"]
    assert f"aws_iam_role_policy.{policy_key}" in template["depends_on"]
    assert f"aws_iam_role_policy_attachment.{attachment_key}" in template["depends_on"]


def test_topic_rules_are_created_after_the_role_policy_they_write_with(synth: Synth) -> None:
    (audit_policy,) = [k for k, v in synth.resources("aws_iam_role_policy").items() if v["name"] == "write-audit-log"]
    rules = synth.resources("aws_iot_topic_rule").values()
    assert len(rules) == 3
    for rule in rules:  # the audit rule's action and the other rules' error actions use that role
        assert f"aws_iam_role_policy.{audit_policy}" in rule["depends_on"]


def test_rotation_requests_reach_only_the_rotation_function_which_answers_only_on_rotation_topics(
    synth: Synth,
) -> None:
    function = synth.named("aws_lambda_function", f"{synth.config.prefix}-certificate-rotation")
    rules = {r["name"]: r for r in synth.resources("aws_iot_topic_rule").values()}
    rule = rules[f"{synth.config.prefix}_certificate_rotation".replace("-", "_")]
    assert rule["sql"] == (
        "SELECT requestId, certificateSigningRequest, topic() AS topic, clientid() AS clientId, "
        "principal() AS principal FROM 'fleet/rotation/+/+'"
    )
    assert rule["lambda"] == [{"function_arn": synth.reference("aws_lambda_function", function, "arn")}]
    (permission,) = [
        p
        for p in synth.resources("aws_lambda_permission").values()
        if p["statement_id"] == "AllowCertificateRotationRule"
    ]
    assert permission["principal"] == "iot.amazonaws.com"
    assert permission["source_arn"].startswith("${aws_iot_topic_rule.")
    (policy,) = [
        json.loads(p["policy"])
        for p in synth.resources("aws_iam_role_policy").values()
        if p["name"] == f"{synth.config.prefix}-certificate-rotation-policy"
    ]
    publish = [s for s in policy["Statement"] if "iot:Publish" in s["Action"]]
    assert len(publish) == 1 and publish[0]["Resource"].endswith(":topic/fleet/rotation/*")
    assert all("iot:*" not in s["Action"] for s in policy["Statement"])
    for device_policy in synth.resources("aws_iot_policy").values():
        if device_policy["name"].endswith("-claim-policy"):
            assert "fleet/rotation" not in device_policy["policy"]  # the claim certificate cannot rotate
        else:
            assert "topic/fleet/rotation/$${iot:Connection.Thing.ThingName}/*" in device_policy["policy"]


def test_only_the_rotation_function_reserves_concurrency_and_checkov_is_told_why_for_the_others(synth: Synth) -> None:
    """RotationConcurrency bounds what a rotation flood can spend; the others keep their acknowledgment."""
    functions = synth.resources("aws_lambda_function").values()
    reserved = {f["function_name"]: f.get("reserved_concurrent_executions") for f in functions}
    rotation = f"{synth.config.prefix}-certificate-rotation"
    assert reserved.pop(rotation) == synth.config.rotation_concurrency == 2
    assert set(reserved.values()) == {None}
    skipped = {f["function_name"]: "CKV_AWS_115" in json.dumps(f) for f in functions}
    assert skipped == {name: name != rotation for name in skipped}
    # The device repeats a failed request itself: Lambda's retries would only spend its tries.
    (retries,) = synth.resources("aws_lambda_function_event_invoke_config").values()
    rotation_function = synth.named("aws_lambda_function", rotation)
    assert (retries["function_name"], retries["maximum_retry_attempts"]) == (
        synth.reference("aws_lambda_function", rotation_function, "function_name"),
        0,
    )


def test_with_open_enrollment_the_hook_alone_may_describe_things_and_rotation_concurrency_0_reserves_none(
    synth: Synth, variant: Synth
) -> None:
    """RequireEnrollment=false adds exactly one grant (a derived name's existing thing is looked up, as
    tests/integration/test_device_provisioning.py grants it); RotationConcurrency=0 reserves nothing."""

    def hook_statements(stack: Synth) -> list[dict[str, Any]]:
        policy = next(
            p
            for p in stack.resources("aws_iam_role_policy").values()
            if p["name"] == f"{stack.config.prefix}-provisioning-hook-policy"
        )
        return list(json.loads(policy["policy"])["Statement"])

    opened = [s for s in hook_statements(variant) if s not in hook_statements(synth)]
    assert [(s["Action"], s["Resource"].rsplit(":", 1)[1]) for s in opened] == [(["iot:DescribeThing"], "thing/*")]
    hook = variant.named("aws_lambda_function", f"{variant.config.prefix}-provisioning-hook")
    assert hook["environment"]["variables"]["REQUIRE_ENROLLMENT"] == "false"
    rotation = variant.named("aws_lambda_function", f"{variant.config.prefix}-certificate-rotation")
    assert rotation.get("reserved_concurrent_executions") is None and "CKV_AWS_115" in json.dumps(rotation)
