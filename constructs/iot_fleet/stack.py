"""The provisioning stack: wires the constructs together and declares the outputs users script against."""

from __future__ import annotations

from typing import Any

from cdktf import LocalBackend, S3Backend, S3BackendEndpointConfig, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.data_aws_iot_endpoint import DataAwsIotEndpoint
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderDefaultTags, AwsProviderEndpoints
from constructs import Construct

from iot_fleet import claim_keys
from iot_fleet.audit_trail import AuditTrail
from iot_fleet.certificate_rotation import CertificateRotation, rotation_alarm, rotation_function
from iot_fleet.claim_certificate import ClaimCertificate
from iot_fleet.config import StackConfig
from iot_fleet.device_catalogue import initial_shadows_document
from iot_fleet.device_fleet import DeviceFleet
from iot_fleet.device_registry import DeviceRegistry
from iot_fleet.fleet_function import FunctionSettings
from iot_fleet.fleet_provisioning import FleetProvisioning
from iot_fleet.monitoring import Monitoring
from iot_fleet.naming import AccountContext
from iot_fleet.provisioning_hook import hook_alarms, provisioning_hook
from iot_fleet.reconciler_schedule import ReconcilerSchedule, reconciler_alarm, reconciler_function
from iot_fleet.registry_events import RegistryEvents, registry_events_alarm, registry_events_function, rule_name
from iot_fleet.stack_key import StackKey

SANDBOX_SERVICES = ("cloudwatch", "dynamodb", "events", "iam", "iot", "kms", "lambda_", "logs", "sns", "sts")


TERRAFORM_REQUIRED = ">= 1.10.0"


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
        # The S3 backend's lock file (use_lockfile) needs Terraform 1.10: an older one would stop at init
        # on an argument it does not know. Stated for every stack, so a state moved to S3 later needs no
        # other Terraform than the one that created it.
        self.add_override("terraform.required_version", TERRAFORM_REQUIRED)
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

        if config.target == "aws":
            self.iot_data_endpoint: str | None = DataAwsIotEndpoint(
                self, "iot-data-endpoint", endpoint_type="iot:Data-ATS"
            ).endpoint_address
        else:
            self.iot_data_endpoint = None  # the sandbox's broker is its own; its address is in sandbox state
        # What the deploy's own scripts need to reach the same account as the provider.
        deploy_environment = (
            {
                "AWS_ENDPOINT_URL": config.sandbox_endpoint,
                "AWS_ACCESS_KEY_ID": "sandbox",
                "AWS_SECRET_ACCESS_KEY": "sandbox",
            }
            if config.target == "sandbox"
            else {}
        )
        metrics_namespace = f"{config.project_name}/{config.environment}"
        functions = FunctionSettings(
            account=account,
            key=key,
            table=table,
            log_retention_days=config.log_retention_days,
            metrics_namespace=metrics_namespace,
            iot_data_endpoint=self.iot_data_endpoint or "",
        )
        # Each device type's initial shadow: registry-events writes it, the reconciler when it completes.
        initial_shadows = initial_shadows_document(config.device_types)
        self.hook = provisioning_hook(self, functions, config)
        self.registry_events_function = registry_events_function(
            self, functions, prefix=prefix, initial_shadows=initial_shadows
        )
        if config.claim_key_source == "factory":
            claim_keys.ensure_generations(config.claim_key_folder, config.claim_certificate_generations, prefix)
        self.rotation_function = rotation_function(self, functions, config)
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
        self.reconciler_function = reconciler_function(
            self,
            functions,
            config,
            claim_certificate_ids=[c.id for c in self.claim.generations.values()],
            initial_shadows=initial_shadows,
        )
        self.reconciler_schedule = ReconcilerSchedule(
            self, "reconciler-schedule", prefix=prefix, function=self.reconciler_function
        )
        self.events = RegistryEvents(
            self,
            "registry-events-rule",
            prefix=prefix,
            function=self.registry_events_function,
            audit=self.audit,
            region=config.aws_region,
            aws_environment=deploy_environment,
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
            aws_environment=deploy_environment,
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
                rotation_function_name=self.rotation_function.function_name,
                function_alarms=[
                    *hook_alarms(self.hook.function_name, metrics_namespace),
                    registry_events_alarm(self.registry_events_function.function_name),
                    reconciler_alarm(self.reconciler_function.function_name),
                    rotation_alarm(self.rotation_function.function_name),
                ],
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
