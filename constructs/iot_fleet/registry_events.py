"""Registry events finish the lifecycle: IoT reports a created thing, a topic rule invokes the
registry-events function, which writes the initial shadow and marks the device provisioned."""

from __future__ import annotations

from collections.abc import Mapping

from cdktf_cdktf_provider_aws.iot_topic_rule import (
    IotTopicRule,
    IotTopicRuleErrorAction,
    IotTopicRuleErrorActionCloudwatchLogs,
    IotTopicRuleLambda,
)
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from iot_fleet.audit_trail import AuditTrail
from iot_fleet.deploy_scripts import deploy_script
from iot_fleet.fleet_function import FleetFunction, FunctionSettings
from iot_fleet.monitoring import Alarm, Metric

THING_CREATED = "$aws/events/thing/+/created"  # the topic registry events publish thing creation on


def registry_events_function(
    scope: Construct, settings: FunctionSettings, *, prefix: str, initial_shadows: str
) -> LambdaFunction:
    """`initial_shadows`: each device type's initial shadow (JSON), which it writes."""
    account, table = settings.account, settings.table
    return FleetFunction(
        scope,
        "registry-events",
        function_name=f"{prefix}-registry-events",
        source="registry_events",
        handler="registry_events.handler",
        description="Marks devices provisioned and writes their initial shadow when their thing is created",
        environment={
            "TABLE_NAME": table.name,
            "INITIAL_SHADOWS": initial_shadows,
            "IOT_DATA_ENDPOINT": settings.iot_data_endpoint,
        },
        statements=[
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"], "Resource": table.arn},
            settings.registry_key_use(),
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
        key=settings.key,
        log_retention_days=settings.log_retention_days,
        timeout=30,
        extra_acknowledgements={
            "CKV_AWS_116": "Failed events are retried by Lambda and recorded by the rule's error action in "
            "the audit log group; what still fails, the scheduled reconciler (lambda/reconciler) completes: "
            "it finds the thing with the attempt's certificate and marks the device provisioned.",
        },
    ).function


def rule_name(prefix: str, purpose: str) -> str:
    """Topic rule names allow only [A-Za-z0-9_]."""
    return f"{prefix}_{purpose}".replace("-", "_")


class RegistryEvents(Construct):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        function: LambdaFunction,
        audit: AuditTrail,
        region: str,
        aws_environment: Mapping[str, str],
    ) -> None:
        """`aws_environment`: what the script needs besides the deployer's own environment to reach the
        same account as the provider (the sandbox's endpoint and keys; nothing for AWS)."""
        super().__init__(scope, id_)
        # Account-wide switch: IoT publishes nothing on $aws/events/thing/... until THING is on. The
        # script turns THING on and leaves every other type as it found it (see the script for why the
        # provider's aws_iot_event_configurations cannot); it travels with the synthesized stack as an
        # asset and runs once, when the stack is created.
        self.thing_events = deploy_script(
            self,
            "thing-events",
            script="enable_thing_events.py",
            arguments=["--region", region],
            triggers={"region": region},
            aws_environment=aws_environment,
        )
        self.rule = IotTopicRule(
            self,
            "rule",
            name=rule_name(prefix, "thing_created"),
            description="Marks provisioned devices in the registry and writes their initial shadow",
            enabled=True,
            sql=f"SELECT * FROM '{THING_CREATED}'",  # noqa: S608 - IoT rule SQL from constants, not input
            sql_version="2016-03-23",
            lambda_=[IotTopicRuleLambda(function_arn=function.arn)],
            error_action=IotTopicRuleErrorAction(
                cloudwatch_logs=IotTopicRuleErrorActionCloudwatchLogs(
                    log_group_name=audit.log_group.name, role_arn=audit.role.arn
                )
            ),
            # The error action writes as the audit role: its policy must exist before the rule fires.
            depends_on=[self.thing_events, audit.role_policy],
        )
        self.permission = LambdaPermission(
            self,
            "permission",
            statement_id="AllowThingCreatedRule",
            action="lambda:InvokeFunction",
            function_name=function.function_name,
            principal="iot.amazonaws.com",
            source_arn=self.rule.arn,
        )


def registry_events_alarm(function_name: str) -> Alarm:
    """Its errors: devices it did not finish stay provisioning."""
    return Alarm(
        "registry-events-errors",
        "The registry-events function failed (Lambda Errors): devices it did not finish stay 'provisioning' "
        "in the registry without their initial shadow. Read its log group for the error; once fixed, find "
        "the devices left 'provisioning' (the table's status-index) and finish or re-provision them.",
        0,
        Metric("AWS/Lambda", "Errors", {"FunctionName": function_name}),
    )
