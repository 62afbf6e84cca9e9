#!/usr/bin/env python
"""Provision one device by claim, exactly as a device in the field does, with the AWS IoT Device SDK v2.

1. connect (MQTT 5, mutual TLS) with the claim certificate;
2. CreateKeysAndCertificate (or, with --csr, CreateCertificateFromCsr: the device keeps its key);
3. RegisterThing on the fleet-provisioning template with the device's parameters and, with
   --factory-key, its attestation: the factory key's signature over serial, new certificate id and
   template name (the hook checks it against the key enrolled for the serial);
4. reconnect with the new certificate as the thing, read its shadow, publish one telemetry message.

The claim connection's client id starts with the stack's claim client-id prefix (its
claim_client_id_prefix output, else claim-): the claim policy allows no other.

Endpoint, claim certificate, CA and template name default to the deployed stack's outputs
(`terraform output -json` in --stack-dir) and, for the sandbox target, to the sandbox's state
(scripts/deployed_stack.py).

A request AWS IoT throttles (the account's rate for the API is taken: ThrottlingException) is asked
again with exponential backoff and full jitter, at most --throttle-attempts times within
--throttle-seconds; any other refusal is final. The result counts the throttled attempts.

Exit codes: 0 provisioned; 2 bad arguments or setup; 3 could not connect with the claim
certificate; 4 certificate creation rejected (or still THROTTLED when the retries ran out); 5
RegisterThing rejected (e.g. 403 ACCESS_DENIED when the hook refuses the device; or still THROTTLED);
6 the new certificate could not connect, read its shadow or publish.

`rotate` (`test_provisioning.py rotate --thing-name T --cert C --key K`, see `rotate --help`) trades
a provisioned device's certificate for a new one from its own CSR; exit codes: 0 rotated (or, with
--if-requested, nothing was asked); 2 setup; 6 the current certificate could not connect; 7 the
request was refused or not answered; 8 the new certificate could not connect or its confirmation
was refused (the current certificate still works: rotate again).

Example:
  scripts/test_provisioning.py --serial-number TEST123456 --device-type temperature-sensor \\
      --manufacturer AcmeIoT --firmware-version v1.0.0
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from awscrt import io, mqtt5, mqtt_request_response
from awsiot import V2ServiceException, iotidentity, iotshadow, mqtt5_client_builder
from awsiot._iot_metrics import _build_sdk_metrics  # what the SDK's builder sends
from botocore.retries.standard import ThrottledRetryableChecker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scripts.deployed_stack import DeployedStack, StackError
from scripts.fleet_ops.hook_rules import hook  # the message the hook verifies, defined there once

ROOT = Path(__file__).resolve().parents[1]


OK, USAGE, CLAIM_CONNECT, CERTIFICATE_REJECTED, REGISTER_REJECTED, DEVICE_FAILED = 0, 2, 3, 4, 5, 6
ROTATION_REFUSED, NEW_CERTIFICATE_FAILED = 7, 8
ROTATION_TOPICS = "fleet/rotation"  # constructs/iot_fleet/documents.py and lambda/certificate_rotation
ROTATION_MARK = "certificateRotation"  # shadow desired.<mark> = a rotation id: `fleet expiring --rotate`


class Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.throttled: dict[str, int] = {}  # throttled attempts by step before it failed (provision)


@dataclass
class Target:
    endpoint: str
    port: int
    ca_file: str
    template_name: str
    claim_cert: str
    claim_key: str
    # The SDK paces a client to AWS IoT Core's per-connection limits by default (at most 100 publishes
    # a second, 512 KB/s), which spaces each subscribe and publish about 8 ms apart (measured: a
    # tenth of a second per provisioned device). The sandbox's broker has no such limits to respect.
    iot_core_limits: bool = True
    claim_client_id_prefix: str = "claim-"  # ClaimClientIdPrefix: the claim policy allows only these client ids


def _write_private(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return str(path)


def resolve_target(args: argparse.Namespace) -> Target:
    """Fills what was not given from the deployed stack's outputs and, for the sandbox, its state."""
    stack = None
    if not (args.claim_cert and args.claim_key and args.template_name and args.endpoint):
        try:
            stack = DeployedStack.load(args.stack_dir)
        except StackError as error:
            raise Failure(USAGE, f"{error} (or give the claim certificate, key, template and endpoint)") from None
    outputs = stack.outputs if stack else {}
    mqtt = None
    if stack is not None and not args.endpoint:
        try:
            mqtt = stack.mqtt()
        except StackError as error:
            raise Failure(USAGE, f"no --endpoint, and {error}") from None
    sandbox_broker = mqtt is not None and stack is not None and not stack.on_aws
    out = Path(args.output_dir)
    claim_cert = args.claim_cert or _write_private(out / "claim.pem.crt", outputs["claim_certificate_pem"])
    claim_key = args.claim_key or (
        _write_private(out / "claim.private.key", outputs["claim_private_key"])
        if outputs.get("claim_private_key")
        else outputs.get("claim_private_key_file", "")  # made by synth, kept out of state (Target=aws)
    )
    if not claim_key:
        raise Failure(USAGE, "the claim key is not in the stack (CSR claim certificate): give --claim-key")
    if not args.claim_key and not Path(claim_key).is_file():
        raise Failure(
            USAGE,
            f"claim key {claim_key} not found on this machine (synth made it where the stack "
            "was synthesized): give --claim-key",
        )
    return Target(
        endpoint=args.endpoint or (mqtt.host if mqtt else ""),
        port=args.port or (mqtt.port if mqtt else 8883),
        ca_file="" if getattr(args, "system_trust", False) else args.ca or (mqtt.ca_file if mqtt else ""),
        template_name=args.template_name or outputs["provisioning_template_name"],
        claim_cert=claim_cert,
        claim_key=claim_key,
        iot_core_limits=not sandbox_broker,
        claim_client_id_prefix=(
            args.client_id_prefix
            if getattr(args, "client_id_prefix", None) is not None
            else stack.claim_client_id_prefix
            if stack is not None
            else "claim-"
        ),
    )


