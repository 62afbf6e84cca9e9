"""Certificate rotation end to end with the real device client (AWS IoT Device SDK v2) against the
deployed sandbox stack: the new certificate works and the old one is refused afterwards, the registry
keeps both in its history; an interrupted rotation leaves the old one working; an offline device
picks a requested rotation up when it connects; and with short validity (`python -m sandbox
certificate-validity`), a device rotated before its old certificate's notAfter still connects after it,
one not rotated is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5
from cryptography import x509

from scripts import device_client as device
from tests.conftest import SUMMARY
from tests.integration.conftest import Deployment
from tests.integration.devices import Fleet

pytestmark = pytest.mark.integration
LONG_AGO = "2020-01-01T00:00:00Z"
SHORT_VALIDITY_SECONDS = 25


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("rotation-devices"))


def provisioned(fleet: Fleet, serial: str, device_type: str = "temperature-sensor") -> dict[str, Any]:
    fleet.enroll(serial, device_type)
    return fleet.provision(serial, device_type, csr=True, skip_device_check=True)


def works(fleet: Fleet, thing: str, cert: str, key: str) -> bool:
    """Whether the certificate connects as the thing and may publish its telemetry."""
    try:
        connection = device.connect(fleet.target, cert, key, thing, 10, sdk_metrics=False)
    except Exception:  # noqa: BLE001 - the SDK reports a refused TLS handshake or CONNECT in several ways
        return False
    try:
        packet = mqtt5.PublishPacket(topic=f"devices/{thing}/telemetry", payload=b"{}", qos=mqtt5.QoS.AT_LEAST_ONCE)
        code = connection.client.publish(packet).result(timeout=10).puback.reason_code
        return code in (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)
    finally:
        connection.close()


def eventually(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """The sandbox's broker takes up registry changes within about two seconds: check until then."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def status_of(fleet: Fleet, certificate_id: str) -> str:
    try:
        return str(fleet.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"])
    except fleet.iot.exceptions.ResourceNotFoundException:
        return "deleted"


def test_a_rotated_device_connects_with_its_new_certificate_and_its_old_one_is_refused(fleet: Fleet) -> None:
    first = provisioned(fleet, "SN-ROT-1")
    thing, old_id = first["thingName"], first["certificateId"]
    old_cert, old_key = Path(first["certificateFile"]).read_text(), Path(first["privateKeyFile"]).read_text()

    started = time.monotonic()
    rotated = fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"])
    print(
        f"\nrotation (request, connect with the new certificate, confirm): {time.monotonic() - started:.2f} s "
        "including the client's start-up"
    )

    new_id = rotated["certificateId"]
    assert rotated["rotated"] is True and rotated["retiredCertificateId"] == old_id and new_id != old_id
    assert Path(first["certificateFile"]).read_text() != old_cert  # the device's files now hold the new one
    assert works(fleet, thing, first["certificateFile"], first["privateKeyFile"])
    kept_cert, kept_key = fleet.folder / "old.pem.crt", fleet.folder / "old.key"
    device._write_private(kept_cert, old_cert)
    device._write_private(kept_key, old_key)
    assert eventually(lambda: not works(fleet, thing, str(kept_cert), str(kept_key)))
    assert (status_of(fleet, old_id), status_of(fleet, new_id)) == ("REVOKED", "ACTIVE")
    principals = fleet.iot.list_thing_principals(thingName=thing)["principals"]
    assert [p.rsplit("/", 1)[-1] for p in principals] == [new_id]
    item = fleet.registry("SN-ROT-1")
    assert (item["certificateId"], item["previousCertificateId"], item["status"]) == (new_id, old_id, "provisioned")
    assert fleet.history("SN-ROT-1") == [("issued", new_id), ("confirmed", new_id), ("retired", old_id)]
    code, shown, output = fleet.cli("show", "SN-ROT-1", "--json")  # what an operator reads
    assert code == 0, output
    assert [(e["event"], e["certificateId"]) for e in shown["registry"]["certificateHistory"]] == [
        ("issued", new_id),
        ("confirmed", new_id),
        ("retired", old_id),
    ]


def test_an_interrupted_rotation_leaves_the_old_certificate_working_and_the_new_one_is_removed(
    fleet: Fleet,
) -> None:
    first = provisioned(fleet, "SN-ROT-2")
    thing, old_id = first["thingName"], first["certificateId"]

    interrupted = fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"], "--no-confirm")

    new_id = interrupted["certificateId"]
    assert interrupted["rotated"] is False
    assert fleet.registry("SN-ROT-2")["pendingCertificateId"] == new_id
    assert works(fleet, thing, first["certificateFile"], first["privateKeyFile"])  # nothing changed for it yet
    # The confirmation window passes (dated back), and the scheduled reconciler runs.
    fleet.dynamodb.update_item(
        TableName=fleet.table,
        Key={"serialNumber": {"S": "SN-ROT-2"}},
        UpdateExpression="SET rotationRequestedAt = :t",
        ExpressionAttributeValues={":t": {"S": LONG_AGO}},
    )
    answer = fleet.deployment.client("lambda").invoke(FunctionName=fleet.outputs["reconciler_function_name"])
    summary = json.loads(answer["Payload"].read())
    assert summary["abandoned"] == 1, summary

    assert status_of(fleet, new_id) == "deleted" and status_of(fleet, old_id) == "ACTIVE"
    assert eventually(
        lambda: not works(fleet, thing, interrupted["newCertificateFile"], interrupted["newPrivateKeyFile"])
    )
    assert works(fleet, thing, first["certificateFile"], first["privateKeyFile"])
    item = fleet.registry("SN-ROT-2")
    assert item["certificateId"] == old_id and "pendingCertificateId" not in item
    assert fleet.history("SN-ROT-2") == [("issued", new_id), ("abandoned", new_id)]


def test_a_device_offline_when_rotation_is_asked_rotates_when_it_connects(fleet: Fleet) -> None:
    first = provisioned(fleet, "SN-ROT-3", "gateway")  # the type with the largest policy
    thing = first["thingName"]
    assert fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"], "--if-requested")["rotated"] is False

    code, document, output = fleet.cli("expiring", "--days", "3650", "--rotate", "--json")

    assert code == 0, output
    assert thing in document["rotation"]["requested"] and document["rotation"]["errors"] == {}
    rotated = fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"], "--if-requested")
    assert rotated["rotated"] is True and rotated["rotationMark"] == document["rotation"]["rotationId"]
    assert fleet.registry("SN-ROT-3")["certificateId"] == rotated["certificateId"]
    # Reported: the next start finds nothing asked.
    assert fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"], "--if-requested")["rotated"] is False


def test_a_device_may_use_only_its_own_thing_s_rotation_topics(fleet: Fleet) -> None:
    first = provisioned(fleet, "SN-ROT-4")
    thing = first["thingName"]
    connection = device.connect(fleet.target, first["certificateFile"], first["privateKeyFile"], thing, 15)
    try:

        def publish(topic: str) -> Any:
            packet = mqtt5.PublishPacket(topic=topic, payload=b'{"requestId": "x"}', qos=mqtt5.QoS.AT_LEAST_ONCE)
            return connection.client.publish(packet).result(timeout=10).puback.reason_code

        def subscribe(topic_filter: str) -> Any:
            packet = mqtt5.SubscribePacket([mqtt5.Subscription(topic_filter, mqtt5.QoS.AT_LEAST_ONCE)])
            return connection.client.subscribe(packet).result(timeout=10).reason_codes[0]

        assert publish(f"fleet/rotation/{thing}/confirm") != mqtt5.PubackReasonCode.NOT_AUTHORIZED
        assert publish("fleet/rotation/temperature-sensor-SN-OTHER/request") == mqtt5.PubackReasonCode.NOT_AUTHORIZED
        assert subscribe("fleet/rotation/+/request/accepted") == mqtt5.SubackReasonCode.NOT_AUTHORIZED
        assert subscribe(f"fleet/rotation/{thing}/request/accepted") != mqtt5.SubackReasonCode.NOT_AUTHORIZED
    finally:
        connection.close()


def not_after(pem_file: str) -> datetime:
    return x509.load_pem_x509_certificate(Path(pem_file).read_bytes()).not_valid_after_utc


@contextmanager
def device_certificates_valid_for(deployment: Deployment, seconds: int) -> Iterator[None]:
    """`python -m sandbox certificate-validity` while the block runs, then back to the start setting,
    whatever happened (the session's later tests need their certificates' usual validity)."""
    try:
        set_ = deployment.sandbox("certificate-validity", str(seconds))
        assert set_.returncode == 0, set_.stdout + set_.stderr
        yield
    finally:
        back = deployment.sandbox("certificate-validity", "default")
    assert back.returncode == 0, back.stdout + back.stderr


@contextmanager
def decommissioned_afterwards(fleet: Fleet, *serials: str) -> Iterator[None]:
    """The devices go when the block ends, as an operator retires them: expired certificates left in the
    session's registry would be listed by every later `fleet expiring`."""
    try:
        yield
    finally:
        for serial in serials:
            code, _, said = fleet.cli("decommission", serial)
            assert code == 0 or f"no device {serial} in the registry" in said, said


def test_with_short_validity_a_device_rotated_in_time_outlives_its_old_certificate_and_one_not_rotated_is_refused(
    fleet: Fleet,
) -> None:
    with decommissioned_afterwards(fleet, "SN-SHORT-1", "SN-SHORT-2", "SN-SHORT-3"):
        with device_certificates_valid_for(fleet.deployment, SHORT_VALIDITY_SECONDS):
            said = fleet.deployment.sandbox("status").stdout
            assert f"valid {SHORT_VALIDITY_SECONDS} s" in said  # what an operator sees
            rotated, kept = provisioned(fleet, "SN-SHORT-1"), provisioned(fleet, "SN-SHORT-2")
            old_end = not_after(rotated["certificateFile"])
            issued = fleet.iot.describe_certificate(certificateId=rotated["certificateId"])["certificateDescription"]
            assert issued["validity"]["notAfter"].astimezone(UTC) == old_end  # DescribeCertificate reports it
            assert (old_end - datetime.now(UTC)).total_seconds() <= SHORT_VALIDITY_SECONDS
            time.sleep(5)  # the rotation comes later, so the new certificate ends later than the old one

            fleet.rotate(rotated["thingName"], rotated["certificateFile"], rotated["privateKeyFile"])
            new_end = not_after(rotated["certificateFile"])
        print(f"\nold notAfter {old_end:%H:%M:%S}, new notAfter {new_end:%H:%M:%S}, now {datetime.now(UTC):%H:%M:%S}")
        assert new_end - old_end < timedelta(seconds=SHORT_VALIDITY_SECONDS + 60)  # issued under the short validity
        wait = (max(old_end, not_after(kept["certificateFile"])) - datetime.now(UTC)).total_seconds()
        time.sleep(max(0.0, wait) + 1)

        assert datetime.now(UTC) < new_end, "the test machine was too slow for the validity chosen"
        assert works(fleet, rotated["thingName"], rotated["certificateFile"], rotated["privateKeyFile"])
        assert not works(fleet, kept["thingName"], kept["certificateFile"], kept["privateKeyFile"])
        assert status_of(fleet, kept["certificateId"]) == "ACTIVE"  # refused for its date, not its status
        later = provisioned(fleet, "SN-SHORT-3")  # after `default`: the sandbox's start setting again
        assert not_after(later["certificateFile"]) - datetime.now(UTC) > timedelta(days=365)


def test_fifty_rotation_requests_in_a_row_make_one_rotation_and_revoke_still_disconnects_the_device(
    fleet: Fleet,
) -> None:
    """A device (or whoever holds its key) floods the rotation topic: the first request is answered with a
    certificate, the other 49 are refused RotationLimitExceeded before anything is created; the registry
    item stays small, and `fleet revoke` then revokes both certificates and disconnects it."""
    first = provisioned(fleet, "SN-ROT-FLOOD")
    thing = first["thingName"]
    answers, drops = device.Answers(), []
    connection = device.connect(
        fleet.target,
        first["certificateFile"],
        first["privateKeyFile"],
        thing,
        15,
        on_publish=answers.on_publish,
        on_disconnection=drops.append,
    )
    try:
        outcomes = []
        for n in range(50):
            csr, _ = device.csr_and_key("ec")
            body = {"requestId": f"flood-{n}", "certificateSigningRequest": csr}
            try:
                issued = device._ask(connection, answers, thing, "request", body, 15)
                outcomes.append("accepted")
            except RuntimeError as refused:
                outcomes.append(str(refused).split(":", 1)[0])
        assert outcomes == ["accepted"] + ["429 RotationLimitExceeded"] * 49
        item = fleet.dynamodb.get_item(TableName=fleet.table, Key={"serialNumber": {"S": "SN-ROT-FLOOD"}})["Item"]
        size = len(json.dumps(item))  # an upper bound of its DynamoDB size
        assert size < 10 * 1024, size
        SUMMARY.append(
            f"rotation flood: {outcomes.count('accepted')} of 50 requests accepted, registry item {size} bytes (JSON)"
        )
        assert item["pendingCertificateId"]["S"] == issued["certificateId"]
        principals = fleet.iot.list_thing_principals(thingName=thing)["principals"]
        assert sorted(p.rsplit("/", 1)[1] for p in principals) == sorted(
            [first["certificateId"], issued["certificateId"]]
        )

        code, revoked, said = fleet.cli("revoke", "SN-ROT-FLOOD", "--reason", "rotation flood", "--json")

        assert code == 0, said
        assert sorted(revoked["certificatesRevoked"]) == sorted([first["certificateId"], issued["certificateId"]])
        assert eventually(lambda: bool(drops), 10), "the broker did not disconnect the revoked device"
    finally:
        connection.close()


def test_a_confirm_with_the_current_certificate_after_a_same_certificate_hook_retry_retires_nothing(
    fleet: Fleet,
) -> None:
    """IoT retries the hook with the attempt's own certificate (an answer lost): the item's
    previousCertificateId is then the current certificate. A confirm sent with it afterwards (no rotation
    pending or confirmed) is refused, and the certificate keeps working."""
    from tests.integration.test_recovery import date_back, provisioned_without_registry_event, reconcile

    serial = "SN-ROT-RETRY"
    fleet.enroll(serial, "temperature-sensor")
    result = provisioned_without_registry_event(fleet, serial, "temperature-sensor")
    retry = {
        "claimCertificateId": fleet.outputs["claim_certificate_id"],
        "certificateId": result["certificateId"],
        "certificatePem": Path(result["certificateFile"]).read_text(),
        "clientId": "claim-retry",
        "templateArn": fleet.iot.describe_provisioning_template(templateName=fleet.target.template_name)["templateArn"],
        "parameters": {
            "SerialNumber": serial,
            "DeviceType": "temperature-sensor",
            "Manufacturer": "AcmeIoT",
            "FirmwareVersion": "v1.2.3",
            "Location": "plant-1",
        },
    }
    answer = fleet.deployment.client("lambda").invoke(
        FunctionName=fleet.outputs["provisioning_hook_function_name"], Payload=json.dumps(retry).encode()
    )
    assert json.loads(answer["Payload"].read())["allowProvisioning"] is True
    date_back(fleet, serial)
    reconcile(fleet)
    item = fleet.registry(serial)
    assert (item["status"], item["previousCertificateId"]) == ("provisioned", result["certificateId"])
    thing = result["thingName"]
    answers = device.Answers()
    connection = device.connect(
        fleet.target, result["certificateFile"], result["privateKeyFile"], thing, 15, on_publish=answers.on_publish
    )
    try:
        with pytest.raises(RuntimeError, match="403 NoPendingRotation"):
            device._ask(connection, answers, thing, "confirm", {"requestId": "any"}, 15)
    finally:
        connection.close()

    assert status_of(fleet, result["certificateId"]) == "ACTIVE"
    assert works(fleet, thing, result["certificateFile"], result["privateKeyFile"])


def test_list_attached_policies_granted_on_certificates_only_fails_rotation_per_the_reference(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """ListAttachedPolicies has no resource type in the Service Authorization Reference, so a grant on
    cert/* grants nothing there: with the stack's earlier form of the rotation role restored, the sandbox
    refuses the call, and the device keeps its working certificate. (The IoT Developer Guide's table
    names cert for it: not verified on AWS; the stack's "*" grant works under either reading.)"""
    first = provisioned(fleet, "SN-ROT-REFERENCE")
    thing, old_id = first["thingName"], first["certificateId"]
    function = fleet.outputs["certificate_rotation_function_name"]
    role = fleet.deployment.client("lambda").get_function(FunctionName=function)["Configuration"]["Role"]
    role_name, policy_name = role.rsplit("/", 1)[-1], f"{function}-policy"
    iam = fleet.deployment.client("iam")
    original = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    request.addfinalizer(
        lambda: iam.put_role_policy(RoleName=role_name, PolicyName=policy_name, PolicyDocument=json.dumps(original))
    )
    earlier = []
    for statement in original["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if actions == ["iot:ListAttachedPolicies"]:
            continue  # the "*" grant the stack has now
        if str(statement["Resource"]).endswith(":cert/*"):
            statement = {**statement, "Action": [*actions, "iot:ListAttachedPolicies"]}
        earlier.append(statement)
    assert len(earlier) == len(original["Statement"]) - 1, "the rotation role has no ListAttachedPolicies on *"
    iam.put_role_policy(
        RoleName=role_name, PolicyName=policy_name, PolicyDocument=json.dumps({**original, "Statement": earlier})
    )

    with pytest.raises(device.Failure, match="InternalFailure"):
        fleet.rotate(thing, first["certificateFile"], first["privateKeyFile"])

    logs = fleet.deployment.client("logs")
    # This device's request: the denial names its current certificate.
    denial = "is not authorized to perform: iot:ListAttachedPolicies on resource: arn:aws:iot:us-east-1:"

    def denied() -> bool:
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{function}")
        messages = [event["message"] for page in pages for event in page["events"]]
        return any(denial in message and f":cert/{old_id}" in message for message in messages)

    assert eventually(denied, 20)
    assert works(fleet, thing, first["certificateFile"], first["privateKeyFile"])
    assert fleet.registry("SN-ROT-REFERENCE")["certificateId"] == old_id
