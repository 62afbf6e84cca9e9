"""The pre-provisioning hook as IoT sees it: its answer, and what the registry holds afterwards."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.unit.support import TABLE, Registry, drain_hook_decisions, event, load_hook, log_records

DENY = {"allowProvisioning": False}


def test_given_enrolled_device_when_it_registers_then_hook_allows_with_thing_name_override(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", manufacturer="AcmeIoT")

    answer = hook.handler(event())

    assert answer == {"allowProvisioning": True, "parameterOverrides": {"ThingName": "temperature-sensor-SN-0001"}}
    item = registry.get("SN-0001")
    assert item is not None
    assert item["status"] == "provisioning"
    assert item["certificateId"] == "a" * 64
    assert item["claimCertificateId"] == "c" * 64
    assert item["thingName"] == "temperature-sensor-SN-0001"
    assert item["firmwareVersion"] == "v1.0.0"


def test_given_enrolled_thing_name_when_device_registers_then_override_is_the_enrolled_name(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", thingName="boiler-room-7")

    assert hook.handler(event())["parameterOverrides"] == {"ThingName": "boiler-room-7"}
    assert hook.handler(event(SerialNumber="SN-0002")) == DENY


def test_given_device_names_its_enrolled_thing_when_it_registers_then_it_is_allowed(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", thingName="boiler-room-7")

    assert hook.handler(event(ThingName="boiler-room-7"))["allowProvisioning"] is True


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("provisioning", "PROVISIONING_IN_PROGRESS"),
        ("provisioned", "ALREADY_PROVISIONED"),
        ("revoked", "REVOKED"),
        ("decommissioned", "DECOMMISSIONED"),
        ("factory-reset", "NOT_ENROLLABLE"),
    ],
)
def test_given_device_not_in_enrolled_state_when_it_registers_then_denied_and_item_unchanged(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], status: str, reason: str
) -> None:
    registry.enroll("SN-0001", status=status, certificateId="b" * 64)
    before = registry.get("SN-0001")

    assert hook.handler(event()) == DENY

    assert registry.get("SN-0001") == before
    assert log_records(capsys.readouterr().out)[-1]["reason"] == reason


@pytest.mark.parametrize(
    ("enrollment", "parameters", "reason"),
    [
        ({"device_type": "humidity-sensor"}, {}, "DEVICE_TYPE_MISMATCH"),
        ({"manufacturer": "OtherCorp"}, {}, "MANUFACTURER_MISMATCH"),
        ({}, {"ThingName": "someone-elses-thing"}, "THING_NAME_MISMATCH"),
        ({"thingName": "boiler-room-7"}, {"ThingName": "temperature-sensor-SN-0001"}, "THING_NAME_MISMATCH"),
    ],
)
def test_given_request_contradicting_enrollment_when_it_registers_then_denied_and_item_unchanged(
    hook: ModuleType,
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
    enrollment: dict[str, str],
    parameters: dict[str, str],
    reason: str,
) -> None:
    registry.enroll("SN-0001", **enrollment)
    before = registry.get("SN-0001")

    assert hook.handler(event(**parameters)) == DENY

    assert registry.get("SN-0001") == before
    assert log_records(capsys.readouterr().out)[-1]["reason"] == reason


def test_given_unknown_serial_when_it_registers_then_denied_and_nothing_written(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hook.handler(event(SerialNumber="NEVER-ENROLLED")) == DENY

    assert registry.items() == []
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "NOT_ENROLLED"


def test_given_a_request_for_another_template_then_denied_and_nothing_written(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """IoT of the whole account may invoke the hook (its function policy names the account): a request
    for a template other than this stack's, or forged by a topic rule without one, is refused."""
    registry.enroll("SN-0001")
    before = registry.get("SN-0001")
    other = event()
    other["templateArn"] = other["templateArn"].replace("IoTProvisioning-dev-fleet", "someone-elses")
    missing = event()
    del missing["templateArn"]

    assert hook.handler(other) == DENY
    assert hook.handler(missing) == DENY

    assert registry.get("SN-0001") == before
    records = log_records(capsys.readouterr().out)
    assert [r["reason"] for r in records[-2:]] == ["INVALID_PARAMETERS"] * 2
    assert "not this stack's IoTProvisioning-dev-fleet" in records[-2]["detail"]
    assert hook.handler(event())["allowProvisioning"] is True  # its own template


