"""The reconciler: its function (lambda/reconciler), its EventBridge schedule and EventBridge's right to
invoke it (for this rule only)."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.cloudwatch_event_rule import CloudwatchEventRule
from cdktf_cdktf_provider_aws.cloudwatch_event_target import CloudwatchEventTarget
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

from fleet_shared.registry import CERTIFICATE_HISTORY_LIMIT, ROTATION_INDEX, STATUS_INDEX
from iot_fleet.config import StackConfig
from iot_fleet.fleet_function import LIST_ATTACHED_POLICIES, FleetFunction, FunctionSettings
from iot_fleet.monitoring import Alarm, Metric

RECONCILE_EVERY = "rate(5 minutes)"  # well inside StaleClaimMinutes' smallest value plus a run
# How long a device has to confirm a rotation (connect with its new certificate) before the reconciler
# removes the unconfirmed certificate; the device's old one works throughout.
ROTATION_CONFIRM_SECONDS = 600


def reconciler_function(
    scope: Construct,
    settings: FunctionSettings,
    config: StackConfig,
    *,
    claim_certificate_ids: list[str],
    initial_shadows: str,
) -> LambdaFunction:
    account, table = settings.account, settings.table
    return FleetFunction(
        scope,
        "reconciler",
        function_name=f"{config.prefix}-reconciler",
        source="reconciler",
        handler="reconciler.handler",
        description="Completes or fails provisioning attempts that stopped after the hook; publishes fleet metrics",
        environment={
            "TABLE_NAME": table.name,
            "STATUS_INDEX": STATUS_INDEX.name,
            "STALE_CLAIM_SECONDS": str(config.stale_claim_minutes * 60),
            "ROTATION_CONFIRM_SECONDS": str(ROTATION_CONFIRM_SECONDS),
            "CERTIFICATE_HISTORY_LIMIT": str(CERTIFICATE_HISTORY_LIMIT),
            "ROTATION_INDEX": ROTATION_INDEX.name,
            "CLAIM_CERTIFICATE_IDS": ",".join(claim_certificate_ids),
            "METRICS_NAMESPACE": settings.metrics_namespace,
            "INITIAL_SHADOWS": initial_shadows,
            "IOT_DATA_ENDPOINT": settings.iot_data_endpoint,
        },
        statements=[
            {
                # The Service Authorization Reference marks the table required for Query, while AWS's
                # policy examples grant a query of an index on the index alone: both are named, which
                # works under either reading (not verified on AWS). UpdateItem already reads items.
                "Effect": "Allow",
                "Action": ["dynamodb:Query"],
                "Resource": [
                    table.arn,
                    f"{table.arn}/index/{STATUS_INDEX.name}",
                    f"{table.arn}/index/{ROTATION_INDEX.name}",
                ],
            },
            {"Effect": "Allow", "Action": ["dynamodb:UpdateItem"], "Resource": table.arn},
            settings.registry_key_use(),
            {
                "Effect": "Allow",
                "Action": [
                    "iot:DescribeCertificate",
                    "iot:UpdateCertificate",
                    "iot:DeleteCertificate",
                    "iot:DetachPolicy",  # an unconfirmed rotation's certificate is removed
                    "iot:DetachThingPrincipal",
                ],
                "Resource": account.arn("iot", "cert/*"),
            },
            LIST_ATTACHED_POLICIES,
            {
                "Effect": "Allow",
                "Action": ["iot:ListThingPrincipals", "iot:GetThingShadow", "iot:UpdateThingShadow"],
                "Resource": account.arn("iot", "thing/*"),
            },
        ],
        account=account,
        key=settings.key,
        log_retention_days=settings.log_retention_days,
        timeout=300,
        extra_acknowledgements={
            "CKV_AWS_116": "Invoked by its schedule, not by events to keep: a failed run leaves nothing it "
            "cannot redo, and the next run (5 minutes later) does the same work again.",
        },
    ).function


class ReconcilerSchedule(Construct):
    def __init__(self, scope: Construct, id_: str, *, prefix: str, function: LambdaFunction) -> None:
        super().__init__(scope, id_)
        self.rule = CloudwatchEventRule(
            self,
            "rule",
            name=f"{prefix}-reconciler",
            description="Reconciles the device registry with the IoT registry (stale and failed provisioning)",
            schedule_expression=RECONCILE_EVERY,
        )
        self.permission = LambdaPermission(
            self,
            "permission",
            statement_id="AllowEventBridgeSchedule",
            action="lambda:InvokeFunction",
            function_name=function.function_name,
            principal="events.amazonaws.com",
            source_arn=self.rule.arn,
        )
        self.target = CloudwatchEventTarget(
            self, "target", rule=self.rule.name, arn=function.arn, depends_on=[self.permission]
        )


def reconciler_alarm(function_name: str) -> Alarm:
    """Its errors: stalled attempts stay unsettled and fleet metrics stop."""
    return Alarm(
        "reconciler-errors",
        "The scheduled reconciler failed (Lambda Errors): provisioning attempts that stopped after the hook "
        "stay 'provisioning' until it runs cleanly, and the fleet metrics and the claim-certificate expiry "
        "alarm get no new data. Read its log group ('reconciled' lines list the failing items).",
        0,
        Metric("AWS/Lambda", "Errors", {"FunctionName": function_name}),
    )
