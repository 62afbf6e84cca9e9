"""`sandbox up` as a newcomer meets it when something is missing: it fails, says why, quotes the
log, and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SUMMARY
from tests.integration.conftest import ROOT, sandbox_env

pytestmark = pytest.mark.integration


def processes_using(folder: Path) -> list[str]:
    """Live processes whose command line names the folder (the server, its broker, its Lambda workers)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder) in text and state != "Z":
            found.append(f"{cmdline.parent.name}: {text}")
    return found


def up(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.monotonic() - started


def test_sandbox_up_fails_when_the_broker_plugin_does_not_build(tmp_path: Path) -> None:
    """A header that breaks the build (gcc reads CPATH before the system's headers): `up` exits non-zero
    with the compiler's error, starts nothing, and the deploy hint quotes the error from the log."""
    include = tmp_path / "include"
    include.mkdir()
    (include / "mosquitto.h").write_text("#error this mosquitto.h is broken on purpose by a test\n")
    env = {**sandbox_env(tmp_path), "CPATH": str(include)}
    sandbox_dir = Path(env["IOT_SANDBOX_DIR"])

    result, elapsed = up(env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "building the broker plugin failed" in result.stderr
    assert "error: #error this mosquitto.h is broken on purpose by a test" in result.stderr  # gcc's own words
    assert "sandbox: up" not in result.stdout
    assert not (sandbox_dir / "state.json").exists()
    assert processes_using(sandbox_dir) == []
    hint = subprocess.run(
        ["make", "--no-print-directory", "_deploy-hint"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"its log {sandbox_dir / 'server.log'} ends with:" in hint.stdout
    assert "broken on purpose by a test" in hint.stdout
    SUMMARY.append(f"sandbox up with a plugin that does not build: exit {result.returncode} in {elapsed:.1f} s")


def test_sandbox_up_fails_when_the_broker_exits_and_stops_its_whole_group(tmp_path: Path) -> None:
    """A broker that dies at start (a stand-in `mosquitto` first on PATH): `up` waits for the broker, not
    only the local AWS, exits non-zero quoting the broker's last words, and no process of its own is left."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mosquitto"
    fake.write_text("#!/bin/sh\necho 'Error: this broker refuses to start (a test)' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = sandbox_env(tmp_path)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    sandbox_dir = Path(env["IOT_SANDBOX_DIR"])

    result, elapsed = up(env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "mosquitto exited with code 3: Error: this broker refuses to start (a test)" in result.stderr
    assert f"last lines of {sandbox_dir / 'server.log'}" in result.stderr
    assert not (sandbox_dir / "state.json").exists()
    assert processes_using(sandbox_dir) == []
    status = subprocess.run(
        [sys.executable, "-m", "sandbox", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 3
    assert "this broker refuses to start (a test)" in status.stdout
    SUMMARY.append(f"sandbox up with a broker that exits: exit {result.returncode} in {elapsed:.1f} s")
