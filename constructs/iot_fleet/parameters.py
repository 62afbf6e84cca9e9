"""The stack's parameters, each stated once: its name (the cdktf.json context key and the environment
variable that overrides it), the StackConfig field it sets, how its text is read, its default as
cdktf.json records it, and what docs/reference.md says of it (generated from here: `python -m
iot_fleet.parameters` prints the table; a test fails when the document differs).

Checks of values live in StackConfig.__post_init__, most of them across several parameters.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "boolean", "integer", "list", "generations", "path", "url"]


@dataclass(frozen=True)
class Parameter:
    name: str
    field: str  # the StackConfig attribute
    kind: Kind  # how the text is read (iot_fleet.config.read_value)
    default: str  # as cdktf.json's context records it ("" for none)
    description: str  # markdown, for docs/reference.md
    shown_default: str = ""  # the default as the document shows it, when "" does not say it


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "ProjectName",
        "project_name",
        "text",
        "IoTProvisioning",
        (
            "Name prefix for all resources (letters, digits, `-`; the template name "
            "`<ProjectName>-<Environment>-fleet` "
            "must fit 36 characters)"
        ),
    ),
    Parameter(
        "Environment",
        "environment",
        "text",
        "dev",
        "`dev`, `staging` or `prod` (prod turns on table deletion protection and a 30-day KMS deletion window)",
    ),
    Parameter(
        "DeviceRegistryTableName",
        "device_registry_table_name",
        "text",
        "",
        (
            "DynamoDB registry table; empty means `device-registry-<suffix>`, the suffix stable across synths and"
            " unique "
            "per project/environment/region"
        ),
        shown_default="`device-registry-<suffix>`",
    ),
    Parameter(
        "AllowedDeviceTypes",
        "allowed_device_types",
        "list",
        "temperature-sensor,humidity-sensor,pressure-sensor,gateway",
        "Comma-separated device types the hook admits; each must be in the device-type catalogue",
    ),
    Parameter(
        "MonitoringEnabled",
        "monitoring_enabled",
        "boolean",
        "true",
        "Alarms, an encrypted SNS alert topic and a dashboard (`true`/`false`)",
    ),
    Parameter(
        "LogRetentionDays",
        "log_retention_days",
        "integer",
        "30",
        "CloudWatch log retention; one of the values CloudWatch accepts (1, 3, 5, 7, 14, 30, 60, 90, …)",
    ),
    Parameter(
        "AlertEmail",
        "alert_email",
        "text",
        "",
        "Email subscribed to the alert topic (optional)",
    ),
    Parameter(
        "AwsRegion",
        "aws_region",
        "text",
        "us-east-1",
        "Region to deploy to",
    ),
    Parameter(
        "ClaimCertificateCsrPath",
        "claim_certificate_csr_path",
        "path",
        "",
        (
            "PEM CSR for the claim certificate, so its private key never leaves the factory nor enters Terraform state "
            "(optional); with several generations, a path with `{generation}` (one key each). Empty with `Target=aws`: "
            "synth makes the key itself ([claim keys](aws.md#the-claim-key-and-terraform-state))"
        ),
    ),
    Parameter(
        "ClaimCertificateGenerations",
        "claim_certificate_generations",
        "generations",
        "1",
        (
            "Claim certificate generations in force: `1`, then `1,2` while a rotation overlaps them, then `2` "
            "([rotating](operations.md#rotating-the-claim-certificate))"
        ),
    ),
    Parameter(
        "ClaimKeyInState",
        "claim_key_in_state",
        "boolean",
        "false",
        (
            "`true` lets AWS IoT make the claim key with `Target=aws`, so it sits in Terraform state in plain "
            "text (synth"
            " warns); refused with `ClaimCertificateCsrPath`; the sandbox always keeps its key in its state"
        ),
    ),
    Parameter(
        "RequireEnrollment",
        "require_enrollment",
        "boolean",
        "true",
        (
            "Only serials enrolled in the registry may provision (`false` lets any valid serial register once: "
            "development only; the serial's derived thing name is then reserved in the same write that claims it,"
            " and a "
            "name reserved for another serial, or a thing of that name that is another device's, is refused "
            "`THING_NAME_TAKEN`)"
        ),
    ),
    Parameter(
        "RequireAttestation",
        "require_attestation",
        "boolean",
        "false",
        (
            "Every device must be enrolled with a factory key and sign its RegisterThing with it "
            "([attestation](design.md#device-attestation)); needs `RequireEnrollment=true`. With `false`, devices "
            "enrolled with a key must still sign, those without one need not"
        ),
    ),
    Parameter(
        "ClaimClientIdPrefix",
        "claim_client_id_prefix",
        "text",
        "claim-",
        (
            "Claim connections must use a client id starting with this (the claim policy's only Connect resource is "
            "`client/<prefix>*`), and no thing name may start with it; 1-32 of `[A-Za-z0-9_.:-]`, and none a "
            "`<type>-<serial>` thing name could start with. Empty allows any client id (gives that up; [SDK "
            "samples](sandbox.md#awss-own-device-sdk-samples-against-the-sandbox))"
        ),
    ),
    Parameter(
        "StaleClaimMinutes",
        "stale_claim_minutes",
        "integer",
        "10",
        (
            "A provisioning attempt the hook allowed that has not completed after this many minutes is settled by the "
            "reconciler: completed if its thing holds the attempt's certificate, else marked `failed`, and the "
            "device may"
            " try again; 1-60"
        ),
    ),
    Parameter(
        "RotationIntervalMinutes",
        "rotation_interval_minutes",
        "integer",
        "60",
        (
            "A device may ask for a certificate rotation once in this many minutes (requests inside it are refused "
            "`RotationLimitExceeded` before any certificate is made); 1-10080"
        ),
    ),
    Parameter(
        "RotationConcurrency",
        "rotation_concurrency",
        "integer",
        "2",
        (
            "Executions reserved for the certificate-rotation function, and its most at once: a rotation flood "
            "from many "
            "devices cannot spend the account's IoT quotas or its Lambda concurrency (more requests wait in Lambda's "
            "queue for at most 2 minutes, then are dropped unanswered and the device asks again). AWS refuses a "
            "reservation that leaves fewer than 100 unreserved executions in the account: on an account with a reduced "
            "limit (new accounts; `aws lambda get-account-settings`), deploy with `0`: no reservation and no cap "
            "(unlike "
            "Lambda's and Terraform's 0, which stops every invocation), so only `RotationIntervalMinutes` bounds "
            "a flood;"
            " 0-100"
        ),
    ),
    Parameter(
        "ClaimExpiryWarningDays",
        "claim_expiry_warning_days",
        "integer",
        "30",
        (
            "The claim-certificate expiry alarm fires when a claim certificate expires in fewer days than this (the "
            "reconciler publishes the days left); 1-3650"
        ),
    ),
    Parameter(
        "DeviceTypeCatalogue",
        "device_type_catalogue",
        "path",
        "",
        "JSON file adding or overriding device-type catalogue entries (optional)",
    ),
    Parameter(
        "Target",
        "target",
        "text",
        "sandbox",
        "`sandbox` (the local sandbox) or `aws` (leaves out the `iot_data_endpoint` output in the sandbox)",
    ),
    Parameter(
        "SandboxEndpoint",
        "sandbox_endpoint",
        "url",
        "http://127.0.0.1:4566",
        "Where the sandbox listens (`http://127.0.0.1:<port>`)",
    ),
    Parameter(
        "StateBucket",
        "state_bucket",
        "text",
        "",
        (
            "S3 bucket for Terraform state (encrypted, locked by an S3 lock file); empty: a local state file ([remote "
            "state](aws.md#remote-state-in-s3))"
        ),
    ),
    Parameter(
        "StateRegion",
        "state_region",
        "text",
        "",
        "The state bucket's region, with `StateBucket` only",
        shown_default="`AwsRegion`",
    ),
)
BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}


def default_of(name: str) -> str:
    return BY_NAME[name].default


def markdown_table() -> str:
    """The parameter table of docs/reference.md."""
    lines = ["| Parameter | Description | Default |", "|---|---|---|"]
    for p in PARAMETERS:
        shown = p.shown_default or (f"`{p.default}`" if p.default else "empty")
        lines.append(f"| `{p.name}` | {p.description} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
