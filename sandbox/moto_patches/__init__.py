"""What moto 5.2.5 lacks or does differently from AWS, one module per gap, named for what it adds.

`install` applies them all, in one place and one order, before moto serves its first request.
Each module says when it can be deleted; the Pipfile pins moto to the version they are written for.
"""

from __future__ import annotations

from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
from sandbox.moto_patches import (
    atomic_dynamodb_writes,
    idempotent_lambda_permissions,
    indexed_iot_lookups,
    iot_certificates_from_sandbox_ca,
    iot_data_publish_to_broker,
    iot_registry_rules,
    logs_kms_key_association,
    missing_iot_apis,
    parsed_update_expressions,
    thread_safe_iot_registry,
)


def install(authority: CertificateAuthority) -> None:
    missing_iot_apis.install()
    iot_certificates_from_sandbox_ca.install(authority)
    iot_registry_rules.install()  # before thread_safe_iot_registry: its checks run under the registry lock
    atomic_dynamodb_writes.install()
    parsed_update_expressions.install()
    idempotent_lambda_permissions.install()
    indexed_iot_lookups.install()
    iot_data_publish_to_broker.install()
    logs_kms_key_association.install()
    thread_safe_iot_registry.install()
