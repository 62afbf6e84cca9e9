"""A local state file that a killed Terraform left empty or cut short is put back from its backup
before the next deploy or destroy reads it (which would otherwise take it for "nothing deployed")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.deploy import DamagedState, restore_damaged_local_state

WHOLE = json.dumps({"version": 4, "serial": 7, "resources": [{"mode": "managed", "type": "aws_iam_role"}]})


def stack(folder: Path, backend: dict[str, object]) -> Path:
    (folder / "cdk.tf.json").write_text(json.dumps({"terraform": {"backend": backend}}))
    return folder


@pytest.mark.parametrize("damaged", ["", WHOLE[: len(WHOLE) // 2]], ids=["empty", "cut short"])
def test_a_damaged_state_is_restored_from_its_backup_and_kept_beside_it(tmp_path: Path, damaged: str) -> None:
    state = tmp_path / "sandbox" / "terraform.iot-provisioning-dev.tfstate"
    state.parent.mkdir()
    state.write_text(damaged)
    state.with_name(state.name + ".backup").write_text(WHOLE)

    said = restore_damaged_local_state(stack(tmp_path, {"local": {"path": str(state)}}))

    assert json.loads(state.read_text()) == json.loads(WHOLE)
    (kept,) = state.parent.glob("*.damaged-*")
    assert kept.read_text() == damaged
    assert said is not None and "restored it from its backup" in said and str(kept) in said


def test_a_whole_state_a_missing_one_and_a_remote_backend_are_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "terraform.tfstate"
    assert restore_damaged_local_state(stack(tmp_path, {"local": {"path": "terraform.tfstate"}})) is None  # none yet
    state.write_text(WHOLE)
    assert restore_damaged_local_state(stack(tmp_path, {"local": {"path": "terraform.tfstate"}})) is None
    state.write_text("")
    assert restore_damaged_local_state(stack(tmp_path, {"s3": {"bucket": "b", "key": "k"}})) is None
    assert state.read_text() == ""


def test_a_damaged_state_without_a_whole_backup_stops_the_deploy_saying_so(tmp_path: Path) -> None:
    (tmp_path / "terraform.tfstate").write_text('{"version": 4, "resou')

    with pytest.raises(DamagedState, match=r"is damaged .* and has no whole backup"):
        restore_damaged_local_state(stack(tmp_path, {"local": {"path": "terraform.tfstate"}}))
    assert not list(tmp_path.glob("*.damaged-*"))


def test_a_state_file_a_running_terraform_holds_is_left_alone_even_when_empty(tmp_path: Path) -> None:
    """Terraform rewrites a local state in place under its fcntl lock: empty for a moment, not damaged."""
    state = tmp_path / "terraform.tfstate"
    state.write_text("")
    state.with_name(state.name + ".backup").write_text(WHOLE)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"

        with pytest.raises(DamagedState, match="being written by a Terraform running now"):
            restore_damaged_local_state(stack(tmp_path, {"local": {"path": "terraform.tfstate"}}))
    finally:
        holder.communicate("", timeout=10)
    assert state.read_text() == "" and not list(tmp_path.glob("*.damaged-*"))


# What Terraform's local backend does while it runs: an fcntl write lock on the whole state file.
HOLD_LOCK = """
import fcntl, sys
with open(sys.argv[1], "r+b") as state:
    fcntl.lockf(state, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""
