"""The certificate-rotation function (moto): what the device is answered, which certificates work
afterwards, and what the registry item holds - for rotations confirmed, refused and abandoned."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto.iotdata.models import iotdata_backends

from tests.unit.support import TABLE, Registry

THING, SERIAL, POLICY = "temperature-sensor-SN-1", "SN-1", "P-dev-temperature-sensor-policy"
LONG_AGO = "2020-01-01T00:00:00Z"


def csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")])
    )
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def iot(registry: Registry) -> Any:
    """A provisioned device as the template leaves it: thing, ACTIVE certificate, policy, registry item."""
    client = boto3.client("iot", region_name="us-east-1")
    client.create_policy(policyName=POLICY, policyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    client.create_thing(thingName=THING, attributePayload={"attributes": {"serialNumber": SERIAL}})
    created = client.create_keys_and_certificate(setAsActive=True)
    client.attach_policy(policyName=POLICY, target=created["certificateArn"])
    client.attach_thing_principal(thingName=THING, principal=created["certificateArn"])
    registry.enroll(SERIAL, status="provisioned", certificateId=created["certificateId"], thingName=THING)
    client.current = created["certificateId"]  # type: ignore[attr-defined]
    return client


@pytest.fixture
def rotation(iot: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("IOT_DATA_ENDPOINT", "")
    import certificate_rotation

    yield importlib.reload(certificate_rotation)


def answers() -> list[tuple[str, dict[str, Any]]]:
    """What the function published to devices (iot-data Publish), in order."""
    published = iotdata_backends["123456789012"]["us-east-1"].published_payloads
    return [(topic, json.loads(payload)) for topic, payload in published]


def message(step: str, principal: str, client_id: str = THING, thing: str = THING, **fields: Any) -> dict[str, Any]:
    """The rotation rule's message: the device's fields plus topic(), clientid() and principal()."""
    return {**fields, "topic": f"fleet/rotation/{thing}/{step}", "clientId": client_id, "principal": principal}


def state(iot: Any, certificate_id: str) -> tuple[str, list[str], list[str]]:
    """(status, things, policies) of a certificate ("gone" when it was deleted)."""
    try:
        description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    except iot.exceptions.ResourceNotFoundException:
        return "gone", [], []
    arn = description["certificateArn"]
    policies = [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]
    return description["status"], iot.list_principal_things(principal=arn)["things"], policies


def history(registry: Registry) -> list[tuple[str, str]]:
    item = registry.client.get_item(TableName=TABLE, Key={"serialNumber": {"S": SERIAL}})["Item"]
    return [
        (e["M"]["event"]["S"], e["M"]["certificateId"]["S"]) for e in item.get("certificateHistory", {}).get("L", [])
    ]


def test_a_confirmed_rotation_makes_the_new_certificate_the_device_s_and_revokes_the_old_one(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    old = iot.current

    assert rotation.handler(message("request", old, requestId="r1", certificateSigningRequest=csr()))["result"] == (
        "accepted"
    )
    topic, issued = answers()[-1]
    new = issued["certificateId"]
    assert topic == f"fleet/rotation/{THING}/request/accepted"
    assert issued["certificatePem"].startswith("-----BEGIN CERTIFICATE-----") and issued["requestId"] == "r1"
    assert state(iot, new) == ("ACTIVE", [THING], [POLICY])  # usable by the device (only it has the key)
    assert state(iot, old) == ("ACTIVE", [THING], [POLICY])  # and the old one still works until confirmed
    assert registry.get(SERIAL)["pendingCertificateId"] == new  # type: ignore[index]

    assert rotation.handler(message("confirm", new, requestId="r1"))["result"] == "accepted"

    assert answers()[-1] == (
        f"fleet/rotation/{THING}/confirm/accepted",
        {"requestId": "r1", "certificateId": new, "retiredCertificateId": old},
    )
    assert state(iot, old) == ("REVOKED", [], [])
    assert state(iot, new) == ("ACTIVE", [THING], [POLICY])
    item = registry.get(SERIAL)
    assert item is not None and item["certificateId"] == new and item["previousCertificateId"] == old
    assert "pendingCertificateId" not in item and "rotationState" not in item
    assert history(registry) == [("issued", new), ("confirmed", new), ("retired", old)]


def test_a_repeated_confirmation_is_answered_the_same_and_changes_nothing(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    new = answers()[-1][1]["certificateId"]
    rotation.handler(message("confirm", new, requestId="r1"))

    assert rotation.handler(message("confirm", new, requestId="r1"))["result"] == "accepted"
    assert answers()[-1][1]["retiredCertificateId"] == iot.current
    assert len(history(registry)) == 3


def test_a_confirm_with_no_confirmed_rotation_never_retires_the_current_certificate(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    """After a same-certificate retry of the provisioning hook the item's previousCertificateId is the
    current certificate: a confirm from it (no rotation pending, none confirmed) must not revoke it."""
    registry.client.update_item(
        TableName=TABLE,
        Key={"serialNumber": {"S": SERIAL}},
        UpdateExpression="SET previousCertificateId = :current",
        ExpressionAttributeValues={":current": {"S": iot.current}},
    )
    before = registry.get(SERIAL)

    result = rotation.handler(message("confirm", iot.current, requestId="r1"))

    assert result == {"result": "rejected", "errorCode": "NoPendingRotation"}
    assert answers()[-1][0] == f"fleet/rotation/{THING}/confirm/rejected"
    assert state(iot, iot.current) == ("ACTIVE", [THING], [POLICY])
    assert registry.get(SERIAL) == before


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"principal": "f" * 64}, "NotCurrentCertificate"),  # another certificate of the account
        ({"certificateSigningRequest": "not a CSR"}, "InvalidCsr"),
        ({"requestId": "a/b"}, "InvalidRequest"),
    ],
)
def test_a_refused_request_is_answered_rejected_and_creates_nothing(
    rotation: ModuleType, iot: Any, registry: Registry, change: dict[str, str], code: str
) -> None:
    before = iot.list_certificates()["certificates"]
    fields = {"requestId": "r1", "certificateSigningRequest": csr(), **change}
    principal = fields.pop("principal", iot.current)

    assert rotation.handler(message("request", principal, **fields)) == {"result": "rejected", "errorCode": code}

    topic, body = answers()[-1]
    assert topic == f"fleet/rotation/{THING}/request/rejected" and body["errorCode"] == code
    assert iot.list_certificates()["certificates"] == before
    assert "pendingCertificateId" not in registry.get(SERIAL)  # type: ignore[operator]


def test_a_request_for_another_thing_s_topic_is_refused_without_an_answer_on_that_thing_s_topic(
    rotation: ModuleType, iot: Any
) -> None:
    other = message("request", iot.current, client_id="gateway-SN-9", requestId="r1", certificateSigningRequest=csr())

    assert rotation.handler(other)["errorCode"] == "Forbidden"
    assert answers() == []
    assert len(iot.list_certificates()["certificates"]) == 1


def test_only_the_pending_certificate_can_confirm(rotation: ModuleType, iot: Any, registry: Registry) -> None:
    rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    new = answers()[-1][1]["certificateId"]

    assert rotation.handler(message("confirm", iot.current, requestId="r1"))["errorCode"] == "NoPendingRotation"
    assert rotation.handler(message("confirm", new, requestId="r2"))["errorCode"] == "NoPendingRotation"
    assert state(iot, iot.current)[0] == "ACTIVE"
    assert registry.get(SERIAL)["certificateId"] == iot.current  # type: ignore[index]


def test_a_new_request_replaces_an_unconfirmed_one_and_removes_its_certificate(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    first = answers()[-1][1]["certificateId"]
    interval_passes(registry)

    rotation.handler(message("request", iot.current, requestId="r2", certificateSigningRequest=csr()))
    second = answers()[-1][1]["certificateId"]

    assert second != first and state(iot, first) == ("gone", [], [])
    assert registry.get(SERIAL)["pendingCertificateId"] == second  # type: ignore[index]
    assert rotation.handler(message("confirm", first, requestId="r1"))["errorCode"] == "CertificateNotActive"  # gone


def test_a_revoked_certificate_still_connected_cannot_rotate_whatever_the_registry_says(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    """fleet revoke revoked the certificate but its registry write failed: the connection AWS has not
    closed yet must not get a working certificate."""
    iot.update_certificate(certificateId=iot.current, newStatus="REVOKED")

    result = rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))

    assert result == {"result": "rejected", "errorCode": "CertificateNotActive"}
    assert len(iot.list_certificates()["certificates"]) == 1


def interval_passes(registry: Registry) -> None:
    """RotationIntervalMinutes pass (the device's slot dated back)."""
    registry.client.update_item(
        TableName=TABLE,
        Key={"serialNumber": {"S": SERIAL}},
        UpdateExpression="SET rotationReservedAt = :then",
        ExpressionAttributeValues={":then": {"S": LONG_AGO}},
    )


def test_within_the_interval_a_second_request_is_refused_before_any_certificate_is_made(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    rotation.handler(message("confirm", answers()[-1][1]["certificateId"], requestId="r1"))
    current = registry.get(SERIAL)["certificateId"]  # type: ignore[index]
    certificates = len(iot.list_certificates()["certificates"])

    result = rotation.handler(message("request", current, requestId="r2", certificateSigningRequest=csr()))

    assert result == {"result": "rejected", "errorCode": "RotationLimitExceeded"}
    topic, answer = answers()[-1]
    assert (topic, answer["statusCode"], answer["requestId"]) == (f"fleet/rotation/{THING}/request/rejected", 429, "r2")
    assert answer["errorMessage"].startswith("one rotation request per 60 minutes per device (and 3 attempts of it)")
    assert len(iot.list_certificates()["certificates"]) == certificates
    again = rotation.handler(message("request", current, requestId="r1", certificateSigningRequest=csr()))
    assert again["errorCode"] == "RotationLimitExceeded"  # a confirmed request's id holds no slot any more
    interval_passes(registry)
    assert rotation.handler(message("request", current, requestId="r3", certificateSigningRequest=csr()))["result"] == (
        "accepted"
    )


def test_a_request_that_failed_can_be_repeated_with_its_own_request_id(
    rotation: ModuleType, iot: Any, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS failed after the slot was taken: the device's repeat of the same request is not refused."""
    original = rotation._IOT.create_certificate_from_csr
    failures = iter([True])

    def fail_once(**kwargs: Any) -> Any:
        if next(failures, False):
            raise rotation.ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Create")
        return original(**kwargs)

    monkeypatch.setattr(rotation._IOT, "create_certificate_from_csr", fail_once)
    with pytest.raises(rotation.ClientError):
        rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    assert answers()[-1][1]["errorCode"] == "InternalFailure"

    assert (
        rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))["result"]
        == "accepted"
    )


def test_one_request_id_gets_at_most_three_attempts_in_its_slot(
    rotation: ModuleType, iot: Any, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSR AWS refuses keeps the request's slot: repeating it is allowed, but not without end."""
    calls: list[str] = []

    def refuse(**_: Any) -> None:
        calls.append("CreateCertificateFromCsr")
        raise rotation.ClientError({"Error": {"Code": "InvalidRequestException", "Message": "bad CSR"}}, "Create")

    monkeypatch.setattr(rotation._IOT, "create_certificate_from_csr", refuse)
    body = {"requestId": "r1", "certificateSigningRequest": csr()}

    codes = [rotation.handler(message("request", iot.current, **body))["errorCode"] for _ in range(5)]

    assert codes == ["InvalidCsr"] * 3 + ["RotationLimitExceeded"] * 2
    assert len(calls) == 3


def test_the_history_keeps_its_newest_events_and_counts_the_rest(
    rotation: ModuleType, iot: Any, registry: Registry
) -> None:
    current = iot.current
    for n in range(12):  # three events each: issued, confirmed, retired
        interval_passes(registry)
        rotation.handler(message("request", current, requestId=f"r{n}", certificateSigningRequest=csr()))
        new = answers()[-1][1]["certificateId"]
        assert rotation.handler(message("confirm", new, requestId=f"r{n}"))["result"] == "accepted"
        current = new

    item = registry.client.get_item(TableName=TABLE, Key={"serialNumber": {"S": SERIAL}})["Item"]
    assert len(item["certificateHistory"]["L"]) == rotation.HISTORY_LIMIT
    assert (item["certificateEvents"]["N"], item["certificateEventsDropped"]["N"]) == ("36", str(36 - 20))
    assert history(registry)[-3:] == [
        ("issued", current),
        ("confirmed", current),
        ("retired", history(registry)[-1][1]),
    ]


def test_a_device_not_provisioned_cannot_rotate(rotation: ModuleType, iot: Any, registry: Registry) -> None:
    registry.enroll(SERIAL, status="revoked", certificateId=iot.current, thingName=THING)

    result = rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))

    assert result["errorCode"] == "NotProvisioned"
    assert len(iot.list_certificates()["certificates"]) == 1


