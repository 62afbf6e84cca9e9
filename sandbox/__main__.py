"""Start, stop and inspect the local sandbox (a local AWS and IoT data plane on 127.0.0.1, no account needed).

  python -m sandbox up        start it; exit 0 only once the local AWS answers, the broker accepts a
                              TLS connection signed by the sandbox CA and the fleet-provisioning
                              service is subscribed (harmless when it is already up)
  python -m sandbox down      stop exactly what `up` started and forget what was deployed into it
  python -m sandbox status    say whether it is up (exit 0) or not (exit 3), and why not
  python -m sandbox env       print the shell exports that point boto3 / the AWS CLI at it:
                              eval "$(pipenv run python -m sandbox env)"
  python -m sandbox build     build the broker plugin (make setup runs it; `up` rebuilds when needed)
  python -m sandbox trust     add the sandbox CA to the system trust store (root), so clients that
                              trust only the system store (AWS's SDK samples) connect to the broker
  python -m sandbox untrust   remove it again (--all: every sandbox CA `trust` added on this machine)
  python -m sandbox fault registry <mode> [--table NAME] [--operations GetItem,UpdateItem,...]
                              make the device registry (DynamoDB over HTTP) fail on demand; modes:
                              unavailable, slow=<seconds>, throttle, lose-answer (`fault --help`)
  python -m sandbox fault clear
                              end it (`status` shows a fault that is set)
  python -m sandbox certificate-validity [SECONDS|default]
                              how long device certificates issued from now on are valid (none: say it);
                              `status` shows a validity set this way

The endpoint is SandboxEndpoint (cdktf.json context or environment, default http://127.0.0.1:4566),
the broker's port SandboxMqttPort (default 8883); state, logs and Lambda code live in
IOT_SANDBOX_DIR (default .sandbox/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sandbox.iot_data_plane import certificate_validity
from sandbox.iot_data_plane.broker_plugin import build as plugin
from sandbox.request_pipeline import faults
from sandbox.state import ROOT, SandboxState, endpoint, group_members, mqtt_port, port_of, quotas, sandbox_dir

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
PROBE_TIMEOUT = 10.0
LOG_LINES = 15  # how much of the server log a failed `up` prints
TRUST_DIR = Path("/usr/local/share/ca-certificates")  # Debian's place for locally added roots


def health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The server's own report (None when nothing answers there)."""
    try:
        with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=timeout) as response:  # noqa: S310 - local http
            report = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _parts(report: dict[str, Any] | None) -> str:
    if report is None:
        return "the local AWS does not answer"
    return ", ".join(f"{part}: {state}" for part, state in report.get("parts", {}).items())