def trust_only(ca_file: str) -> None:
    """Makes the given CA bundle this process's default trust store, as on a device.

    With a CA override the SDK still parses the whole system bundle for every connection before
    replacing it (measured: three quarters of a simulated device's CPU). A device carries only the
    roots its endpoint needs; pointing the default at that bundle gives the same trust, cheaply.
    """
    if ca_file:
        os.environ["SSL_CERT_FILE"] = str(Path(ca_file).resolve())


class Connection:
    """An MQTT 5 client that is connected, and that `close()` stops completely.

    The SDK stops a client asynchronously; dropping the last reference to it (or to a service
    client built on it) before it has stopped crashed the process now and then (a segfault in the
    CRT's event loop, reproduced by provisioning devices back to back). `close()` waits for the
    client's Stopped event, so nothing is freed while the CRT still uses it.
    """

    def __init__(self, client: mqtt5.Client, stopped: threading.Event) -> None:
        self.client = client
        self._stopped = stopped

    def close(self, timeout: float = 10.0) -> None:
        self.client.stop()
        self._stopped.wait(timeout)


def tls_context(target: Target, cert: str, key: str) -> io.ClientTlsContext:
    """A TLS context for one certificate and key, to connect many times with (see `connect`)."""
    options = io.TlsContextOptions.create_client_with_mtls_from_path(cert, key)
    if target.ca_file:
        options.override_default_trust_store_from_path(None, target.ca_file)
    if target.port == 443 and io.is_alpn_available():
        options.alpn_list = ["x-amzn-mqtt-ca"]  # MQTT over 443 to AWS IoT, as the SDK's builder sets it
    return io.ClientTlsContext(options)