def test_the_reconciler_removes_a_rotation_never_confirmed_and_the_old_certificate_keeps_working(
    rotation: ModuleType, iot: Any, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation.handler(message("request", iot.current, requestId="r1", certificateSigningRequest=csr()))
    new = answers()[-1][1]["certificateId"]
    monkeypatch.setenv("ROTATION_CONFIRM_SECONDS", "600")
    import reconciler

    reconciler = importlib.reload(reconciler)
    assert reconciler.handler({})["abandoned"] == 0  # within the window: the device may still confirm
    registry.client.update_item(
        TableName=TABLE,
        Key={"serialNumber": {"S": SERIAL}},
        UpdateExpression="SET rotationRequestedAt = :t",
        ExpressionAttributeValues={":t": {"S": LONG_AGO}},
    )

    assert reconciler.handler({})["abandoned"] == 1

    assert state(iot, new) == ("gone", [], [])
    assert state(iot, iot.current) == ("ACTIVE", [THING], [POLICY])
    item = registry.get(SERIAL)
    assert item is not None and item["certificateId"] == iot.current and "pendingCertificateId" not in item
    assert history(registry) == [("issued", new), ("abandoned", new)]
    assert rotation.handler(message("confirm", new, requestId="r1"))["errorCode"] == "CertificateNotActive"  # gone


def test_a_request_repeated_while_the_first_is_still_running_gets_the_first_one_s_certificate(
    rotation: ModuleType, iot: Any, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device asks again (no answer yet) and both requests run at once: the one recorded second
    loses the registry's condition, removes its own certificate and answers with the winner's."""
    body = {"requestId": "r1", "certificateSigningRequest": csr()}
    original = rotation._item_of
    calls = {"n": 0}

    def first_request_wins_meanwhile(thing: str) -> dict[str, Any]:
        item = original(thing)
        calls["n"] += 1
        if calls["n"] == 1:  # the repeat reads the item before the first request records its certificate
            monkeypatch.setattr(rotation, "_item_of", original)
            rotation.handler(message("request", iot.current, **body))
        return item

    monkeypatch.setattr(rotation, "_item_of", first_request_wins_meanwhile)
    rotation.handler(message("request", iot.current, **body))

    (first, _), (second, _) = [(b["certificateId"], t) for t, b in answers()]
    assert first == second == registry.get(SERIAL)["pendingCertificateId"]  # type: ignore[index]
    assert [c["status"] for c in iot.list_certificates()["certificates"]].count("ACTIVE") == 2  # old + one new
