"""Devices provisioning themselves through the real AWS IoT Device SDK v2 against the deployed
sandbox stack: what a device receives, and what the registry, things and shadows hold afterwards."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5, mqtt_request_response
from awsiot import iotidentity

from sandbox.__main__ import health
from sandbox.awslambda.runtime import WORKERS_PER_FUNCTION
from scripts import device_client as device
from tests.conftest import SUMMARY
from tests.integration.conftest import Deployment
from tests.integration.devices import Fleet

pytestmark = pytest.mark.integration
INITIAL_SHADOWS = {
    "temperature-sensor": {"samplingRate": 30, "temperatureUnit": "celsius", "alertThreshold": 80, "enabled": True},
    "humidity-sensor": {"enabled": True, "reportingInterval": 60},
    "pressure-sensor": {"enabled": True, "reportingInterval": 60},
    "gateway": {"connectionTimeout": 30, "bufferSize": 100, "compressionEnabled": True, "logLevel": "INFO"},
}


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield Fleet(deployment, tmp_path_factory.mktemp("devices"))


@pytest.mark.parametrize("device_type", list(INITIAL_SHADOWS))
@pytest.mark.parametrize("flow", ["keys", "csr"])
def test_enrolled_device_of_each_type_provisions_end_to_end(fleet: Fleet, device_type: str, flow: str) -> None:
    serial = f"SN-{flow}-{device_type[:4]}-001".upper()
    fleet.enroll(serial, device_type)

    result = fleet.provision(serial, device_type, csr=flow == "csr")

    thing_name = f"{device_type}-{serial}"
    assert result["thingName"] == thing_name
    assert result["shadowDesired"] == INITIAL_SHADOWS[device_type]  # read by the device as its thing
    assert result["telemetryTopic"] == f"devices/{thing_name}/telemetry"  # and it published there
    thing = fleet.iot.describe_thing(thingName=thing_name)
    assert thing["thingTypeName"] == fleet.outputs["thing_type_name"]
    assert thing["attributes"] == {
        "serialNumber": serial,
        "deviceType": device_type,
        "manufacturer": "AcmeIoT",
        "firmwareVersion": "v1.2.3",
        "location": "plant-1",
    }
    groups = [g["groupName"] for g in fleet.iot.list_thing_groups_for_thing(thingName=thing_name)["thingGroups"]]
    assert groups == [fleet.outputs["thing_group_names"][device_type]]
    certificate = fleet.iot.describe_certificate(certificateId=result["certificateId"])["certificateDescription"]
    assert certificate["status"] == "ACTIVE"
    policies = [
        p["policyName"] for p in fleet.iot.list_attached_policies(target=certificate["certificateArn"])["policies"]
    ]
    assert policies == [fleet.outputs["device_policy_names"][device_type]]
    expected = {
        "status": "provisioned",
        "thingName": thing_name,
        "certificateId": result["certificateId"],
        "claimCertificateId": fleet.outputs["claim_certificate_id"],
    }
    assert fleet.registry(serial).items() >= expected.items()  # the hook got the claim certificate's id, as from AWS
    assert oct(Path(result["privateKeyFile"]).stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("case", "enrollment", "request_"),
    [
        ("unknown serial", None, {}),
        ("revoked device", "revoked", {}),
        ("device type not allowed", "enrolled", {"device_type": "toaster"}),
        ("type not matching enrollment", "enrolled", {"device_type": "gateway"}),
        ("malformed parameters", "enrolled", {"firmware_version": "1.0"}),
    ],
)
def test_refused_device_gets_access_denied_and_leaves_nothing_behind(
    fleet: Fleet, case: str, enrollment: str | None, request_: dict[str, str]
) -> None:
    serial = "SN-REFUSED-" + case.split()[0].upper()
    request_ = dict(request_)
    if enrollment:
        fleet.enroll(serial, "humidity-sensor", status=enrollment)
    before = fleet.footprint(serial)

    with pytest.raises(device.Failure) as refused:
        fleet.provision(serial, request_.pop("device_type", "humidity-sensor"), **request_)

    assert refused.value.code == device.REGISTER_REJECTED
    assert "403 ACCESS_DENIED" in str(refused.value)
    assert fleet.footprint(serial) == before


def test_replayed_serial_is_refused_after_it_provisioned(fleet: Fleet) -> None:
    fleet.enroll("SN-REPLAY-1", "pressure-sensor")
    fleet.provision("SN-REPLAY-1", "pressure-sensor", skip_device_check=True)
    before = fleet.footprint("SN-REPLAY-1")

    with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
        fleet.provision("SN-REPLAY-1", "pressure-sensor", skip_device_check=True)
    assert fleet.footprint("SN-REPLAY-1") == before


def claim_identity(fleet: Fleet) -> tuple[device.Connection, iotidentity.IotIdentityClientV2]:
    client = device.connect(fleet.target, fleet.target.claim_cert, fleet.target.claim_key, "claim-raw-test", 15)
    options = mqtt_request_response.ClientOptions(4, 2, operation_timeout_in_seconds=15)
    return client, iotidentity.IotIdentityClientV2(client.client, options)


def test_a_certificate_made_over_mqtt_is_pending_activation_until_register_thing(fleet: Fleet) -> None:
    """AWS's device provisioning MQTT API: the new certificate is PENDING_ACTIVATION (it connects nowhere)
    until RegisterThing sets it as the template says."""
    fleet.enroll("SN-PENDING-1", "gateway")
    client, identity = claim_identity(fleet)
    try:
        created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        status = fleet.iot.describe_certificate(certificateId=created.certificate_id)["certificateDescription"]
        assert status["status"] == "PENDING_ACTIVATION"
        identity.register_thing(
            iotidentity.RegisterThingRequest(
                template_name=fleet.target.template_name,
                certificate_ownership_token=created.certificate_ownership_token,
                parameters={"SerialNumber": "SN-PENDING-1", "DeviceType": "gateway", "Manufacturer": "AcmeIoT"},
            )
        ).result(15)
    finally:
        client.close()
    described = fleet.iot.describe_certificate(certificateId=created.certificate_id)["certificateDescription"]
    assert described["status"] == "ACTIVE"


def test_reused_ownership_token_and_another_template_are_refused_as_aws_does(fleet: Fleet) -> None:
    fleet.enroll("SN-TOKEN-1", "gateway")
    client, identity = claim_identity(fleet)
    try:
        created = identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(15)
        parameters = {"SerialNumber": "SN-TOKEN-1", "DeviceType": "gateway", "Manufacturer": "AcmeIoT"}

        def register(template: str) -> Future[Any]:
            return identity.register_thing(
                iotidentity.RegisterThingRequest(
                    template_name=template,
                    certificate_ownership_token=created.certificate_ownership_token,
                    parameters=parameters,
                )
            )

        # Another template's topics are outside the claim policy: the SDK's subscription to its answers
        # is refused at the broker (SUBACK "not authorized"), as AWS refuses it; nothing is sent.
        with pytest.raises(Exception) as elsewhere:
            register("SomeOtherTemplate").result(15)
        assert "SUBSCRIBE_FAILURE" in device.rejection(elsewhere.value)
        register(fleet.target.template_name).result(15)
        before = fleet.footprint("SN-TOKEN-1")
        with pytest.raises(Exception) as reused:
            register(fleet.target.template_name).result(15)
        assert "400 InvalidCertificateOwnershipToken" in device.rejection(reused.value)
        assert fleet.footprint("SN-TOKEN-1") == before
    finally:
        client.close()


def test_twenty_concurrent_devices_with_one_serial_provision_exactly_once(fleet: Fleet) -> None:
    fleet.enroll("SN-RACE-1", "temperature-sensor")

    def attempt(n: int) -> str:
        try:
            fleet.provision("SN-RACE-1", "temperature-sensor", client_id=f"claim-race-{n}", skip_device_check=True)
            return "provisioned"
        except device.Failure as failure:
            return str(failure)

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(attempt, range(20)))

    assert outcomes.count("provisioned") == 1, outcomes
    assert all("403 ACCESS_DENIED" in o for o in outcomes if o != "provisioned")
    assert fleet.registry("SN-RACE-1")["status"] == "provisioned"


def publish(connection: device.Connection, topic: str) -> Any:
    packet = mqtt5.PublishPacket(topic=topic, payload=b"{}", qos=mqtt5.QoS.AT_LEAST_ONCE)
    return connection.client.publish(packet).result(10).puback.reason_code


def subscribe(connection: device.Connection, topic_filter: str) -> Any:
    packet = mqtt5.SubscribePacket([mqtt5.Subscription(topic_filter, mqtt5.QoS.AT_LEAST_ONCE)])
    return connection.client.subscribe(packet).result(10).reason_codes[0]


def test_claim_and_device_certificates_reach_only_their_own_topics(fleet: Fleet) -> None:
    fleet.enroll("SN-ACL-A", "humidity-sensor")
    fleet.enroll("SN-ACL-B", "humidity-sensor")
    a = fleet.provision("SN-ACL-A", "humidity-sensor", skip_device_check=True)
    fleet.provision("SN-ACL-B", "humidity-sensor", skip_device_check=True)
    denied = mqtt5.PubackReasonCode.NOT_AUTHORIZED
    not_authorized = mqtt5.SubackReasonCode.NOT_AUTHORIZED

    claim = device.connect(fleet.target, fleet.target.claim_cert, fleet.target.claim_key, "claim-acl", 15)
    try:
        assert publish(claim, "devices/humidity-sensor-SN-ACL-A/telemetry") == denied
        assert publish(claim, "$aws/things/humidity-sensor-SN-ACL-A/shadow/get") == denied
    finally:
        claim.close()
    # A client id the broker cannot route replies to could forge answers to other claim devices (one the
    # claim policy allows: claim-*, as IoT's * matches a slash too).
    unroutable = device.connect(fleet.target, fleet.target.claim_cert, fleet.target.claim_key, "claim-x/a", 15)
    try:
        assert publish(unroutable, "$aws/certificates/create/json/accepted") == denied
        assert publish(unroutable, "$aws/certificates/create/json") == denied
    finally:
        unroutable.close()
    thing_a = a["thingName"]
    client = device.connect(fleet.target, a["certificateFile"], a["privateKeyFile"], thing_a, 15)
    try:
        assert publish(client, f"devices/{thing_a}/telemetry") != denied
        assert publish(client, "devices/humidity-sensor-SN-ACL-B/telemetry") == denied
        assert publish(client, "$aws/things/humidity-sensor-SN-ACL-B/shadow/update") == denied
        assert publish(client, "$aws/certificates/create/json") == denied
        assert subscribe(client, f"$aws/things/{thing_a}/shadow/get/accepted") == mqtt5.SubackReasonCode.GRANTED_QOS_1
        assert subscribe(client, "$aws/things/humidity-sensor-SN-ACL-B/shadow/get/accepted") == not_authorized
        assert subscribe(client, "$aws/things/+/shadow/get/accepted") == not_authorized  # wider than its grant
        assert subscribe(client, "#") == not_authorized
    finally:
        client.close()


def test_a_device_certificate_connects_only_with_its_thing_name_as_client_id(fleet: Fleet) -> None:
    """The device policy allows iot:Connect only on client/<its thing name>: any other client id,
    another device's included, is refused at CONNECT, and the device connected under that client id
    keeps its session (a refused CONNECT takes nothing over)."""
    fleet.enroll("SN-CLIENTID-A", "temperature-sensor")
    fleet.enroll("SN-CLIENTID-B", "temperature-sensor")
    a = fleet.provision("SN-CLIENTID-A", "temperature-sensor", skip_device_check=True)
    b = fleet.provision("SN-CLIENTID-B", "temperature-sensor", skip_device_check=True)
    drops: list[Any] = []
    victim = device.connect(
        fleet.target, b["certificateFile"], b["privateKeyFile"], b["thingName"], 15, on_disconnection=drops.append
    )
    try:
        for client_id in (b["thingName"], "not-a-thing"):
            with pytest.raises(RuntimeError, match="CONNACK"):  # "not authorized", not a TLS failure
                device.connect(fleet.target, a["certificateFile"], a["privateKeyFile"], client_id, 10)
        telemetry = publish(victim, f"devices/{b['thingName']}/telemetry")
        assert (telemetry != mqtt5.PubackReasonCode.NOT_AUTHORIZED, drops) == (True, [])
    finally:
        victim.close()


def test_revoked_certificate_cannot_connect(fleet: Fleet) -> None:
    """A revoked certificate is refused; the broker's reload for it leaves other devices connected,
    also one that sent no MQTT user name (the broker's default check drops such clients on reload
    unless the plugin gave them their certificate's identity as user name)."""
    fleet.enroll("SN-REVOKE-1", "pressure-sensor")
    fleet.enroll("SN-REVOKE-2", "pressure-sensor")
    result = fleet.provision("SN-REVOKE-1", "pressure-sensor", skip_device_check=True)
    other = fleet.provision("SN-REVOKE-2", "pressure-sensor", skip_device_check=True)
    drops: list[Any] = []
    bystander = device.connect(
        fleet.target,
        other["certificateFile"],
        other["privateKeyFile"],
        other["thingName"],
        15,
        sdk_metrics=False,
        on_disconnection=drops.append,
    )
    try:
        fleet.iot.update_certificate(certificateId=result["certificateId"], newStatus="REVOKED")
        time.sleep(5)  # the sandbox's broker picks revocations up within about two seconds

        with pytest.raises(Exception):  # noqa: B017 - the SDK reports a refused TLS handshake in several ways
            device.connect(fleet.target, result["certificateFile"], result["privateKeyFile"], result["thingName"], 10)
        telemetry = publish(bystander, f"devices/{other['thingName']}/telemetry")
        assert (telemetry != mqtt5.PubackReasonCode.NOT_AUTHORIZED, drops) == (True, [])
    finally:
        bystander.close()


def test_the_fleet_simulator_provisions_a_small_fleet_through_the_sandbox(fleet: Fleet, tmp_path: Path) -> None:
    """scripts/simulate_fleet.py as a user runs it against the sandbox: worker processes that load the
    claim certificate once, the SDK's IoT Core pacing off, the full flow for every device."""
    result = fleet.deployment.run(
        sys.executable,
        "scripts/simulate_fleet.py",
        "--devices",
        "6",
        "--concurrency",
        "3",
        "--json",
        "--stack-dir",
        str(fleet.deployment.stack_dir),
        "--output-dir",
        str(tmp_path),
        timeout=300,
    )
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (result.returncode, summary["provisioned"], summary["rejections"]) == (0, 6, {}), summary["examples"]

    simulated = [
        item
        for item in fleet.dynamodb.scan(TableName=fleet.table)["Items"]
        if item["serialNumber"]["S"].startswith(f"SIM-{summary['run']}-")  # this run's, not another test's
    ]
    assert len(simulated) == 6
    for item in simulated:
        assert (item["status"]["S"], item["enrolledBy"]["S"]) == ("provisioned", "simulate_fleet")
        thing = fleet.iot.describe_thing(thingName=item["thingName"]["S"])
        assert thing["attributes"]["serialNumber"] == item["serialNumber"]["S"]


def test_a_client_trusting_only_the_system_store_provisions_once_the_sandbox_ca_is_trusted(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """AWS's SDK samples build their connection without a CA file: they trust the system store only.
    `python -m sandbox trust` puts the sandbox CA there; `untrust` takes it out again (here in a
    finalizer too, so a failing test leaves no CA behind)."""
    if os.geteuid() != 0:
        pytest.skip("changes the system trust store: runs as root, as CI does")
    for serial in ("SN-SYSTRUST-1", "SN-SYSTRUST-2", "SN-SYSTRUST-3"):
        fleet.enroll(serial, "gateway")
    deployment = fleet.deployment
    deployment.env = {k: v for k, v in deployment.env.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    # Refused attempts wait out their timeout (awscrt reports no TLS verification failure before it): a
    # short one, since the broker here answers a trusted client in well under a second.
    with pytest.raises(device.Failure) as untrusted:
        fleet.provision("SN-SYSTRUST-1", "gateway", system_trust=True, timeout=5)
    assert untrusted.value.code == device.CLAIM_CONNECT

    request.addfinalizer(lambda: deployment.sandbox("untrust"))
    trusted = deployment.sandbox("trust")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    result = fleet.provision("SN-SYSTRUST-2", "gateway", system_trust=True)  # claim, register, reconnect, publish
    assert result["thingName"] == "gateway-SN-SYSTRUST-2"
    assert result["telemetryTopic"] == "devices/gateway-SN-SYSTRUST-2/telemetry"

    removed = deployment.sandbox("untrust")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    with pytest.raises(device.Failure) as untrusted_again:
        fleet.provision("SN-SYSTRUST-3", "gateway", system_trust=True, timeout=5)
    assert untrusted_again.value.code == device.CLAIM_CONNECT
    assert fleet.registry("SN-SYSTRUST-3")["status"] == "enrolled"


def test_with_open_enrollment_a_new_serial_never_gets_an_existing_device_s_thing_name(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """RequireEnrollment=false, as the stack deploys it (the hook's environment and the grant that
    parameter adds: iot:DescribeThing on things). A serial whose derived thing name is held by another
    device, through its reservation or only through its thing (one provisioned before names were
    reserved), is refused THING_NAME_TAKEN; the existing device is untouched and keeps working."""
    manifest = tmp_path / "named.csv"
    manifest.write_text("serialNumber,deviceType,manufacturer,thingName\nSN-OPEN-A,gateway,AcmeIoT,gateway-SN-OPEN-9\n")
    assert fleet.cli("enroll", str(manifest))[0] == 0
    existing = fleet.provision("SN-OPEN-A", "gateway", thing_name="gateway-SN-OPEN-9")
    fleet.iot.create_thing(
        thingName="humidity-sensor-SN-OPEN-8", attributePayload={"attributes": {"serialNumber": "SN-OLD-8"}}
    )
    hook = fleet.outputs["provisioning_hook_function_name"]
    functions, iam = fleet.deployment.client("lambda"), fleet.deployment.client("iam")
    configuration = functions.get_function_configuration(FunctionName=hook)
    role = configuration["Role"].rsplit("/", 1)[1]
    (policy_name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    policy = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    things = fleet.iot.describe_thing(thingName=existing["thingName"])["thingArn"].rsplit("/", 1)[0] + "/*"
    describe = {"Effect": "Allow", "Action": ["iot:DescribeThing"], "Resource": things}
    opened = {**policy, "Statement": [*policy["Statement"], describe]}

    def restore() -> None:
        functions.update_function_configuration(FunctionName=hook, Environment=configuration["Environment"])
        iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(policy))

    request.addfinalizer(restore)
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(opened))
    variables = {**configuration["Environment"]["Variables"], "REQUIRE_ENROLLMENT": "false"}
    functions.update_function_configuration(FunctionName=hook, Environment={"Variables": variables})
    before = fleet.footprint("SN-OPEN-A")

    for serial, device_type in (("SN-OPEN-9", "gateway"), ("SN-OPEN-8", "humidity-sensor")):
        with pytest.raises(device.Failure, match="403 ACCESS_DENIED"):
            fleet.provision(serial, device_type, skip_device_check=True)
        decisions = fleet.cli("why", serial, "--json")[1]["decisions"]
        assert [d["reason"] for d in decisions] == ["THING_NAME_TAKEN"]
        assert fleet.dynamodb.get_item(TableName=fleet.table, Key={"serialNumber": {"S": serial}}).get("Item") is None

    fresh = fleet.provision("SN-OPEN-7", "gateway")  # an unclaimed name still registers once, reserved
    reservation = fleet.dynamodb.get_item(
        TableName=fleet.table, Key={"serialNumber": {"S": "thingName#gateway-SN-OPEN-7"}}
    )
    assert (fresh["thingName"], reservation["Item"]["reservedFor"]["S"]) == ("gateway-SN-OPEN-7", "SN-OPEN-7")
    restore()
    after = fleet.footprint("SN-OPEN-A")
    assert after[3] == before[3]  # the existing device's item as it was
    principals = fleet.iot.list_thing_principals(thingName="gateway-SN-OPEN-9")["principals"]
    assert [p.rsplit("/", 1)[1] for p in principals] == [existing["certificateId"]]
    device.connect(
        fleet.target, existing["certificateFile"], existing["privateKeyFile"], existing["thingName"], 15
    ).close()


QUOTA_BURST = 30  # devices asking at once: more than a second of the account's rate for each step


def warm_hook(fleet: Fleet) -> None:
    """Starts as many of the hook's workers as the sandbox runs at once, before a burst. On AWS a Lambda
    cold start takes well under IoT's 5 s for the hook; a cold worker on a busy 2-core machine may not
    (the burst's first ten RegisterThings were refused ACCESS_DENIED for it once), and the burst tests
    throttling, not cold starts. An empty event is denied INVALID_PARAMETERS, which no alarm counts."""
    functions = fleet.deployment.client("lambda")
    hook = fleet.outputs["provisioning_hook_function_name"]
    with ThreadPoolExecutor(max_workers=WORKERS_PER_FUNCTION) as pool:
        list(pool.map(lambda _: functions.invoke(FunctionName=hook, Payload=b"{}"), range(WORKERS_PER_FUNCTION)))


def throttled_so_far(endpoint: str) -> Counter[str]:
    """The requests the sandbox has throttled since it started, by API (its health report)."""
    report = health(endpoint)
    assert report is not None and "quotas" in report, report
    return Counter(report["quotas"]["throttled"])


def test_a_burst_beyond_the_accounts_quota_is_throttled_and_every_device_still_provisions(fleet: Fleet) -> None:
    """With AWS's default fleet-provisioning quotas (the session's sandbox: SandboxQuotas=aws), devices
    already connected with the claim certificate all ask at once, through the real SDK: more
    CreateCertificateFromCsr (20/s) and RegisterThing (10/s) requests than the account's buckets hold.
    The sandbox throttles some (400 ThrottlingException on the rejected topic); each device asks again
    with backoff and jitter, and every one provisions, with one thing and one certificate."""
    assert fleet.deployment.env["SandboxQuotas"] == "aws"
    serials = [f"SN-QUOTA-{n:02d}" for n in range(QUOTA_BURST)]
    for serial in serials:
        fleet.enroll(serial, "humidity-sensor")
    warm_hook(fleet)
    endpoint = fleet.deployment.state()["endpoint"]
    throttled_before = throttled_so_far(endpoint)
    context = device.tls_context(fleet.target, fleet.target.claim_cert, fleet.target.claim_key)
    claims = [
        device.connect(
            fleet.target, fleet.target.claim_cert, fleet.target.claim_key, f"claim-quota-{n}", 15, context=context
        )
        for n in range(QUOTA_BURST)
    ]
    together = threading.Barrier(QUOTA_BURST)

    def provision(n: int) -> dict[str, Any]:
        together.wait(30)  # every device connected: their first requests go out together
        args = fleet.args(serials[n], "humidity-sensor", csr=True, client_id=f"claim-quota-{n}")
        return device.provision(args, fleet.target, claim=claims[n])

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=QUOTA_BURST) as pool:
            results = list(pool.map(provision, range(QUOTA_BURST)))
    finally:
        for claim in claims:  # provision closed each one it got to; closing again is harmless
            claim.close()
    elapsed = time.monotonic() - started

    throttled: Counter[str] = Counter()
    for result in results:
        throttled.update(result["throttledAttempts"])
    assert sum(throttled.values()) > 0, "the burst was not throttled"
    served = throttled_so_far(endpoint) - throttled_before
    assert served == throttled  # every throttled answer the sandbox gave, a device counted and asked again
    for serial, result in zip(serials, results, strict=True):
        assert result["thingName"] == f"humidity-sensor-{serial}"
        assert result["shadowDesired"] == INITIAL_SHADOWS["humidity-sensor"]  # reconnected as the thing
        assert fleet.registry(serial)["status"] == "provisioned"
        principals = fleet.iot.list_thing_principals(thingName=result["thingName"])["principals"]
        assert [p.rsplit("/", 1)[1] for p in principals] == [result["certificateId"]]
    SUMMARY.append(
        f"quota burst: {QUOTA_BURST} devices at once, throttled {dict(throttled)}, all provisioned in {elapsed:.1f} s"
    )
