"""The AWS IoT fleet-provisioning MQTT API, served on the sandbox broker.

Devices publish to $aws/... as with AWS IoT; the broker plugin hands each request to this service
as fp/req/<certificate identity>/<client id>/<topic>, and the answer goes back to that client only. Served:
CreateKeysAndCertificate, CreateCertificateFromCsr (sandbox-CA certificates, single-use ownership
tokens valid 1 h), RegisterThing (the deployed template, its pre-provisioning hook, the template's
resources, then the thing-created registry event through the topic rules the sandbox supports),
shadow get/update, and the topic rules the sandbox supports on devices' own messages (the broker
plugin copies each to the service as fp/msg/...; sandbox.iot_data_plane.topic_rules) with the
iot-data Publish API delivered to subscribers (fp/pub/...). The registry, functions and shadows
are the local AWS's own, reached in-process (sandbox.iot_data_plane.local_account): the service runs inside
the local AWS's process. With SandboxQuotas=aws the three fleet-provisioning APIs are throttled at AWS's
default rates per account (sandbox.iot_data_plane.quotas).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from awscrt import mqtt
from awsiot import mqtt_connection_builder

from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.iam.enforcement import AUTHORITY, AssumedRole
from sandbox.iot.registry_writes import RegistryWrites
from sandbox.iot_data_plane import template_engine, topic_rules
from sandbox.iot_data_plane.broker import SERVICE_ID, Broker, DataPlaneError, RegistryRules
from sandbox.iot_data_plane.local_account import AwsError, LocalAccount
from sandbox.iot_data_plane.provisioning_permissions import TEMPLATE_PERMISSIONS, Permission
from sandbox.iot_data_plane.quotas import THROTTLED_CODE, THROTTLED_MESSAGE, THROTTLED_STATUS, Quotas
from sandbox.iotdata import publish_to_broker
from sandbox.request_pipeline.iam_requests import log_stream_arn

TOKEN_LIFETIME = 3600.0
HOOK_DEADLINE_SECONDS = 5.0  # developerguide/pre-provisioning-hook.html: the hook must answer within 5 s
KICK_PREFIX = "fp/kick/"  # the broker plugin disconnects the certificate identity that follows
PUBLISH_PREFIX = "fp/pub/"  # the broker plugin publishes fp/pub/<qos>/<topic> on <topic>
THROTTLED_EVENT_SECONDS = 300.0  # how long a rule's throttled lambda event is tried again (AWS: 6 hours)
FULL_PASS_SECONDS = 60.0  # the rules follow in-process changes other than registrations within this
_PROVISION = re.compile(r"^\$aws/provisioning-templates/([^/]+)/provision/json$")
_SHADOW = re.compile(r"^\$aws/things/([^/]+)/shadow/(get|update)$")
IOT_SERVICE = "iot.amazonaws.com"
_RULE_SQL = re.compile(r"^\s*SELECT\s+(?P<select>.+?)\s+FROM\s+'(?P<filter>[^']+)'\s*$", re.IGNORECASE | re.DOTALL)


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.body = {"statusCode": status, "errorCode": code, "errorMessage": message}


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the connection's certificate (its identity, the subject CN) and client id."""

    identity: str
    client_id: str


@dataclass
class OwnershipToken:
    certificate_id: str
    certificate_arn: str
    certificate_pem: str
    expires: float


def topic_matches(topic_filter: str, topic: str) -> bool:
    parts, levels = topic_filter.split("/"), topic.split("/")
    for index, part in enumerate(parts):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(parts) == len(levels)


def quota_api(request_topic: str) -> str | None:
    """The fleet-provisioning API a request topic calls, by the name its quota has; None for any other."""
    if request_topic == "$aws/certificates/create/json":
        return "CreateKeysAndCertificate"
    if request_topic == "$aws/certificates/create-from-csr/json":
        return "CreateCertificateFromCsr"
    return "RegisterThing" if _PROVISION.match(request_topic) else None