def connect(
    target: Target,
    cert: str,
    key: str,
    client_id: str,
    timeout: float,
    sdk_metrics: bool = True,
    context: io.ClientTlsContext | None = None,
    on_disconnection: Callable[[Any], None] | None = None,
    on_publish: Callable[[Any], None] | None = None,
) -> Connection:
    """Connects with the SDK's mTLS builder, or with `context` (from `tls_context`) for this certificate.
    `on_disconnection` is called with the SDK's event each time the connection drops.

    Loading a certificate and key into a TLS context costs a private-key signature (the TLS library
    checks that they match): for an RSA claim key, a quarter of a simulated device's CPU. A fleet
    simulator shares one claim certificate among all its devices, so it loads it once per process;
    every connection still makes its own full handshake.
    """
    if len(client_id.encode()) > 128:  # AWS IoT's limit; the SDK checks it only with its IoT Core defaults
        raise ValueError(f"the client id {client_id[:32]}... is longer than the 128 bytes AWS IoT accepts")
    connected: Future[None] = Future()
    stopped = threading.Event()

    def on_success(_: Any) -> None:
        if not connected.done():
            connected.set_result(None)

    def on_failure(data: Any) -> None:
        if not connected.done():
            connected.set_exception(RuntimeError(str(getattr(data, "exception", data))))

    flow_control = (
        mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
        if target.iot_core_limits
        else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
    )
    if context is None:
        options: dict[str, Any] = {}
        if target.ca_file:
            options["ca_filepath"] = target.ca_file
        client = mqtt5_client_builder.mtls_from_path(
            endpoint=target.endpoint,
            port=target.port,
            cert_filepath=cert,
            pri_key_filepath=key,
            client_id=client_id,
            on_lifecycle_connection_success=on_success,
            on_lifecycle_connection_failure=on_failure,
            on_lifecycle_stopped=lambda _: stopped.set(),
            enable_metrics_collection=sdk_metrics,
            on_lifecycle_disconnection=on_disconnection,
            on_publish_received=on_publish,
            extended_validation_and_flow_control_options=flow_control,
            **options,
        )
    else:  # what the builder configures for a direct mTLS connection, with the given context
        client = mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=target.endpoint,
                port=target.port,
                tls_ctx=context,
                connect_options=mqtt5.ConnectPacket(client_id=client_id, username="", keep_alive_interval_sec=1200),
                extended_validation_and_flow_control_options=flow_control,
                disable_metrics=not sdk_metrics,
                metrics=_build_sdk_metrics() if sdk_metrics else None,
                on_lifecycle_event_connection_success_fn=on_success,
                on_lifecycle_event_connection_failure_fn=on_failure,
                on_lifecycle_event_stopped_fn=lambda _: stopped.set(),
                on_lifecycle_event_disconnection_fn=on_disconnection,
                on_publish_callback_fn=on_publish,
            )
        )
    connection = Connection(client, stopped)
    client.start()
    try:
        connected.result(timeout=timeout)
    except Exception:
        connection.close()
        raise
    return connection


def rejection(error: BaseException) -> str:
    if isinstance(error, V2ServiceException) and error.modeled_error is not None:
        modeled = error.modeled_error
        return f"{getattr(modeled, 'status_code', '?')} {getattr(modeled, 'error_code', '?')}: " + str(
            getattr(modeled, "error_message", "")
        )
    return f"{type(error).__name__}: {error}"


# Error codes AWS services answer when they throttle: botocore's own list (its standard retry mode), and
# "Throttled". AWS's developer guide does not document the rejected topic's answer to a throttled
# fleet-provisioning request; AWS's embedded C SDK names status 429 for it and the IoT control plane's code is
# ThrottlingException: a 429, any of these codes or a "rate exceeded" message are each taken as throttling.
THROTTLING_CODES = frozenset(code.lower() for code in (*ThrottledRetryableChecker._THROTTLED_ERROR_CODES, "Throttled"))


