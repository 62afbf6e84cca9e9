"""Configuration as an operator meets it: the recipe's defaults, env overrides, and one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iot_fleet.config import PARAMETERS, ConfigError, StackConfig, load_config, read_context
from iot_fleet.parameters import BY_NAME

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = read_context(ROOT / "cdktf.json")


def test_cdktf_json_context_holds_every_parameter_with_the_recipe_defaults() -> None:
    assert set(CONTEXT) == set(PARAMETERS)
    config = load_config(CONTEXT, environ={}, base_dir=ROOT)
    assert config == StackConfig()
    assert config.project_name == "IoTProvisioning"
    assert config.environment == "dev"
    assert config.allowed_device_types == ("temperature-sensor", "humidity-sensor", "pressure-sensor", "gateway")
    assert config.monitoring_enabled is True
    assert config.log_retention_days == 30
    assert config.require_enrollment is True
    assert config.table_name.startswith("device-registry-")


def test_environment_variable_of_the_same_name_overrides_context() -> None:
    config = load_config(
        CONTEXT,
        environ={"Environment": "prod", "LogRetentionDays": "90", "AllowedDeviceTypes": "gateway, temperature-sensor"},
        base_dir=ROOT,
    )
    assert (config.environment, config.log_retention_days) == ("prod", 90)
    assert config.allowed_device_types == ("gateway", "temperature-sensor")
    assert config.is_prod


def test_claim_client_id_prefix_is_claim_unless_given_and_empty_allows_any_client_id() -> None:
    """Secure by default: the claim policy's Connect resource is client/claim-*. Empty is the opt-out
    (AWS's SDK samples pick their own client ids), and is a value, not "use the default"."""
    assert load_config(CONTEXT, environ={}, base_dir=ROOT).claim_client_id_prefix == "claim-"
    assert load_config({}, environ={}, base_dir=ROOT).claim_client_id_prefix == "claim-"
    assert load_config(CONTEXT, environ={"ClaimClientIdPrefix": ""}, base_dir=ROOT).claim_client_id_prefix == ""
    assert load_config(CONTEXT, environ={"ClaimClientIdPrefix": "boot."}, base_dir=ROOT).claim_client_id_prefix == (
        "boot."
    )
    assert load_config(CONTEXT, environ={"RequireAttestation": "true"}, base_dir=ROOT).require_attestation is True


def test_table_suffix_is_stable_and_unique_per_project_environment_and_region() -> None:
    def name(**env: str) -> str:
        return load_config(CONTEXT, environ=env, base_dir=ROOT).table_name

    assert name() == name()
    assert len({name(), name(Environment="prod"), name(AwsRegion="eu-west-1"), name(ProjectName="Other")}) == 4
    assert name(DeviceRegistryTableName="my-registry") == "my-registry"


@pytest.mark.parametrize(
    ("env", "parameter"),
    [
        ({"AllowedDeviceTypes": "temperature-sensor,toaster"}, "AllowedDeviceTypes"),
        ({"AllowedDeviceTypes": " , "}, "AllowedDeviceTypes"),
        ({"AllowedDeviceTypes": "gateway,gateway"}, "AllowedDeviceTypes"),
        ({"LogRetentionDays": "31"}, "LogRetentionDays"),
        ({"LogRetentionDays": "thirty"}, "LogRetentionDays"),
        ({"ProjectName": "iot provisioning"}, "ProjectName"),
        ({"ProjectName": "Iot_Provisioning"}, "ProjectName"),
        ({"ProjectName": "AVeryLongProjectNameThat1"}, "ProjectName"),
        ({"Environment": "test"}, "Environment"),
        ({"DeviceRegistryTableName": "bad name!"}, "DeviceRegistryTableName"),
        ({"MonitoringEnabled": "yes"}, "MonitoringEnabled"),
        ({"RequireEnrollment": "1"}, "RequireEnrollment"),
        ({"StaleClaimMinutes": "0"}, "StaleClaimMinutes"),
        ({"StaleClaimMinutes": "ten"}, "StaleClaimMinutes"),
        ({"AwsRegion": "us-east-\u0661"}, "AwsRegion"),  # an Arabic-Indic digit is not a region number
        ({"ProjectName": "IoT\u0663"}, "ProjectName"),  # nor a non-ASCII digit part of a name
        ({"AlertEmail": "not-an-email"}, "AlertEmail"),
        ({"AwsRegion": "mars"}, "AwsRegion"),
        ({"ClaimCertificateCsrPath": "missing.csr"}, "ClaimCertificateCsrPath"),
        ({"ClaimCertificateGenerations": "2,1"}, "ClaimCertificateGenerations"),
        ({"ClaimCertificateGenerations": "1,1"}, "ClaimCertificateGenerations"),
        ({"ClaimCertificateGenerations": "1,2,3"}, "ClaimCertificateGenerations"),
        ({"ClaimCertificateGenerations": "0"}, "ClaimCertificateGenerations"),
        ({"ClaimCertificateGenerations": "one"}, "ClaimCertificateGenerations"),
        ({"ClaimCertificateGenerations": " , "}, "ClaimCertificateGenerations"),
        ({"DeviceTypeCatalogue": "missing.json"}, "DeviceTypeCatalogue"),
        ({"Target": "azure"}, "Target"),
        ({"SandboxEndpoint": "http://10.0.0.5:4566"}, "SandboxEndpoint"),
        ({"ClaimKeyInState": "yes"}, "ClaimKeyInState"),
        ({"StateBucket": "State_Bucket"}, "StateBucket"),
        ({"StateBucket": "ab"}, "StateBucket"),
        ({"StateBucket": "state..bucket"}, "StateBucket"),
        ({"StateBucket": "-state-bucket"}, "StateBucket"),
        ({"StateBucket": "192.168.0.1"}, "StateBucket"),  # S3 refuses names formatted as an IP address
        ({"StateBucket": "xn--state-bucket"}, "StateBucket"),  # S3's reserved prefixes and suffixes
        ({"StateBucket": "amzn-s3-demo-state"}, "StateBucket"),
        ({"StateBucket": "state-bucket--x-s3"}, "StateBucket"),
        ({"StateBucket": "state-bucket-s3alias"}, "StateBucket"),
        ({"SandboxEndpoint": "http://127.0.0.1:70000"}, "SandboxEndpoint"),
        ({"SandboxEndpoint": "http://127.0.0.1:0"}, "SandboxEndpoint"),
        ({"StateRegion": "eu-west-1"}, "StateRegion"),  # a region for no bucket
        ({"StateBucket": "state-bucket", "StateRegion": "mars"}, "StateRegion"),
        ({"RequireAttestation": "yes"}, "RequireAttestation"),
        ({"RequireAttestation": "true", "RequireEnrollment": "false"}, "RequireAttestation"),
        ({"ClaimClientIdPrefix": "claim*"}, "ClaimClientIdPrefix"),  # a policy wildcard
        ({"ClaimClientIdPrefix": "claim/"}, "ClaimClientIdPrefix"),
        ({"ClaimClientIdPrefix": "${iot:ClientId}"}, "ClaimClientIdPrefix"),
        ({"ClaimClientIdPrefix": "gateway-"}, "ClaimClientIdPrefix"),  # gateway-<serial> thing names take it
        ({"ClaimClientIdPrefix": "temp"}, "ClaimClientIdPrefix"),  # so do temperature-sensor-<serial>
        ({"ClaimClientIdPrefix": "gateway-SN"}, "ClaimClientIdPrefix"),
    ],
)
def test_wrong_value_is_refused_in_one_line_naming_the_parameter_and_what_is_allowed(
    env: dict[str, str], parameter: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(CONTEXT, environ=env, base_dir=ROOT)
    message = str(refused.value)
    assert message.startswith(f"{parameter}=")
    assert "allowed:" in message or "invalid" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "env",
    [
        {"ProjectName": "A" * 24, "Environment": "prod"},
        {"AwsRegion": "ap-southeast-5"},
        {"AwsRegion": "us-gov-west-1"},
        {"AwsRegion": "eu-isoe-west-1"},
        {"SandboxEndpoint": "http://localhost:4566"},
        {"SandboxEndpoint": "http://127.0.0.1:65535"},
        {"StateBucket": "my.state-bucket-2", "StateRegion": "eu-west-1"},
        {"StateBucket": "xn-state-bucket"},  # only `xn--` is reserved
        {"RotationConcurrency": "0", "StaleClaimMinutes": "60", "ClaimExpiryWarningDays": "3650"},
        {"AlertEmail": "ops@example.com"},
        {"ClaimClientIdPrefix": ""},
    ],
)
def test_values_at_the_edges_of_what_aws_and_the_stack_accept_are_accepted(env: dict[str, str]) -> None:
    config = load_config(CONTEXT, environ=env, base_dir=ROOT)

    assert {f"{name}": str(getattr(config, BY_NAME[name].field)) for name in env} == {
        name: value.rstrip("/") for name, value in env.items()
    }


def test_template_name_longer_than_36_characters_is_refused() -> None:
    # 22-character project + "-staging-fleet" = 36 passes; one more character does not.
    assert (
        len(
            load_config(
                CONTEXT, environ={"ProjectName": "A" * 22, "Environment": "staging"}, base_dir=ROOT
            ).provisioning_template_name
        )
        == 36
    )
    with pytest.raises(ConfigError, match=r"^ProjectName=.*36 characters"):
        load_config(CONTEXT, environ={"ProjectName": "A" * 23, "Environment": "staging"}, base_dir=ROOT)


def test_catalogue_file_defines_a_new_device_type_without_code(tmp_path: Path) -> None:
    catalogue = tmp_path / "types.json"
    catalogue.write_text(json.dumps({"vibration-sensor": {"description": "Vibration monitoring"}}))
    config = load_config(
        CONTEXT,
        environ={"DeviceTypeCatalogue": str(catalogue), "AllowedDeviceTypes": "gateway,vibration-sensor"},
        base_dir=ROOT,
    )
    vibration = config.device_types["vibration-sensor"]
    assert vibration.publish == ("telemetry", "status")
    assert dict(vibration.initial_shadow) == {"enabled": True, "reportingInterval": 60}


@pytest.mark.parametrize(
    "entry",
    [{"publish": ["telemetry/#"]}, {"capabilities": ["root"]}, {"colour": "red"}, {"initialShadow": [1]}],
)
def test_bad_catalogue_entry_is_refused_naming_the_catalogue(tmp_path: Path, entry: dict[str, object]) -> None:
    catalogue = tmp_path / "types.json"
    catalogue.write_text(json.dumps({"vibration-sensor": entry}))
    with pytest.raises(ConfigError, match=r"^DeviceTypeCatalogue="):
        load_config(CONTEXT, environ={"DeviceTypeCatalogue": str(catalogue)}, base_dir=ROOT)


def test_default_catalogue_gives_each_type_its_initial_shadow() -> None:
    types = StackConfig().device_types
    assert dict(types["temperature-sensor"].initial_shadow) == {
        "samplingRate": 30,
        "temperatureUnit": "celsius",
        "alertThreshold": 80,
        "enabled": True,
    }
    assert dict(types["gateway"].initial_shadow) == {
        "connectionTimeout": 30,
        "bufferSize": 100,
        "compressionEnabled": True,
        "logLevel": "INFO",
    }
    for name in ("humidity-sensor", "pressure-sensor"):
        assert dict(types[name].initial_shadow) == {"enabled": True, "reportingInterval": 60}


def test_synth_with_a_wrong_value_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PARAMETERS}
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "LogRetentionDays": "31"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: LogRetentionDays=31: invalid; allowed: one of "
        "1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653"
    ]


