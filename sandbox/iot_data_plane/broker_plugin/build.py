"""Builds the broker plugin (fleet_routing.c: reply routing and access checks) with gcc.

`make setup` builds it (`python -m sandbox build`), so a missing header fails setup with the
compiler's message and the package to install, not later inside a background process. `sandbox up`
builds again only when an input changed (the source, the compiler command, or gcc's include and
library path variables) and fails when the build fails. A failed build keeps the last good plugin.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from sandbox.state import ROOT

SOURCE = Path(__file__).with_name("fleet_routing.c")
BUILD_DIR = ROOT / ".build" / "broker"
PLUGIN = BUILD_DIR / "fleet_routing.so"
_KEY = PLUGIN.with_name("fleet_routing.so.inputs")
GCC_VARIABLES = ("CPATH", "C_INCLUDE_PATH", "LIBRARY_PATH")  # gcc reads these: they change the build
_MISSING_HEADER = re.compile(r"fatal error: ([^:\s]+): No such file or directory")


class BuildError(RuntimeError):
    """The plugin did not build; the message holds the compiler's errors and what to install."""


def _command(output: Path) -> list[str]:
    return ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(output), str(SOURCE), "-lcrypto"]


def _inputs() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update("\0".join(_command(PLUGIN)).encode())
    for name in GCC_VARIABLES:
        digest.update(f"\0{name}={os.environ.get(name, '')}".encode())
    return digest.hexdigest()


def package_for(header: str) -> str | None:
    """The Debian package setup installs for this header (scripts/system-packages.sh keeps the list)."""
    found = subprocess.run(
        ["bash", str(ROOT / "scripts" / "system-packages.sh"), "--package-for", header],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or None


def build() -> tuple[Path, bool]:
    """(the plugin, whether it was built now): built only when its inputs changed since the last build."""
    inputs = _inputs()
    if PLUGIN.exists() and _KEY.exists() and _KEY.read_text() == inputs:
        return PLUGIN, False
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    staging = PLUGIN.with_name(f".fleet_routing.{os.getpid()}.so")
    try:
        built = subprocess.run(_command(staging), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError("gcc is not installed: run `make setup` (it installs gcc as root)") from None
    if built.returncode != 0:
        staging.unlink(missing_ok=True)
        said = built.stderr.strip().splitlines() or [f"gcc exited with code {built.returncode}"]
        first_error = next((line for line in said if "error:" in line), said[-1])
        message = f"building the broker plugin failed: {first_error}"
        for header in dict.fromkeys(_MISSING_HEADER.findall(built.stderr)):
            package = package_for(header)
            if package:
                message += (
                    f" ({header} comes from the Debian package {package}: apt-get install {package};"
                    " `make setup` installs it when run as root)"
                )
        raise BuildError(f"{message}\ncompiler output ({' '.join(_command(PLUGIN))}):\n{built.stderr.rstrip()}")
    os.replace(staging, PLUGIN)
    _KEY.write_text(inputs)
    return PLUGIN, True
