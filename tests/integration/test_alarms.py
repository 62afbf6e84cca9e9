"""Each alarm of the deployed stack fires for its real cause and recovers, as an operator would see it:
the datapoints come from the functions' own log lines and Lambda runs, and from the fleet service's
RegisterThing outcomes; the notification arrives in an SQS queue subscribed to the alerts topic; the
registry fails through the sandbox's fault switch (`python -m sandbox fault ...`)."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from awsiot import iotidentity

from sandbox.request_pipeline import faults
from scripts import device_client as device
from tests.integration.conftest import Deployment
from tests.integration.test_device_provisioning import Fleet, claim_identity

pytestmark = pytest.mark.integration
EXTRA_PERIODS = 2  # CloudWatch looks back N + 2 periods (the sandbox's evaluation range)


class Alerts:
    """An SQS queue subscribed to the stack's alert topic, with the queue policy SNS needs on AWS."""

    def __init__(self, deployment: Deployment, topic: str) -> None:
        self.sqs, self.sns = deployment.client("sqs"), deployment.client("sns")
        self.queue = self.sqs.create_queue(QueueName=f"alerts-test-{int(time.time())}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
                }
            ],
        }
        self.sqs.set_queue_attributes(QueueUrl=self.queue, Attributes={"Policy": json.dumps(policy)})
        self.subscription = self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
        self.seen: list[tuple[str, dict[str, Any]]] = []  # (subject, message) since the last drain

    def _receive(self, wait: int) -> None:
        answer = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        for message in answer.get("Messages", []):
            envelope = json.loads(message["Body"])
            self.seen.append((envelope.get("Subject", ""), json.loads(envelope["Message"])))
            self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])

    def drain(self) -> None:
        self._receive(0)
        self.seen = []

    def wait_for(self, alarm: str, state: str, timeout: float) -> tuple[str, dict[str, Any]]:
        """The first notification of `alarm` entering `state` since the last drain (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            for subject, message in self.seen:
                if (message["AlarmName"], message["NewStateValue"]) == (alarm, state):
                    return subject, message
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {state} notification for {alarm} within {timeout:.0f} s; received: "
                    f"{[(m['AlarmName'], m['NewStateValue']) for _, m in self.seen]}"
                )
            self._receive(1)

    def close(self) -> None:
        self.sns.unsubscribe(SubscriptionArn=self.subscription)
        self.sqs.delete_queue(QueueUrl=self.queue)


class Monitoring:
    def __init__(self, deployment: Deployment, fleet: Fleet, alerts: Alerts) -> None:
        self.deployment, self.fleet, self.alerts = deployment, fleet, alerts
        self.cloudwatch = deployment.client("cloudwatch")
        self.prefix = fleet.outputs["alerts_topic_arn"].rsplit(":", 1)[1].removesuffix("-alerts")
        self.scale = float(deployment.env.get("SandboxClockScale") or 60)

    def name(self, alarm: str) -> str:
        return f"{self.prefix}-{alarm}"

    def alarm(self, alarm: str) -> dict[str, Any]:
        (found,) = self.cloudwatch.describe_alarms(AlarmNames=[self.name(alarm)])["MetricAlarms"]
        return found  # type: ignore[no-any-return]

    def range_seconds(self, alarm: str) -> float:
        """How long a datapoint keeps counting for the alarm, in sandbox seconds (its evaluation range)."""
        found = self.alarm(alarm)
        period = found.get("Period") or next(m["MetricStat"]["Period"] for m in found["Metrics"] if "MetricStat" in m)
        return float(period) / self.scale * (found["EvaluationPeriods"] + EXTRA_PERIODS)

    def quiet(self, alarm: str) -> float:
        """Waits until the alarm is OK and has been for its whole evaluation range, and the events it counts
        add up to nothing in that range, so nothing of an earlier test's cause can still move it or add to
        the datapoint this test makes it evaluate (CloudWatch re-evaluates the last datapoints after a metric
        stops: AlarmThatSendsEmail.html); forgets older notifications. Returns the time (epoch s) it did."""
        window = self.range_seconds(alarm)
        deadline = time.monotonic() + 3 * window + 20
        while True:
            found = self.alarm(alarm)
            steady = time.time() - found["StateUpdatedTimestamp"].timestamp()
            counted = self.counted(found)
            recent = sum(self.total(*metric, since=time.time() - window)[0] for metric in counted)
            # A gauge (days left) holds no earlier test's events: OK is enough.
            if found["StateValue"] == "OK" and (steady >= window or not counted) and not recent:
                break
            assert time.monotonic() < deadline, (
                f"{alarm} not steadily OK with an empty window before the test: {found['StateReason']}, "
                f"{recent:.0f} counted in the last {window:.0f} s"
            )
            time.sleep(0.5)
        self.alerts.drain()
        return time.time()

    @staticmethod
    def counted(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
        """(namespace, metric name, dimensions) of each metric the alarm sums (events it counts, metric
        math included); a gauge's (a Minimum of days left) holds datapoints whatever happened before."""
        stats = [
            m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if m.get("MetricStat", {}).get("Stat") == "Sum"
        ]
        if alarm.get("Statistic") == "Sum":
            stats.append(alarm)
        return [
            (m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}) for m in stats
        ]

    def total(self, namespace: str, metric: str, dimensions: dict[str, str], since: float) -> tuple[float, float]:
        """(Sum, SampleCount) of a metric's datapoints from `since` on, as GetMetricStatistics gives them."""
        start = datetime.fromtimestamp(since - 1, UTC)
        points = self.cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            StartTime=start,
            EndTime=datetime.now(UTC) + timedelta(minutes=1),
            Period=3600,
            Statistics=["Sum", "SampleCount"],
        )["Datapoints"]
        return sum(p["Sum"] for p in points), sum(p["SampleCount"] for p in points)

    def gained(
        self, namespace: str, metric: str, dimensions: dict[str, str], since: float
    ) -> Callable[[], tuple[float, float]]:
        """What the metric gains from now on: `total` since `since`, less what it held already (`total`
        reaches a second back, where an earlier test's last datapoint can sit)."""
        before = self.total(namespace, metric, dimensions, since)

        def now() -> tuple[float, float]:
            after = self.total(namespace, metric, dimensions, since)
            return after[0] - before[0], after[1] - before[1]

        return now

    def fired(self, alarm: str) -> tuple[str, dict[str, Any]]:
        return self.alerts.wait_for(self.name(alarm), "ALARM", timeout=self.range_seconds(alarm) + 15)

    def recovered(self, alarm: str) -> dict[str, Any]:
        return self.alerts.wait_for(self.name(alarm), "OK", timeout=self.range_seconds(alarm) + 20)[1]

    @contextlib.contextmanager
    def fault(self, mode: str, operations: str) -> Iterator[None]:
        """The registry fault, set and cleared with the CLI an operator uses."""
        command = [sys.executable, "-m", "sandbox", "fault"]
        table = self.fleet.table
        set_ = self.deployment.run(*command, "registry", mode, "--table", table, "--operations", operations, timeout=60)
        assert set_.returncode == 0, set_.stdout + set_.stderr
        try:
            yield
        finally:
            cleared = self.deployment.run(*command, "clear", timeout=60)
            assert cleared.returncode == 0, cleared.stdout + cleared.stderr