def test_a_type_whose_policy_aws_would_refuse_stops_synth_with_one_line(tmp_path: Path) -> None:
    many = {"chatty-sensor": {"publish": [f"metrics/channel-{n:02d}" for n in range(30)]}}
    catalogue = tmp_path / "types.json"
    catalogue.write_text(json.dumps(many))
    environ = {
        "DeviceTypeCatalogue": str(catalogue),
        "AllowedDeviceTypes": "chatty-sensor",
        "AwsRegion": "us-gov-west-1",
    }

    with pytest.raises(ConfigError) as refused:
        load_config(CONTEXT, environ=environ, base_dir=ROOT)
    message = str(refused.value)
    assert message.startswith("device type 'chatty-sensor': its IoT policy would be ")
    assert "characters in us-gov-west-1; AWS IoT allows 2,048 (whitespace excluded)" in message
    assert "\n" not in message
    synth = subprocess.run(
        [sys.executable, "main.py"],
        cwd=ROOT,
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (synth.returncode, synth.stderr.strip()) == (2, f"error: {message}")


def test_claim_generations_overlap_during_a_rotation_each_from_its_own_csr(tmp_path: Path) -> None:
    """A rotation has two generations in force; with CSRs, each needs its own (one key per generation)."""
    for generation in (1, 2):
        (tmp_path / f"claim-{generation}.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\n")
    assert load_config(CONTEXT, environ={}, base_dir=ROOT).claim_certificate_generations == (1,)
    config = load_config(
        CONTEXT,
        environ={
            "ClaimCertificateGenerations": "1, 2",
            "ClaimCertificateCsrPath": str(tmp_path / "claim-{generation}.csr"),
        },
        base_dir=ROOT,
    )
    assert config.claim_certificate_generations == (1, 2)
    assert config.claim_certificate_csr(2) == str(tmp_path / "claim-2.csr")
    with pytest.raises(ConfigError, match=r"^ClaimCertificateCsrPath=.*with \{generation\}"):
        load_config(
            CONTEXT,
            environ={"ClaimCertificateGenerations": "1,2", "ClaimCertificateCsrPath": str(tmp_path / "claim-1.csr")},
            base_dir=ROOT,
        )
    with pytest.raises(ConfigError, match=r"^ClaimCertificateCsrPath=.*claim-3.csr"):
        load_config(
            CONTEXT,
            environ={
                "ClaimCertificateGenerations": "2,3",
                "ClaimCertificateCsrPath": str(tmp_path / "claim-{generation}.csr"),
            },
            base_dir=ROOT,
        )


def test_on_aws_the_claim_key_stays_out_of_state_unless_the_operator_opts_in(tmp_path: Path) -> None:
    """Target=aws: synth makes the key (factory folder) and the stack certifies its CSR; ClaimKeyInState=true
    keeps AWS-made keys in state, and synth says what that costs. The sandbox keeps its key in its state."""
    on_aws = {"Target": "aws", "IOT_FACTORY_DIR": str(tmp_path)}
    factory = load_config(CONTEXT, environ=on_aws, base_dir=ROOT)
    assert factory.claim_key_source == "factory" and factory.warnings == ()
    assert factory.claim_certificate_csr(2) == str(tmp_path / "IoTProvisioning-dev" / "claim-2.csr")

    opted_in = load_config(CONTEXT, environ={**on_aws, "ClaimKeyInState": "true"}, base_dir=ROOT)
    assert opted_in.claim_key_source == "state" and opted_in.claim_certificate_csr(1) is None
    (warning,) = opted_in.warnings
    assert "private key will be in Terraform state in plain text" in warning
    assert "anyone who can read the state can provision devices" in warning

    sandbox = load_config(CONTEXT, environ={}, base_dir=ROOT)
    assert (sandbox.claim_key_source, sandbox.warnings) == ("state", ())

    csr = tmp_path / "claim.csr"
    csr.write_text("-----BEGIN CERTIFICATE REQUEST-----\n")
    given = load_config(CONTEXT, environ={**on_aws, "ClaimCertificateCsrPath": str(csr)}, base_dir=ROOT)
    assert (given.claim_key_source, given.claim_certificate_csr(1)) == ("csr", str(csr))
    with pytest.raises(ConfigError, match=r"^ClaimKeyInState=true: invalid; allowed: false while ClaimCertificate"):
        load_config(
            CONTEXT, environ={**on_aws, "ClaimCertificateCsrPath": str(csr), "ClaimKeyInState": "true"}, base_dir=ROOT
        )
