"""The reconciler's EventBridge schedule and EventBridge's right to invoke it (for this rule only)."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.cloudwatch_event_rule import CloudwatchEventRule
from cdktf_cdktf_provider_aws.cloudwatch_event_target import CloudwatchEventTarget
from cdktf_cdktf_provider_aws.lambda_function import LambdaFunction
from cdktf_cdktf_provider_aws.lambda_permission import LambdaPermission
from constructs import Construct

RECONCILE_EVERY = "rate(5 minutes)"  # well inside StaleClaimMinutes' smallest value plus a run


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