def _ours(pid: int) -> bool:
    """True when pid is a sandbox server process (a recycled PID must never be signalled)."""
    try:
        return b"sandbox.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rss_mb(pgid: int) -> float:
    """Resident memory of the server and its broker and Lambda workers."""
    total = 0
    for pid in group_members(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def _stop_group(pgid: int) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left after STOP_TIMEOUT."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not group_members(pgid):
            return


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def log_file() -> Path:
    return sandbox_dir() / "server.log"


def last_error(log: Path) -> str | None:
    """The last error the sandbox wrote to its log: its own last `sandbox: error:` line, else the last
    line that mentions an error."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for marker in ("sandbox: error:", "error"):
        for line in reversed(lines):
            if marker in line.lower():
                return line.strip()
    return None


def _log(message: str) -> None:
    """Appends the CLI's own failure to the server log, where `status` and the hints find it."""
    log = log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
        output.write(message.rstrip("\n").replace("\n", "\n    ") + "\n")


def probe_broker(port: int, ca_file: Path, cert: Path, key: Path) -> str | None:
    """None when the broker completes a TLS handshake with a certificate the sandbox CA signed and its
    plugin answers the MQTT CONNECT (refusing the probe, which has no access rules); else what failed."""
    from awscrt import io, mqtt5

    options = io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
    options.override_default_trust_store_from_path(None, str(ca_file))
    outcome: Future[str | None] = Future()
    stopped: Future[None] = Future()

    def on_failure(data: mqtt5.LifecycleConnectFailureData) -> None:
        code = data.connack_packet.reason_code if data.connack_packet else None
        if code in (mqtt5.ConnectReasonCode.NOT_AUTHORIZED, mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD):
            answer = None  # TLS done, CONNECT checked by the plugin: the broker works
        else:
            answer = f"the broker refused a TLS connection signed by the sandbox CA: {data.exception}"
        if not outcome.done():
            outcome.set_result(answer)

    def on_success(_: Any) -> None:
        if not outcome.done():
            outcome.set_result("the broker accepted a certificate that has no access rules: its plugin is not checking")

    client = mqtt5.Client(
        mqtt5.ClientOptions(
            host_name="127.0.0.1",
            port=port,
            tls_ctx=io.ClientTlsContext(options),
            connect_options=mqtt5.ConnectPacket(client_id="sandbox-probe"),
            on_lifecycle_event_connection_failure_fn=on_failure,
            on_lifecycle_event_connection_success_fn=on_success,
            on_lifecycle_event_stopped_fn=lambda _: stopped.set_result(None),
        )
    )
    client.start()
    try:
        return outcome.result(timeout=PROBE_TIMEOUT)
    except TimeoutError:
        return f"the broker on 127.0.0.1:{port} did not answer an MQTT CONNECT within {PROBE_TIMEOUT:.0f} s"
    finally:
        client.stop()
        try:
            stopped.result(timeout=5)
        except TimeoutError:
            pass


def _failed(reason: str, log: Path, since: int) -> int:
    print(f"sandbox: error: {reason}", file=sys.stderr)
    try:
        with log.open("rb") as output:
            output.seek(since)
            lines = output.read().decode(errors="replace").splitlines()[-LOG_LINES:]
    except OSError:
        lines = []
    if lines:
        print(f"last lines of {log}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
    return 1


def build() -> int:
    try:
        built, fresh = plugin.build()
    except plugin.BuildError as error:
        print(f"sandbox: error: {error}", file=sys.stderr)
        return 1
    print(f"sandbox: broker plugin {'built' if fresh else 'up to date'}: {built.relative_to(ROOT)}")
    return 0


def up() -> int:
    quotas()  # a SandboxQuotas it cannot take is refused before anything starts
    url = endpoint()
    port = port_of(url)
    log = log_file()
    state = SandboxState.load()
    if state and _ours(state.pid):
        report = health(state.endpoint)
        if report and report.get("ready"):
            print(f"sandbox: already up at {state.endpoint} (pid {state.pid})")
            return 0
        return _failed(
            f"the sandbox (pid {state.pid}) is running but not ready ({_parts(report)}). Stop it with "
            "`make sandbox-down` (this forgets what was deployed into it), then start it again.",
            log,
            log.stat().st_size if log.exists() else 0,
        )
    broker_port = mqtt_port()
    for busy, setting in ((port, "SandboxEndpoint=http://127.0.0.1:<port>"), (broker_port, "SandboxMqttPort=<port>")):
        if not _port_free(busy):
            print(
                f"sandbox: error: 127.0.0.1:{busy} is in use by another process. Stop it, or choose another port "
                f"with {setting} (for the sandbox and the tools alike).",
                file=sys.stderr,
            )
            return 1
    directory = sandbox_dir()
    directory.mkdir(parents=True, exist_ok=True)
    since = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    try:
        built, _ = plugin.build()
    except plugin.BuildError as error:
        _log(f"sandbox: error: {error}")
        return _failed(f"{error}", log, log.stat().st_size)
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.server",
                "--port",
                str(port),
                "--state-dir",
                str(directory),
                "--mqtt-port",
                str(broker_port),
                "--plugin",
                str(built),
                "--region",
                os.environ.get("AwsRegion", "us-east-1"),
            ],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops it, its broker and its Lambda workers
        )
    while not ((report := health(url)) and report.get("ready")):
        if process.poll() is not None or time.monotonic() - started > READY_TIMEOUT:
            if process.poll() is not None:
                reason = f"the sandbox stopped while starting (exit code {process.returncode})"
                said = last_error(log)
                reason += f": {said.removeprefix('sandbox: error: ')}" if said else ""
            else:
                reason = f"the sandbox was not ready after {READY_TIMEOUT:.0f} s ({_parts(report)})"
                _log(f"sandbox: error: {reason}")
            _stop_group(process.pid)
            return _failed(reason, log, since)
        time.sleep(0.2)
    broker = directory / "broker"
    problem = probe_broker(
        broker_port, directory / "ca" / "ca.pem", broker / "sandbox-probe.pem", broker / "sandbox-probe.key"
    )
    if problem:
        _log(f"sandbox: error: {problem}")
        _stop_group(process.pid)
        return _failed(problem, log, since)
    elapsed = time.monotonic() - started
    ca_file = str(directory / "ca" / "ca.pem")
    SandboxState(process.pid, url, port, time.time(), round(elapsed, 2), str(log), broker_port, ca_file).save()
    print(
        f"sandbox: up at {url}, MQTT on 127.0.0.1:{broker_port} (pid {process.pid}) in {elapsed:.1f} s, "
        f"{_rss_mb(process.pid):.0f} MB"
    )
    return 0