def throttled(error: BaseException) -> bool:
    """Whether AWS IoT refused the request for the account's rate (ask again later), not for what it asked."""
    modeled = error.modeled_error if isinstance(error, V2ServiceException) else None
    if modeled is None:
        return False
    code = str(getattr(modeled, "error_code", "") or "").lower()
    message = str(getattr(modeled, "error_message", "") or "").lower()
    if getattr(modeled, "status_code", None) == 429 or code in THROTTLING_CODES:
        return True
    # The message only where no code says otherwise: a refusal's text can quote what the device sent.
    return not code and "rate exceeded" in message


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How a throttled request is asked again: exponential backoff with full jitter, the n-th wait drawn
    uniformly from 0 to min(cap, base * 2**n) seconds, so devices turned away together come back spread
    out; at most `attempts` requests, and no wait that would end past `budget` seconds."""

    base: float = 0.1
    cap: float = 4.0
    # A device among many at the account's rate may lose most tries (about 4 in 5 at 50 devices for RegisterThing's
    # 10/s, measured: bench/README.md): room for the unluckiest of a thousand, within minutes.
    attempts: int = 100
    budget: float = 300.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.attempts < 1 or self.budget <= 0:
            raise ValueError(f"a backoff needs 0 < base <= cap, at least one attempt and a budget: {self}")

    def wait(self, retry: int, uniform: Callable[[float, float], float]) -> float:
        """The wait before retry number `retry` (0 for the first)."""
        return uniform(0.0, min(self.cap, self.base * 2.0 ** min(retry, 64)))


class ThrottlingExhausted(Exception):
    def __init__(self, step: str, attempts: int, seconds: float, last: str) -> None:
        super().__init__(
            f"{step} still THROTTLED after {attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.1f} s "
            f"(last answer {last}): the account's rate for it is taken; try again later, or provision fewer "
            "devices at once"
        )


T = TypeVar("T")
# Drawn from the system's randomness: a random.Random made at import would give every process the
# simulator forks the same draws, and devices throttled together would come back together.
_JITTER = random.SystemRandom()


def retry_throttled(
    step: str,
    request: Callable[[], T],
    backoff: Backoff,
    counts: Counter[str],
    *,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    uniform: Callable[[float, float], float] | None = None,
) -> T:
    """`request()`'s answer, asking again while AWS IoT throttles it (each throttled answer counted in
    `counts[step]`); ThrottlingExhausted once `backoff` is spent. Any other failure is raised at once: a
    refusal of what was asked is not asked again blindly."""
    sleep, clock, uniform = sleep or time.sleep, clock or time.monotonic, uniform or _JITTER.uniform
    started = clock()
    for attempt in range(1, backoff.attempts + 1):
        try:
            return request()
        except Exception as error:
            if not throttled(error):
                raise
            counts[step] += 1
            wait, spent = backoff.wait(attempt - 1, uniform), clock() - started
            if attempt == backoff.attempts or spent + wait > backoff.budget:
                raise ThrottlingExhausted(step, attempt, spent, rejection(error)) from None
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number above zero (else the usage error, exit code 2)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above zero")
        return value

    return parse


def backoff_of(args: argparse.Namespace) -> Backoff:
    """The retry budget --throttle-attempts and --throttle-seconds give (the defaults where not given)."""
    default = Backoff()
    return Backoff(
        attempts=default.attempts if getattr(args, "throttle_attempts", None) is None else args.throttle_attempts,
        budget=default.budget if getattr(args, "throttle_seconds", None) is None else args.throttle_seconds,
    )


def csr_and_key(key_type: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")]))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return csr.public_bytes(serialization.Encoding.PEM).decode(), pem_key


def load_factory_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The device's factory key (PEM, EC P-256): on a real device it stays in its secure element."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise Failure(USAGE, f"--factory-key {path}: not a readable PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Failure(USAGE, f"--factory-key {path}: the factory key must be an EC P-256 key")
    return key


def attestation(key: ec.EllipticCurvePrivateKey, serial: str, certificate_id: str, template_name: str) -> str:
    """AttestationSignature: base64 of the DER ECDSA-SHA256 signature of hook.attestation_message."""
    message = hook.attestation_message(serial, certificate_id, template_name)
    return base64.b64encode(key.sign(message, ec.ECDSA(hashes.SHA256()))).decode()


def _sdk_metrics(args: argparse.Namespace) -> bool:
    """The SDK names itself in CONNECT unless told not to (the fleet simulator does not)."""
    return bool(getattr(args, "sdk_metrics", True))


def provision(
    args: argparse.Namespace,
    target: Target,
    claim_context: io.ClientTlsContext | None = None,
    claim: Connection | None = None,
) -> dict[str, Any]:
    """Provisions one device; `claim_context` (from `tls_context`) reuses a loaded claim certificate;
    `claim`: a connection the device made with its claim certificate already (closed here when done).
    The result's throttledAttempts (a Failure's `throttled`) counts the requests AWS IoT throttled, by step."""
    counts: Counter[str] = Counter()
    try:
        return _provision(args, target, claim_context, claim, counts)
    except Failure as failure:
        failure.throttled = dict(counts)
        raise


def _provision(
    args: argparse.Namespace,
    target: Target,
    claim_context: io.ClientTlsContext | None,
    claim: Connection | None,
    counts: Counter[str],
) -> dict[str, Any]:
    started = time.monotonic()
    backoff = backoff_of(args)
    factory_key = load_factory_key(args.factory_key) if getattr(args, "factory_key", None) else None
    client_id = args.client_id or f"{target.claim_client_id_prefix}{args.serial_number}-{uuid.uuid4().hex[:6]}"
    if claim is None:
        try:
            claim = connect(
                target, target.claim_cert, target.claim_key, client_id, args.timeout, _sdk_metrics(args), claim_context
            )
        except Exception as error:  # noqa: BLE001 - reported with its exit code
            raise Failure(CLAIM_CONNECT, f"could not connect with the claim certificate: {error}") from None
    identity = iotidentity.IotIdentityClientV2(
        claim.client, mqtt_request_response.ClientOptions(4, 2, operation_timeout_in_seconds=int(args.timeout))
    )
    try:
        try:
            if args.csr:
                csr, private_key = csr_and_key(args.key_type)
                created = retry_throttled(
                    "CreateCertificateFromCsr",
                    lambda: identity.create_certificate_from_csr(
                        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr)
                    ).result(timeout=args.timeout),
                    backoff,
                    counts,
                )
            else:
                created = retry_throttled(
                    "CreateKeysAndCertificate",
                    lambda: identity.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(
                        timeout=args.timeout
                    ),
                    backoff,
                    counts,
                )
                private_key = created.private_key
        except ThrottlingExhausted as exhausted:
            raise Failure(CERTIFICATE_REJECTED, f"certificate creation rejected: {exhausted}") from None
        except Exception as error:  # noqa: BLE001
            raise Failure(CERTIFICATE_REJECTED, f"certificate creation rejected: {rejection(error)}") from None
        parameters = {
            "SerialNumber": args.serial_number,
            "DeviceType": args.device_type,
            "Manufacturer": args.manufacturer,
            "FirmwareVersion": args.firmware_version,
            "Location": args.location,
            "ThingName": args.thing_name,
        }
        if factory_key is not None:  # signed for this very certificate: a copy is worth nothing to another
            parameters["AttestationSignature"] = attestation(
                factory_key, args.serial_number, created.certificate_id, target.template_name
            )
        request = iotidentity.RegisterThingRequest(
            template_name=target.template_name,
            certificate_ownership_token=created.certificate_ownership_token,
            parameters={k: v for k, v in parameters.items() if v},
        )
        try:
            # A throttled RegisterThing changed nothing: the same token (valid an hour) is asked again.
            registered = retry_throttled(
                "RegisterThing",
                lambda: identity.register_thing(request).result(timeout=args.timeout),
                backoff,
                counts,
            )
        except ThrottlingExhausted as exhausted:
            raise Failure(REGISTER_REJECTED, f"RegisterThing rejected: {exhausted}") from None
        except Exception as error:  # noqa: BLE001
            raise Failure(REGISTER_REJECTED, f"RegisterThing rejected: {rejection(error)}") from None
    finally:
        identity = None  # released before its connection stops; the retries' lambdas hold only the name
        claim.close()
    thing = registered.thing_name
    out = Path(args.output_dir)
    cert_file = _write_private(out / f"{thing}.pem.crt", created.certificate_pem)
    key_file = _write_private(out / f"{thing}.private.key", private_key)
    provisioned_at = time.monotonic()
    result: dict[str, Any] = {
        "thingName": thing,
        "certificateId": created.certificate_id,
        "deviceConfiguration": registered.device_configuration,
        "certificateFile": cert_file,
        "privateKeyFile": key_file,
        "provisionSeconds": round(provisioned_at - started, 3),
        "throttledAttempts": dict(counts),
    }
    if args.skip_device_check:
        return result
    try:
        device = connect(target, cert_file, key_file, thing, args.timeout, _sdk_metrics(args))
    except Exception as error:  # noqa: BLE001
        raise Failure(DEVICE_FAILED, f"the new certificate could not connect as {thing}: {error}") from None
    try:
        shadow_client = iotshadow.IotShadowClientV2(
            device.client, mqtt_request_response.ClientOptions(2, 2, operation_timeout_in_seconds=int(args.timeout))
        )
        try:
            shadow = shadow_client.get_shadow(iotshadow.GetShadowRequest(thing_name=thing)).result(timeout=args.timeout)
            result["shadowDesired"] = shadow.state.desired if shadow.state else None
        except Exception as error:  # noqa: BLE001
            raise Failure(DEVICE_FAILED, f"reading the shadow failed: {rejection(error)}") from None
        telemetry = {"serialNumber": args.serial_number, "timestamp": int(time.time()), "status": "provisioned"}
        topic = registered.device_configuration.get("telemetryTopic") or f"devices/{thing}/telemetry"
        published = device.client.publish(
            mqtt5.PublishPacket(topic=topic, payload=json.dumps(telemetry).encode(), qos=mqtt5.QoS.AT_LEAST_ONCE)
        ).result(timeout=args.timeout)
        code = getattr(getattr(published, "puback", None), "reason_code", None)
        if code not in (None, mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS):
            raise Failure(DEVICE_FAILED, f"publishing telemetry to {topic} was refused: {code}")
        result["telemetryTopic"] = topic
    finally:
        shadow_client = None
        device.close()
    result["totalSeconds"] = round(time.monotonic() - started, 3)
    return result


class Answers:
    """The rotation function's answers on this thing's fleet/rotation/<thing>/<step>/<outcome> topics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[tuple[str, dict[str, Any]]]] = {}

    def expect(self, request_id: str) -> Future[tuple[str, dict[str, Any]]]:
        future: Future[tuple[str, dict[str, Any]]] = Future()
        with self._lock:
            self._waiting[request_id] = future
        return future

    def on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        try:
            body = json.loads(bytes(packet.payload or b"{}"))
        except ValueError:
            return
        with self._lock:
            future = self._waiting.pop(str(body.get("requestId")), None) if isinstance(body, dict) else None
        if future is not None and not future.done():
            future.set_result((packet.topic.rsplit("/", 1)[-1], body))


