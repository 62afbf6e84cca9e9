"""Device attestation and the claim client-id prefix against the deployed sandbox stack, with the real
device SDK: what a holder of the claim certificate can and cannot do to an enrolled or provisioned
device, what the registry holds afterwards, and what an operator reads from `fleet why`."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5
from awsiot import iotidentity
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from scripts import device_client as device
from tests.integration.conftest import Deployment
from tests.integration.devices import Fleet
from tests.integration.test_device_provisioning import claim_identity, publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("attested-devices"))


def last_reason(fleet: Fleet, serial: str) -> tuple[str, str]:
    code, answer, said = fleet.cli("why", serial, "--json")
    assert code == 0, said
    return answer["decisions"][-1]["reason"], answer["decisions"][-1]["detail"]


def test_a_keyed_device_provisions_only_with_its_own_signature_of_this_attempt(fleet: Fleet) -> None:
    """Acceptance 1: the claim certificate and a correctly enrolled serial are not enough. No signature, a
    signature by another key, or the device's own signature made for another certificate are refused
    (403, reason ATTESTATION_FAILED) and change nothing; the device with its key provisions."""
    serial = "SN-ATTEST-1"
    key_file, public = fleet.factory_key(serial)
    impostor_file, _ = fleet.factory_key("impostor")
    fleet.enroll(serial, "temperature-sensor", factory_public_key=public)
    before = fleet.footprint(serial)

    for extra in ({}, {"factory_key": impostor_file}):
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
            fleet.provision(serial, "temperature-sensor", skip_device_check=True, **extra)
        assert last_reason(fleet, serial)[0] == "ATTESTATION_FAILED"

    # The real device's signature, copied off one attempt (its certificate A) and sent with another (B).
    client, identity = claim_identity(fleet)
    try:
        made_for = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        sent_with = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        signature = device.attestation(
            device.load_factory_key(key_file), serial, made_for.certificate_id, fleet.target.template_name
        )
        with pytest.raises(Exception) as refused:
            identity.register_thing(
                iotidentity.RegisterThingRequest(
                    template_name=fleet.target.template_name,
                    certificate_ownership_token=sent_with.certificate_ownership_token,
                    parameters={
                        "SerialNumber": serial,
                        "DeviceType": "temperature-sensor",
                        "Manufacturer": "AcmeIoT",
                        "AttestationSignature": signature,
                    },
                ),
            ).result(15)
        assert "403 ACCESS_DENIED" in device.rejection(refused.value)
    finally:
        client.close()
    reason, detail = last_reason(fleet, serial)
    assert (reason, "not the enrolled factory key's signature" in detail) == ("ATTESTATION_FAILED", True)
    assert fleet.footprint(serial) == before  # no thing, no active certificate, the registry item as enrolled
    assert fleet.registry(serial)["status"] == "enrolled"

    result = fleet.provision(serial, "temperature-sensor", factory_key=key_file)

    assert result["thingName"] == f"temperature-sensor-{serial}"
    assert result["telemetryTopic"] == f"devices/temperature-sensor-{serial}/telemetry"  # it works as the thing
    item = fleet.registry(serial)
    assert (item["status"], item["certificateId"]) == ("provisioned", result["certificateId"])


def test_the_claim_certificate_cannot_connect_as_a_provisioned_device_which_stays_connected(fleet: Fleet) -> None:
    """Acceptance 2: the claim policy allows Connect only on client/claim-*, and no thing name takes that
    prefix. Connecting with the claim certificate and a device's thing name as client id is refused at
    CONNECT, before the broker would hand that client id's session over: the device is not knocked off."""
    serial = "SN-KNOCK-1"
    key_file, public = fleet.factory_key(serial)
    fleet.enroll(serial, "gateway", factory_public_key=public)
    provisioned = fleet.provision(serial, "gateway", factory_key=key_file, skip_device_check=True)
    thing = provisioned["thingName"]
    drops: list[Any] = []
    victim = device.connect(
        fleet.target,
        provisioned["certificateFile"],
        provisioned["privateKeyFile"],
        thing,
        15,
        on_disconnection=drops.append,
    )
    try:
        for client_id in (thing, f"x-{thing}", "anything"):
            with pytest.raises(RuntimeError, match="CONNACK"):  # refused by the broker, not a TLS failure
                device.connect(fleet.target, fleet.target.claim_cert, fleet.target.claim_key, client_id, 10)
        allowed = device.connect(fleet.target, fleet.target.claim_cert, fleet.target.claim_key, "claim-probe-1", 10)
        allowed.close()  # the prefix is what the claim certificate may use

        telemetry = publish(victim, f"devices/{thing}/telemetry")
        assert (telemetry != mqtt5.PubackReasonCode.NOT_AUTHORIZED, drops) == (True, [])
    finally:
        victim.close()