@pytest.fixture(scope="module")
def monitoring(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    fleet = Fleet(deployment, tmp_path_factory.mktemp("alarm-devices"))
    alerts = Alerts(deployment, fleet.outputs["alerts_topic_arn"])
    try:
        yield Monitoring(deployment, fleet, alerts)
    finally:
        alerts.close()
        faults.request(deployment.env["SandboxEndpoint"], "DELETE")  # whatever a failed test left set


def datapoint(reason: str) -> float:
    """The value a 'Threshold Crossed: 1 datapoint [6.0 (...)]' reason gives."""
    found = re.search(r"\[([0-9.Ee+-]+) \(", reason)
    assert found, reason
    return float(found.group(1))


def test_more_refused_registrations_than_the_threshold_raise_provisioning_failures(monitoring: Monitoring) -> None:
    """Unknown serials, each RegisterThing refused by the hook: AWS/IoT RegisterThingFailed per template."""
    monitoring.quiet("provisioning-failures")
    fleet = monitoring.fleet
    threshold = monitoring.alarm("provisioning-failures")["Threshold"]
    refused = int(threshold) + 2
    client, identity = claim_identity(fleet)
    try:
        created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        for n in range(refused):  # a refused attempt leaves the ownership token usable
            with pytest.raises(Exception) as denied:
                identity.register_thing(
                    iotidentity.RegisterThingRequest(
                        template_name=fleet.target.template_name,
                        certificate_ownership_token=created.certificate_ownership_token,
                        parameters={
                            "SerialNumber": f"SN-ALARM-UNKNOWN-{n}",
                            "DeviceType": "gateway",
                            "Manufacturer": "AcmeIoT",
                        },
                    ),
                ).result(15)
            assert "403 ACCESS_DENIED" in device.rejection(denied.value)
    finally:
        client.close()

    subject, fired = monitoring.fired("provisioning-failures")

    name = monitoring.name("provisioning-failures")
    assert subject == f'ALARM: "{name}" in US East (N. Virginia)'
    account = monitoring.deployment.client("sts").get_caller_identity()["Account"]
    assert (fired["OldStateValue"], fired["Region"], fired["AWSAccountId"]) == ("OK", "US East (N. Virginia)", account)
    assert fired["AlarmArn"] == monitoring.alarm("provisioning-failures")["AlarmArn"]
    assert fired["AlarmDescription"] == monitoring.alarm("provisioning-failures")["AlarmDescription"]
    assert (fired["Trigger"]["MetricName"], fired["Trigger"]["Dimensions"]) == (
        "RegisterThingFailed",
        [{"value": fleet.target.template_name, "name": "TemplateName"}],
    )
    assert threshold < datapoint(fired["NewStateReason"]) <= refused
    assert "was greater than the threshold" in fired["NewStateReason"]
    fleet.enroll("SN-ALARM-WELCOME", "gateway")
    fleet.provision("SN-ALARM-WELCOME", "gateway", skip_device_check=True)  # a RegisterThing that succeeds
    recovered = monitoring.recovered("provisioning-failures")
    assert recovered["OldStateValue"] == "ALARM"
    history = monitoring.cloudwatch.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate")
    summaries = [h["HistorySummary"] for h in history["AlarmHistoryItems"]]
    # Newest first: the firing, then the recovery (late failures of the burst may fire it again after).
    pairs = [summaries[i : i + 2] for i in range(len(summaries) - 1)]
    assert ["Alarm updated from ALARM to OK", "Alarm updated from OK to ALARM"] in pairs, summaries


def test_a_registry_outage_denies_devices_and_raises_the_hooks_error_alarm_not_its_lambda_errors(
    monitoring: Monitoring,
) -> None:
    """The hook catches the registry's 503s and denies (REGISTRY_ERROR): Lambda sees no error, so only the
    hook's own ProvisioningErrors metric can tell; the device provisions once the registry is back."""
    began = monitoring.quiet("hook-denied-on-errors")
    fleet = monitoring.fleet
    hook = {"FunctionName": fleet.outputs["provisioning_hook_function_name"]}
    lambda_errors = monitoring.gained("AWS/Lambda", "Errors", hook, began)
    fleet.enroll("SN-ALARM-OUTAGE", "humidity-sensor")

    with monitoring.fault("unavailable", "UpdateItem"):  # the hook's only registry call
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
            fleet.provision("SN-ALARM-OUTAGE", "humidity-sensor", skip_device_check=True)
        _, fired = monitoring.fired("hook-denied-on-errors")

    assert fired["Trigger"]["MetricName"] == "ProvisioningErrors"
    assert fleet.provision("SN-ALARM-OUTAGE", "humidity-sensor")["thingName"] == "humidity-sensor-SN-ALARM-OUTAGE"
    monitoring.recovered("hook-denied-on-errors")
    errors, invocations = lambda_errors()
    assert (errors, invocations >= 2) == (0, True)  # both invocations answered: hook-errors had nothing to see


def test_a_registry_read_outage_fails_registry_events_and_raises_its_alarm(monitoring: Monitoring) -> None:
    """GetItem fails (the hook only writes): the device gets its thing, but the registry-events function
    raises, so the registry item stays 'provisioning', as the alarm's description warns."""
    monitoring.quiet("registry-events-errors")
    fleet = monitoring.fleet
    fleet.enroll("SN-ALARM-EVENTS", "pressure-sensor")

    with monitoring.fault("unavailable", "GetItem"):
        result = fleet.provision("SN-ALARM-EVENTS", "pressure-sensor", skip_device_check=True)
        _, fired = monitoring.fired("registry-events-errors")

    assert result["thingName"] == "pressure-sensor-SN-ALARM-EVENTS"
    assert fleet.registry("SN-ALARM-EVENTS")["status"] == "provisioning"
    assert fired["Trigger"]["Dimensions"] == [
        {"value": fleet.outputs["registry_events_function_name"], "name": "FunctionName"}
    ]
    fleet.enroll("SN-ALARM-EVENTS-2", "pressure-sensor")
    fleet.provision("SN-ALARM-EVENTS-2", "pressure-sensor")  # the function finishes devices again (shadow read)
    assert fleet.registry("SN-ALARM-EVENTS-2")["status"] == "provisioned"
    monitoring.recovered("registry-events-errors")


def test_a_registry_outage_fails_a_rotation_and_raises_certificate_rotation_errors(monitoring: Monitoring) -> None:
    """GetItem fails while a device asks to rotate: the rotation function raises (a Lambda error), the device
    is answered InternalFailure and keeps its certificate, and certificate-rotation-errors fires; once the
    registry answers again, the same device rotates (nothing of the failed request holds it back)."""
    monitoring.quiet("certificate-rotation-errors")
    fleet = monitoring.fleet
    fleet.enroll("SN-ALARM-ROTATE", "temperature-sensor")
    first = fleet.provision("SN-ALARM-ROTATE", "temperature-sensor", csr=True, skip_device_check=True)
    thing, cert, key = first["thingName"], first["certificateFile"], first["privateKeyFile"]

    with monitoring.fault("unavailable", "GetItem"):
        with pytest.raises(device.Failure) as refused:
            fleet.rotate(thing, cert, key)
        _, fired = monitoring.fired("certificate-rotation-errors")

    assert refused.value.code == device.ROTATION_REFUSED and "InternalFailure" in str(refused.value)
    assert fired["Trigger"]["Dimensions"] == [
        {"value": fleet.outputs["certificate_rotation_function_name"], "name": "FunctionName"}
    ]
    assert fleet.registry("SN-ALARM-ROTATE")["certificateId"] == first["certificateId"]  # still its certificate
    rotated = fleet.rotate(thing, cert, key)
    assert rotated["rotated"] is True and rotated["certificateId"] != first["certificateId"]
    monitoring.recovered("certificate-rotation-errors")


def test_a_hook_that_cannot_start_is_a_lambda_error_and_raises_hook_errors(
    monitoring: Monitoring, request: pytest.FixtureRequest
) -> None:
    """A release names a handler the hook's code lacks: it fails at start (a Lambda error, no decision logged),
    so IoT denies the device and hook-errors fires; the hook's own error metric does not. (A slow registry
    does not make Lambda kill the hook: it answers REGISTRY_ERROR within its remaining time.)"""
    began = monitoring.quiet("hook-errors")
    namespace = monitoring.alarm("hook-denied-on-errors")["Namespace"]
    hook_decisions = monitoring.gained(namespace, "ProvisioningErrors", {}, began)
    fleet, functions = monitoring.fleet, monitoring.deployment.client("lambda")
    hook = fleet.outputs["provisioning_hook_function_name"]
    original = functions.get_function_configuration(FunctionName=hook)["Handler"]
    request.addfinalizer(lambda: functions.update_function_configuration(FunctionName=hook, Handler=original))
    functions.update_function_configuration(FunctionName=hook, Handler="provisioning_hook.no_such_handler")
    fleet.enroll("SN-ALARM-START", "gateway")

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-ALARM-START", "gateway", skip_device_check=True)
    _, fired = monitoring.fired("hook-errors")
    functions.update_function_configuration(FunctionName=hook, Handler=original)

    assert fired["Trigger"]["Dimensions"] == [{"value": hook, "name": "FunctionName"}]
    assert fleet.registry("SN-ALARM-START")["status"] == "enrolled"  # nothing written: it can try again
    fleet.provision("SN-ALARM-START", "gateway", skip_device_check=True)  # the restored hook answers
    monitoring.recovered("hook-errors")
    errors, decisions = hook_decisions()
    assert (errors, decisions) == (0, 1)  # the failed start logged no decision, the retry an allow


def test_a_throttled_registry_raises_registry_throttling_and_recovers(monitoring: Monitoring) -> None:
    """DynamoDB throttles the hook's writes: Read/WriteThrottleEvents per TableName (ThrottledRequests
    exists only with an Operation too); the alarm returns to OK once DynamoDB stops publishing them."""
    monitoring.quiet("registry-throttling")
    fleet = monitoring.fleet
    fleet.enroll("SN-ALARM-THROTTLE", "temperature-sensor")

    with monitoring.fault("throttle", "UpdateItem"):
        status = monitoring.deployment.sandbox("status")
        assert f"fault: registry throttle (table {fleet.table}; UpdateItem)" in status.stdout
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
            fleet.provision("SN-ALARM-THROTTLE", "temperature-sensor", skip_device_check=True)
        _, fired = monitoring.fired("registry-throttling")

    watched = {m["MetricStat"]["Metric"]["MetricName"] for m in fired["Trigger"]["Metrics"] if "MetricStat" in m}
    assert watched == {"ReadThrottleEvents", "WriteThrottleEvents"}
    throttled = monitoring.cloudwatch.list_metrics(Namespace="AWS/DynamoDB", MetricName="ThrottledRequests")["Metrics"]
    assert throttled
    assert all(sorted(d["Name"] for d in m["Dimensions"]) == ["Operation", "TableName"] for m in throttled)
    fleet.provision("SN-ALARM-THROTTLE", "temperature-sensor", skip_device_check=True)  # refused, so still enrolled
    monitoring.recovered("registry-throttling")
    assert "fault:" not in monitoring.deployment.sandbox("status").stdout


def test_a_device_provisions_although_the_answer_to_the_hooks_registry_write_was_lost(
    monitoring: Monitoring,
) -> None:
    """The write is applied, its answer lost; the hook's SDK retries the same conditional write, which the
    hook's condition takes as the same attempt (same certificate): one decision, one device."""
    fleet = monitoring.fleet
    fleet.enroll("SN-ALARM-LOST", "temperature-sensor")

    with monitoring.fault("lose-answer", "UpdateItem"):
        result = fleet.provision("SN-ALARM-LOST", "temperature-sensor")
        lost = faults.request(monitoring.deployment.env["SandboxEndpoint"], "GET")["affected"]

    assert lost.get("UpdateItem", 0) >= 1  # the hook's write, and the registry-events function's, lost an answer
    assert result["thingName"] == "temperature-sensor-SN-ALARM-LOST"
    assert (
        fleet.registry("SN-ALARM-LOST").items()
        >= {"status": "provisioned", "certificateId": result["certificateId"]}.items()
    )
    logs = monitoring.deployment.client("logs")
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{fleet.outputs['provisioning_hook_function_name']}")[
        "events"
    ]
    decisions = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
    assert [d["reason"] for d in decisions if d.get("serialNumber") == "SN-ALARM-LOST"] == ["ALLOWED"]