class Steps:
    """Seconds each step of a rotation took, in order (the rotation's result and the bench report them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(now - self._mark, 4)
        self._mark = now


def _ask(
    device: Connection, answers: Answers, thing: str, step: str, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Publishes one rotation step and waits for its answer; raises RuntimeError when it is refused."""
    base = f"{ROTATION_TOPICS}/{thing}/{step}"
    subscribed = device.client.subscribe(
        mqtt5.SubscribePacket(
            [
                mqtt5.Subscription(f"{base}/accepted", mqtt5.QoS.AT_LEAST_ONCE),
                mqtt5.Subscription(f"{base}/rejected", mqtt5.QoS.AT_LEAST_ONCE),
            ]
        )
    ).result(timeout=timeout)
    if any(code.value >= 0x80 for code in subscribed.reason_codes):
        raise RuntimeError(f"subscribing to {base}/+ was refused: {subscribed.reason_codes}")
    waiting = answers.expect(body["requestId"])
    packet = mqtt5.PublishPacket(topic=base, payload=json.dumps(body).encode(), qos=mqtt5.QoS.AT_LEAST_ONCE)
    # Asked twice at most: a rule delivers a message at most once, and the function answers a repeated
    # request (same requestId) as it answered the first.
    for attempt in (1, 2):
        device.client.publish(packet).result(timeout=timeout)
        try:
            outcome, answer = waiting.result(timeout=timeout / 2)
            break
        except TimeoutError:
            if attempt == 2:
                raise RuntimeError(f"no answer on {base}/accepted or /rejected within {timeout:.0f} s") from None
    if outcome != "accepted":
        raise RuntimeError(f"{answer.get('statusCode')} {answer.get('errorCode')}: {answer.get('errorMessage')}")
    return answer