def test_no_device_can_be_given_a_thing_name_with_the_claim_prefix(fleet: Fleet) -> None:
    """A thing named claim-... could be connected to (and knocked off) with the claim certificate: the
    hook refuses to name one, whatever the registry or the device asks for."""
    fleet.enroll("SN-PREFIX-1", "gateway")
    fleet.dynamodb.update_item(
        TableName=fleet.table,
        Key={"serialNumber": {"S": "SN-PREFIX-1"}},
        UpdateExpression="SET thingName = :t",
        ExpressionAttributeValues={":t": {"S": "claim-boiler"}},
    )
    before = fleet.registry("SN-PREFIX-1")

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-PREFIX-1", "gateway", thing_name="claim-boiler", skip_device_check=True)

    assert fleet.registry("SN-PREFIX-1") == before
    assert [t for t in fleet.iot.list_things()["things"] if t["thingName"] == "claim-boiler"] == []
    assert last_reason(fleet, "SN-PREFIX-1")[0] == "INVALID_PARAMETERS"


@pytest.fixture
def attestation_required(fleet: Fleet) -> Iterator[None]:
    """The deployed hook with RequireAttestation on (its environment, as the stack sets it), restored after."""
    functions = fleet.deployment.client("lambda")
    name = fleet.outputs["provisioning_hook_function_name"]
    variables = functions.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    assert variables["REQUIRE_ATTESTATION"] == "false"  # the session's stack: the default
    functions.update_function_configuration(
        FunctionName=name, Environment={"Variables": {**variables, "REQUIRE_ATTESTATION": "true"}}
    )
    try:
        yield
    finally:
        functions.update_function_configuration(FunctionName=name, Environment={"Variables": variables})


def test_while_attestation_is_required_a_device_enrolled_without_key_is_refused(
    fleet: Fleet, attestation_required: None
) -> None:
    fleet.enroll("SN-NOKEY-1", "pressure-sensor")
    key_file, public = fleet.factory_key("SN-KEYED-2")
    fleet.enroll("SN-KEYED-2", "pressure-sensor", factory_public_key=public)
    stray_file, _ = fleet.factory_key("stray")
    before = fleet.registry("SN-NOKEY-1")

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-NOKEY-1", "pressure-sensor", factory_key=stray_file, skip_device_check=True)

    assert fleet.registry("SN-NOKEY-1") == before
    reason, detail = last_reason(fleet, "SN-NOKEY-1")
    assert (reason, "without a factory key" in detail) == ("ATTESTATION_FAILED", True)
    assert (
        fleet.provision("SN-KEYED-2", "pressure-sensor", factory_key=key_file, skip_device_check=True)["thingName"]
        == "pressure-sensor-SN-KEYED-2"
    )


def test_the_signature_is_p256_ecdsa_over_the_documented_message(fleet: Fleet) -> None:
    """What docs/design.md tells a factory to implement, checked against the deployed hook: a raw r||s
    signature (as secure elements produce) over the documented lines is accepted."""
    serial = "SN-RAWSIG-1"
    key_file, public = fleet.factory_key(serial)
    fleet.enroll(serial, "humidity-sensor", factory_public_key=public)
    key = device.load_factory_key(key_file)
    client, identity = claim_identity(fleet)
    try:
        created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        message = "\n".join(
            ["aws-iot-fleet-attestation/1", serial, created.certificate_id, fleet.target.template_name]
        ).encode()
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        raw = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
        registered = identity.register_thing(
            iotidentity.RegisterThingRequest(
                template_name=fleet.target.template_name,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={
                    "SerialNumber": serial,
                    "DeviceType": "humidity-sensor",
                    "Manufacturer": "AcmeIoT",
                    "AttestationSignature": raw,
                },
            ),
        ).result(15)
    finally:
        client.close()
    assert registered.thing_name == f"humidity-sensor-{serial}"
    assert registered.device_configuration["thingName"] == registered.thing_name


def test_the_factory_steps_enroll_a_key_from_a_manifest_that_the_device_then_proves(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The factory steps (docs/design.md) with the operator CLI: a manifest row carries the device's public key
    (PEM); `fleet show` prints its fingerprint; the device provisions by signing with its key."""
    serial = "SN-FACTORY-1"
    key_file, public = fleet.factory_key(serial)
    pem = (
        device.load_factory_key(key_file)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    manifest = tmp_path / "batch.jsonl"
    manifest.write_text(
        json.dumps(
            {"serialNumber": serial, "deviceType": "gateway", "manufacturer": "AcmeIoT", "factoryPublicKey": pem}
        )
        + "\n"
    )
    code, _, said = fleet.cli("enroll", str(manifest))
    assert code == 0, said
    assert fleet.registry(serial)["factoryPublicKey"] == public  # stored as base64 DER, as the hook reads it

    _, shown, _ = fleet.cli("show", serial, "--json")
    assert shown["factoryKeyFingerprint"] == "SHA256:" + hashlib.sha256(base64.b64decode(public)).hexdigest()
    assert fleet.provision(serial, "gateway", factory_key=key_file, skip_device_check=True)["thingName"] == (
        f"gateway-{serial}"
    )
