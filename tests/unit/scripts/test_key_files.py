"""Private keys the tools and the sandbox write are 0600 from the moment the file exists, whatever the
umask, and a file that existed with a wider mode is narrowed before the key is written into it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iot_fleet import claim_keys
from sandbox.iot_data_plane.certificate_authority import write_private
from scripts import device_client


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(previous)


WRITERS: dict[str, Callable[[Path, str], object]] = {
    "sandbox CA and broker keys": lambda path, text: write_private(path, text.encode()),
    "device credentials": lambda path, text: device_client._write_private(path, text),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_new_key_file_is_0600_under_umask_000(tmp_path: Path, open_umask: None, writer: str) -> None:
    key = tmp_path / "device.private.key"
    WRITERS[writer](key, "-----BEGIN PRIVATE KEY-----\n")

    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert key.read_text() == "-----BEGIN PRIVATE KEY-----\n"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_existing_wider_file_is_narrowed_before_the_key_goes_in(
    tmp_path: Path, open_umask: None, writer: str
) -> None:
    key = tmp_path / "device.private.key"
    key.write_text("old")
    key.chmod(0o644)

    WRITERS[writer](key, "secret")

    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert key.read_text() == "secret"


def test_the_claim_key_synth_makes_is_0600_under_umask_000(tmp_path: Path, open_umask: None) -> None:
    claim_keys.ensure(tmp_path / "factory", 1, "claim 1")

    key = claim_keys.key_path(tmp_path / "factory", 1)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
