"""Where the sandbox keeps its state, and how to read it (shared by the CLI, tests and tools)."""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"


def sandbox_dir() -> Path:
    """IOT_SANDBOX_DIR, else .sandbox/ in the project (ignored by git)."""
    return Path(os.environ.get("IOT_SANDBOX_DIR") or ROOT / ".sandbox").resolve()


def endpoint() -> str:
    """SandboxEndpoint (environment, else cdktf.json context): the same value the stack is synthesized with."""
    value = os.environ.get("SandboxEndpoint")
    if not value:
        context = json.loads((ROOT / "cdktf.json").read_text()).get("context", {})
        value = context.get("SandboxEndpoint") or DEFAULT_ENDPOINT
    return value.rstrip("/")


def mqtt_port() -> int:
    """SandboxMqttPort (environment), default 8883: where the sandbox's MQTT broker listens."""
    return int(os.environ.get("SandboxMqttPort") or 8883)


def clock_scale() -> float:
    """SandboxClockScale (environment, default 60): how many times faster than AWS the sandbox runs
    AWS's own waits and periods (the 5 minutes between DeprecateThingType and DeleteThingType, alarm
    periods), keeping their order: at 60, an AWS minute lasts a second."""
    value = os.environ.get("SandboxClockScale") or "60"
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"SandboxClockScale={value}: give a number from 1 (AWS's own clock) to 3600") from None
    if not 1 <= scale <= 3600:
        raise ValueError(f"SandboxClockScale={value}: give a number from 1 (AWS's own clock) to 3600")
    return scale


QUOTA_SETTINGS = ("none", "aws")


def quotas() -> str:
    """SandboxQuotas (environment, read when the sandbox starts): `aws` throttles the fleet-provisioning
    MQTT API at AWS IoT Core's default rates per account (sandbox/iot_data_plane/quotas.py); `none`, the
    default, serves every request as fast as it can, as the sandbox always has."""
    value = (os.environ.get("SandboxQuotas") or "none").strip().lower()
    if value not in QUOTA_SETTINGS:
        raise ValueError(
            f"SandboxQuotas={os.environ.get('SandboxQuotas')}: give aws (throttle the fleet-provisioning API at "
            "AWS IoT Core's default rates per account) or none (no quotas, the default)"
        )
    return value


MAX_CERTIFICATE_VALIDITY_SECONDS = 10 * 365 * 86400


def validity_seconds(value: str, name: str) -> int:
    """A device-certificate validity in whole seconds, from 1 to 10 years; ValueError naming `name` else."""
    if not value.isdigit() or not 1 <= int(value) <= MAX_CERTIFICATE_VALIDITY_SECONDS:
        raise ValueError(f"{name}={value}: give whole seconds from 1 to {MAX_CERTIFICATE_VALIDITY_SECONDS}")
    return int(value)


def certificate_validity_seconds() -> int | None:
    """SandboxCertificateValiditySeconds (environment, read when the sandbox starts): how long the device
    certificates the local IoT issues are valid (over MQTT, and CreateCertificateFromCsr over HTTP), so
    expiry and rotation can be tried in seconds; `python -m sandbox certificate-validity` changes it while
    the sandbox runs. Unset: 10 years, like every other sandbox certificate."""
    value = os.environ.get("SandboxCertificateValiditySeconds") or ""
    return validity_seconds(value, "SandboxCertificateValiditySeconds") if value else None


def port_of(url: str) -> int:
    parsed = urllib.parse.urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost") or not parsed.port:
        raise ValueError(f"SandboxEndpoint={url}: the sandbox listens on http://127.0.0.1:<port> only")
    return parsed.port


@dataclass
class SandboxState:
    pid: int
    endpoint: str
    port: int
    started_at: float
    startup_seconds: float
    log: str
    mqtt_port: int = 0
    ca_file: str = ""

    @property
    def mqtt_endpoint(self) -> str:
        return "127.0.0.1"

    @classmethod
    def path(cls) -> Path:
        return sandbox_dir() / "state.json"

    @classmethod
    def load(cls) -> SandboxState | None:
        try:
            return cls(**json.loads(cls.path().read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self) -> None:
        self.path().parent.mkdir(parents=True, exist_ok=True)
        self.path().write_text(json.dumps(asdict(self), indent=1))


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group (exited ones waiting to be collected do not count): the
    sandbox server's group holds its broker, warm-start process and Lambda workers."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
