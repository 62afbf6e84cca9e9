"""Fixtures for Lambda unit tests: a moto registry table and a freshly configured hook module."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
from moto import mock_aws

from tests.unit.support import Registry, create_registry, drain_hook_decisions, load_hook


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield
        drain_hook_decisions()


@pytest.fixture
def registry(aws: None) -> Registry:
    return Registry(create_registry())


@pytest.fixture
def hook(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_hook(monkeypatch)
