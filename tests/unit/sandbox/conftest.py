"""The sandbox tests' moto: the IoT APIs the sandbox adds to it, installed once for every test here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox.iot import missing_apis

missing_apis.install()


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("iot", region_name="us-east-1")