def down() -> int:
    state = SandboxState.load()
    if state is None:
        print("sandbox: not running")
        return 0
    if _ours(state.pid):
        _stop_group(state.pid)
    SandboxState.path().unlink(missing_ok=True)
    # Whatever was deployed lived in the sandbox's memory: its Terraform state now describes nothing.
    forgotten = sorted(p.name for p in sandbox_dir().glob("terraform.*.tfstate*"))
    for name in forgotten:
        (sandbox_dir() / name).unlink()
    print(f"sandbox: stopped (pid {state.pid})" + (f"; removed state {', '.join(forgotten)}" if forgotten else ""))
    return 0


def why_down() -> str:
    """Why the sandbox is not usable, naming its log and quoting the log's last error."""
    state = SandboxState.load()
    log = log_file()
    if state and _ours(state.pid):
        reason = f"running (pid {state.pid}) but not ready: {_parts(health(state.endpoint))}"
    elif state:
        reason = f"its process (pid {state.pid}) is gone"
    else:
        reason = "not running"
    error = last_error(log)
    if error:
        reason += f"; its log {log} ends with: {error}"
    elif log.exists():
        reason += f"; its log is {log}"
    return reason


def status() -> int:
    state = SandboxState.load()
    report = health(state.endpoint) if state and _ours(state.pid) else None
    if state and report and report.get("ready"):
        print(
            f"sandbox: up at {state.endpoint} (pid {state.pid}, {_rss_mb(state.pid):.0f} MB), state in {sandbox_dir()}"
        )
        try:
            active = faults.request(state.endpoint, "GET")
        except (OSError, ValueError):
            active = {}
        if active.get("fault"):
            acted = ", ".join(f"{op} {n}" for op, n in sorted(active.get("affected", {}).items())) or "none yet"
            print(
                f"sandbox: fault: {active['fault']['description']}; requests affected: {acted}"
                " (end it with `python -m sandbox fault clear`)"
            )
        try:
            validity = certificate_validity.request(state.endpoint, "GET")
        except (OSError, ValueError):
            validity = {"default": True}
        if not validity.get("default"):
            print(
                f"sandbox: {certificate_validity.describe(validity)}"
                " (back with `python -m sandbox certificate-validity default`)"
            )
        limits = report.get("quotas")
        if limits:
            rates = ", ".join(f"{api} {rate:g}/s" for api, rate in sorted(limits["rates"].items()))
            throttled = ", ".join(f"{api} {n}" for api, n in sorted(limits["throttled"].items())) or "none yet"
            print(f"sandbox: fleet-provisioning quotas (SandboxQuotas=aws): {rates}; requests throttled: {throttled}")
        return 0
    print(f"sandbox: down: {why_down()}")
    print("Start it with `make sandbox-up` (or `pipenv run python -m sandbox up`).")
    return 3