def _requested_rotation(device: Connection, thing: str, timeout: float) -> str | None:
    """The rotation the operator asked for in the shadow (desired) that this device has not reported."""
    shadow_client = iotshadow.IotShadowClientV2(
        device.client, mqtt_request_response.ClientOptions(2, 2, operation_timeout_in_seconds=int(timeout))
    )
    try:
        shadow = shadow_client.get_shadow(iotshadow.GetShadowRequest(thing_name=thing)).result(timeout=timeout)
    except Exception as error:
        if "404" in rejection(error) or "ResourceNotFound" in rejection(error):
            return None
        raise
    finally:
        del shadow_client
    desired = (shadow.state.desired or {}) if shadow.state else {}
    reported = (shadow.state.reported or {}) if shadow.state else {}
    wanted = desired.get(ROTATION_MARK)
    return str(wanted) if wanted and wanted != reported.get(ROTATION_MARK) else None


def _report_rotation(device: Connection, thing: str, mark: str, timeout: float) -> None:
    shadow_client = iotshadow.IotShadowClientV2(
        device.client, mqtt_request_response.ClientOptions(2, 2, operation_timeout_in_seconds=int(timeout))
    )
    try:
        shadow_client.update_shadow(
            iotshadow.UpdateShadowRequest(thing_name=thing, state=iotshadow.ShadowState(reported={ROTATION_MARK: mark}))
        ).result(timeout=timeout)
    finally:
        del shadow_client


