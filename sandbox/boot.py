"""Every change the sandbox makes to moto, installed in one declared order before moto serves its first
request.

Each patch lives in the folder of the AWS service it extends (as moto lays out its own services) and
says what AWS does that moto 5.2.5 does not; the Pipfile pins moto to the version they are written
for. The order matters where one patch wraps another's methods, and the comments say where.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sandbox import untracked_models
from sandbox.awslambda import idempotent_permissions
from sandbox.awslambda import runtime as lambda_runtime
from sandbox.cloudwatch import alarms as cloudwatch_alarms
from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.dynamodb import atomic_writes, index_partitions, item_level_transactions, parsed_update_expressions
from sandbox.iam.enforcement import AUTHORITY
from sandbox.iot import (
    certificates_from_sandbox_ca,
    indexed_lookups,
    missing_apis,
    registry_rules,
    thread_safe_registry,
)
from sandbox.iot.registry_writes import RegistryWrites
from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
from sandbox.iotdata import publish_to_broker
from sandbox.logs import kms_key_association
from sandbox.request_pipeline import http_front


def patches(authority: CertificateAuthority, pool: lambda_runtime.WorkerPool) -> list[Callable[[], None]]:
    """The patches, in the order they are installed."""
    return [
        # First: a model made before it stays tracked (kept alive) for good.
        untracked_models.install,
        missing_apis.install,
        partial(certificates_from_sandbox_ca.install, authority),
        # Before registry_rules, which wraps its delete_thing (AWS's answer to a thing still attached).
        indexed_lookups.install,
        # Before thread_safe_registry: the rules' checks then run under the registry lock.
        registry_rules.install,
        RegistryWrites.install,
        publish_to_broker.install,
        # The last of the IoT and IoT data patches: it serializes the backend methods as the ones
        # before it left them.
        thread_safe_registry.install,
        # Before atomic_writes: a transaction sets its items aside, and writes place their items in
        # the indexes' partitions, under the write lock.
        index_partitions.install,
        item_level_transactions.install,
        atomic_writes.install,
        parsed_update_expressions.install,
        idempotent_permissions.install,
        kms_key_association.install,
        # IAM decisions are cached: every IAM write, Lambda policy change and reset must empty them.
        AUTHORITY.install,
        partial(lambda_runtime.install, pool),
        # Before anything logs: EMF extraction and the metric index see every datapoint.
        cloudwatch_metrics.install,
        cloudwatch_alarms.install,
        # Last: it caches each response class's methods, which the patches above add to.
        http_front.install,
    ]


def module_of(patch: Callable[[], None]) -> str:
    """The module a patch is defined in (what the tests and the boot log name it by)."""
    return str(getattr(patch, "func", patch).__module__)


def install(authority: CertificateAuthority, pool: lambda_runtime.WorkerPool) -> None:
    for patch in patches(authority, pool):
        patch()
