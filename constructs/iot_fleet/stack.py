"""The provisioning stack: wires the constructs together and declares the outputs users script against."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from cdktf import LocalBackend, S3Backend, S3BackendEndpointConfig, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.data_aws_iot_endpoint import DataAwsIotEndpoint
from cdktf_cdktf_provider_aws.lambda_function_event_invoke_config import LambdaFunctionEventInvokeConfig
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderDefaultTags, AwsProviderEndpoints
from constructs import Construct

from iot_fleet import claim_keys
from iot_fleet.audit_trail import AuditTrail
from iot_fleet.certificate_rotation import CertificateRotation
from iot_fleet.claim_certificate import ClaimCertificate
from iot_fleet.config import StackConfig
from iot_fleet.device_fleet import DeviceFleet
from iot_fleet.device_registry import DeviceRegistry
from iot_fleet.fleet_function import FleetFunction
from iot_fleet.fleet_provisioning import FleetProvisioning
from iot_fleet.monitoring import Monitoring
from iot_fleet.naming import AccountContext
from iot_fleet.reconciler_schedule import ReconcilerSchedule
from iot_fleet.registry_events import RegistryEvents, rule_name
from iot_fleet.registry_schema import ROTATION_INDEX
from iot_fleet.stack_key import StackKey

SANDBOX_SERVICES = ("cloudwatch", "dynamodb", "events", "iam", "iot", "kms", "lambda_", "logs", "sns", "sts")
HOOK_TIMEOUT_SECONDS = 4  # IoT waits 5 s for the hook; finish (or fail) before that
# What the hook imports beyond Lambda's runtime (standard library and boto3): shipped in its zip.
HOOK_PACKAGES = ("ecdsa", "six")

# How long a device has to confirm a rotation (connect with its new certificate) before the reconciler
# removes the unconfirmed certificate; the device's old one works throughout.
ROTATION_CONFIRM_SECONDS = 600
# Events a registry item keeps in certificateHistory (the rotation function and the reconciler trim it).
CERTIFICATE_HISTORY_LIMIT = 20
# How long a rotation message may wait in Lambda's queue (AWS's smallest maximum event age is 60 s).
ROTATION_EVENT_AGE_SECONDS = 120


class IotProvisioningStack(TerraformStack):
    def __init__(self, scope: Construct, id_: str, config: StackConfig) -> None:
        super().__init__(scope, id_)
        self.config = config
        prefix = config.prefix
        default_tags = [
            AwsProviderDefaultTags(
                tags={"Project": config.project_name, "Environment": config.environment, "ManagedBy": "cdktf"}
            )
        ]
        if config.target == "sandbox":
            self._sandbox_provider(config, default_tags)
        else:
            AwsProvider(self, "aws", region=config.aws_region, default_tags=default_tags)
        if config.state_bucket:
            self._s3_backend(config)
        account = AccountContext(self, "account")
        key = StackKey(self, "key", name=prefix.lower(), account=account, is_prod=config.is_prod).key
        self.registry = DeviceRegistry(self, "registry", table_name=config.table_name, key=key, is_prod=config.is_prod)
        table = self.registry.table
        self.fleet = DeviceFleet(self, "fleet", prefix=prefix, device_types=config.device_types, account=account)
        self.audit = AuditTrail(
            self,
            "audit",
            prefix=prefix,
            rule_name=rule_name(prefix, "audit"),
            key=key,
            log_retention_days=config.log_retention_days,
            account=account,
        )

        metrics_namespace = f"{config.project_name}/{config.environment}"

        def key_use(*actions: str) -> dict[str, Any]:
            return {
                "Effect": "Allow",
                "Action": list(actions),
                "Resource": key.arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"dynamodb.{account.region}.amazonaws.com"}},
            }

        self.hook = FleetFunction(
            self,
            "hook",
            function_name=f"{prefix}-provisioning-hook",
            source="provisioning_hook",
            handler="provisioning_hook.handler",
            description="Pre-provisioning hook: admits enrolled devices only, once each",
            environment={
                "TABLE_NAME": table.name,
                "ALLOWED_DEVICE_TYPES": ",".join(config.allowed_device_types),
                "REQUIRE_ENROLLMENT": str(config.require_enrollment).lower(),
                "REQUIRE_ATTESTATION": str(config.require_attestation).lower(),
                "CLAIM_CLIENT_ID_PREFIX": config.claim_client_id_prefix,
                "METRICS_NAMESPACE": metrics_namespace,
                "IOT_PROVISIONING_DEBUG": os.environ.get("IOT_PROVISIONING_DEBUG", "false").lower(),
            },
            statements=[
                # GetItem: the enrolled factory key, read before the one conditional write (open
                # enrollment: also the serial's thing-name reservation, taken in the same transaction).
                {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
                key_use("kms:Decrypt", "kms:GenerateDataKey"),
                *(
                    []
                    if config.require_enrollment
                    else [  # open enrollment: a derived thing name that is another device's thing is refused
                        {"Effect": "Allow", "Action": ["iot:DescribeThing"], "Resource": account.arn("iot", "thing/*")}
                    ]
                ),
            ],
            account=account,
            key=key,
            log_retention_days=config.log_retention_days,
            timeout=HOOK_TIMEOUT_SECONDS,
            packages=HOOK_PACKAGES,
            extra_acknowledgements={
                "CKV_AWS_116": "IoT invokes the hook synchronously and denies the device on any error; "
                "there is no asynchronous event to dead-letter.",
            },
        ).function
        if config.target == "aws":
            self.iot_data_endpoint: str | None = DataAwsIotEndpoint(
                self, "iot-data-endpoint", endpoint_type="iot:Data-ATS"
            ).endpoint_address
        else:
            self.iot_data_endpoint = None  # the sandbox's broker is its own; its address is in sandbox state
        self.registry_events_function = FleetFunction(
            self,
            "registry-events",
            function_name=f"{prefix}-registry-events",
            source="registry_events",
            handler="registry_events.handler",
            description="Marks devices provisioned and writes their initial shadow when their thing is created",
            environment={
                "TABLE_NAME": table.name,
                "INITIAL_SHADOWS": json.dumps(
                    {name: dict(t.initial_shadow) for name, t in config.device_types.items()},
                    separators=(",", ":"),
                ),
                "IOT_DATA_ENDPOINT": self.iot_data_endpoint or "",
            },
            statements=[
                {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
                key_use("kms:Decrypt", "kms:GenerateDataKey"),
                {  # the thing must hold the attempt's certificate before the device is provisioned
                    "Effect": "Allow",
                    "Action": ["iot:ListThingPrincipals", "iot:UpdateThingShadow"],
                    "Resource": account.arn("iot", "thing/*"),
                },
                {  # the certificate of an attempt this one replaced is revoked
                    "Effect": "Allow",
                    "Action": ["iot:DescribeCertificate", "iot:UpdateCertificate"],
                    "Resource": account.arn("iot", "cert/*"),
                },
            ],
            account=account,
            key=key,
            log_retention_days=config.log_retention_days,
            timeout=30,
            extra_acknowledgements={
                "CKV_AWS_116": "Failed events are retried by Lambda and recorded by the rule's error action in "
                "the audit log group; what still fails, the scheduled reconciler (lambda/reconciler) completes: "
                "it finds the thing with the attempt's certificate and marks the device provisioned.",
            },
        ).function
        if config.claim_key_source == "factory":
            for generation in config.claim_certificate_generations:
                if claim_keys.ensure(config.claim_key_folder, generation, f"{prefix} claim {generation}"):
                    key_file = claim_keys.key_path(config.claim_key_folder, generation)
                    print(
                        f"claim key for generation {generation} created: {key_file} (0600, not in Terraform state; "
                        "keep it with the factory's secrets)",
                        file=sys.stderr,
                    )
        self.rotation_function = FleetFunction(
            self,
            "certificate-rotation",
            function_name=f"{prefix}-certificate-rotation",
            source="certificate_rotation",
            handler="certificate_rotation.handler",
            description="Issues a provisioned device a certificate from its CSR; retires the old one once confirmed",
            environment={
                "TABLE_NAME": table.name,
                "IOT_DATA_ENDPOINT": self.iot_data_endpoint or "",
                "ROTATION_INTERVAL_SECONDS": str(config.rotation_interval_minutes * 60),
                "CERTIFICATE_HISTORY_LIMIT": str(CERTIFICATE_HISTORY_LIMIT),
            },
            # Each request is about ten IoT control-plane calls: a flood from many devices at once may
            # not spend the account's IoT quotas or Lambda concurrency (more events wait in Lambda's queue).
            reserved_concurrency=config.rotation_concurrency,
            statements=[
                {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
                key_use("kms:Decrypt", "kms:GenerateDataKey"),
                {"Effect": "Allow", "Action": ["iot:CreateCertificateFromCsr"], "Resource": "*"},  # no resource type
                {
                    "Effect": "Allow",
                    "Action": [
                        "iot:DescribeCertificate",
                        "iot:UpdateCertificate",
                        "iot:DeleteCertificate",
                        "iot:AttachPolicy",
                        "iot:DetachPolicy",
                        "iot:ListAttachedPolicies",
                        "iot:AttachThingPrincipal",
                        "iot:DetachThingPrincipal",
                    ],
                    "Resource": account.arn("iot", "cert/*"),
                },
                {
                    "Effect": "Allow",
                    "Action": ["iot:DescribeThing", "iot:AttachThingPrincipal", "iot:DetachThingPrincipal"],
                    "Resource": account.arn("iot", "thing/*"),
                },
                {  # answers go only to the rotation topics
                    "Effect": "Allow",
                    "Action": ["iot:Publish"],
                    "Resource": account.arn("iot", "topic/fleet/rotation/*"),
                },
            ],
            account=account,
            key=key,
            log_retention_days=config.log_retention_days,
            timeout=30,
            extra_acknowledgements={
                "CKV_AWS_116": "A failed rotation step changes nothing the device relies on: its current certificate "
                "keeps working, it asks again, and the reconciler removes a new certificate never confirmed.",
            },
        ).function
        # The device asks again itself (a repeat keeps its requestId): Lambda's own retries of a failed
        # event would spend the request's tries and answer a device that had given up. An event queued
        # behind RotationConcurrency longer than a device waits is dropped, not run late (a late request
        # would take the device's slot for a certificate nobody waits for).
        self.rotation_retries = LambdaFunctionEventInvokeConfig(
            self,
            "certificate-rotation-retries",
            function_name=self.rotation_function.function_name,
            maximum_retry_attempts=0,
            maximum_event_age_in_seconds=ROTATION_EVENT_AGE_SECONDS,
        )
        self.rotation = CertificateRotation(
            self,
            "certificate-rotation-rule",
            rule_name=rule_name(prefix, "certificate_rotation"),
            function=self.rotation_function,
            audit=self.audit,
        )
        self.claim = ClaimCertificate(
            self,
            "claim",
            prefix=prefix,
            template_name=config.provisioning_template_name,
            generations=config.claim_certificate_generations,
            csr_of=config.claim_certificate_csr,
            account=account,
            client_id_prefix=config.claim_client_id_prefix,
        )
        self.reconciler_function = FleetFunction(
            self,
            "reconciler",
            function_name=f"{prefix}-reconciler",
            source="reconciler",
            handler="reconciler.handler",
            description="Completes or fails provisioning attempts that stopped after the hook; publishes fleet metrics",
            environment={
                "TABLE_NAME": table.name,
                "STATUS_INDEX": "status-index",
                "STALE_CLAIM_SECONDS": str(config.stale_claim_minutes * 60),
                "ROTATION_CONFIRM_SECONDS": str(ROTATION_CONFIRM_SECONDS),
                "CERTIFICATE_HISTORY_LIMIT": str(CERTIFICATE_HISTORY_LIMIT),
                "ROTATION_INDEX": ROTATION_INDEX.name,
                "CLAIM_CERTIFICATE_IDS": ",".join(c.id for c in self.claim.generations.values()),
                "METRICS_NAMESPACE": metrics_namespace,
                "INITIAL_SHADOWS": json.dumps(
                    {name: dict(t.initial_shadow) for name, t in config.device_types.items()},
                    separators=(",", ":"),
                ),
                "IOT_DATA_ENDPOINT": self.iot_data_endpoint or "",
            },
            statements=[
                {
                    "Effect": "Allow",
                    "Action": ["dynamodb:Query"],
                    "Resource": [f"{table.arn}/index/status-index", f"{table.arn}/index/{ROTATION_INDEX.name}"],
                },
                {"Effect": "Allow", "Action": ["dynamodb:UpdateItem"], "Resource": table.arn},
                key_use("kms:Decrypt", "kms:GenerateDataKey"),
                {
                    "Effect": "Allow",
                    "Action": [
                        "iot:DescribeCertificate",
                        "iot:UpdateCertificate",
                        "iot:DeleteCertificate",
                        "iot:ListPrincipalThings",
                        "iot:ListAttachedPolicies",
                        "iot:DetachPolicy",  # an unconfirmed rotation's certificate is removed
                        "iot:DetachThingPrincipal",
                    ],
                    "Resource": account.arn("iot", "cert/*"),
                },
                {"Effect": "Allow", "Action": ["iot:ListCertificates"], "Resource": "*"},  # no resource type
                {
                    "Effect": "Allow",
                    "Action": [
                        "iot:ListThingPrincipals",
                        "iot:GetThingShadow",
                        "iot:UpdateThingShadow",
                        "iot:DetachThingPrincipal",
                    ],
                    "Resource": account.arn("iot", "thing/*"),
                },
            ],
            account=account,
            key=key,
            log_retention_days=config.log_retention_days,
            timeout=300,
            extra_acknowledgements={
                "CKV_AWS_116": "Invoked by its schedule, not by events to keep: a failed run leaves nothing it "
                "cannot redo, and the next run (5 minutes later) does the same work again.",
            },
        ).function
        self.reconciler_schedule = ReconcilerSchedule(
            self, "reconciler-schedule", prefix=prefix, function=self.reconciler_function
        )
        self.events = RegistryEvents(
            self, "registry-events-rule", prefix=prefix, function=self.registry_events_function, audit=self.audit
        )
        self.provisioning = FleetProvisioning(
            self,
            "provisioning",
            template_name=config.provisioning_template_name,
            prefix=prefix,
            fleet=self.fleet,
            hook=self.hook,
            account=account,
            region=config.aws_region,
            aws_environment=(
                {
                    "AWS_ENDPOINT_URL": config.sandbox_endpoint,
                    "AWS_ACCESS_KEY_ID": "sandbox",
                    "AWS_SECRET_ACCESS_KEY": "sandbox",
                }
                if config.target == "sandbox"
                else {}
            ),
        )
        self.monitoring: Monitoring | None = None
        if config.monitoring_enabled:
            self.monitoring = Monitoring(
                self,
                "monitoring",
                prefix=prefix,
                region=config.aws_region,
                key=key,
                alert_email=config.alert_email,
                template_name=self.provisioning.template.name,
                table_name=table.name,
                hook_function_name=self.hook.function_name,
                events_function_name=self.registry_events_function.function_name,
                reconciler_function_name=self.reconciler_function.function_name,
                claim_certificate_ids={f"claim-certificate-{g}": c.id for g, c in self.claim.generations.items()},
                claim_expiry_warning_days=config.claim_expiry_warning_days,
                metrics_namespace=metrics_namespace,
            )
        self._outputs()

    def _sandbox_provider(self, config: StackConfig, default_tags: list[AwsProviderDefaultTags]) -> None:
        """Every service the stack uses points at the local sandbox; nothing can reach real AWS."""
        url = config.sandbox_endpoint
        AwsProvider(
            self,
            "aws",
            region=config.aws_region,
            default_tags=default_tags,
            access_key="sandbox",
            secret_key="sandbox",  # noqa: S106 - the sandbox administrator's fake key (any secret)
            skip_credentials_validation=True,
            skip_metadata_api_check="true",
            skip_region_validation=True,
            max_retries=2,  # a missing API or a stopped sandbox fails in seconds instead of hanging
            endpoints=[
                AwsProviderEndpoints(
                    **{service: url for service in SANDBOX_SERVICES},
                )
            ],
        )
        if not config.state_bucket:
            # Sandbox resources live in the sandbox's memory; so does their state, next to it.
            LocalBackend(self, path=f"{config.sandbox_dir}/terraform.{config.stack_name}.tfstate")

    def _s3_backend(self, config: StackConfig) -> None:
        """State in S3 (StateBucket), encrypted at rest, locked by S3's own conditional writes (a
        `<key>.tflock` object: Terraform 1.10+; DynamoDB locking is deprecated since 1.11)."""
        sandbox: dict[str, Any] = {}
        if config.target == "sandbox":  # the sandbox's S3: how the backend is tested without AWS
            sandbox = {
                "endpoints": S3BackendEndpointConfig(s3=config.sandbox_endpoint),
                "use_path_style": True,
                "access_key": "sandbox",
                "secret_key": "sandbox",
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": True,
                "skip_region_validation": True,
            }
        backend = S3Backend(
            self,
            bucket=config.state_bucket,
            key=f"{config.prefix}/terraform.{config.stack_name}.tfstate",
            region=config.state_region or config.aws_region,
            encrypt=True,
            **sandbox,
        )
        backend.add_override("use_lockfile", True)  # not in cdktf 0.21's S3BackendConfig

    def _output(self, name: str, value: Any, description: str, *, sensitive: bool = False) -> None:
        TerraformOutput(self, name, value=value, description=description, sensitive=sensitive)

    def _outputs(self) -> None:
        o = self._output
        template = self.provisioning.template
        o("provisioning_template_name", template.name, "Fleet-provisioning template devices register with")
        o("provisioning_template_arn", template.arn, "ARN of the fleet-provisioning template")
        o("device_registry_table_name", self.registry.table.name, "DynamoDB device registry (one item per serial)")
        o("device_registry_table_arn", self.registry.table.arn, "ARN of the device registry table")
        o("provisioning_hook_function_name", self.hook.function_name, "Pre-provisioning hook Lambda function")
        o(
            "registry_events_function_name",
            self.registry_events_function.function_name,
            "Lambda that marks devices provisioned and writes their initial shadow",
        )
        o(
            "certificate_rotation_function_name",
            self.rotation_function.function_name,
            "Lambda that rotates device certificates (requests on fleet/rotation/<thing>/request)",
        )
        self._output(
            "reconciler_function_name",
            self.reconciler_function.function_name,
            "Scheduled Lambda that completes or fails provisioning attempts that stopped after the hook",
        )
        o("provisioning_role_name", self.provisioning.role.name, "Role IoT assumes to apply the template")
        o(
            "claim_certificate_id",
            self.claim.certificate.id,
            "Claim certificate id (for manufacturing; newest generation)",
        )
        o("claim_certificate_arn", self.claim.certificate.arn, "Claim certificate ARN (newest generation)")
        o(
            "claim_certificates",
            {str(g): {"id": c.id, "arn": c.arn} for g, c in self.claim.generations.items()},
            "Claim certificate generation -> id and ARN, every generation in force (ClaimCertificateGenerations)",
        )
        o(
            "claim_certificate_pem",
            self.claim.certificate.certificate_pem,
            "Claim certificate PEM, newest generation (the provider marks it sensitive; `terraform output -raw` "
            "prints it)",
            sensitive=True,
        )
        source = self.config.claim_key_source
        if source == "state":  # only then does state hold a key: the output never exists empty
            o(
                "claim_private_key",
                self.claim.certificate.private_key,
                "Claim private key, newest generation (AWS IoT made it; it is in Terraform state)",
                sensitive=True,
            )
        elif source == "factory":
            newest = max(self.config.claim_certificate_generations)
            o(
                "claim_private_key_file",
                str(claim_keys.key_path(self.config.claim_key_folder, newest)),
                "Where synth made the newest claim key (on the synthesizing machine; never in Terraform state)",
            )
        o("claim_policy_name", self.claim.policy.name, "IoT policy limiting the claim certificate to provisioning")
        o(
            "claim_client_id_prefix",
            self.config.claim_client_id_prefix,
            "Client-id prefix claim connections must use (ClaimClientIdPrefix; empty: any client id)",
        )
        o(
            "require_attestation",
            str(self.config.require_attestation).lower(),
            "Whether every device must be enrolled with a factory key and sign with it (RequireAttestation)",
        )
        o("thing_type_name", self.fleet.thing_type.name, "Thing type of every provisioned device")
        o("thing_group_root_name", self.fleet.root_group.name, "Root thing group of the fleet")
        o("thing_group_names", {n: g.name for n, g in self.fleet.groups.items()}, "Thing group per device type")
        o("device_policy_names", {n: p.name for n, p in self.fleet.policies.items()}, "IoT policy per device type")
        o("audit_log_group_name", self.audit.log_group.name, "Log group of the registry-event audit trail")
        o("allowed_device_types", ",".join(self.config.allowed_device_types), "Device types the hook admits")
        o("aws_region", self.config.aws_region, "Region the stack is deployed to")
        o("environment", self.config.environment, "The Environment parameter (dev, staging or prod)")
        if self.monitoring is not None:
            o("alerts_topic_arn", self.monitoring.topic.arn, "SNS topic the alarms notify (AlertEmail subscribes)")
            o("dashboard_name", self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard of the fleet")
        if self.iot_data_endpoint is not None:
            o("iot_data_endpoint", self.iot_data_endpoint, "MQTT endpoint devices connect to (iot:Data-ATS)")