def _connect_when_ready(target: Target, cert: str, key: str, thing: str, timeout: float, on_publish: Any) -> Connection:
    """A certificate just activated may take a moment to be in force at the broker (the sandbox's:
    about two seconds): connect attempts, one a second (AWS IoT's CONNECT limit per client id), until
    `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(target, cert, key, thing, min(timeout, 10.0), on_publish=on_publish)
        except Exception:
            if time.monotonic() + 1.0 > deadline:
                raise
            time.sleep(1.0)


def rotate(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """One rotation: request with the current certificate, prove the new one by connecting with it,
    confirm, and only then replace the credential files (the old ones are kept as <file>.old until then)."""
    started = time.monotonic()
    thing, answers, steps = args.thing_name, Answers(), Steps()
    try:
        current = connect(target, args.cert, args.key, thing, args.timeout, on_publish=answers.on_publish)
    except Exception as error:  # noqa: BLE001
        raise Failure(DEVICE_FAILED, f"the current certificate could not connect as {thing}: {error}") from None
    steps.done("connect")
    request_id = uuid.uuid4().hex
    try:
        mark = _requested_rotation(current, thing, args.timeout)
        steps.done("shadow")
        if args.if_requested and mark is None:
            return {"thingName": thing, "rotated": False, "reason": "no rotation requested", "steps": steps.seconds}
        csr, private_key = csr_and_key(args.key_type)
        steps.done("key")
        try:
            issued = _ask(
                current,
                answers,
                thing,
                "request",
                {"requestId": request_id, "certificateSigningRequest": csr},
                args.timeout,
            )
        except Exception as error:  # noqa: BLE001
            raise Failure(ROTATION_REFUSED, f"the rotation request was refused: {error}") from None
        steps.done("request")
    finally:
        current.close()  # one connection per client id: the new certificate's would replace it anyway
    out = Path(args.output_dir)
    new_cert = _write_private(out / f"{thing}.new.pem.crt", issued["certificatePem"])
    new_key = _write_private(out / f"{thing}.new.private.key", private_key)
    result: dict[str, Any] = {
        "thingName": thing,
        "requestId": request_id,
        "certificateId": issued["certificateId"],
        "newCertificateFile": new_cert,
        "newPrivateKeyFile": new_key,
        "steps": steps.seconds,
    }
    if args.no_confirm:  # an interrupted rotation, on purpose: the current certificate stays in force
        result.update(rotated=False, reason="not confirmed (--no-confirm)")
        return result
    try:
        device = _connect_when_ready(target, new_cert, new_key, thing, args.timeout, answers.on_publish)
    except Exception as error:  # noqa: BLE001
        raise Failure(NEW_CERTIFICATE_FAILED, f"the new certificate could not connect as {thing}: {error}") from None
    steps.done("new connect")
    try:
        try:
            confirmed = _ask(device, answers, thing, "confirm", {"requestId": request_id}, args.timeout)
        except Exception as error:  # noqa: BLE001
            raise Failure(NEW_CERTIFICATE_FAILED, f"the confirmation was refused: {error}") from None
        steps.done("confirm")
        if mark is not None:
            _report_rotation(device, thing, mark, args.timeout)
            steps.done("report")
    finally:
        device.close()
    # Confirmed: the old certificate is revoked. Keep its files as .old, make the new ones current.
    for new, current_file in ((new_cert, args.cert), (new_key, args.key)):
        Path(current_file).replace(f"{current_file}.old")
        Path(new).replace(current_file)
    result.update(
        rotated=True,
        retiredCertificateId=confirmed.get("retiredCertificateId"),
        rotationMark=mark,
        certificateFile=args.cert,
        privateKeyFile=args.key,
        totalSeconds=round(time.monotonic() - started, 3),
    )
    return result


def rotate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="test_provisioning.py rotate",
        description="Rotate a provisioned device's certificate: a new one from a CSR (the key never leaves "
        "here), proven by connecting with it, confirmed; then the old one is revoked and the files replaced.",
    )
    p.add_argument("--thing-name", required=True, help="the device's thing name (its client id)")
    p.add_argument("--cert", required=True, help="the device's current certificate file (replaced when rotated)")
    p.add_argument("--key", required=True, help="its private key file (replaced when rotated)")
    p.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="the new key (default ec)")
    p.add_argument(
        "--if-requested",
        action="store_true",
        help="rotate only if the shadow asks for it (desired.certificateRotation): run at each start",
    )
    p.add_argument("--no-confirm", action="store_true", help="stop before confirming (tests an abandoned rotation)")
    for flag, text in (
        ("--endpoint", "MQTT endpoint (default: the stack's)"),
        ("--ca", "CA bundle"),
        ("--stack-dir", "deployed stack folder"),
    ):
        p.add_argument(flag, help=text)
    p.add_argument("--port", type=int, help="MQTT port (default 8883, or the sandbox's)")
    p.add_argument("--output-dir", default="devices", help="where the new files are written first (0600)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per step (default 15)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def rotation_target(args: argparse.Namespace) -> Target:
    """Endpoint and CA as given, else the deployed stack's (the sandbox's broker has no IoT Core limits)."""
    if args.endpoint and args.ca is not None:
        loopback = args.endpoint in ("127.0.0.1", "localhost")
        return Target(args.endpoint, args.port or 8883, args.ca, "", "", "", iot_core_limits=not loopback)
    try:
        stack = DeployedStack.load(Path(args.stack_dir) if args.stack_dir else None)
        mqtt = stack.mqtt()
    except StackError as error:
        raise Failure(USAGE, f"{error} (or give --endpoint and --ca)") from None
    return Target(
        args.endpoint or mqtt.host,
        args.port or mqtt.port,
        args.ca or mqtt.ca_file,
        "",
        "",
        "",
        iot_core_limits=stack.on_aws,
    )


def rotate_main(argv: list[str]) -> int:
    args = rotate_parser().parse_args(argv)
    try:
        target = rotation_target(args)
        trust_only(target.ca_file)
        result = rotate(args, target)
    except Failure as failure:
        print(
            json.dumps({"error": str(failure), "exitCode": failure.code}) if args.json else f"FAILED: {failure}",
            file=sys.stdout if args.json else sys.stderr,
        )
        return failure.code
    if args.json:
        print(json.dumps(result))
    elif result.get("rotated"):
        print(
            f"rotated {result['thingName']}: certificate {result['certificateId'][:12]}… in force, "
            f"{str(result['retiredCertificateId'])[:12]}… revoked ({result['totalSeconds']:.2f} s)"
        )
    else:
        print(f"{result['thingName']}: not rotated ({result.get('reason')})")
    return OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serial-number", required=True)
    p.add_argument("--device-type", required=True)
    p.add_argument("--manufacturer", required=True)
    p.add_argument("--firmware-version", default="")
    p.add_argument("--location", default="")
    p.add_argument("--thing-name", default="", help="ask for this thing name (the hook may refuse it)")
    p.add_argument("--csr", action="store_true", help="CreateCertificateFromCsr: the private key never leaves here")
    p.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="key for --csr (default ec)")
    p.add_argument("--endpoint", help="MQTT endpoint (default: iot_data_endpoint output, or the sandbox)")
    p.add_argument("--port", type=int, help="MQTT port (default 8883, or the sandbox's)")
    p.add_argument("--ca", help="CA bundle for the endpoint (default: system trust, or the sandbox CA)")
    p.add_argument(
        "--system-trust",
        action="store_true",
        help="trust only the system store, as AWS's SDK samples do (sandbox: `python -m sandbox trust` first)",
    )
    p.add_argument("--claim-cert", help="claim certificate PEM file (default: from the stack outputs)")
    p.add_argument("--claim-key", help="claim private key file (default: from the stack outputs)")
    p.add_argument("--template-name", help="provisioning template (default: from the stack outputs)")
    p.add_argument("--stack-dir", type=Path, help="deployed stack folder (default: the one in cdktf.out/stacks)")
    p.add_argument(
        "--output-dir", default="devices", help="where the new credentials go, files 0600 (default ./devices)"
    )
    p.add_argument("--client-id", help="client id for the claim connection (default <prefix><serial>-<random>)")
    p.add_argument(
        "--client-id-prefix",
        help="claim client-id prefix (default: the stack's claim_client_id_prefix output, else claim-)",
    )
    p.add_argument(
        "--factory-key",
        help="the device's factory private key (PEM, EC P-256) whose public key is enrolled: signs RegisterThing",
    )
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per step (default 15)")
    p.add_argument(
        "--throttle-attempts",
        type=_positive(int),
        default=Backoff().attempts,
        help=f"requests per step while AWS IoT throttles it (default {Backoff().attempts})",
    )
    p.add_argument(
        "--throttle-seconds",
        type=_positive(float),
        default=Backoff().budget,
        help=f"seconds a step keeps asking while throttled (default {Backoff().budget:g})",
    )
    p.add_argument("--skip-device-check", action="store_true", help="stop after RegisterThing")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rotate"]:
        return rotate_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        target = resolve_target(args)
        trust_only(target.ca_file)
        result = provision(args, target)
    except Failure as failure:
        if args.json:
            print(json.dumps({"error": str(failure), "exitCode": failure.code}))
        else:
            print(f"FAILED: {failure}", file=sys.stderr)
        return failure.code
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"provisioned {result['thingName']} (certificate {result['certificateId'][:12]}…) "
            f"in {result['provisionSeconds']:.2f} s"
        )
        print(f"  credentials: {result['certificateFile']}, {result['privateKeyFile']} (0600)")
        if result["throttledAttempts"]:
            steps = ", ".join(f"{step} {n}" for step, n in sorted(result["throttledAttempts"].items()))
            print(f"  throttled by AWS IoT and asked again: {steps}")
        print(f"  device configuration: {json.dumps(result['deviceConfiguration'])}")
        if "shadowDesired" in result:
            print(f"  shadow (desired): {json.dumps(result['shadowDesired'])}")
            print(f"  published telemetry on {result['telemetryTopic']} as {result['thingName']}")
    return OK


def run() -> None:
    """The command's entry (test_provisioning.py, device-client, python -m): the keys and certificates it
    writes, and the folders it makes for them, are the device's own."""
    os.umask(0o077)
    sys.exit(main())


if __name__ == "__main__":
    run()