class FleetProvisioningService:
    def __init__(
        self,
        account: LocalAccount,
        broker: Broker,
        token_lifetime: float = TOKEN_LIFETIME,
        quotas: Quotas | None = None,
    ) -> None:
        """`token_lifetime`: how long an ownership token lives, in seconds. An hour of real time, not
        scaled: the stack's stale-claim window (real minutes) must end first, as it does on AWS.
        `quotas`: the account's request rates (SandboxQuotas=aws); None serves every request."""
        self.account = account
        self.broker = broker
        self.token_lifetime = token_lifetime
        self.quotas = quotas
        self.rules = RegistryRules(account, getattr(getattr(broker, "authority", None), "certificate", None))
        self.tokens: dict[str, OwnershipToken] = {}
        self._tokens_lock = threading.Lock()
        self._rules_lock = threading.Lock()
        self._passed_writes, self._passed_access, self._last_pass = -1, 0, 0.0  # no pass yet
        self._crl_due = False  # a traced write revoked or deleted a revoked certificate since the last CRL
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fleet")
        self._hooks = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hook")
        self._throttled = ThreadPoolExecutor(max_workers=16, thread_name_prefix="throttled")
        self._stopping = threading.Event()
        self.connection: mqtt.Connection | None = None
        self._connected = threading.Event()

    @property
    def connected(self) -> bool:
        """Connected to the broker now (it reconnects by itself after an interruption)."""
        return self._connected.is_set()

    # Lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=self.broker.endpoint,
            port=self.broker.port,
            cert_filepath=str(self.broker.service_cert),
            pri_key_filepath=str(self.broker.service_key),
            ca_filepath=str(self.broker.authority.ca_file),
            client_id=SERVICE_ID,
            clean_session=True,
            keep_alive_secs=30,
            on_connection_interrupted=lambda *_, **__: self._connected.clear(),
            on_connection_resumed=self._resumed,
            reconnect_min_timeout_secs=1,  # the broker is local: after its restart, serve again within a second
            reconnect_max_timeout_secs=5,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.connection.connect().result(timeout=5)
                break
            except Exception as error:  # noqa: BLE001 - the broker may still be starting: try again
                failure = self.broker.failure()
                if failure:
                    raise DataPlaneError(f"the broker did not start: {failure}") from None
                if time.monotonic() > deadline:
                    raise DataPlaneError(f"the fleet service cannot connect to the broker: {error}") from None
                time.sleep(0.2)
        self._connected.set()
        # QoS 0 on the loopback hop: a PUBACK per request would hold the next answer back behind
        # Nagle's algorithm until mosquitto's delayed ACK (40 ms a request, measured).
        subscribed, _ = self.connection.subscribe("fp/req/#", mqtt.QoS.AT_MOST_ONCE, self._on_request)
        subscribed.result(timeout=10)
        subscribed, _ = self.connection.subscribe("fp/msg/#", mqtt.QoS.AT_MOST_ONCE, self._on_device_message)
        subscribed.result(timeout=10)
        publish_to_broker.SINK = self.publish
        RegistryWrites.listener = self.certificates_changed
        threading.Thread(target=self._refresh_loop, name="access-rules", daemon=True).start()

    def _resumed(self, connection: mqtt.Connection, return_code: Any, session_present: bool, **_: Any) -> None:
        if not session_present:  # a restarted broker forgot the clean session's subscription
            connection.subscribe("fp/req/#", mqtt.QoS.AT_MOST_ONCE, self._on_request)
        self._connected.set()

    def stop(self) -> None:
        self._stopping.set()
        if RegistryWrites.listener == self.certificates_changed:
            RegistryWrites.listener = None
        if self.connection is not None:
            try:
                self.connection.disconnect().result(timeout=5)
            except Exception:  # noqa: BLE001, S110 - stopping anyway
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._hooks.shutdown(wait=False, cancel_futures=True)

    def _refresh_loop(self) -> None:
        """Revocations and other registry changes reach the broker within about two seconds."""
        while not self._stopping.wait(2.0):
            try:
                self.refresh_rules()
            except Exception as error:  # noqa: BLE001 - keep serving; the next round retries
                print(f"fleet-provisioning: refreshing access rules failed: {error}", flush=True)
            try:
                self.remove_unregistered()
            except Exception as error:  # noqa: BLE001 - keep serving; the next round retries
                print(f"fleet-provisioning: removing unregistered certificates failed: {error}", flush=True)

    def refresh_rules(self, force: bool = False) -> None:
        """Brings the broker's rules up to the whole registry: every ~2 s when IoT was changed over
        HTTP by a write RegistryWrites does not trace to its certificates, and at least every
        FULL_PASS_SECONDS anyway. Registrations and traced writes need no pass: each puts its own
        certificates' rules in force (grant_rules, certificates_changed)."""
        with self._rules_lock:
            # Read first: a change during the pass triggers the next one.
            writes, access = RegistryWrites.count(), RegistryWrites.access_changes()
            due = time.monotonic() - self._last_pass >= FULL_PASS_SECONDS
            if not (force or due or writes != self._passed_writes or self.broker.reload_pending):
                if self._crl_due:  # a traced revocation: its rules are gone already, the CRL follows
                    self._crl_due = False
                    self.broker.write_crl(self.broker.crl(self.rules.revoked()))
                return
            self._crl_due = False
            # A policy or principal change can change any certificate's rules: describe them all again.
            rules, revoked = self.rules.refresh(forget=access != self._passed_access)
            self.broker.write_rules(rules, self.broker.crl(revoked))
            # Their rules are gone, so a reconnect is refused; connections already open are closed
            # here, as AWS closes them when a certificate is revoked, deactivated or deleted.
            for identity in self.rules.stopped:
                self.disconnect(identity)
            self._passed_writes, self._passed_access, self._last_pass = writes, access, time.monotonic()

    def certificates_changed(self, certificate_ids: set[str]) -> None:
        """An IoT write over HTTP changed these certificates (sandbox.iot.registry_writes): their rules are
        put in force, or removed and their connections closed, before its answer leaves, so a device told
        of a certificate a function has just activated can connect with it at once. The CRL, which grows
        with every revocation, follows within the refresh loop's two seconds."""
        with self._rules_lock:
            files, revoked_changed = self.rules.update(certificate_ids)
            for identity, text in files.items():
                if text is None:
                    self.broker.remove_identity_rules(identity)
                else:
                    self.broker.write_identity_rules(identity, text)
            for identity in self.rules.stopped:
                self.disconnect(identity)
            self._crl_due |= revoked_changed

    def disconnect(self, identity: str) -> None:
        """Closes every connection made with the certificate known by this identity (the plugin's fp/kick/)."""
        if self.connection is not None:
            self.connection.publish(f"{KICK_PREFIX}{identity}", b"", mqtt.QoS.AT_MOST_ONCE)

    def grant_rules(self, certificate: OwnershipToken) -> None:
        """Puts a just-registered certificate's rules in force before the device gets its answer: one
        certificate described from the registry as it is now, not a pass over the registry (which grows
        with every device). Read, not taken from the template: a write over HTTP that changed the
        certificate meanwhile (revoked it, detached its policy) is what the rules then follow."""
        self.certificates_changed({certificate.certificate_id})

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """The iot-data Publish API: the message goes to the topic's subscribers, as from IoT itself."""
        if self.connection is None or qos not in (0, 1) or not topic or any(c in topic for c in "+#"):
            return
        self.connection.publish(f"{PUBLISH_PREFIX}{qos}/{topic}", payload, mqtt.QoS.AT_MOST_ONCE)

    # Topic rules on device messages ----------------------------------------------------------------
    def _on_device_message(self, topic: str, payload: bytes, **_: Any) -> None:
        self._pool.submit(self.device_message, topic, payload)

    def device_message(self, topic: str, payload: bytes) -> None:
        """Runs every enabled rule whose SELECT ... FROM '<filter>' matches a device's message."""
        try:
            _, _, identity, client_id, message_topic = topic.split("/", 4)
        except ValueError:
            return
        sender = topic_rules.Sender(message_topic, client_id, self.rules.certificate_id_of(identity) or "")
        for rule in self.account.topic_rules():
            if rule.get("ruleDisabled") or message_topic.startswith("$"):
                continue
            try:
                parsed = topic_rules.parse(rule.get("sql", ""))
            except topic_rules.Unsupported:
                continue  # such a rule never fires in the sandbox (docs/sandbox.md: topic rules)
            if topic_matches(parsed.topic_filter, message_topic):
                message = topic_rules.select(parsed, payload, sender)
                self._run_actions(rule, message, int(time.time() * 1000))

    # Requests ----------------------------------------------------------------------------------
    def _on_request(self, topic: str, payload: bytes, **_: Any) -> None:
        # The quota is decided as the request arrives, as at AWS's front door, not when a worker takes it up
        # after slower requests (hooks) held the pool: a queue would shift who is let in and when.
        self._pool.submit(self.handle, topic, payload, self.admitted(topic))

    def admitted(self, topic: str) -> bool:
        """Whether the account's quota lets this request (fp/req/...) in now; always, without quotas."""
        if self.quotas is None:
            return True
        api = quota_api(topic.split("/", 4)[-1])
        return api is None or self.quotas.admit(self.account.account_id, self.account.region, api)

    def handle(self, topic: str, payload: bytes, admitted: bool = True) -> None:
        """Answers one request; `admitted` False: the account's quota refused it on arrival (nothing is done)."""
        try:
            _, _, identity, client_id, request_topic = topic.split("/", 4)
        except ValueError:
            return
        try:
            if not admitted:
                raise Rejected(THROTTLED_STATUS, THROTTLED_CODE, THROTTLED_MESSAGE)
            answer_topic, body = self.dispatch(Caller(identity, client_id), request_topic, payload)
        except Rejected as rejection:
            answer_topic, body = f"{request_topic}/rejected", rejection.body
        except Exception as error:  # noqa: BLE001 - a device always gets an answer
            answer_topic = f"{request_topic}/rejected"
            body = {"statusCode": 500, "errorCode": "InternalFailure", "errorMessage": str(error)[:300]}
        if answer_topic:  # AWS/IoT's RegisterThingFailed and certificate metrics, 0 or 1 per call
            cloudwatch_metrics.iot_request_answered(
                self.account.account_id, self.account.region, request_topic, answer_topic
            )
        if answer_topic and self.connection is not None:
            # QoS 0 to the device as well: a QoS 1 answer makes the device send a PUBACK that mosquitto
            # has nothing to reply to, so its kernel delays the ACK, and the device's next packet (the
            # SDK does not set TCP_NODELAY) waited 40 ms behind Nagle's algorithm: measured, 40 ms of
            # every RegisterThing. The SDK's request-response client takes either QoS.
            self.connection.publish(f"fp/resp/{client_id}/{answer_topic}", json.dumps(body), mqtt.QoS.AT_MOST_ONCE)

    def dispatch(self, caller: Caller, topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        if topic == "$aws/certificates/create/json":
            return f"{topic}/accepted", self.create_keys_and_certificate()
        if topic == "$aws/certificates/create-from-csr/json":
            return f"{topic}/accepted", self.create_certificate_from_csr(_json(payload))
        match = _PROVISION.match(topic)
        if match:
            return f"{topic}/accepted", self.register_thing(match.group(1), caller, _json(payload))
        match = _SHADOW.match(topic)
        if match:
            return self.shadow(match.group(1), match.group(2), payload)
        return "", {}

    def _token(self, certificate: Any) -> str:
        token = secrets.token_urlsafe(48)
        with self._tokens_lock:
            self.tokens[token] = OwnershipToken(
                certificate.certificate_id,
                certificate.arn,
                certificate.certificate_pem,
                time.time() + self.token_lifetime,
            )
        return token

    def remove_unregistered(self) -> list[str]:
        """A certificate made over MQTT whose RegisterThing never came is removed once its ownership token
        has expired, as AWS removes it: the tokens that expired unused name them (a token a registration
        used is gone; a refused registration leaves its token). Returns the ids removed."""
        now = time.time()
        with self._tokens_lock:
            expired = [self.tokens.pop(t) for t, v in list(self.tokens.items()) if v.expires < now]
        removed = []
        for token in expired:  # one that cannot be removed does not keep the others
            try:
                if self.account.remove_pending_certificate(token.certificate_id):
                    removed.append(token.certificate_id)
            except Exception as error:  # noqa: BLE001 - reported; the certificate stays, as a failed delete would
                print(f"fleet-provisioning: removing certificate {token.certificate_id} failed: {error}", flush=True)
        return removed

    def create_keys_and_certificate(self) -> dict[str, Any]:
        try:
            certificate, private_key = self.account.create_keys_and_certificate()
        except AwsError as error:
            raise Rejected(error.status, error.code, error.message) from None
        return {
            "certificateId": certificate.certificate_id,
            "certificatePem": certificate.certificate_pem,
            "privateKey": private_key,
            "certificateOwnershipToken": self._token(certificate),
        }

    def create_certificate_from_csr(self, request: dict[str, Any]) -> dict[str, Any]:
        csr = request.get("certificateSigningRequest")
        if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr:
            raise Rejected(400, "InvalidCsr", "certificateSigningRequest is not a PEM certificate signing request")
        try:
            certificate = self.account.create_certificate_from_csr(csr)
        except AwsError as error:
            raise Rejected(400, "InvalidCsr", error.message) from None
        return {
            "certificateId": certificate.certificate_id,
            "certificatePem": certificate.certificate_pem,
            "certificateOwnershipToken": self._token(certificate),
        }

    def register_thing(self, template_name: str, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        try:
            template = self.account.provisioning_template(template_name)
        except AwsError:
            raise Rejected(404, "ResourceNotFound", f"Template {template_name} not found") from None
        if not template.get("enabled"):
            raise Rejected(400, "InvalidRequest", f"Template {template_name} is disabled")
        token_text = str(request.get("certificateOwnershipToken") or "")
        with self._tokens_lock:
            token = self.tokens.get(token_text)
            if token is None or token.expires < time.time():
                raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid")
            del self.tokens[token_text]  # single use: a replay is refused even while this one runs
        try:
            return self._register(template, caller, token, request)
        except Exception:
            with self._tokens_lock:  # a refused or failed attempt does not use the token up
                self.tokens[token_text] = token
            raise

    def _register(
        self, template: dict[str, Any], caller: Caller, token: OwnershipToken, request: dict[str, Any]
    ) -> dict[str, Any]:
        parameters = request.get("parameters", {})
        if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
            raise Rejected(400, "InvalidParameters", "parameters must be an object of strings")
        body = json.loads(template["templateBody"])
        hook = template.get("preProvisioningHook")
        if hook:
            parameters = {**parameters, **self._call_hook(hook, template, caller, token, parameters)}
        supplied = {**parameters, template_engine.CERTIFICATE_ID: token.certificate_id}
        try:
            values = template_engine.resolve_parameters(body, supplied)
            values.setdefault(template_engine.CERTIFICATE_ID, token.certificate_id)
            resources = template_engine.evaluate(body.get("Resources", {}), values, body.get("Mappings", {}))
            configuration = template_engine.evaluate(
                body.get("DeviceConfiguration", {}), values, body.get("Mappings", {})
            )
        except template_engine.TemplateError as error:
            raise Rejected(400, "InvalidParameters", str(error)) from None
        thing_name, created = self._apply(template, resources, token)
        if created:
            self._thing_created_event(thing_name)
        return {"deviceConfiguration": {k: str(v) for k, v in configuration.items()}, "thingName": thing_name}

    def _call_hook(
        self,
        hook: dict[str, Any],
        template: dict[str, Any],
        caller: Caller,
        token: OwnershipToken,
        parameters: dict[str, str],
    ) -> dict[str, str]:
        # As AWS sends it (developerguide/pre-provisioning-hook.html): the claim certificate is the one
        # the requesting connection used.
        event = {
            "claimCertificateId": self.rules.certificate_id_of(caller.identity) or "",
            "certificateId": token.certificate_id,
            "certificatePem": token.certificate_pem,
            "templateArn": template["templateArn"],
            "clientId": caller.client_id,
            "parameters": parameters,
        }
        try:
            permitted = AUTHORITY.function_policy_allows(
                hook["targetArn"], IOT_SERVICE, template["templateArn"], self.account.account_id
            )
            if not permitted.allowed:  # IoT may invoke the hook only if its function policy says so
                raise AwsError(
                    403,
                    "AccessDeniedException",
                    f"the function policy of {hook['targetArn']} does "
                    f"not allow {IOT_SERVICE} to invoke it for {template['templateArn']}",
                )
            # IoT waits 5 s for the hook, cold start included, then fails the device; the function runs
            # on (and whatever it wrote stays: the reconciler and the stale window recover the serial).
            running = self._hooks.submit(self.account.invoke, hook["targetArn"], event)
            try:
                invocation = running.result(timeout=HOOK_DEADLINE_SECONDS)
            except FutureTimeout:
                print(f"fleet-provisioning: the hook did not answer within {HOOK_DEADLINE_SECONDS:.0f} s", flush=True)
                raise Rejected(
                    403, "ACCESS_DENIED", "Provisioning was denied: the pre-provisioning hook did not answer in time"
                ) from None
        except AwsError as error:
            print(f"fleet-provisioning: the hook could not be invoked: {error}", flush=True)
            raise Rejected(403, "ACCESS_DENIED", "Provisioning was denied: the pre-provisioning hook failed") from None
        answer = invocation.payload
        if invocation.function_error:
            print(f"fleet-provisioning: the hook failed: {answer}", flush=True)
        if invocation.function_error or not isinstance(answer, dict) or answer.get("allowProvisioning") is not True:
            raise Rejected(403, "ACCESS_DENIED", "Provisioning was denied by the pre-provisioning hook")
        overrides = answer.get("parameterOverrides", {})
        return {k: str(v) for k, v in overrides.items()} if isinstance(overrides, dict) else {}

    def _apply(self, template: dict[str, Any], resources: dict[str, Any], token: OwnershipToken) -> tuple[str, bool]:
        """Creates the template's thing, attaches certificate and policy, then activates the certificate,
        as the template's provisioning role: IoT must be able to assume it, and it must allow every
        step. All of that is checked before the first change, so a refused template leaves nothing
        behind (AWS documents no rollback of a half-applied template; the sandbox never half-applies
        one for want of a permission)."""
        things = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::IoT::Thing"]
        policies = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::IoT::Policy"]
        if len(things) != 1:
            raise Rejected(400, "InvalidParameters", "the template must create exactly one thing")
        thing = things[0]
        name = thing["ThingName"]
        exists = self.account.thing(name) is not None
        self._authorize_template(template, thing, policies, token, exists)
        created = False
        try:
            if not exists:
                self.account.create_thing(name, thing.get("ThingTypeName"), thing.get("AttributePayload"))
                created = True
            for group in thing.get("ThingGroups", []):
                self.account.add_thing_to_thing_group(group, name)
            for policy in policies:
                self.account.attach_policy(policy["PolicyName"], token.certificate_arn)
            self.account.attach_thing_principal(name, token.certificate_arn)
            self.account.update_certificate(token.certificate_id, "ACTIVE")
            # The device reconnects as its thing right after the answer: its rules must be in force.
            self.grant_rules(token)
        except AwsError as error:
            raise Rejected(400, "InvalidParameters", error.message) from None
        return name, created

    def _authorize_template(
        self,
        template: dict[str, Any],
        thing: dict[str, Any],
        policies: list[dict[str, Any]],
        token: OwnershipToken,
        exists: bool,
    ) -> None:
        """Refuses (403) unless IoT can assume the template's role and the role allows every step
        (provisioning_permissions.TEMPLATE_PERMISSIONS). AWS documents no exact body for this
        refusal (a real one was seen only as statusCode 403); the message names the action and
        resource, as AWS's IAM denials do."""
        role_arn = str(template.get("provisioningRoleArn", ""))
        trust = AUTHORITY.trusts(role_arn, IOT_SERVICE, template["templateArn"], self.account.account_id)
        if not trust.allowed:
            why = "does not exist" if trust.statement == "no such role" else f"does not trust {IOT_SERVICE}"
            raise Rejected(403, "ACCESS_DENIED", f"IoT cannot assume the provisioning role {role_arn}: the role {why}")
        role = AssumedRole(role_arn, session=template["templateName"])
        arns: dict[str, list[str]] = {
            "*": ["*"],
            "thing": [self.account.arn("iot", f"thing/{thing['ThingName']}")],
            "thingtype": [self.account.arn("iot", f"thingtype/{thing['ThingTypeName']}")]
            if thing.get("ThingTypeName")
            else [],
            "thinggroup": [self.account.arn("iot", f"thinggroup/{g}") for g in thing.get("ThingGroups", [])],
            "policy": [self.account.arn("iot", f"policy/{p['PolicyName']}") for p in policies],
            "cert": [token.certificate_arn],
        }
        for permission in TEMPLATE_PERMISSIONS:
            if not _step_taken(permission, thing, policies, exists):
                continue
            context = {"iot:thingarn": arns["thing"][0]} if permission.action == "iot:AttachThingPrincipal" else {}
            for kind in permission.checked_on:
                for arn in arns[kind]:
                    decision = AUTHORITY.authorize(role, permission.action, arn, context)
                    if not decision.allowed:
                        raise Rejected(403, "ACCESS_DENIED", AUTHORITY.denial(role, permission.action, arn, decision))

    def _thing_created_event(self, thing_name: str) -> None:
        """Registry event through the topic rules the sandbox supports (SELECT ... FROM '<filter>';
        lambda and cloudwatchLogs actions). Run before the device's answer: more punctual than AWS."""
        thing = self.account.thing(thing_name)
        if thing is None:
            return
        topic = f"$aws/events/thing/{thing_name}/created"
        event = {
            "eventType": "THING_EVENT",
            "eventId": secrets.token_hex(16),
            "timestamp": int(time.time() * 1000),
            "operation": "CREATED",
            "accountId": self.account.account_id,
            "thingId": thing.thing_id,
            "thingName": thing_name,
            "versionNumber": thing.version,
            "thingTypeName": thing.thing_type.thing_type_name if thing.thing_type else None,
            "attributes": dict(thing.attributes),
        }
        for rule in self.account.topic_rules():
            if rule.get("ruleDisabled"):
                continue
            match = _RULE_SQL.match(rule.get("sql", ""))
            if not match or not topic_matches(match.group("filter"), topic):
                continue
            message = dict(event)
            if "topic()" in match.group("select"):
                message["topic"] = topic
            self._run_actions(rule, message, event["timestamp"])

    def _run_actions(self, rule: dict[str, Any], message: dict[str, Any], timestamp_ms: int) -> None:
        """A rule's lambda and cloudwatchLogs actions, each authorized as AWS authorizes it."""
        rule_arn = self.account.arn("iot", f"rule/{rule['ruleName']}")
        for action in rule.get("actions", []):
            try:
                if "lambda" in action:
                    function_arn = action["lambda"]["functionArn"]
                    permitted = AUTHORITY.function_policy_allows(
                        function_arn, IOT_SERVICE, rule_arn, self.account.account_id
                    )
                    if not permitted.allowed:  # the rule may invoke only what the function policy allows
                        raise AwsError(
                            403,
                            "AccessDeniedException",
                            f"the function policy of {function_arn} "
                            f"does not allow {IOT_SERVICE} to invoke it for {rule_arn}",
                        )
                    self._invoke_asynchronously(function_arn, message)
                if "cloudwatchLogs" in action:
                    logs = action["cloudwatchLogs"]
                    stream = f"rule-{rule['ruleName']}"
                    self._authorize_log_write(logs.get("roleArn", ""), rule_arn, logs["logGroupName"], stream)
                    self.account.put_log_event(logs["logGroupName"], stream, timestamp_ms, json.dumps(message))
            except AwsError as error:  # as in AWS, a failing action does not fail the registry change
                print(f"fleet-provisioning: rule {rule['ruleName']}: action failed: {error}", flush=True)

    def _invoke_asynchronously(self, function_arn: str, message: dict[str, Any]) -> None:
        """A rule's lambda action invokes asynchronously: an event the function's reserved concurrency
        throttles goes back to Lambda's queue and is tried again until its maximum event age (the
        function's setting, else 6 hours on AWS; here at most THROTTLED_EVENT_SECONDS), rather than
        dropped at once (invocation-async-error-handling.html). The retries run on a pool of their
        own, so a flood of throttled events never holds up provisioning."""
        try:
            self.account.invoke(function_arn, message)
            return
        except AwsError as error:
            if error.code != "TooManyRequestsException":
                raise
        age = min(self.account.event_max_age(function_arn) or THROTTLED_EVENT_SECONDS, THROTTLED_EVENT_SECONDS)
        self._throttled.submit(self._retry_throttled, function_arn, message, time.monotonic() + age)

    def _retry_throttled(self, function_arn: str, message: dict[str, Any], deadline: float) -> None:
        delay = 0.05
        while time.monotonic() + delay <= deadline:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                self.account.invoke(function_arn, message)
                return
            except AwsError as error:
                if error.code != "TooManyRequestsException":
                    print(f"fleet-provisioning: {function_arn}: throttled event failed: {error}", flush=True)
                    return
        print(f"fleet-provisioning: {function_arn}: a throttled event reached its maximum age", flush=True)

    def _authorize_log_write(self, role_arn: str, rule_arn: str, group: str, stream: str) -> None:
        """A cloudwatchLogs action writes as its roleArn: IoT must be able to assume the role, and the
        role must allow logs:CreateLogStream, logs:DescribeLogStreams and logs:PutLogEvents
        (https://docs.aws.amazon.com/iot/latest/developerguide/cloudwatch-logs-rule-action.html); the
        stream's calls are authorized on the stream's ARN, DescribeLogStreams on the group's."""
        trust = AUTHORITY.trusts(role_arn, IOT_SERVICE, rule_arn, self.account.account_id)
        if not trust.allowed:
            raise AwsError(403, "AccessDeniedException", f"IoT cannot assume the rule action's role {role_arn!r}")
        role = AssumedRole(role_arn, session=rule_arn.rsplit("/", 1)[-1])
        group_arn = self.account.arn("logs", f"log-group:{group}")
        stream_arn = log_stream_arn(self.account.region, self.account.account_id, group, stream)
        steps = [("logs:DescribeLogStreams", group_arn), ("logs:PutLogEvents", stream_arn)]
        if not self.account.log_stream_exists(group, stream):
            steps.insert(1, ("logs:CreateLogStream", stream_arn))
        for action, arn in steps:
            decision = AUTHORITY.authorize(role, action, arn)
            if not decision.allowed:
                raise AwsError(403, "AccessDeniedException", AUTHORITY.denial(role, action, arn, decision))

    def shadow(self, thing_name: str, operation: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        base = f"$aws/things/{thing_name}/shadow/{operation}"
        try:
            request = json.loads(payload or b"{}")
        except ValueError:
            request = {}
        token = (
            {"clientToken": request["clientToken"]} if isinstance(request, dict) and "clientToken" in request else {}
        )
        try:
            if operation == "get":
                document = self.account.get_thing_shadow(thing_name)
            else:
                document = self.account.update_thing_shadow(thing_name, payload.decode(errors="replace"))
        except AwsError as error:
            return f"{base}/rejected", {"code": error.status, "message": error.message, **token}
        except Exception as error:  # noqa: BLE001 - the device still gets a shadow-shaped answer
            return f"{base}/rejected", {"code": 500, "message": f"InternalFailure: {error}"[:300], **token}
        return f"{base}/accepted", {**document, **token}


def _step_taken(permission: Permission, thing: dict[str, Any], policies: list[dict[str, Any]], exists: bool) -> bool:
    """Whether applying this template to this device takes the step (Permission.when)."""
    return {
        "always": True,
        "ThingTypeName given": bool(thing.get("ThingTypeName")),
        "ThingGroups given": bool(thing.get("ThingGroups")),
        "PolicyName given": bool(policies),
        "CertificateId given": True,  # a fleet template's certificate is the device's, by id
        "the thing does not exist yet": not exists,
        "Status ACTIVE": True,  # the sandbox activates the certificate (the template says ACTIVE)
    }[permission.when]


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload or b"{}")
    except ValueError:
        raise Rejected(400, "InvalidPayload", "the payload is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, "InvalidPayload", "the payload is not a JSON object")
    return value