def test_given_device_type_outside_allowed_set_when_it_registers_then_denied_without_touching_registry(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.enroll("SN-0001", device_type="toaster")

    assert hook.handler(event(DeviceType="toaster")) == DENY

    assert (
        registry.get(
            "SN-0001",
        )["status"]
        == "enrolled"
    )  # type: ignore[index]
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "DEVICE_TYPE_NOT_ALLOWED"


@pytest.mark.parametrize(
    "parameters",
    [
        {"SerialNumber": None},
        {"SerialNumber": "x"},
        {"SerialNumber": "SN 0001"},
        {"SerialNumber": "SN-0001'; DROP"},
        {"Manufacturer": None},
        {"Manufacturer": "Acme IoT"},
        {"FirmwareVersion": "1.0.0"},
        {"FirmwareVersion": "v1.0"},
        {"FirmwareVersion": "v01.0.0"},
        {"ThingName": "bad/name"},
        {"ThingName": "x" * 129},
        {"DeviceType": None},
        {"Location": "room 1"},
        {"Unexpected": "value"},
    ],
)
def test_given_malformed_parameters_when_device_registers_then_denied_as_invalid_and_nothing_written(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], parameters: dict[str, str]
) -> None:
    registry.enroll("SN-0001")
    before = registry.get("SN-0001")

    assert hook.handler(event(**parameters)) == DENY

    assert registry.get("SN-0001") == before
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "INVALID_PARAMETERS"


