"""Start, stop and inspect the local sandbox (a local AWS on 127.0.0.1, no account needed).

  python -m sandbox up       start it (harmless when it is already up)
  python -m sandbox down     stop exactly what `up` started and forget what was deployed into it
  python -m sandbox status   say whether it is up (exit 0) or not (exit 3)
  python -m sandbox env      print the shell exports that point boto3 / the AWS CLI at it:
                             eval "$(pipenv run python -m sandbox env)"

The endpoint is SandboxEndpoint (cdktf.json context or environment, default http://127.0.0.1:4566);
state, logs and Lambda code live in IOT_SANDBOX_DIR (default .sandbox/).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sandbox.state import ROOT, SandboxState, endpoint, mqtt_port, port_of, sandbox_dir

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=timeout) as response:  # noqa: S310 - local http
            return bool(response.status == 200)
    except OSError:
        return False


def _ours(pid: int) -> bool:
    """True when pid is a sandbox server process (a recycled PID must never be signalled)."""
    try:
        return b"sandbox.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    """Resident memory of the server and its Lambda workers."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid or status.parent.name == str(pid):  # pgid of our session
                total += int((status.parent / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def up() -> int:
    url = endpoint()
    port = port_of(url)
    state = SandboxState.load()
    if state and _ours(state.pid) and healthy(state.endpoint):
        print(f"sandbox: already up at {state.endpoint} (pid {state.pid})")
        return 0
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
    log = directory / "server.log"
    started = time.monotonic()
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
                "--region",
                os.environ.get("AwsRegion", "us-east-1"),
            ],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops it and its Lambda workers
        )
    while not healthy(url):
        if process.poll() is not None or time.monotonic() - started > READY_TIMEOUT:
            if process.poll() is None:
                process.kill()
            print(f"sandbox: error: the local AWS did not start; see {log}", file=sys.stderr)
            return 1
        time.sleep(0.2)
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
        os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _ours(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _ours(state.pid):
            os.killpg(state.pid, signal.SIGKILL)
    SandboxState.path().unlink(missing_ok=True)
    # Whatever was deployed lived in the sandbox's memory: its Terraform state now describes nothing.
    forgotten = sorted(p.name for p in sandbox_dir().glob("terraform.*.tfstate*"))
    for name in forgotten:
        (sandbox_dir() / name).unlink()
    print(f"sandbox: stopped (pid {state.pid})" + (f"; removed state {', '.join(forgotten)}" if forgotten else ""))
    return 0


def status() -> int:
    state = SandboxState.load()
    if state and _ours(state.pid) and healthy(state.endpoint):
        print(
            f"sandbox: up at {state.endpoint} (pid {state.pid}, {_rss_mb(state.pid):.0f} MB), state in {sandbox_dir()}"
        )
        return 0
    print("sandbox: down (start it with `make sandbox-up` or `pipenv run python -m sandbox up`)")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    try:
        return {"up": up, "down": down, "status": status, "env": env}[args.command]()
    except ValueError as error:
        print(f"sandbox: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
