"""Stack configuration: the parameters the recipe documents, read from cdktf.json context and the environment.

Every value is validated once, here, so a wrong value fails synth with one line that names the
parameter and what it accepts. Pure Python (no cdktf import) so it is unit-tested in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iot_fleet import documents, parameters
from iot_fleet.device_catalogue import DeviceType, load_catalogue
from iot_fleet.parameters import Parameter

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
TEMPLATE_NAME_MAX = 36  # CreateProvisioningTemplate: 1-36 chars of [0-9A-Za-z_-]
# Claim certificates in force at once: one, or two while a rotation overlaps the old and the new.
CLAIM_GENERATIONS_MAX = 2
GENERATION_PLACEHOLDER = "{generation}"  # in ClaimCertificateCsrPath: one CSR (one key) per generation
PARAMETERS = tuple(parameter.name for parameter in parameters.PARAMETERS)  # their names, in cdktf.json's order

# Matched whole (fullmatch), ASCII classes only: `$` accepts a trailing newline, `\d` any digit.
_PROJECT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# S3 bucket naming rules (general purpose buckets); ".." and IP-address forms are refused separately.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
# A client-id prefix is literal in the policy's client/<prefix>* (no * ? or policy variables) and in MQTT.
_CLIENT_ID_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_SANDBOX_ENDPOINT = re.compile(r"http://(127\.0\.0\.1|localhost):[0-9]{2,5}")
_BOOLEAN = {"true": True, "false": False}


class ConfigError(ValueError):
    """A parameter has a value the stack cannot be built from; the message names it."""


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """The validated parameters of one deployment of the provisioning stack."""

    # Each default is the parameter table's (iot_fleet.parameters), read as its value would be.
    project_name: str = field(default_factory=lambda: _default("ProjectName"))
    environment: str = field(default_factory=lambda: _default("Environment"))
    device_registry_table_name: str = field(default_factory=lambda: _default("DeviceRegistryTableName"))
    allowed_device_types: tuple[str, ...] = field(default_factory=lambda: _default("AllowedDeviceTypes"))
    monitoring_enabled: bool = field(default_factory=lambda: _default("MonitoringEnabled"))
    log_retention_days: int = field(default_factory=lambda: _default("LogRetentionDays"))
    alert_email: str = field(default_factory=lambda: _default("AlertEmail"))
    aws_region: str = field(default_factory=lambda: _default("AwsRegion"))
    claim_certificate_csr_path: str = field(default_factory=lambda: _default("ClaimCertificateCsrPath"))
    claim_certificate_generations: tuple[int, ...] = field(
        default_factory=lambda: _default("ClaimCertificateGenerations")
    )
    claim_key_in_state: bool = field(default_factory=lambda: _default("ClaimKeyInState"))
    require_enrollment: bool = field(default_factory=lambda: _default("RequireEnrollment"))
    require_attestation: bool = field(default_factory=lambda: _default("RequireAttestation"))
    claim_client_id_prefix: str = field(default_factory=lambda: _default("ClaimClientIdPrefix"))
    stale_claim_minutes: int = field(default_factory=lambda: _default("StaleClaimMinutes"))
    rotation_interval_minutes: int = field(default_factory=lambda: _default("RotationIntervalMinutes"))
    rotation_concurrency: int = field(default_factory=lambda: _default("RotationConcurrency"))
    claim_expiry_warning_days: int = field(default_factory=lambda: _default("ClaimExpiryWarningDays"))
    device_type_catalogue: str = field(default_factory=lambda: _default("DeviceTypeCatalogue"))
    target: str = field(default_factory=lambda: _default("Target"))
    sandbox_endpoint: str = field(default_factory=lambda: _default("SandboxEndpoint"))
    state_bucket: str = field(default_factory=lambda: _default("StateBucket"))
    state_region: str = field(default_factory=lambda: _default("StateRegion"))
    # Where synth creates claim keys that must stay out of state (IOT_FACTORY_DIR), not a parameter.
    factory_dir: str = field(default="factory", compare=False)
    sandbox_dir: str = field(default=".sandbox", compare=False)  # IOT_SANDBOX_DIR, not a parameter
    catalogue: Mapping[str, DeviceType] = field(default_factory=load_catalogue, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check(
            bool(_PROJECT_NAME.fullmatch(self.project_name)) and len(self.project_name) <= 24,
            "ProjectName",
            self.project_name,
            "1-24 characters, a letter then letters, digits or '-'",
        )
        _check(self.environment in ENVIRONMENTS, "Environment", self.environment, "|".join(ENVIRONMENTS))
        if self.device_registry_table_name:
            _check(
                bool(_TABLE_NAME.fullmatch(self.device_registry_table_name)),
                "DeviceRegistryTableName",
                self.device_registry_table_name,
                "3-255 characters of [A-Za-z0-9_.-], or empty for device-registry-<suffix>",
            )
        _check(
            self.log_retention_days in LOG_RETENTION_DAYS,
            "LogRetentionDays",
            self.log_retention_days,
            "one of " + ",".join(map(str, LOG_RETENTION_DAYS)),
        )
        if self.alert_email:
            _check(bool(_EMAIL.fullmatch(self.alert_email)), "AlertEmail", self.alert_email, "an email address")
        _check(bool(_REGION.fullmatch(self.aws_region)), "AwsRegion", self.aws_region, "a region such as us-east-1")
        _check(self.target in TARGETS, "Target", self.target, "|".join(TARGETS))
        _check(
            1 <= self.stale_claim_minutes <= 60,
            "StaleClaimMinutes",
            self.stale_claim_minutes,
            "1-60 (minutes after which the reconciler settles an unfinished provisioning attempt)",
        )
        _check(
            1 <= self.rotation_interval_minutes <= 10080,
            "RotationIntervalMinutes",
            self.rotation_interval_minutes,
            "1-10080 (minutes a device waits between two certificate rotation requests)",
        )
        _check(
            0 <= self.rotation_concurrency <= 100,
            "RotationConcurrency",
            self.rotation_concurrency,
            "0-100 (executions reserved for the rotation function, its most at once; 0: no reservation and no cap, "
            "for an account whose concurrency limit leaves fewer than 100 unreserved, as AWS requires)",
        )
        _check(
            1 <= self.claim_expiry_warning_days <= 3650,
            "ClaimExpiryWarningDays",
            self.claim_expiry_warning_days,
            "1-3650 (days before a claim certificate's expiry its alarm fires)",
        )
        _check(
            bool(_SANDBOX_ENDPOINT.fullmatch(self.sandbox_endpoint)),
            "SandboxEndpoint",
            self.sandbox_endpoint,
            "http://127.0.0.1:<port> (the sandbox listens on the loopback address only)",
        )
        if self.claim_key_in_state:
            _check(
                not self.claim_certificate_csr_path,
                "ClaimKeyInState",
                "true",
                "false while ClaimCertificateCsrPath is set (a certificate from a CSR has no key AWS could keep)",
            )
        if self.state_bucket:
            _check(
                bool(_BUCKET.fullmatch(self.state_bucket))
                and ".." not in self.state_bucket
                and not _IP_ADDRESS.fullmatch(self.state_bucket),
                "StateBucket",
                self.state_bucket,
                "an S3 bucket name (3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter "
                "or digit), or empty for a local state file",
            )
        if self.state_region:
            _check(self.state_bucket != "", "StateRegion", self.state_region, "empty unless StateBucket is set")
            _check(
                bool(_REGION.fullmatch(self.state_region)),
                "StateRegion",
                self.state_region,
                "the state bucket's region, such as us-east-1 (empty: AwsRegion)",
            )
        generations = self.claim_certificate_generations
        _check(
            0 < len(generations) <= CLAIM_GENERATIONS_MAX
            and all(g >= 1 for g in generations)
            and list(generations) == sorted(set(generations)),
            "ClaimCertificateGenerations",
            ",".join(map(str, generations)),
            f"1 to {CLAIM_GENERATIONS_MAX} increasing whole numbers from 1 (e.g. 1, then 1,2 while a rotation "
            "overlaps, then 2)",
        )
        if self.claim_certificate_csr_path:
            _check(
                len(generations) == 1 or GENERATION_PLACEHOLDER in self.claim_certificate_csr_path,
                "ClaimCertificateCsrPath",
                self.claim_certificate_csr_path,
                f"a path with {GENERATION_PLACEHOLDER} while several claim certificate generations are in force "
                "(each generation is certified from its own key)",
            )
            for generation in generations:
                csr = Path(self.claim_certificate_csr(generation) or "")
                _check(
                    csr.is_file() and b"CERTIFICATE REQUEST" in csr.read_bytes()[:200],
                    "ClaimCertificateCsrPath",
                    str(csr),
                    "the path of a PEM certificate signing request",
                )
        _check(
            not (self.require_attestation and not self.require_enrollment),
            "RequireAttestation",
            "true",
            "false while RequireEnrollment=false (a device's factory key is enrolled with it)",
        )
        prefix = self.claim_client_id_prefix
        if prefix:
            _check(
                bool(_CLIENT_ID_PREFIX.fullmatch(prefix)),
                "ClaimClientIdPrefix",
                prefix,
                "1-32 characters of [A-Za-z0-9_.:-], or empty to allow any client id (for AWS's SDK samples)",
            )
            # A derived thing name is <type>-<serial>: none may start with the prefix, nor the prefix with it.
            clashing = [
                t for t in self.allowed_device_types if f"{t}-".startswith(prefix) or prefix.startswith(f"{t}-")
            ]
            _check(
                not clashing,
                "ClaimClientIdPrefix",
                prefix,
                f"a prefix no thing name can take; device type {','.join(clashing)} names things '<type>-<serial>'",
            )
        _check(bool(self.allowed_device_types), "AllowedDeviceTypes", "", "at least one device type")
        duplicates = sorted({t for t in self.allowed_device_types if self.allowed_device_types.count(t) > 1})
        _check(not duplicates, "AllowedDeviceTypes", ",".join(duplicates), "each device type once")
        unknown = [t for t in self.allowed_device_types if t not in self.catalogue]
        _check(
            not unknown,
            "AllowedDeviceTypes",
            ",".join(unknown),
            "device types defined in the catalogue ("
            + ",".join(sorted(self.catalogue))
            + "); add an entry to the catalogue to define a new one",
        )
        _check(
            len(self.provisioning_template_name) <= TEMPLATE_NAME_MAX,
            "ProjectName",
            self.project_name,
            f"a name short enough that the template name '{self.provisioning_template_name}' "
            f"stays within {TEMPLATE_NAME_MAX} characters",
        )
        # AWS refuses a policy over its size at CreatePolicy, in the middle of a deploy: refuse it here.
        arn_prefix = documents.arn_prefix_for(self.aws_region)
        for name in self.allowed_device_types:
            size = documents.policy_size(documents.device_policy(self.catalogue[name], arn_prefix))
            if size > documents.POLICY_DOCUMENT_MAX:
                raise ConfigError(
                    f"device type '{name}': its IoT policy would be {size:,} characters in {self.aws_region}; "
                    f"AWS IoT allows {documents.POLICY_DOCUMENT_MAX:,} (whitespace excluded): give the type fewer "
                    "topics (a wildcard such as 'children/*' counts once)"
                )

    # Names: every resource is named from ProjectName and Environment.
    @property
    def prefix(self) -> str:
        return f"{self.project_name}-{self.environment}"

    @property
    def suffix(self) -> str:
        """Stable across synths, unique per project/environment/region (no random provider offline)."""
        identity = f"{self.project_name}/{self.environment}/{self.aws_region}".encode()
        return hashlib.sha256(identity).hexdigest()[:8]

    @property
    def table_name(self) -> str:
        return self.device_registry_table_name or f"device-registry-{self.suffix}"

    @property
    def provisioning_template_name(self) -> str:
        return f"{self.prefix}-fleet"

    @property
    def stack_name(self) -> str:
        return f"iot-provisioning-{self.environment}"

    @property
    def device_types(self) -> dict[str, DeviceType]:
        """The allowed device types in the order given, each with its catalogue entry."""
        return {name: self.catalogue[name] for name in self.allowed_device_types}

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    def claim_certificate_csr(self, generation: int) -> str | None:
        """The CSR file a claim certificate generation is issued from (None: AWS IoT makes its key)."""
        if self.claim_certificate_csr_path:
            return self.claim_certificate_csr_path.replace(GENERATION_PLACEHOLDER, str(generation))
        if self.claim_key_source == "factory":
            return str(self.claim_key_folder / f"claim-{generation}.csr")
        return None

    @property
    def claim_key_source(self) -> str:
        """Where each claim certificate's private key comes from.

        "csr": the operator's CSR (ClaimCertificateCsrPath). "factory": synth makes the key in
        factory_dir and the certificate is issued from its CSR, so no key reaches state (Target=aws by
        default). "state": AWS IoT makes the key and Terraform state holds it (Target=aws with
        ClaimKeyInState=true; the sandbox always, whose state and CA live and die with the sandbox).
        """
        if self.claim_certificate_csr_path:
            return "csr"
        if self.target == "sandbox" or self.claim_key_in_state:
            return "state"
        return "factory"

    @property
    def claim_key_folder(self) -> Path:
        """Where synth keeps this stack's claim keys (with ClaimKeySource factory): one folder per stack."""
        return Path(self.factory_dir) / self.prefix

    @property
    def warnings(self) -> tuple[str, ...]:
        """What synth says before it builds the stack: the costs of what the operator opted into."""
        if self.target == "aws" and self.claim_key_in_state:
            return (
                "ClaimKeyInState=true: the claim private key will be in Terraform state in plain text; anyone "
                "who can read the state can provision devices as your factory does",
            )
        return ()