def test_given_second_request_for_same_serial_when_replayed_then_only_first_is_allowed(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001")

    first = hook.handler(event(certificate_id="1" * 64))
    replay = hook.handler(event(certificate_id="2" * 64))

    assert first["allowProvisioning"] is True
    assert replay == DENY
    assert registry.get("SN-0001")["certificateId"] == "1" * 64  # type: ignore[index]


def test_given_a_retry_with_the_same_certificate_then_it_is_the_same_attempt_allowed_again(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001")

    first = hook.handler(event(certificate_id="1" * 64))
    retried = hook.handler(event(certificate_id="1" * 64))

    assert (
        first
        == retried
        == {"allowProvisioning": True, "parameterOverrides": {"ThingName": "temperature-sensor-SN-0001"}}
    )
    assert registry.get("SN-0001")["certificateId"] == "1" * 64  # type: ignore[index]
    assert hook.handler(event(certificate_id="2" * 64)) == DENY  # another device's certificate: still refused
    assert hook.handler(event(certificate_id="1" * 64, DeviceType="gateway")) == DENY  # same attempt, other type


def test_given_the_answer_to_the_registry_write_is_lost_then_the_client_s_retry_allows_the_device(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hook's DynamoDB client retries a write whose answer it did not get; that write had claimed the
    serial. On AWS the retry then finds the serial `provisioning`: it must not lock the device out."""
    import json

    import boto3
    from botocore.exceptions import ReadTimeoutError

    registry.enroll("SN-0001")
    writer = boto3.client("dynamodb", region_name="us-east-1")
    lost: list[str] = []

    def write_then_lose_the_answer(request: Any, **_: Any) -> None:
        if not lost:
            lost.append("UpdateItem")
            writer.update_item(**json.loads(request.body))  # the write reaches the table...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...its answer does not reach the hook
        return None

    hook._DYNAMODB.meta.events.register_first("before-send.dynamodb.UpdateItem", write_then_lose_the_answer)

    answer = hook.handler(event(certificate_id="1" * 64))

    assert lost == ["UpdateItem"]
    assert answer == {"allowProvisioning": True, "parameterOverrides": {"ThingName": "temperature-sensor-SN-0001"}}
    assert registry.get("SN-0001")["status"] == "provisioning"  # type: ignore[index]
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "ALLOWED"


@pytest.mark.parametrize("started", ["2020-01-01T00:00:00Z", "now"])
def test_given_another_certificate_s_attempt_under_way_then_it_is_refused_however_old_the_claim(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], started: str
) -> None:
    """The attempt may have given the device its thing and certificate while only its registry event
    failed: whoever holds the claim certificate and retries the serial must not take the device over.
    Only the reconciler, after it looked at IoT, lets the serial go (it marks the attempt failed)."""
    import time

    if started == "now":
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    registry.enroll("SN-0001", status="provisioning", certificateId="1" * 64, provisioningStartedAt=started)
    before = registry.get("SN-0001")

    assert hook.handler(event(certificate_id="2" * 64)) == DENY

    assert registry.get("SN-0001") == before
    record = log_records(capsys.readouterr().out)[-1]
    assert (record["reason"], record["detail"]) == (
        "PROVISIONING_IN_PROGRESS",
        f"another certificate's attempt is under way since {started}; the reconciler completes it, or marks it "
        "failed (then the device may try again) once StaleClaimMinutes have passed",
    )


def test_given_a_failed_attempt_then_the_device_provisions_on_its_next_attempt(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001", status="failed", certificateId="1" * 64, failureReason="no thing after 10 minutes")

    assert hook.handler(event(certificate_id="2" * 64))["allowProvisioning"] is True
    item = registry.get("SN-0001")
    assert item is not None
    assert (item["status"], item["certificateId"], item["previousCertificateId"]) == (
        "provisioning",
        "2" * 64,
        "1" * 64,
    )


def test_given_a_failed_attempt_its_own_revoked_certificate_cannot_claim_the_serial_again(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """A late retry of the failed attempt (its ownership token lives an hour) would put the serial back to
    `provisioning` with a revoked certificate and hold the device's next attempt off for another window."""
    registry.enroll("SN-0001", status="failed", certificateId="1" * 64, failureReason="no thing after 10 minutes")
    before = registry.get("SN-0001")

    assert hook.handler(event(certificate_id="1" * 64)) == DENY

    assert registry.get("SN-0001") == before
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "ATTEMPT_FAILED"


def test_given_concurrent_requests_for_one_serial_then_exactly_one_is_allowed(
    hook: ModuleType, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DynamoDB applies conditional writes to one item atomically; moto in-process does not, so the
    # test gives moto that one guarantee and checks the hook relies on nothing more.
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    original = DynamoDBBackend.update_item

    def atomic_update_item(self: DynamoDBBackend, *args: object, **kwargs: object) -> object:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", atomic_update_item)
    registry.enroll("SN-0001")
    answers: list[dict[str, object]] = []
    barrier = threading.Barrier(8)

    def register(n: int) -> None:
        barrier.wait(timeout=10)
        answers.append(hook.handler(event(certificate_id=f"{n:x}" * 64)))

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == 8
    assert sum(a["allowProvisioning"] is True for a in answers) == 1


def test_given_registry_unavailable_when_device_registers_then_hook_fails_closed(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.client.delete_table(TableName="device-registry-test")

    assert hook.handler(event()) == DENY
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "REGISTRY_ERROR"


def test_given_a_registry_slower_than_the_remaining_time_then_the_hook_denies_in_time_and_says_why(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline is the function's remaining time, less a margin for the answer: the hook answers
    (and logs) before Lambda would time it out, which would log nothing and count as a crash."""
    import time

    registry.enroll("SN-0001")
    original = hook._REGISTRY._client.update_item

    def slow_update_item(**kwargs: Any) -> Any:
        time.sleep(2.0)
        return original(**kwargs)

    monkeypatch.setattr(hook._REGISTRY._client, "update_item", slow_update_item)
    context = type("Context", (), {"get_remaining_time_in_millis": lambda self: 800})()
    started = time.monotonic()

    answer = hook.handler(event(), context)

    elapsed = time.monotonic() - started
    assert answer == DENY
    assert elapsed < 0.8  # inside the remaining time
    record = log_records(capsys.readouterr().out)[-1]
    assert (record["reason"], record["detail"]) == (
        "REGISTRY_ERROR",
        "the registry did not answer within 550 ms (the function's remaining time)",
    )
    # The write it gave up on still lands, later: the serial reads `provisioning` for a device that was
    # refused, until the reconciler finds no thing with that certificate and marks it failed (retryable).
    drain_hook_decisions()
    assert registry.get("SN-0001")["status"] == "provisioning"  # type: ignore[index]


def test_given_unexpected_error_when_device_registers_then_hook_fails_closed(
    hook: ModuleType, registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.enroll("SN-0001")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(hook, "decide", broken)

    assert hook.handler(event()) == DENY
    assert log_records(capsys.readouterr().out)[-1]["reason"] == "INTERNAL_ERROR"
    assert registry.get("SN-0001")["status"] == "enrolled"  # type: ignore[index]


def test_given_throttled_registry_when_device_registers_then_denied_not_raised(
    hook: ModuleType, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(**kwargs: object) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "UpdateItem"
        )

    monkeypatch.setattr(hook._DYNAMODB, "update_item", throttled)
    registry.enroll("SN-0001")

    assert hook.handler(event()) == DENY


def test_hook_client_budget_fits_inside_the_five_second_iot_deadline(hook: ModuleType) -> None:
    config = hook._DYNAMODB.meta.config
    attempts = config.retries["total_max_attempts"]
    assert attempts * (config.connect_timeout + config.read_timeout) < 4.5


def test_each_decision_is_one_json_line_carrying_an_embedded_metric(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.enroll("SN-0001")
    hook.handler(event())
    hook.handler(event(SerialNumber="UNKNOWN-1", DeviceType="made-up"))

    allow, deny = log_records(capsys.readouterr().out)
    assert (allow["decision"], allow["reason"], allow["DeviceType"]) == ("allow", "ALLOWED", "temperature-sensor")
    assert (deny["decision"], deny["reason"], deny["DeviceType"]) == ("deny", "DEVICE_TYPE_NOT_ALLOWED", "other")
    requests, errors = deny["_aws"]["CloudWatchMetrics"]
    assert requests["Namespace"] == errors["Namespace"] == "IoTProvisioning/test"
    assert requests["Metrics"] == [{"Name": "ProvisioningRequests", "Unit": "Count"}]
    assert (errors["Metrics"], errors["Dimensions"]) == ([{"Name": "ProvisioningErrors", "Unit": "Count"}], [[]])
    assert (deny["ProvisioningRequests"], deny["ProvisioningErrors"]) == (1, 0)  # the device's fault, not ours
    assert allow["ProvisioningErrors"] == 0
    for dimensions in requests["Dimensions"]:
        assert all(d in deny for d in dimensions)
    assert "event" not in deny


@pytest.mark.parametrize("failure", ["registry", "hook"])
def test_given_the_hook_cannot_decide_when_it_denies_then_its_record_counts_a_provisioning_error(
    hook: ModuleType,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: str,
) -> None:
    """A registry outage or a bug in the hook denies every device without a Lambda error: the
    ProvisioningErrors metric in the decision's one line is what an alarm can see."""

    def broken(**kwargs: object) -> None:
        if failure == "registry":
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "UpdateItem")
        raise KeyError("bug")

    monkeypatch.setattr(hook._DYNAMODB, "update_item", broken)
    registry.enroll("SN-0001")

    assert hook.handler(event()) == DENY
    (record,) = log_records(capsys.readouterr().out)
    assert record["reason"] == ("REGISTRY_ERROR" if failure == "registry" else "INTERNAL_ERROR")
    assert (record["ProvisioningRequests"], record["ProvisioningErrors"]) == (1, 1)


def test_given_debug_flag_when_deciding_then_log_carries_event_without_certificate(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = load_hook(monkeypatch, IOT_PROVISIONING_DEBUG="true")

    hook.handler(event())

    record = log_records(capsys.readouterr().out)[-1]
    assert record["event"]["parameters"]["SerialNumber"] == "SN-0001"
    assert record["event"]["certificatePem"] == "<redacted>"


def test_given_open_enrollment_a_new_serial_reserves_its_thing_name_in_the_claim(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = load_hook(monkeypatch, REQUIRE_ENROLLMENT="false")

    assert hook.handler(event(SerialNumber="NEW-0001"))["allowProvisioning"] is True

    reservation = registry.get("thingName#temperature-sensor-NEW-0001")
    assert reservation is not None and reservation["reservedFor"] == "NEW-0001"
    assert hook.handler(event(SerialNumber="NEW-0001"))["allowProvisioning"] is True  # its own retry


@pytest.mark.parametrize("held_by", ["reservation", "thing"])
def test_given_open_enrollment_a_serial_whose_thing_name_is_another_device_s_is_refused_and_nothing_written(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], held_by: str
) -> None:
    """The name is held by a reservation of another serial, or by a thing of another serial (a device
    that provisioned before names were reserved has only its thing): the newcomer gets neither."""
    hook = load_hook(monkeypatch, REQUIRE_ENROLLMENT="false")
    name = "temperature-sensor-NEW-0002"
    if held_by == "reservation":
        registry.client.put_item(
            TableName=TABLE, Item={"serialNumber": {"S": f"thingName#{name}"}, "reservedFor": {"S": "OTHER-0001"}}
        )
    else:
        iot = boto3.client("iot", region_name="us-east-1")
        iot.create_thing(thingName=name, attributePayload={"attributes": {"serialNumber": "OTHER-0001"}})
    before = registry.items()

    assert hook.handler(event(SerialNumber="NEW-0002")) == DENY

    assert registry.items() == before
    record = log_records(capsys.readouterr().out)[-1]
    assert record["reason"] == "THING_NAME_TAKEN" and name in record["detail"]


def test_given_open_enrollment_a_claim_that_collides_with_another_transaction_is_in_progress_not_an_error(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DynamoDB cancels a transaction that collides with another on the same item (TransactionConflict):
    that is a concurrent attempt, not a registry failure (no ProvisioningErrors)."""
    hook = load_hook(monkeypatch, REQUIRE_ENROLLMENT="false")

    def conflict(**_: Any) -> None:
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
            },
            "TransactWriteItems",
        )

    monkeypatch.setattr(hook._REGISTRY._client, "transact_write_items", conflict)

    assert hook.handler(event(SerialNumber="NEW-0003")) == DENY
    record = log_records(capsys.readouterr().out)[-1]
    assert (record["reason"], record["ProvisioningErrors"]) == ("PROVISIONING_IN_PROGRESS", 0)


def test_given_open_enrollment_when_unknown_serial_registers_then_allowed_once_and_recorded(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = load_hook(monkeypatch, REQUIRE_ENROLLMENT="false")

    assert hook.handler(event(SerialNumber="NEW-0001"))["allowProvisioning"] is True
    assert hook.handler(event(certificate_id="b" * 64, SerialNumber="NEW-0001")) == DENY  # another device
    item = registry.get("NEW-0001")
    assert item is not None
    assert (item["status"], item["deviceType"], item["manufacturer"]) == (
        "provisioning",
        "temperature-sensor",
        "AcmeIoT",
    )
