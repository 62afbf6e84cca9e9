"""The fleet-provisioning service's broker rules and rule actions (sandbox/iot_data_plane/fleet_provisioning.py,
broker.py): they follow the registry, and a throttled Lambda event is tried again."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest


def test_broker_rules_follow_registry_changes_made_over_http_without_a_pass_per_round(iot: Any) -> None:
    """The pass over every certificate runs when IoT was written over HTTP (a revocation, a policy
    change), when a CRL reload is still owed, or when forced; not every round while devices register
    in-process (each registration puts its own rules in force)."""
    from sandbox.iot.registry_writes import RegistryWrites
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount

    RegistryWrites.install()

    class Broker:
        reload_pending = False

        def crl(self, revoked: list[int]) -> bytes:
            return b""

        def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
            return

    class Rules:
        passes = 0
        stopped = ()  # nothing to disconnect

        def refresh(self, forget: bool = False) -> tuple[dict[str, str], list[int]]:
            self.passes += 1
            return {}, []

    broker, rules = Broker(), Rules()
    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), broker)  # type: ignore[arg-type]
    service.rules = rules  # type: ignore[assignment]
    try:
        service.refresh_rules()  # the first round always looks
        service.refresh_rules()
        iot.list_things()  # a read changes nothing
        service.refresh_rules()
        assert rules.passes == 1
        iot.create_thing(thingName="made-over-http")
        service.refresh_rules()
        service.refresh_rules()
        assert rules.passes == 2
        broker.reload_pending = True  # mosquitto still owes a CRL reload
        service.refresh_rules()
        assert rules.passes == 3
        broker.reload_pending = False
        service.refresh_rules(force=True)
        service._last_pass -= fleet_provisioning.FULL_PASS_SECONDS  # a minute without a pass
        service.refresh_rules()
        assert rules.passes == 5
    finally:
        service.stop()


def test_broker_rules_follow_a_policy_change_for_certificates_already_in_force(iot: Any) -> None:
    """A new default version of a policy (what `cdktf deploy` of a changed policy does) changes the
    rules of every certificate it is attached to at the next pass, as AWS applies it to connected
    devices; a write that is not about access leaves the described certificates as they were."""
    from sandbox.iot.registry_writes import RegistryWrites
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount

    RegistryWrites.install()

    def policy(topic: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iot:Connect",
                        "Resource": "arn:aws:iot:us-east-1:123456789012:client/*",
                    },
                    {
                        "Effect": "Allow",
                        "Action": "iot:Publish",
                        "Resource": f"arn:aws:iot:us-east-1:123456789012:topic/{topic}",
                    },
                ],
            }
        )

    class Broker:
        reload_pending = False

        def __init__(self) -> None:
            self.written: dict[str, str] = {}

        def crl(self, revoked: list[int]) -> bytes:
            return b""

        def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
            self.written = rules

    iot.create_policy(policyName="device", policyDocument=policy("telemetry/v1"))
    certificate = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName="device", target=certificate["certificateArn"])
    broker = Broker()
    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), broker)  # type: ignore[arg-type]
    try:
        service.refresh_rules()
        (rules,) = broker.written.values()
        assert "publish telemetry/v1" in rules.splitlines()
        iot.create_thing(thingName="unrelated")  # not about access: the certificate stays described
        service.refresh_rules()
        assert list(broker.written.values()) == [rules]
        iot.create_policy_version(policyName="device", policyDocument=policy("telemetry/v2"), setAsDefault=True)
        service.refresh_rules()
        (rules,) = broker.written.values()
        assert "publish telemetry/v2" in rules.splitlines() and "publish telemetry/v1" not in rules.splitlines()
        iot.detach_policy(policyName="device", target=certificate["certificateArn"])
        service.refresh_rules()
        assert broker.written == {}  # no policy: the certificate may do nothing
    finally:
        service.stop()


def test_a_write_over_http_puts_its_certificates_rules_in_force_before_it_answers(iot: Any) -> None:
    """What a function does to a certificate over HTTP (activate it with its policy and thing, revoke it,
    change its policy) is in the broker's rules when the call returns, with no pass over the registry:
    a device told of its new certificate connects with it at once. A revoked certificate's connections
    are closed at once and the CRL follows at the next round; a write AWS cannot trace to certificates
    (a thing group's policy) is left to a pass."""
    from sandbox.iot.registry_writes import RegistryWrites
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount

    RegistryWrites.install()
    document = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:us-east-1:123456789012:client/*"},
                {
                    "Effect": "Allow",
                    "Action": "iot:Publish",
                    "Resource": "arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/up",
                },
            ],
        }
    )

    class Broker:
        reload_pending = False

        def __init__(self) -> None:
            self.files: dict[str, str] = {}
            self.crls: list[list[int]] = []

        def crl(self, revoked: list[int]) -> bytes:
            self.crls.append(revoked)
            return b"crl"

        def write_identity_rules(self, identity: str, text: str) -> None:
            self.files[identity] = text

        def remove_identity_rules(self, identity: str) -> None:
            self.files.pop(identity, None)

        def write_crl(self, crl: bytes) -> None:
            pass

        def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
            self.files = dict(rules)

    iot.create_policy(policyName="device", policyDocument=document)
    iot.create_thing(thingName="dev-1")
    broker = Broker()
    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), broker)  # type: ignore[arg-type]
    kicked: list[str] = []
    service.disconnect = kicked.append  # type: ignore[method-assign]
    RegistryWrites.listener = service.certificates_changed
    try:
        service.refresh_rules()  # the first pass, as the service makes when it starts
        passes_before = RegistryWrites.count()
        created = iot.create_keys_and_certificate(setAsActive=False)
        arn, certificate_id = created["certificateArn"], created["certificateId"]
        iot.attach_policy(policyName="device", target=arn)
        iot.attach_thing_principal(thingName="dev-1", principal=arn)
        assert broker.files == {}  # not ACTIVE yet
        iot.update_certificate(certificateId=certificate_id, newStatus="ACTIVE")
        (identity,) = broker.files
        assert "publish dev-1/up" in broker.files[identity].splitlines()
        iot.update_certificate(certificateId=certificate_id, newStatus="REVOKED")
        assert broker.files == {} and kicked == [identity]
        assert RegistryWrites.count() == passes_before  # every write above was traced: no pass owed
        service.refresh_rules()  # the next round writes the CRL with the revoked serial
        assert len(broker.crls[-1]) == 1
        iot.create_thing_group(thingGroupName="line-1")
        assert RegistryWrites.count() > passes_before  # not traced: a pass follows it
    finally:
        RegistryWrites.listener = None
        service.stop()


def test_certificates_that_stop_being_active_are_named_for_disconnection_after_the_next_pass(iot: Any) -> None:
    """AWS closes the connections of a certificate once it is revoked, deactivated or deleted; the
    sandbox's pass names those certificates' identities (the broker's user names) so the broker can
    close them too. One whose policy was detached first (as decommissioning does) is named as well;
    one still ACTIVE, or never ACTIVE, is not."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.iot_data_plane.broker import RegistryRules
    from sandbox.iot_data_plane.local_account import LocalAccount

    def certificate(name: str, status: str = "ACTIVE") -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        pem = (
            (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256())
            )
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        created = iot.register_certificate_without_ca(certificatePem=pem, status=status)
        if status == "ACTIVE":
            iot.attach_policy(policyName="device", target=created["certificateArn"])
        return created["certificateId"], created["certificateArn"]

    iot.create_policy(
        policyName="device",
        policyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iot:Connect",
                        "Resource": "arn:aws:iot:us-east-1:123456789012:client/*",
                    }
                ],
            }
        ),
    )
    revoked, deactivated, deleted, detached, kept = (
        certificate(n) for n in ("revoked", "deactivated", "deleted", "detached", "kept")
    )
    never_active = certificate("never-active", status="INACTIVE")
    rules = RegistryRules(LocalAccount("us-east-1"))
    rules.refresh()
    assert rules.stopped == []

    iot.update_certificate(certificateId=revoked[0], newStatus="REVOKED")
    iot.update_certificate(certificateId=deactivated[0], newStatus="INACTIVE")
    iot.update_certificate(certificateId=deleted[0], newStatus="INACTIVE")
    iot.detach_policy(policyName="device", target=deleted[1])
    iot.delete_certificate(certificateId=deleted[0])
    iot.detach_policy(policyName="device", target=detached[1])
    rules.refresh(forget=True)  # the detachment: rules gone, the certificate still ACTIVE (AWS keeps it connected)
    assert rules.stopped == ["deactivated", "deleted", "revoked"]
    iot.update_certificate(certificateId=detached[0], newStatus="INACTIVE")
    iot.update_certificate(certificateId=never_active[0], newStatus="REVOKED")
    rules.refresh()
    assert rules.stopped == ["detached"]
    rules.refresh()
    assert rules.stopped == []  # named once
    assert kept[0] in {c.certificate_id for c in LocalAccount("us-east-1").certificates() if c.status == "ACTIVE"}


def test_a_rule_s_throttled_lambda_event_is_tried_again_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic rule invokes its function asynchronously: when the function's reserved concurrency is
    taken, Lambda keeps the event and tries again (rotation requests from many devices at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import AwsError

    calls: list[str] = []

    class Account:
        def invoke(self, function: str, event: Any) -> None:
            calls.append(function)
            if len(calls) < 3:
                raise AwsError(429, "TooManyRequestsException", "Rate Exceeded.")

        def event_max_age(self, function: str) -> float | None:
            return 120.0

    monkeypatch.setattr(fleet_provisioning.time, "sleep", lambda _: None)
    service = object.__new__(fleet_provisioning.FleetProvisioningService)
    service.account = Account()  # type: ignore[assignment]
    service._throttled = ThreadPoolExecutor(max_workers=1)

    service._invoke_asynchronously("arn:aws:lambda:us-east-1:123456789012:function:f", {"topic": "t"})
    service._throttled.shutdown(wait=True)  # the retries run on a pool of their own

    assert len(calls) == 3

    class Refusing(Account):
        def invoke(self, function: str, event: Any) -> None:
            raise AwsError(400, "InvalidRequestContentException", "bad")

    service.account = Refusing()  # type: ignore[assignment]
    with pytest.raises(AwsError, match="InvalidRequestContentException"):  # any other failure: the action's
        service._invoke_asynchronously("arn:aws:lambda:us-east-1:123456789012:function:f", {"topic": "t"})


def test_a_certificate_made_over_mqtt_waits_pending_and_goes_once_its_token_expires_unused(iot: Any) -> None:
    """PENDING_ACTIVATION until RegisterThing (fleet-provision-api.html); one whose token expired unused
    is removed, one a registration used its token for stays as the template set it."""
    import time

    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount

    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), None, token_lifetime=0.3)  # type: ignore[arg-type]
    try:
        unused = service.create_keys_and_certificate()["certificateId"]
        registered = service.create_keys_and_certificate()
        status = {c["certificateId"]: c["status"] for c in iot.list_certificates()["certificates"]}
        assert status == {unused: "PENDING_ACTIVATION", registered["certificateId"]: "PENDING_ACTIVATION"}
        with service._tokens_lock:  # what a successful RegisterThing does: uses the token, sets the status
            del service.tokens[registered["certificateOwnershipToken"]]
        iot.update_certificate(certificateId=registered["certificateId"], newStatus="ACTIVE")

        assert service.remove_unregistered() == []  # its hour is not over
        time.sleep(0.4)
        assert service.remove_unregistered() == [unused]

        remaining = {c["certificateId"]: c["status"] for c in iot.list_certificates()["certificates"]}
        assert remaining == {registered["certificateId"]: "ACTIVE"}
    finally:
        service.stop()


class Answers:
    """The service's MQTT connection, as far as its answers go: what it published, to whom."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: str, qos: Any) -> None:
        self.sent.append((topic, json.loads(payload)))


class AtOnce:
    """The service's worker pool, running each request as it is handed over (the test's order is theirs)."""

    def submit(self, function: Any, *args: Any) -> None:
        function(*args)

    def shutdown(self, **_: Any) -> None:
        return


def provisioning_setup(iot: Any) -> str:
    """A template whose role may do everything, without a hook: RegisterThing makes the thing it names."""
    import boto3

    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam = boto3.client("iam", region_name="us-east-1")
    role = iam.create_role(RoleName="provisioning", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    iam.put_role_policy(RoleName="provisioning", PolicyName="all-of-iot", PolicyDocument=json.dumps(allow))
    body = {
        "Parameters": {"SerialNumber": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "SerialNumber"}}},
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
            },
        },
    }
    iot.create_provisioning_template(
        templateName="fleet", templateBody=json.dumps(body), provisioningRoleArn=role, enabled=True
    )
    return "$aws/provisioning-templates/fleet/provision/json"


def test_requests_beyond_the_accounts_quota_are_refused_as_throttled_and_change_nothing(iot: Any) -> None:
    """SandboxQuotas=aws: a request that finds its API's bucket empty gets the rejected topic's error with
    the control plane's throttling code, and nothing is done for it: no certificate, no ownership token,
    no thing; the token of a throttled RegisterThing stays usable, and once the bucket refills the same
    request is served."""
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount
    from sandbox.iot_data_plane.quotas import Quotas

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    class Broker:  # a registration puts its certificate's rules in force
        def write_identity_rules(self, identity: str, text: str) -> None:
            return

    clock = Clock()
    rates = {"CreateKeysAndCertificate": 2.0, "CreateCertificateFromCsr": 2.0, "RegisterThing": 1.0}
    provision = provisioning_setup(iot)
    service = fleet_provisioning.FleetProvisioningService(
        LocalAccount("us-east-1"),
        Broker(),  # type: ignore[arg-type]
        quotas=Quotas(rates, clock),
    )
    service.connection, service._pool = Answers(), AtOnce()  # type: ignore[assignment]
    answers: Answers = service.connection  # type: ignore[assignment]

    def ask(topic: str, body: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        service._on_request(f"fp/req/claim-identity/claim-device/{topic}", json.dumps(body or {}).encode())
        sent, answer = answers.sent.pop()
        return sent.removeprefix(f"fp/resp/claim-device/{topic}/"), answer

    throttled = {"statusCode": 429, "errorCode": "ThrottlingException", "errorMessage": "The rate exceeds the limit."}
    try:
        created = [ask("$aws/certificates/create/json") for _ in range(3)]
        assert [outcome for outcome, _ in created] == ["accepted", "accepted", "rejected"]
        assert created[2][1] == throttled
        assert len(iot.list_certificates()["certificates"]) == 2  # none made for the throttled request
        assert len(service.tokens) == 2

        token = created[0][1]["certificateOwnershipToken"]
        request = {"certificateOwnershipToken": token, "parameters": {"SerialNumber": "SN-1"}}
        spent = ask(provision, {"certificateOwnershipToken": "not-a-token"})  # admitted: takes the second's token
        assert spent[1]["errorCode"] == "InvalidCertificateOwnershipToken"
        assert ask(provision, request) == ("rejected", throttled)
        assert iot.list_things()["things"] == []
        assert token in service.tokens  # not used up: the device asks again with it

        clock.now += 1.0  # a second later the bucket holds a request again
        outcome, registered = ask(provision, request)

        assert (outcome, registered["thingName"]) == ("accepted", "SN-1")
        assert [thing["thingName"] for thing in iot.list_things()["things"]] == ["SN-1"]
        assert service.quotas is not None
        assert service.quotas.throttled == {"CreateKeysAndCertificate": 1, "RegisterThing": 1}
    finally:
        service.stop()


def test_the_quota_is_decided_as_a_request_arrives_not_when_a_worker_takes_it_up(iot: Any) -> None:
    """Requests that arrive together and wait in the worker pool behind slow ones (hooks) are admitted or
    throttled by their arrival, as at AWS's front door: the bucket's refill while they wait admits none."""
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount
    from sandbox.iot_data_plane.quotas import Quotas

    now = [0.0]

    class Later:  # a busy pool: runs what it was handed only when told
        def __init__(self) -> None:
            self.queued: list[tuple[Any, tuple[Any, ...]]] = []

        def submit(self, function: Any, *args: Any) -> None:
            self.queued.append((function, args))

        def shutdown(self, **_: Any) -> None:
            return

    service = fleet_provisioning.FleetProvisioningService(
        LocalAccount("us-east-1"),
        None,  # type: ignore[arg-type]
        quotas=Quotas({"CreateKeysAndCertificate": 2.0}, lambda: now[0]),
    )
    pool = Later()
    service.connection, service._pool = Answers(), pool  # type: ignore[assignment]

    def arrive(count: int) -> None:
        for _ in range(count):
            service._on_request("fp/req/claim-identity/claim-device/$aws/certificates/create/json", b"")

    def run_queued() -> None:
        while pool.queued:
            function, args = pool.queued.pop(0)
            function(*args)

    try:
        arrive(2)  # the second's two requests: served at once
        run_queued()
        arrive(3)  # the same second: over the rate, then kept waiting
        now[0] += 10.0  # the bucket refills while they wait
        run_queued()
        outcomes = [topic.rsplit("/", 1)[1] for topic, _ in service.connection.sent]  # type: ignore[attr-defined]
        assert outcomes == ["accepted", "accepted", "rejected", "rejected", "rejected"]
    finally:
        service.stop()


def test_without_quotas_no_request_is_throttled(iot: Any) -> None:
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.iot_data_plane.local_account import LocalAccount

    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), None)  # type: ignore[arg-type]
    service.connection, service._pool = Answers(), AtOnce()  # type: ignore[assignment]
    try:
        for _ in range(12):  # more than a second of AWS's rate for CreateKeysAndCertificate, at once
            service._on_request("fp/req/claim-identity/claim-device/$aws/certificates/create/json", b"")
        outcomes = [topic.rsplit("/", 1)[1] for topic, _ in service.connection.sent]  # type: ignore[attr-defined]
        assert outcomes == ["accepted"] * 12
    finally:
        service.stop()


def test_a_certificate_the_sandbox_ca_did_not_sign_never_reaches_the_rules_of_the_cn_it_copies(iot: Any) -> None:
    """The broker knows a connection by its certificate's subject CN. A certificate registered without a
    CA (anyone allowed RegisterCertificateWithoutCA can copy a device's CN from DescribeCertificate) gets
    no rules: a broad policy attached to it never widens the device's, and deactivating it never closes
    the device's connection. On AWS it has no effect on the device either."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.iot_data_plane.broker import RegistryRules
    from sandbox.iot_data_plane.local_account import LocalAccount

    def issued(
        subject: str,
        signer: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> x509.Certificate:
        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "sandbox CA")])
    ca = issued("sandbox CA", ca_key, ca_name, key=ca_key)
    forger = ec.generate_private_key(ec.SECP256R1())

    def register(certificate: x509.Certificate, policy: str) -> str:
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        created = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        iot.attach_policy(policyName=policy, target=created["certificateArn"])
        return str(created["certificateId"])

    def policy(name: str, topic: str) -> None:
        statements = [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:us-east-1:123456789012:client/*"},
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": f"arn:aws:iot:us-east-1:123456789012:topic/{topic}",
            },
        ]
        iot.create_policy(
            policyName=name, policyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements})
        )

    policy("device", "telemetry")
    policy("broad", "*")
    device = register(issued("device-cn", ca_key, ca_name), "device")
    forged = register(
        issued("device-cn", forger, x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])), "broad"
    )
    rules = RegistryRules(LocalAccount("us-east-1"), ca)

    files, _ = rules.update({device, forged})
    assert list(files) == ["device-cn"] and "publish telemetry" in (files["device-cn"] or "")
    assert "publish *" not in (files["device-cn"] or "")
    iot.update_certificate(certificateId=forged, newStatus="INACTIVE")
    files, _ = rules.update({forged})
    assert files == {} and rules.stopped == []  # the device's rules and connection stay as they were
    full, _ = rules.refresh(forget=True)
    assert set(full) == {"device-cn"} and "publish *" not in full["device-cn"]