def test_a_claim_certificate_near_its_expiry_raises_its_alarm_and_recovers(monitoring: Monitoring) -> None:
    """The reconciler publishes the days until each claim certificate expires; its alarm fires inside
    the warning window. The sandbox's claim certificate has years left, so the window is moved to just
    past its real expiry (the threshold set near it), then back."""
    name = "claim-certificate-1-expiry"
    monitoring.quiet(name)
    claim = monitoring.fleet.outputs["claim_certificate_id"]
    expires = monitoring.fleet.iot.describe_certificate(certificateId=claim)["certificateDescription"]["validity"][
        "notAfter"
    ]
    days_left = (expires.timestamp() - time.time()) / 86400
    alarm = monitoring.alarm(name)
    fields = (
        "AlarmName",
        "AlarmDescription",
        "ActionsEnabled",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "MetricName",
        "Namespace",
        "Statistic",
        "Dimensions",
        "Period",
        "EvaluationPeriods",
        "ComparisonOperator",
        "TreatMissingData",
    )
    definition = {k: alarm[k] for k in fields}
    try:
        monitoring.cloudwatch.put_metric_alarm(**definition, Threshold=round(days_left + 1, 2))

        _, fired = monitoring.fired(name)

        assert fired["Trigger"]["Dimensions"] == [{"value": claim, "name": "CertificateId"}]
        assert abs(datapoint(fired["NewStateReason"]) - days_left) < 0.1  # the reconciler's real figure
    finally:
        monitoring.cloudwatch.put_metric_alarm(**definition, Threshold=alarm["Threshold"])
    monitoring.recovered(name)


