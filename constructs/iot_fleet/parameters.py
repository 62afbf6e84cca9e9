"""The stack's parameters, each stated once: its name (the cdktf.json context key and the environment
variable that overrides it), the StackConfig field it sets, how its text is read, its default as
cdktf.json records it, the check its value must pass, and what docs/reference.md says of it
(generated from here: `python -m iot_fleet.parameters` prints the table; a test fails when the
document differs).

StackConfig runs each parameter's check, then the checks that read several parameters together.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["text", "boolean", "integer", "list", "generations", "path", "url"]

# Values CloudWatch Logs accepts for retentionInDays (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
ENVIRONMENTS = ("dev", "staging", "prod")
TARGETS = ("aws", "sandbox")
# Claim certificates in force at once: one, or two while a rotation overlaps the old and the new.
CLAIM_GENERATIONS_MAX = 2

# Matched whole (fullmatch), ASCII classes only: `$` accepts a trailing newline, `\d` any digit.
PROJECT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,23}")
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# S3 bucket naming rules (general purpose buckets); ".." and IP-address forms are refused separately.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Prefixes and suffixes S3 reserves (general purpose bucket naming rules).
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
IP_ADDRESS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
# A client-id prefix is literal in the policy's client/<prefix>* (no * ? or policy variables) and in MQTT.
CLIENT_ID_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
SANDBOX_ENDPOINT = re.compile(r"http://(127\.0\.0\.1|localhost):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class Check:
    """What one parameter's value must be, on its own: `accepts` decides, `allowed` says it (in the
    refusal and in docs/reference.md)."""

    accepts: Callable[[Any], bool]
    allowed: str


def matches(pattern: re.Pattern[str], *, empty: bool = False) -> Callable[[Any], bool]:
    return lambda value: (empty and value == "") or bool(pattern.fullmatch(value))


def between(low: int, high: int) -> Check:
    return Check(lambda value: low <= value <= high, f"{low}-{high}")


def _one_of(values: tuple[str, ...]) -> str:
    return f"{', '.join(values[:-1])} or {values[-1]}"


def _bucket_name(value: str) -> bool:
    return value == "" or (
        bool(BUCKET.fullmatch(value))
        and ".." not in value
        and not IP_ADDRESS.fullmatch(value)
        and not value.startswith(BUCKET_RESERVED_PREFIXES)
        and not value.endswith(BUCKET_RESERVED_SUFFIXES)
    )


def _sandbox_endpoint(value: str) -> bool:
    match = SANDBOX_ENDPOINT.fullmatch(value)
    return match is not None and 1 <= int(match["port"]) <= 65535


def _generations(value: tuple[int, ...]) -> bool:
    return 0 < len(value) <= CLAIM_GENERATIONS_MAX and all(g >= 1 for g in value) and list(value) == sorted(set(value))


def _device_types(value: tuple[str, ...]) -> bool:
    return bool(value) and len(set(value)) == len(value)


@dataclass(frozen=True)
class Parameter:
    name: str
    field: str  # the StackConfig attribute
    kind: Kind  # how the text is read (iot_fleet.config.read_value)
    default: str  # as cdktf.json's context records it ("" for none)
    description: str  # markdown, for docs/reference.md
    check: Check | None = None  # what the value must be on its own (None: any value of its kind)
    shown_default: str = ""  # the default as the document shows it, when "" does not say it


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "ProjectName",
        "project_name",
        "text",
        "IoTProvisioning",
        ("Name prefix for all resources; the template name `<ProjectName>-<Environment>-fleet` must fit 36 characters"),
        check=Check(
            matches(PROJECT_NAME),
            "a letter then letters, digits or '-', at most 24 characters (22 with Environment=staging, so that "
            "the template name fits 36)",
        ),
    ),
    Parameter(
        "Environment",
        "environment",
        "text",
        "dev",
        "The deployment's stage; `prod` turns on table deletion protection and a 30-day KMS deletion window",
        check=Check(lambda value: value in ENVIRONMENTS, _one_of(ENVIRONMENTS)),
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
        check=Check(
            matches(TABLE_NAME, empty=True), "3-255 characters of [A-Za-z0-9_.-], or empty for device-registry-<suffix>"
        ),
        shown_default="`device-registry-<suffix>`",
    ),
    Parameter(
        "AllowedDeviceTypes",
        "allowed_device_types",
        "list",
        "temperature-sensor,humidity-sensor,pressure-sensor,gateway",
        "Comma-separated device types the hook admits; each must be in the device-type catalogue",
        check=Check(_device_types, "at least one device type, each once"),
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
        "CloudWatch log retention, in days (the values CloudWatch Logs accepts)",
        check=Check(lambda value: value in LOG_RETENTION_DAYS, "one of " + ", ".join(map(str, LOG_RETENTION_DAYS))),
    ),
    Parameter(
        "AlertEmail",
        "alert_email",
        "text",
        "",
        "Email subscribed to the alert topic (optional)",
        check=Check(matches(EMAIL, empty=True), "an email address, or empty"),
    ),
    Parameter(
        "AwsRegion",
        "aws_region",
        "text",
        "us-east-1",
        "Region to deploy to",
        check=Check(matches(REGION), "a region such as us-east-1"),
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
        check=Check(
            _generations,
            f"1 to {CLAIM_GENERATIONS_MAX} increasing whole numbers from 1 (e.g. 1, then 1,2 while a rotation "
            "overlaps, then 2)",
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
            "`client/<prefix>*`), and no thing name may start with it: none a `<type>-<serial>` thing name could "
            "start with. Empty allows any client id (gives that up; [SDK "
            "samples](sandbox.md#awss-own-device-sdk-samples-against-the-sandbox))"
        ),
        check=Check(
            matches(CLIENT_ID_PREFIX, empty=True),
            "1-32 characters of [A-Za-z0-9_.:-], or empty to allow any client id (for AWS's SDK samples)",
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
            " try again"
        ),
        check=between(1, 60),
    ),
    Parameter(
        "RotationIntervalMinutes",
        "rotation_interval_minutes",
        "integer",
        "60",
        (
            "A device may ask for a certificate rotation once in this many minutes (requests inside it are refused "
            "`RotationLimitExceeded` before any certificate is made)"
        ),
        check=between(1, 10080),
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
            "a flood"
        ),
        check=between(0, 100),
    ),
    Parameter(
        "ClaimExpiryWarningDays",
        "claim_expiry_warning_days",
        "integer",
        "30",
        (
            "The claim-certificate expiry alarm fires when a claim certificate expires in fewer days than this (the "
            "reconciler publishes the days left)"
        ),
        check=between(1, 3650),
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
        "Where the stack deploys: `sandbox` (the local sandbox) or `aws` (the `iot_data_endpoint` output exists "
        "only there)",
        check=Check(lambda value: value in TARGETS, _one_of(TARGETS)),
    ),
    Parameter(
        "SandboxEndpoint",
        "sandbox_endpoint",
        "url",
        "http://127.0.0.1:4566",
        "Where the sandbox listens",
        check=Check(
            _sandbox_endpoint,
            "http://127.0.0.1:<port> or http://localhost:<port> (the sandbox listens on the loopback address only)",
        ),
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
        check=Check(
            _bucket_name,
            "an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or "
            "digit, not an IP address, none of S3's reserved prefixes and suffixes), or empty for a local state file",
        ),
    ),
    Parameter(
        "StateRegion",
        "state_region",
        "text",
        "",
        "The state bucket's region, with `StateBucket` only",
        check=Check(matches(REGION, empty=True), "the state bucket's region, such as us-east-1 (empty: AwsRegion)"),
        shown_default="`AwsRegion`",
    ),
)
BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}


def default_of(name: str) -> str:
    return BY_NAME[name].default


# What a parameter without a check of its own accepts, by how its text is read.
_KIND_ALLOWED = {"boolean": "`true` or `false`", "path": "a file path, or empty"}


def _markdown_text(text: str) -> str:
    """Plain text as markdown shows it literally inside a table cell."""
    # `:` too: an escaped colon keeps GitHub from turning an address such as http://127.0.0.1 into a link.
    return "".join(f"\\{c}" if c in "\\|<>*_[]`:" else c for c in text)


def markdown_table() -> str:
    """The parameter table of docs/reference.md."""
    lines = ["| Parameter | Description | Allowed | Default |", "|---|---|---|---|"]
    for p in PARAMETERS:
        shown = p.shown_default or (f"`{p.default}`" if p.default else "empty")
        allowed = _markdown_text(p.check.allowed) if p.check else _KIND_ALLOWED[p.kind]
        lines.append(f"| `{p.name}` | {p.description} | {allowed} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
