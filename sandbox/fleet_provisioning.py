"""The AWS IoT fleet-provisioning MQTT API, served on the sandbox broker.

Devices publish to $aws/... as with AWS IoT; the broker plugin hands each request to this service
as fp/req/<client id>/<topic>, and the answer goes back to that client only. Served:
CreateKeysAndCertificate, CreateCertificateFromCsr (sandbox-CA certificates, single-use ownership
tokens valid 1 h), RegisterThing (the deployed template, its pre-provisioning hook, the template's
resources, then the thing-created registry event through the topic rules the sandbox supports),
and shadow get/update. Control-plane work goes through boto3 to the sandbox, like any client.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from awscrt import mqtt
from awsiot import mqtt_connection_builder
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox import template_engine
from sandbox.data_plane import SERVICE_ID, Broker, RegistryRules

TOKEN_LIFETIME = 3600.0
_PROVISION = re.compile(r"^\$aws/provisioning-templates/([^/]+)/provision/json$")
_SHADOW = re.compile(r"^\$aws/things/([^/]+)/shadow/(get|update)$")
_RULE_SQL = re.compile(r"^\s*SELECT\s+(?P<select>.+?)\s+FROM\s+'(?P<filter>[^']+)'\s*$", re.IGNORECASE | re.DOTALL)


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.body = {"statusCode": status, "errorCode": code, "errorMessage": message}


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


class FleetProvisioningService:
    def __init__(self, endpoint_url: str, region: str, broker: Broker) -> None:
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32)
        session = boto3.session.Session(
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",  # noqa: S106 - the sandbox accepts any credentials
            region_name=region,
        )
        self.iot = session.client("iot", endpoint_url=endpoint_url, config=config)
        self.lambda_ = session.client("lambda", endpoint_url=endpoint_url, config=config)
        self.data = session.client("iot-data", endpoint_url=endpoint_url, config=config)
        self.logs = session.client("logs", endpoint_url=endpoint_url, config=config)
        self.broker = broker
        self.rules = RegistryRules(self.iot)
        self.tokens: dict[str, OwnershipToken] = {}
        self._tokens_lock = threading.Lock()
        self._rules_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fleet")
        self._stopping = threading.Event()
        self.connection: mqtt.Connection | None = None

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
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.connection.connect().result(timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        subscribed, _ = self.connection.subscribe("fp/req/#", mqtt.QoS.AT_LEAST_ONCE, self._on_request)
        subscribed.result(timeout=10)
        threading.Thread(target=self._refresh_loop, name="access-rules", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self.connection is not None:
            try:
                self.connection.disconnect().result(timeout=5)
            except Exception:  # noqa: BLE001, S110 - stopping anyway
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _refresh_loop(self) -> None:
        """Revocations and other registry changes reach the broker within about two seconds."""
        while not self._stopping.wait(2.0):
            try:
                self.refresh_rules()
            except Exception as error:  # noqa: BLE001 - keep serving; the next round retries
                print(f"fleet-provisioning: refreshing access rules failed: {error}", flush=True)

    def refresh_rules(self) -> None:
        with self._rules_lock:
            rules, revoked = self.rules.refresh()
            self.broker.write_rules(rules, self.broker.crl(revoked))

    # Requests ----------------------------------------------------------------------------------
    def _on_request(self, topic: str, payload: bytes, **_: Any) -> None:
        self._pool.submit(self.handle, topic, payload)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            _, _, client_id, request_topic = topic.split("/", 3)
        except ValueError:
            return
        try:
            answer_topic, body = self.dispatch(client_id, request_topic, payload)
        except Rejected as rejection:
            answer_topic, body = f"{request_topic}/rejected", rejection.body
        except Exception as error:  # noqa: BLE001 - a device always gets an answer
            answer_topic = f"{request_topic}/rejected"
            body = {"statusCode": 500, "errorCode": "InternalFailure", "errorMessage": str(error)[:300]}
        if answer_topic and self.connection is not None:
            self.connection.publish(f"fp/resp/{client_id}/{answer_topic}", json.dumps(body), mqtt.QoS.AT_LEAST_ONCE)

    def dispatch(self, client_id: str, topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
        if topic == "$aws/certificates/create/json":
            return f"{topic}/accepted", self.create_keys_and_certificate()
        if topic == "$aws/certificates/create-from-csr/json":
            return f"{topic}/accepted", self.create_certificate_from_csr(_json(payload))
        match = _PROVISION.match(topic)
        if match:
            return f"{topic}/accepted", self.register_thing(match.group(1), client_id, _json(payload))
        match = _SHADOW.match(topic)
        if match:
            return self.shadow(match.group(1), match.group(2), payload)
        return "", {}

    def _token(self, certificate: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(48)
        with self._tokens_lock:
            now = time.time()
            for stale in [t for t, v in self.tokens.items() if v.expires < now]:
                del self.tokens[stale]
            self.tokens[token] = OwnershipToken(
                certificate["certificateId"], certificate["certificateArn"], certificate["certificatePem"],
                now + TOKEN_LIFETIME,
            )  # fmt: skip
        return token

    def create_keys_and_certificate(self) -> dict[str, Any]:
        created = self.iot.create_keys_and_certificate(setAsActive=False)
        return {
            "certificateId": created["certificateId"],
            "certificatePem": created["certificatePem"],
            "privateKey": created["keyPair"]["PrivateKey"],
            "certificateOwnershipToken": self._token(created),
        }

    def create_certificate_from_csr(self, request: dict[str, Any]) -> dict[str, Any]:
        csr = request.get("certificateSigningRequest")
        if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr:
            raise Rejected(400, "InvalidCsr", "certificateSigningRequest is not a PEM certificate signing request")
        try:
            created = self.iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
        except ClientError as error:
            raise Rejected(400, "InvalidCsr", error.response["Error"].get("Message", "invalid CSR")) from None
        return {
            "certificateId": created["certificateId"],
            "certificatePem": created["certificatePem"],
            "certificateOwnershipToken": self._token(created),
        }

    def register_thing(self, template_name: str, client_id: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            template = self.iot.describe_provisioning_template(templateName=template_name)
        except ClientError:
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
            return self._register(template, client_id, token, request)
        except Rejected:
            with self._tokens_lock:  # a refused attempt does not use the token up
                self.tokens[token_text] = token
            raise

    def _register(
        self, template: dict[str, Any], client_id: str, token: OwnershipToken, request: dict[str, Any]
    ) -> dict[str, Any]:
        parameters = request.get("parameters", {})
        if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
            raise Rejected(400, "InvalidParameters", "parameters must be an object of strings")
        body = json.loads(template["templateBody"])
        hook = template.get("preProvisioningHook")
        if hook:
            parameters = {**parameters, **self._call_hook(hook, template, client_id, token, parameters)}
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
        thing_name, created = self._apply(resources, token)
        self.refresh_rules()  # the device reconnects as its thing right after this answer
        if created:
            self._thing_created_event(thing_name)
        return {"deviceConfiguration": {k: str(v) for k, v in configuration.items()}, "thingName": thing_name}

    def _call_hook(
        self, hook: dict[str, Any], template: dict[str, Any], client_id: str, token: OwnershipToken,
        parameters: dict[str, str],
    ) -> dict[str, str]:  # fmt: skip
        event = {
            "claimCertificateId": "",
            "certificateId": token.certificate_id,
            "certificatePem": token.certificate_pem,
            "templateArn": template["templateArn"],
            "clientId": client_id,
            "parameters": parameters,
        }
        try:
            response = self.lambda_.invoke(FunctionName=hook["targetArn"], Payload=json.dumps(event).encode())
            answer = json.loads(response["Payload"].read() or b"null")
        except (ClientError, ValueError) as error:
            print(f"fleet-provisioning: the hook could not be invoked: {error}", flush=True)
            raise Rejected(403, "ACCESS_DENIED", "Provisioning was denied: the pre-provisioning hook failed") from None
        if response.get("FunctionError"):
            print(f"fleet-provisioning: the hook failed: {answer}", flush=True)
        if response.get("FunctionError") or not isinstance(answer, dict) or answer.get("allowProvisioning") is not True:
            raise Rejected(403, "ACCESS_DENIED", "Provisioning was denied by the pre-provisioning hook")
        overrides = answer.get("parameterOverrides", {})
        return {k: str(v) for k, v in overrides.items()} if isinstance(overrides, dict) else {}

    def _apply(self, resources: dict[str, Any], token: OwnershipToken) -> tuple[str, bool]:
        """Creates the template's thing, attaches certificate and policy, then activates the certificate."""
        things = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::IoT::Thing"]
        policies = [r["Properties"] for r in resources.values() if r.get("Type") == "AWS::IoT::Policy"]
        if len(things) != 1:
            raise Rejected(400, "InvalidParameters", "the template must create exactly one thing")
        thing = things[0]
        name = thing["ThingName"]
        created = False
        try:
            arguments: dict[str, Any] = {"thingName": name}
            if thing.get("ThingTypeName"):
                arguments["thingTypeName"] = thing["ThingTypeName"]
            if thing.get("AttributePayload"):
                arguments["attributePayload"] = {"attributes": thing["AttributePayload"]}
            try:
                self.iot.describe_thing(thingName=name)
            except ClientError:
                self.iot.create_thing(**arguments)
                created = True
            for group in thing.get("ThingGroups", []):
                self.iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
            for policy in policies:
                self.iot.attach_policy(policyName=policy["PolicyName"], target=token.certificate_arn)
            self.iot.attach_thing_principal(thingName=name, principal=token.certificate_arn)
            self.iot.update_certificate(certificateId=token.certificate_id, newStatus="ACTIVE")
        except ClientError as error:
            raise Rejected(400, "InvalidParameters", error.response["Error"].get("Message", str(error))) from None
        return name, created

    def _thing_created_event(self, thing_name: str) -> None:
        """Registry event through the topic rules the sandbox supports (SELECT ... FROM '<filter>';
        lambda and cloudwatchLogs actions). Run before the device's answer: more punctual than AWS."""
        description = self.iot.describe_thing(thingName=thing_name)
        topic = f"$aws/events/thing/{thing_name}/created"
        event = {
            "eventType": "THING_EVENT",
            "eventId": secrets.token_hex(16),
            "timestamp": int(time.time() * 1000),
            "operation": "CREATED",
            "accountId": "123456789012",
            "thingId": description.get("thingId", ""),
            "thingName": thing_name,
            "versionNumber": description.get("version", 1),
            "thingTypeName": description.get("thingTypeName"),
            "attributes": description.get("attributes", {}),
        }
        for summary in self.iot.list_topic_rules()["rules"]:
            if summary.get("ruleDisabled"):
                continue
            rule = self.iot.get_topic_rule(ruleName=summary["ruleName"])["rule"]
            match = _RULE_SQL.match(rule.get("sql", ""))
            if not match or not topic_matches(match.group("filter"), topic):
                continue
            message = dict(event)
            if "topic()" in match.group("select"):
                message["topic"] = topic
            for action in rule.get("actions", []):
                if "lambda" in action:
                    self.lambda_.invoke(
                        FunctionName=action["lambda"]["functionArn"], Payload=json.dumps(message).encode()
                    )
                if "cloudwatchLogs" in action:
                    group = action["cloudwatchLogs"]["logGroupName"]
                    stream = f"rule-{summary['ruleName']}"
                    try:
                        self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
                    except ClientError:
                        pass
                    self.logs.put_log_events(
                        logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": event["timestamp"], "message": json.dumps(message)}],
                    )  # fmt: skip

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
                document = self.data.get_thing_shadow(thingName=thing_name)["payload"].read()
            else:
                document = self.data.update_thing_shadow(thingName=thing_name, payload=payload)["payload"].read()
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
            return f"{base}/rejected", {"code": status, "message": error.response["Error"].get("Message", ""), **token}
        return f"{base}/accepted", {**json.loads(document), **token}


def _json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload or b"{}")
    except ValueError:
        raise Rejected(400, "InvalidPayload", "the payload is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, "InvalidPayload", "the payload is not a JSON object")
    return value
