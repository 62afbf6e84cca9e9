"""The pre-provisioning hook's function (lambda/provisioning_hook): what it is told and what it may do.
The template that calls it is fleet_provisioning.py."""

from __future__ import annotations

import os

from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from constructs import Construct

from iot_fleet.config import StackConfig
from iot_fleet.fleet_function import FleetFunction, FunctionSettings
from iot_fleet.monitoring import Alarm, Metric

HOOK_TIMEOUT_SECONDS = 4  # IoT waits 5 s for the hook; finish (or fail) before that
# What the hook imports beyond Lambda's runtime (standard library and boto3): shipped in its zip.
HOOK_PACKAGES = ("ecdsa", "six")


def provisioning_hook(scope: Construct, settings: FunctionSettings, config: StackConfig) -> LambdaFunction:
    account, table = settings.account, settings.table
    return FleetFunction(
        scope,
        "hook",
        function_name=f"{config.prefix}-provisioning-hook",
        source="provisioning_hook",
        handler="provisioning_hook.handler",
        description="Pre-provisioning hook: admits enrolled devices only, once each",
        environment={
            "TABLE_NAME": table.name,
            "ALLOWED_DEVICE_TYPES": ",".join(config.allowed_device_types),
            "REQUIRE_ENROLLMENT": str(config.require_enrollment).lower(),
            "REQUIRE_ATTESTATION": str(config.require_attestation).lower(),
            "CLAIM_CLIENT_ID_PREFIX": config.claim_client_id_prefix,
            "PROVISIONING_TEMPLATE_NAME": config.provisioning_template_name,
            "METRICS_NAMESPACE": settings.metrics_namespace,
            "IOT_PROVISIONING_DEBUG": os.environ.get("IOT_PROVISIONING_DEBUG", "false").lower(),
        },
        statements=[
            # GetItem: the enrolled factory key, read before the one conditional write (open
            # enrollment: also the serial's thing-name reservation, taken in the same transaction).
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
            settings.registry_key_use(),
            *(
                []
                if config.require_enrollment
                else [  # open enrollment: a derived thing name that is another device's thing is refused
                    {"Effect": "Allow", "Action": ["iot:DescribeThing"], "Resource": account.arn("iot", "thing/*")}
                ]
            ),
        ],
        account=account,
        key=settings.key,
        log_retention_days=settings.log_retention_days,
        timeout=HOOK_TIMEOUT_SECONDS,
        packages=HOOK_PACKAGES,
        extra_acknowledgements={
            "CKV_AWS_116": "IoT invokes the hook synchronously and denies the device on any error; "
            "there is no asynchronous event to dead-letter.",
        },
    ).function


def hook_alarms(function_name: str, metrics_namespace: str) -> list[Alarm]:
    """The hook's failures: Lambda errors (it did not answer), and denials it made because it could not decide."""
    return [
        Alarm(
            "hook-errors",
            "The pre-provisioning hook crashed, timed out or failed to start (Lambda Errors), so IoT denied the "
            "devices it was answering. Read the hook's log group for the traceback or 'Task timed out', check "
            "its last deployment and that it answers within IoT's 5 s; roll back if a release caused it.",
            0,
            Metric("AWS/Lambda", "Errors", {"FunctionName": function_name}),
        ),
        Alarm(
            "hook-denied-on-errors",
            "The hook denied devices because it could not decide (Reason REGISTRY_ERROR or INTERNAL_ERROR): "
            "the registry table, its KMS key or the hook itself is failing, and enrolled devices are refused "
            "(the hook fails closed, so Lambda Errors stay 0). Find the error in the hook's log lines with those "
            "reasons, check the table, the key and the hook role's permissions; refused devices can retry after.",
            0,
            Metric(metrics_namespace, "ProvisioningErrors", {}),
        ),
    ]