def _check(ok: bool, parameter: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{parameter}={value!s}: invalid; allowed: {allowed}")


def _boolean(parameter: str, raw: str) -> bool:
    value = _BOOLEAN.get(str(raw).strip().lower())
    _check(value is not None, parameter, raw, "true|false")
    return bool(value)


def _integer(parameter: str, raw: str) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{parameter}={raw}: invalid; allowed: a whole number") from None


def _generations(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(raw).split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"ClaimCertificateGenerations={raw}: invalid; allowed: comma-separated whole numbers such as 1 or 1,2"
        ) from None


def read_value(parameter: Parameter, raw: str, path_of: Callable[[str], str] = lambda name: "") -> Any:
    """A parameter's value from its text, as its kind reads it (`path_of`: a path's absolute form)."""
    if parameter.kind == "boolean":
        return _boolean(parameter.name, raw)
    if parameter.kind == "integer":
        return _integer(parameter.name, raw)
    if parameter.kind == "list":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if parameter.kind == "generations":
        return _generations(raw)
    if parameter.kind == "path":
        return path_of(parameter.name) if raw.strip() else ""
    if parameter.kind == "url":
        return raw.strip().rstrip("/")
    return raw.strip()


def _default(name: str) -> Any:
    return read_value(parameters.BY_NAME[name], parameters.default_of(name))


def read_context(cdktf_json: Path) -> dict[str, str]:
    """The parameter defaults recorded in cdktf.json's context."""
    context = json.loads(cdktf_json.read_text()).get("context", {})
    return {key: str(value) for key, value in context.items() if key in PARAMETERS}


def load_config(
    defaults: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> StackConfig:
    """Builds the config from defaults (cdktf.json context), each overridable by an env variable
    of the same name (``ProjectName=Fleet cdktf synth``)."""
    environ = os.environ if environ is None else environ
    unknown = sorted(set(defaults) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown parameter; allowed: {','.join(PARAMETERS)}")
    raw = {key: environ.get(key, defaults.get(key, "")) for key in PARAMETERS}
    values = {key: value for key, value in raw.items() if value != ""}
    base_dir = base_dir or Path.cwd()

    def path_of(key: str) -> str:
        value = values.get(key, "")
        return str((base_dir / value).resolve()) if value else ""

    catalogue_path = path_of("DeviceTypeCatalogue")
    try:
        catalogue = load_catalogue(Path(catalogue_path) if catalogue_path else None)
    except (OSError, ValueError) as error:
        raise ConfigError(f"DeviceTypeCatalogue={catalogue_path}: invalid; {error}") from None
    kwargs: dict[str, Any] = {"catalogue": catalogue}
    for parameter in parameters.PARAMETERS:
        if parameter.name == "ClaimClientIdPrefix":  # "" is a value: any client id
            if parameter.name in environ or parameter.name in defaults:
                kwargs[parameter.field] = raw[parameter.name].strip()
        elif parameter.name in values:
            kwargs[parameter.field] = read_value(parameter, values[parameter.name], path_of)
    kwargs["factory_dir"] = str(Path(environ.get("IOT_FACTORY_DIR") or base_dir / "factory").resolve())
    # Where sandbox state (and the sandbox target's Terraform state) lives; not a deployment parameter.
    kwargs["sandbox_dir"] = str(Path(environ.get("IOT_SANDBOX_DIR") or base_dir / ".sandbox").resolve())
    return StackConfig(**kwargs)