def environment() -> dict[str, str]:
    """What boto3 and the AWS CLI need to talk to the sandbox instead of AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint(),
        "AWS_ACCESS_KEY_ID": "sandbox",
        "AWS_SECRET_ACCESS_KEY": "sandbox",
        "AWS_DEFAULT_REGION": os.environ.get("AwsRegion", "us-east-1"),
    }


def env() -> int:
    for key, value in environment().items():
        print(f"export {key}={value}")
    return 0


def _ca() -> Path:
    return sandbox_dir() / "ca" / "ca.pem"


def trusted_path(ca_file: Path) -> Path:
    """Where `trust` puts this CA: named by its fingerprint, so untrusting one sandbox's CA (a test's)
    never removes another's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(ca_file.read_bytes()).public_bytes(serialization.Encoding.DER)
    return TRUST_DIR / f"iot-provisioning-sandbox-{hashlib.sha256(der).hexdigest()[:16]}.crt"


def _update_trust_store(verb: str) -> int:
    if os.geteuid() != 0:
        print(
            f"sandbox: error: changing the system trust store needs root: sudo {sys.executable} -m sandbox {verb}",
            file=sys.stderr,
        )
        return 1
    if not shutil.which("update-ca-certificates"):
        print(
            "sandbox: error: update-ca-certificates is missing: run `make setup` (it installs ca-certificates)",
            file=sys.stderr,
        )
        return 1
    return 0


def trust() -> int:
    ca = _ca()
    if not ca.exists():
        print(
            f"sandbox: error: there is no sandbox CA in {ca.parent} yet: start the sandbox once (make sandbox-up)",
            file=sys.stderr,
        )
        return 1
    if _update_trust_store("trust"):
        return 1
    target = trusted_path(ca)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, target)
    target.chmod(0o644)
    updated = subprocess.run(["update-ca-certificates"], capture_output=True, text=True, check=False)
    if updated.returncode != 0:
        print(f"sandbox: error: update-ca-certificates failed: {updated.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"sandbox: the sandbox CA ({ca}) is in the system trust store as {target}; undo with `untrust`")
    return 0


def untrust(every: bool = False) -> int:
    """Removes this sandbox's CA from the system trust store (`every`: every sandbox CA `trust` added)."""
    ca = _ca()
    if every:
        targets = sorted(TRUST_DIR.glob("iot-provisioning-sandbox-*.crt"))
    elif ca.exists():
        targets = [t for t in [trusted_path(ca)] if t.exists()]
    else:
        others = sorted(TRUST_DIR.glob("iot-provisioning-sandbox-*.crt"))
        print(
            f"sandbox: there is no sandbox CA in {ca.parent}: nothing to untrust"
            + (
                f" (the system store holds {len(others)} other sandbox CA(s): `untrust --all` removes them)"
                if others
                else ""
            )
        )
        return 0
    if not targets:
        print("sandbox: the sandbox CA is not in the system trust store")
        return 0
    if _update_trust_store("untrust"):
        return 1
    for target in targets:
        target.unlink()
    updated = subprocess.run(["update-ca-certificates", "--fresh"], capture_output=True, text=True, check=False)
    if updated.returncode != 0:
        print(f"sandbox: error: update-ca-certificates failed: {updated.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"sandbox: removed from the system trust store: {', '.join(str(t) for t in targets)}")
    return 0


COMMANDS = {"up": up, "down": down, "status": status, "env": env, "build": build, "trust": trust, "untrust": untrust}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["fault"], ["certificate-validity"]):  # their own arguments (their modules' `main`)
        state = SandboxState.load()
        switch = faults.main if argv[0] == "fault" else certificate_validity.main
        return switch(argv[1:], state.endpoint if state and _ours(state.pid) else endpoint())
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=[*COMMANDS, "fault", "certificate-validity"])
    parser.add_argument("--all", action="store_true", help="untrust: every sandbox CA `trust` added, not only this one")
    args = parser.parse_args(argv)
    try:
        if args.command == "untrust":
            return untrust(every=args.all)
        return COMMANDS[args.command]()
    except ValueError as error:
        print(f"sandbox: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
