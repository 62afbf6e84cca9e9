"""Every change the sandbox makes to moto, installed in one declared order before moto serves its first
request.

Each patch lives in the folder of the AWS service it extends (as moto lays out its own services) and
says what AWS does that moto 5.2.5 does not; the Pipfile pins moto to the version they are written
for. The order matters where one patch wraps another's methods, and the comments say where.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sandbox.awslambda import idempotent_permissions
from sandbox.awslambda import runtime as lambda_runtime
from sandbox.cloudwatch import alarms as cloudwatch_alarms
from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.dynamodb import atomic_writes, parsed_update_expressions
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


def patches(authority: CertificateAuthority, pool: lambda_runtime.WorkerPool) -> list[tuple[str, Callable[[], None]]]:
    """The patches, each named by its module, in the order they are installed."""
    return [
        ("sandbox.iot.missing_apis", missing_apis.install),
        ("sandbox.iot.certificates_from_sandbox_ca", partial(certificates_from_sandbox_ca.install, authority)),
        # Before thread_safe_registry: the rules' checks then run under the registry lock.
        ("sandbox.iot.registry_rules", registry_rules.install),
        ("sandbox.iot.indexed_lookups", indexed_lookups.install),
        ("sandbox.iot.registry_writes", RegistryWrites.install),
        ("sandbox.iotdata.publish_to_broker", publish_to_broker.install),
        # The last of the IoT and IoT data patches: it serializes the backend methods as the ones
        # before it left them.
        ("sandbox.iot.thread_safe_registry", thread_safe_registry.install),
        ("sandbox.dynamodb.atomic_writes", atomic_writes.install),
        ("sandbox.dynamodb.parsed_update_expressions", parsed_update_expressions.install),
        ("sandbox.awslambda.idempotent_permissions", idempotent_permissions.install),
        ("sandbox.logs.kms_key_association", kms_key_association.install),
        # IAM decisions are cached: every IAM write, Lambda policy change and reset must empty them.
        ("sandbox.iam.enforcement", AUTHORITY.install),
        ("sandbox.awslambda.runtime", partial(lambda_runtime.install, pool)),
        # Before anything logs: EMF extraction and the metric index see every datapoint.
        ("sandbox.cloudwatch.metrics", cloudwatch_metrics.install),
        ("sandbox.cloudwatch.alarms", cloudwatch_alarms.install),
    ]


def install(authority: CertificateAuthority, pool: lambda_runtime.WorkerPool) -> None:
    for _, patch in patches(authority, pool):
        patch()
