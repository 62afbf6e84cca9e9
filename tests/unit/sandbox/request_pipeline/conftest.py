"""The local AWS's real HTTP front on a port of its own, for the tests of what a request passes before moto."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from sandbox.iam.enforcement import AUTHORITY
from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
from sandbox.request_pipeline import http_front


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local AWS's real HTTP front on a port of its own (moto's server-mode state, no mock)."""
    AUTHORITY.install()
    port = free_port()
    running = http_front.serve(port, lambda: {}, CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca")))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.shutdown()