def test_a_burst_of_unknown_serials_or_failed_attestations_raises_serial_guessing(monitoring: Monitoring) -> None:
    """Someone with the claim certificate tries serials: those not enrolled are denied NOT_ENROLLED, an
    enrolled one whose factory key they lack ATTESTATION_FAILED (nothing is written either way), and more
    of both together than the threshold in a period raise serial-guessing."""
    monitoring.quiet("serial-guessing")
    fleet = monitoring.fleet
    _, public = fleet.factory_key("SN-GUESS-KEYED")
    fleet.enroll("SN-GUESS-KEYED", "gateway", factory_public_key=public)
    guesses = int(monitoring.alarm("serial-guessing")["Threshold"]) + 1
    before = fleet.footprint("SN-GUESS-KEYED")
    client, identity = claim_identity(fleet)
    try:
        created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        for n in range(guesses):  # more than the account's RegisterThing rate (10/s): asked again if throttled
            serial = f"SN-GUESS-{n:04d}" if n % 2 else "SN-GUESS-KEYED"  # unknown, or enrolled but unsigned
            request = iotidentity.RegisterThingRequest(
                template_name=fleet.target.template_name,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={"SerialNumber": serial, "DeviceType": "gateway", "Manufacturer": "AcmeIoT"},
            )
            with pytest.raises(Exception) as denied:
                device.retry_throttled(
                    "RegisterThing",
                    lambda request=request: identity.register_thing(request).result(15),
                    device.Backoff(),
                    Counter(),
                )
            assert "403 ACCESS_DENIED" in device.rejection(denied.value)
    finally:
        client.close()

    _, fired = monitoring.fired("serial-guessing")

    reasons = {
        d["value"]
        for m in fired["Trigger"]["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
        if d["name"] == "Reason"
    }
    assert reasons == {
        "NOT_ENROLLED",
        "ATTESTATION_FAILED",
        "PROVISIONING_IN_PROGRESS",
        "ALREADY_PROVISIONED",
        "THING_NAME_TAKEN",
    }
    assert datapoint(fired["NewStateReason"]) >= guesses
    assert fleet.footprint("SN-GUESS-KEYED")[2:] == before[2:]  # no item for a guessed serial, the keyed one as it was
    monitoring.recovered("serial-guessing")
