"""Stack configuration: the parameters the recipe documents, read from cdktf.json context and the environment.

Every value is validated once, here, so a wrong value fails synth with one line that names the
parameter and what it accepts. Pure Python (no cdktf import) so it is unit-tested in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iot_fleet import documents, parameters
from iot_fleet.device_catalogue import DeviceType, load_catalogue
from iot_fleet.parameters import Parameter

TEMPLATE_NAME_MAX = 36  # CreateProvisioningTemplate: 1-36 chars of [0-9A-Za-z_-]
GENERATION_PLACEHOLDER = "{generation}"  # in ClaimCertificateCsrPath: one CSR (one key) per generation
PARAMETERS = tuple(parameter.name for parameter in parameters.PARAMETERS)  # their names, in cdktf.json's order
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
        for parameter in parameters.PARAMETERS:
            value = getattr(self, parameter.field)
            if parameter.check is not None:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                _check(parameter.check.accepts(value), parameter.name, shown, parameter.check.allowed)
        # The checks that read several parameters together.
        if self.claim_key_in_state:
            _check(
                not self.claim_certificate_csr_path,
                "ClaimKeyInState",
                "true",
                "false while ClaimCertificateCsrPath is set (a certificate from a CSR has no key AWS could keep)",
            )
        if self.state_region:
            _check(self.state_bucket != "", "StateRegion", self.state_region, "empty unless StateBucket is set")
        generations = self.claim_certificate_generations
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
    _check(value is not None, parameter, raw, "true or false")
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
