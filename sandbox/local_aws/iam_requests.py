"""What each AWS call of a Lambda function asks of IAM, and AWS's refusal when the role says no.

A WSGI layer in front of the local AWS: a request signed with a function's credentials (see
`iam_enforcement.Authority.function_credentials`) is mapped to the IAM action(s) and resource ARN(s)
AWS authorizes it against, for the services the handlers use: DynamoDB (by X-Amz-Target and
TableName, and kms:Decrypt of the table's customer managed key through DynamoDB), the IoT data
plane's shadow and publish calls, CloudWatch metrics, CloudWatch Logs and KMS. Each is checked with
the one check (`Authority.authorize`) against the function's execution role; a denial gets that
service's AccessDenied error in AWS's message form. A request from a function that cannot be mapped
is refused too (fail closed), saying so. Requests signed with any other key pass unchecked (the
account's administrator: Terraform, operator tools, tests).

Action names and resource types: the Service Authorization Reference
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moto.dynamodb.models import dynamodb_backends
from moto.kms.models import kms_backends

from sandbox.local_aws.iam_enforcement import AUTHORITY, AssumedRole, Authority

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(frozen=True)
class Check:
    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)


class Unmapped(Exception):
    """The sandbox cannot tell which IAM action and resource AWS would check: refused."""


@dataclass
class Call:
    service: str  # the SigV4 signing name: dynamodb, iotdata, logs, kms, monitoring, sts, ...
    region: str
    account: str
    method: str
    path: str
    target: str
    body: bytes
    query: dict[str, list[str]]
    principal: str = ""  # the x-amzn-principal header (IoT's ListPrincipalThings names its certificate there)

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise Unmapped("the request body is not JSON") from None
        if not isinstance(value, dict):
            raise Unmapped("the request body is not a JSON object")
        return value

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in urllib.parse.parse_qs(self.body.decode(errors="replace")).items()}

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"


# DynamoDB -----------------------------------------------------------------------------------------
DYNAMODB_TABLE_ACTIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable",
    "DescribeTimeToLive", "DescribeContinuousBackups", "ListTagsOfResource",
})  # fmt: skip
TRANSACT_ACTIONS = {
    "Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}  # fmt: skip


def _table_key_arn(call: Call, table_name: str) -> str | None:
    """The customer managed KMS key the table is encrypted with, if any (AWS owned keys need no IAM)."""
    table = dynamodb_backends[call.account][call.region].tables.get(table_name)
    sse = getattr(table, "sse_specification", None) or {}
    key = sse.get("KMSMasterKeyId") if sse.get("Enabled") in (True, "true") else None
    if not key:
        return None
    try:
        return str(kms_backends[call.account][call.region].describe_key(key).arn)
    except Exception:  # noqa: BLE001 - a key that cannot be found cannot decrypt either: refuse
        raise Unmapped(f"the table's KMS key {key} cannot be found") from None


def _dynamodb(call: Call) -> list[Check]:
    prefix, _, operation = call.target.partition(".")
    if prefix != "DynamoDB_20120810":
        raise Unmapped(f"X-Amz-Target {call.target!r}")
    body = call.json()
    if operation == "ListTables":
        return [Check("dynamodb:ListTables", "*")]
    tables: list[tuple[str, str]] = []  # (action, table name)
    if operation in DYNAMODB_TABLE_ACTIONS:
        tables.append((operation, str(body.get("TableName", ""))))
    elif operation in ("BatchGetItem", "BatchWriteItem"):
        tables += [(operation, name) for name in body.get("RequestItems", {})]
    elif operation in ("TransactWriteItems", "TransactGetItems"):
        for item in body.get("TransactItems", []):
            for kind, detail in item.items():
                if kind not in TRANSACT_ACTIONS:
                    raise Unmapped(f"{operation} item {kind}")
                tables.append((TRANSACT_ACTIONS[kind], str(detail.get("TableName", ""))))
    else:
        raise Unmapped(f"DynamoDB {operation}")
    checks: list[Check] = []
    for action, table in tables:
        if not table or table.startswith("arn:"):
            raise Unmapped(f"DynamoDB {operation} without a plain TableName")
        resource = call.arn("dynamodb", f"table/{table}")
        if operation in ("Query", "Scan") and body.get("IndexName"):
            resource += f"/index/{body['IndexName']}"
        checks.append(Check(f"dynamodb:{action}", resource))
        key_arn = _table_key_arn(call, table) if action not in ("DescribeTable", "ListTagsOfResource") else None
        if key_arn:
            # DynamoDB decrypts the table key with the caller's permission, through DynamoDB
            # (https://docs.aws.amazon.com/kms/latest/developerguide/services-dynamodb.html).
            via = {"kms:viaservice": f"dynamodb.{call.region}.amazonaws.com", "kms:calleraccount": call.account}
            checks.append(Check("kms:Decrypt", key_arn, via))
    return checks


# IoT data plane -----------------------------------------------------------------------------------
_SHADOW_PATH = re.compile(r"^/things/([^/]+)/shadow$")
_NAMED_SHADOWS_PATH = re.compile(r"^/api/things/shadow/ListNamedShadowsForThing/([^/]+)$")
_PUBLISH_PATH = re.compile(r"^/topics/(.+)$")
SHADOW_ACTIONS = {"GET": "GetThingShadow", "POST": "UpdateThingShadow", "DELETE": "DeleteThingShadow"}


def _iotdata(call: Call) -> list[Check]:
    path = urllib.parse.unquote(call.path)
    shadow = _SHADOW_PATH.match(path)
    if shadow and call.method in SHADOW_ACTIONS:
        return [Check(f"iot:{SHADOW_ACTIONS[call.method]}", call.arn("iot", f"thing/{shadow.group(1)}"))]
    named = _NAMED_SHADOWS_PATH.match(path)
    if named and call.method == "GET":
        return [Check("iot:ListNamedShadowsForThing", call.arn("iot", f"thing/{named.group(1)}"))]
    publish = _PUBLISH_PATH.match(path)
    if publish and call.method == "POST":
        return [Check("iot:Publish", call.arn("iot", f"topic/{publish.group(1)}"))]
    raise Unmapped(f"IoT data plane {call.method} {path}")


# IoT control plane (the calls the stack's functions make) ------------------------------------------
# Resource types per action: https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html
_CERTIFICATE_PATH = re.compile(r"^/certificates/([0-9a-fA-F]{64})$")
_THING_PRINCIPALS_PATH = re.compile(r"^/things/([^/]+)/principals$")
_ATTACHED_POLICIES_PATH = re.compile(r"^/attached-policies/(.+)$")
CERTIFICATE_ACTIONS = {"GET": "DescribeCertificate", "PUT": "UpdateCertificate", "DELETE": "DeleteCertificate"}


def _iot(call: Call) -> list[Check]:
    path = urllib.parse.unquote(call.path)
    certificate = _CERTIFICATE_PATH.match(path)
    if certificate and call.method in CERTIFICATE_ACTIONS:
        return [Check(f"iot:{CERTIFICATE_ACTIONS[call.method]}", call.arn("iot", f"cert/{certificate.group(1)}"))]
    if path == "/certificates" and call.method == "GET":
        return [Check("iot:ListCertificates", "*")]  # no resource type
    principals = _THING_PRINCIPALS_PATH.match(path)
    if principals and call.method == "GET":
        return [Check("iot:ListThingPrincipals", call.arn("iot", f"thing/{principals.group(1)}"))]
    if path == "/principals/things" and call.method == "GET" and call.principal.startswith("arn:"):
        return [Check("iot:ListPrincipalThings", call.principal)]
    attached = _ATTACHED_POLICIES_PATH.match(path)
    if attached and call.method == "POST" and attached.group(1).startswith("arn:"):
        return [Check("iot:ListAttachedPolicies", attached.group(1))]
    raise Unmapped(f"IoT {call.method} {path}")


# CloudWatch, Logs, KMS, STS -----------------------------------------------------------------------
CLOUDWATCH_UNSCOPED = frozenset({"PutMetricData", "GetMetricData", "GetMetricStatistics", "ListMetrics"})
_CBOR_PATH = re.compile(r"^/service/GraniteServiceVersion20100801/operation/([A-Za-z]+)$")


def _cloudwatch(call: Call) -> list[Check]:
    context: dict[str, Any] = {}
    cbor = _CBOR_PATH.match(call.path)
    if cbor:
        operation = cbor.group(1)  # the body is CBOR; its Namespace stays unread (conditions on it fail closed)
    elif call.target:
        operation = call.target.rpartition(".")[2]
        if "Namespace" in call.json():
            context["cloudwatch:namespace"] = str(call.json()["Namespace"])
    else:
        form = call.form()
        operation = form.get("Action", "")
        if "Namespace" in form:
            context["cloudwatch:namespace"] = form["Namespace"]
    if operation not in CLOUDWATCH_UNSCOPED:
        raise Unmapped(f"CloudWatch {operation or 'request'}")
    return [Check(f"cloudwatch:{operation}", "*", context)]


LOGS_STREAM_ACTIONS = frozenset({"PutLogEvents", "GetLogEvents"})
LOGS_GROUP_ACTIONS = frozenset({"CreateLogStream", "DescribeLogStreams", "FilterLogEvents", "CreateLogGroup"})


def _logs(call: Call) -> list[Check]:
    prefix, _, operation = call.target.partition(".")
    body = call.json()
    group = body.get("logGroupName")
    if prefix != "Logs_20140328" or not isinstance(group, str):
        raise Unmapped(f"CloudWatch Logs {operation or call.target or 'request'}")
    if operation in LOGS_STREAM_ACTIONS and isinstance(body.get("logStreamName"), str):
        return [Check(f"logs:{operation}", call.arn("logs", f"log-group:{group}:log-stream:{body['logStreamName']}"))]
    if operation in LOGS_GROUP_ACTIONS:
        return [Check(f"logs:{operation}", call.arn("logs", f"log-group:{group}"))]
    raise Unmapped(f"CloudWatch Logs {operation}")


def _kms(call: Call) -> list[Check]:
    prefix, _, operation = call.target.partition(".")
    key = call.json().get("KeyId")
    if prefix != "TrentService" or not isinstance(key, str) or not operation:
        raise Unmapped(f"KMS {operation or 'request'} without a KeyId")  # Decrypt without KeyId: key in the blob
    try:
        arn = kms_backends[call.account][call.region].describe_key(key).arn
    except Exception:  # noqa: BLE001 - AWS checks the key it finds; none found, none to check
        raise Unmapped(f"KMS key {key} not found") from None
    return [Check(f"kms:{operation}", str(arn))]


def _sts(call: Call) -> list[Check]:
    if call.form().get("Action") == "GetCallerIdentity":
        return []  # AWS: no permission is needed to call GetCallerIdentity
    raise Unmapped("STS " + (call.form().get("Action") or "request"))


MAPPERS: dict[str, Callable[[Call], list[Check]]] = {
    "dynamodb": _dynamodb,
    "iotdata": _iotdata,
    "iot": _iot,
    "monitoring": _cloudwatch,
    "logs": _logs,
    "kms": _kms,
    "sts": _sts,
}


def checks_for(call: Call) -> list[Check]:
    mapper = MAPPERS.get(call.service)
    if mapper is None:
        raise Unmapped(f"service {call.service}")
    return mapper(call)


# Refusals, in each service's error shape ----------------------------------------------------------
def refusal(service: str, target: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    if service == "dynamodb":
        body = {"__type": "com.amazon.coral.service#AccessDeniedException", "Message": message}
        return "400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")], json.dumps(body).encode()
    if service in ("logs", "kms") or (service == "monitoring" and target):
        content_type = "application/x-amz-json-1.0" if service == "monitoring" else "application/x-amz-json-1.1"
        body = {"__type": "AccessDeniedException", "message": message}
        return "400 Bad Request", [("Content-Type", content_type)], json.dumps(body).encode()
    if service in ("monitoring", "sts"):
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{_escape(message)}</Message></Error><RequestId>sandbox</RequestId></ErrorResponse>"
        )
        return "403 Forbidden", [("Content-Type", "text/xml")], xml.encode()
    # rest-json services (the IoT data plane among them): code in x-amzn-ErrorType, 403
    code = "ForbiddenException" if service == "iotdata" else "AccessDeniedException"
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    return "403 Forbidden", headers, json.dumps({"message": message}).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class FunctionCallsChecked:
    """WSGI layer: a function's request goes on only when its execution role allows all it asks."""

    def __init__(self, app: Callable[..., Iterable[bytes]], authority: Authority = AUTHORITY) -> None:
        self.app = app
        self.authority = authority
        self.refused = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        credential = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", "") or "") or _CREDENTIAL.search(
            "Credential=" + urllib.parse.unquote(environ.get("QUERY_STRING", "")).partition("X-Amz-Credential=")[2]
        )
        caller = self.authority.caller(credential.group(1)) if credential else None
        if caller is None or credential is None:
            return self.app(environ, start_response)
        service, region = credential.group(3), credential.group(2)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        body = environ["wsgi.input"].read()
        environ["wsgi.input"].seek(0)
        call = Call(
            service, region, caller.account_id, environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
            target, body, urllib.parse.parse_qs(environ.get("QUERY_STRING", "")),
            environ.get("HTTP_X_AMZN_PRINCIPAL", ""),
        )  # fmt: skip
        message = self.refusal_message(caller, call)
        if message is None:
            return self.app(environ, start_response)
        self.refused += 1
        status, headers, data = refusal(service, target, message)
        start_response(status, [*headers, ("x-amzn-RequestId", "sandbox-iam")])
        return [data]

    def refusal_message(self, caller: AssumedRole, call: Call) -> str | None:
        """None when the role allows everything the call asks; else why it is refused."""
        try:
            checks = checks_for(call)
        except Unmapped as unmapped:
            return (
                f"User: {caller.arn} is not authorized: the sandbox cannot tell which IAM action and resource "
                f"AWS checks for this request ({unmapped}), so it refuses it (fail closed)"
            )
        for check in checks:
            decision = self.authority.authorize(caller, check.action, check.resource, check.context)
            if not decision.allowed:
                return self.authority.denial(caller, check.action, check.resource, decision)
        return None
