"""What each AWS call of a Lambda function asks of IAM, and AWS's refusal when the role says no.

A WSGI layer in front of the local AWS: a request signed with a function's credentials (see
`sandbox.iam.enforcement.Authority.function_credentials`) is mapped to the IAM action(s) and resource ARN(s)
AWS authorizes it against, for the services the handlers use: DynamoDB (by X-Amz-Target and
TableName, and kms:Decrypt of the table's customer managed key through DynamoDB), the IoT data
plane's shadow and publish calls, CloudWatch metrics, CloudWatch Logs and KMS. Each is checked with
the one check (`Authority.authorize`) against the function's execution role; a denial gets that
service's AccessDenied error in AWS's message form. A request from a function that cannot be mapped
is refused too (fail closed), saying so, and so is one whose SigV4 credential scope cannot be read.

Who may call at all: the account's administrator key (`sandbox`: Terraform, the operator tools, the
tests), unchecked, and the functions' own keys, checked. Any other access key is refused as AWS
refuses a key it does not know (UnrecognizedClientException for JSON and rest-JSON services,
InvalidClientTokenId for query ones), and an unsigned request as AWS refuses one
(MissingAuthenticationToken), except the sandbox's own paths (/_sandbox/..., /moto-api/...) and
the few calls AWS serves unsigned (STS AssumeRoleWithWebIdentity and AssumeRoleWithSAML).

Action names and resource types: the Service Authorization Reference
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from moto.dynamodb.models import dynamodb_backends
from moto.kms.models import kms_backends

from sandbox.iam.enforcement import ADMIN_ACCESS_KEY, AUTHORITY, AssumedRole, Authority

# The access key, read loosely (whatever the rest of the credential looks like), and the whole SigV4
# credential scope, read strictly: a function's key with a scope that does not parse is refused.
_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
SANDBOX_PATHS = ("/_sandbox/", "/moto-api/")  # the sandbox's own, unsigned as moto's own clients call them
UNSIGNED_STS_ACTIONS = frozenset({"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"})  # AWS needs no signature


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
DYNAMODB_TABLE_ACTIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "DescribeTable",
        "DescribeTimeToLive",
        "DescribeContinuousBackups",
    }
)
# The calls that read or write items, for which DynamoDB decrypts the table key with the caller's
# permission; the table's metadata (DescribeTable, its TTL, backups and tags) needs no key.
DYNAMODB_ITEM_ACTIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "ConditionCheckItem",
    }
)
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


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
    if operation == "ListTagsOfResource":  # the table (or index, stream) by its ARN
        arn = body.get("ResourceArn")
        if not isinstance(arn, str) or not arn.startswith("arn:aws:dynamodb:"):
            raise Unmapped("DynamoDB ListTagsOfResource without a DynamoDB ResourceArn")
        return [Check("dynamodb:ListTagsOfResource", arn)]
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
        key_arn = _table_key_arn(call, table) if action in DYNAMODB_ITEM_ACTIONS else None
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
_THING_PATH = re.compile(r"^/things/([^/]+)$")
_TARGET_POLICIES_PATH = re.compile(r"^/target-policies/([^/]+)$")
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
    # The certificate-rotation function's calls. Attach/DetachThingPrincipal and Attach/DetachPolicy
    # are checked on the certificate (their resource type in the reference above is cert).
    if principals and call.method in ("PUT", "DELETE") and call.principal.startswith("arn:"):
        action = "AttachThingPrincipal" if call.method == "PUT" else "DetachThingPrincipal"
        return [Check(f"iot:{action}", call.principal)]
    thing = _THING_PATH.match(path)
    if thing and call.method == "GET":
        return [Check("iot:DescribeThing", call.arn("iot", f"thing/{thing.group(1)}"))]
    if path == "/certificates" and call.method == "POST":
        return [Check("iot:CreateCertificateFromCsr", "*")]  # no resource type
    target = call.json().get("target") if _TARGET_POLICIES_PATH.match(path) else None
    if isinstance(target, str) and target.startswith("arn:") and call.method in ("PUT", "POST"):
        return [Check("iot:AttachPolicy" if call.method == "PUT" else "iot:DetachPolicy", target)]
    raise Unmapped(f"IoT {call.method} {path}")


# CloudWatch, Logs, KMS, STS -----------------------------------------------------------------------
CLOUDWATCH_UNSCOPED = frozenset({"PutMetricData", "GetMetricData", "GetMetricStatistics", "ListMetrics"})
_CBOR_PATH = re.compile(r"^/service/(GraniteServiceVersion20100801)/operation/([A-Za-z]+)$")


def _cloudwatch(call: Call) -> list[Check]:
    context: dict[str, Any] = {}
    cbor = _CBOR_PATH.match(call.path)
    if cbor:
        operation = cbor.group(2)  # the body is CBOR; its Namespace stays unread (conditions on it fail closed)
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


# CreateLogStream and PutLogEvents are authorized on the stream's ARN
# (arn:aws:logs:<region>:<account>:log-group:<group>:log-stream:<stream>), as AWS's denials name it.
LOGS_STREAM_ACTIONS = frozenset({"CreateLogStream", "PutLogEvents", "GetLogEvents"})
LOGS_GROUP_ACTIONS = frozenset({"DescribeLogStreams", "FilterLogEvents", "CreateLogGroup"})


def log_stream_arn(region: str, account: str, group: str, stream: str) -> str:
    return f"arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}"


def _logs(call: Call) -> list[Check]:
    prefix, _, operation = call.target.partition(".")
    body = call.json()
    group = body.get("logGroupName")
    if prefix != "Logs_20140328" or not isinstance(group, str):
        raise Unmapped(f"CloudWatch Logs {operation or call.target or 'request'}")
    if operation in LOGS_STREAM_ACTIONS and isinstance(body.get("logStreamName"), str):
        return [Check(f"logs:{operation}", log_stream_arn(call.region, call.account, group, body["logStreamName"]))]
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
QUERY_SERVICES = frozenset({"iam", "sts", "sns", "monitoring", "ec2", "cloudformation", "autoscaling", "rds"})
QUERY_COMPATIBLE = frozenset({"monitoring"})  # JSON/CBOR errors also carry the query code (x-amzn-query-error)
# The service of an unsigned JSON or CBOR request, for the form of its refusal.
TARGET_SERVICES = {
    "DynamoDB_20120810": "dynamodb",
    "GraniteServiceVersion20100801": "monitoring",
    "Logs_20140328": "logs",
    "TrentService": "kms",
}
Response = tuple[str, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class Refused:
    """One refusal in every protocol's form: (code, HTTP status) per protocol family, and the message."""

    json: tuple[str, int]
    rest_json: tuple[str, int]
    query: tuple[str, int]
    message: str
    s3: tuple[str, int, str] = ("AccessDenied", 403, "Access Denied")


UNKNOWN_KEY = Refused(
    json=("UnrecognizedClientException", 400),
    rest_json=("UnrecognizedClientException", 403),
    query=("InvalidClientTokenId", 403),
    message="The security token included in the request is invalid.",
    s3=("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records."),
)
MISSING_TOKEN = Refused(
    json=("MissingAuthenticationTokenException", 400),
    rest_json=("MissingAuthenticationTokenException", 403),
    query=("MissingAuthenticationToken", 403),
    message="Request is missing Authentication Token",
)
UNREADABLE_SCOPE = Refused(
    json=("IncompleteSignatureException", 400),
    rest_json=("IncompleteSignatureException", 403),
    query=("IncompleteSignature", 400),
    message="The request signature does not conform to AWS standards: its credential scope is not "
    "<access key>/<yyyymmdd>/<region>/<service>/aws4_request",
)


def _protocol(service: str, target: str, path: str, content_type: str, form_action: str) -> str:
    """Which error form the client reads: json, cbor, query, rest-xml (S3) or rest-json."""
    if _CBOR_PATH.match(path):
        return "cbor"
    if target:
        return "json"
    if service in QUERY_SERVICES or form_action or content_type.startswith("application/x-www-form-urlencoded"):
        return "query"
    return "rest-xml" if service == "s3" else "rest-json"


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    return _cbor_head(3, len(data)) + data


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    for extra, size in ((24, 1), (25, 2), (26, 4)):
        if length < 1 << (8 * size):
            return bytes([major << 5 | extra]) + length.to_bytes(size, "big")
    raise ValueError("too long")


def error_response(
    protocol: str,
    service: str,
    code: str,
    status: int,
    message: str,
    *,
    query_code: str = "",
    message_key: str = "message",
) -> Response:
    """An error in the protocol's own form, as botocore (and every SDK) parses it."""
    line = f"{status} {HTTPStatus(status).phrase}"
    if protocol in ("json", "cbor"):
        type_name = f"com.amazon.coral.service#{code}" if service == "dynamodb" else code
        headers: list[tuple[str, str]] = []
        if query_code and service in QUERY_COMPATIBLE:
            headers.append(("x-amzn-query-error", f"{query_code};Sender"))
        if protocol == "cbor":
            body = _cbor_head(5, 2) + _cbor_text("__type") + _cbor_text(type_name)
            body += _cbor_text("message") + _cbor_text(message)
            return line, [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"), *headers], body
        version = "1.0" if service in ("dynamodb", "monitoring") else "1.1"
        content = json.dumps({"__type": type_name, message_key: message}).encode()
        return line, [("Content-Type", f"application/x-amz-json-{version}"), *headers], content
    if protocol in ("query", "rest-xml"):
        if protocol == "rest-xml":
            xml = (
                f"<Error><Code>{code}</Code><Message>{_escape(message)}</Message><RequestId>sandbox</RequestId></Error>"
            )
        else:
            xml = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{_escape(message)}</Message>"
                "</Error><RequestId>sandbox</RequestId></ErrorResponse>"
            )
        return line, [("Content-Type", "text/xml")], xml.encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    return line, headers, json.dumps({"message": message}).encode()


def refused(refusal_kind: Refused, protocol: str, service: str) -> Response:
    if protocol == "rest-xml":
        code, status, message = refusal_kind.s3
        return error_response(protocol, service, code, status, message)
    if protocol == "query" or service in QUERY_COMPATIBLE:
        code, status = refusal_kind.query
        if protocol == "query":
            return error_response(protocol, service, code, status, refusal_kind.message)
        json_code = refusal_kind.json[0]
        return error_response(protocol, service, json_code, status, refusal_kind.message, query_code=code)
    code, status = refusal_kind.rest_json if protocol == "rest-json" else refusal_kind.json
    return error_response(protocol, service, code, status, refusal_kind.message)


def refusal(service: str, target: str, message: str, path: str = "") -> Response:
    """A denied function call, as the service answers an IAM denial."""
    if service == "dynamodb":
        return error_response("json", service, "AccessDeniedException", 400, message, message_key="Message")
    if service in ("logs", "kms") or (service == "monitoring" and (target or _CBOR_PATH.match(path))):
        protocol = "cbor" if _CBOR_PATH.match(path) else "json"
        return error_response(protocol, service, "AccessDeniedException", 400, message)
    if service in ("monitoring", "sts"):
        return error_response("query", service, "AccessDenied", 403, message)
    # rest-json services (the IoT data plane among them): code in x-amzn-ErrorType, 403
    code = "ForbiddenException" if service == "iotdata" else "AccessDeniedException"
    return error_response("rest-json", service, code, 403, message)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class FunctionCallsChecked:
    """WSGI layer: a function's request goes on only when its execution role allows all it asks; the
    administrator's goes on unchecked; anyone else's is refused as AWS refuses an unknown or missing key."""

    def __init__(self, app: Callable[..., Iterable[bytes]], authority: Authority = AUTHORITY) -> None:
        self.app = app
        self.authority = authority
        self.refused = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path.startswith(SANDBOX_PATHS):
            return self.app(environ, start_response)
        authorization = environ.get("HTTP_AUTHORIZATION", "") or ""
        query = environ.get("QUERY_STRING", "") or ""
        presigned = "Credential=" + urllib.parse.unquote(query).partition("X-Amz-Credential=")[2]
        signed_by = _ACCESS_KEY.search(authorization) or _ACCESS_KEY.search(presigned)
        key = signed_by.group(1) if signed_by else ""
        if key == ADMIN_ACCESS_KEY:
            return self.app(environ, start_response)
        credential = _CREDENTIAL.search(authorization) or _CREDENTIAL.search(presigned)
        service = credential.group(3) if credential and credential.group(1) == key else ""
        target = environ.get("HTTP_X_AMZ_TARGET", "") or ""
        body = environ["wsgi.input"].read()
        environ["wsgi.input"].seek(0)
        content_type = environ.get("CONTENT_TYPE") or ""
        form = urllib.parse.parse_qs(query)
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = {**form, **urllib.parse.parse_qs(body.decode(errors="replace"))}
        form_action = (form.get("Action") or [""])[-1]
        protocol = _protocol(service, target, path, content_type, form_action)
        cbor = _CBOR_PATH.match(path)
        shaped_as = service or TARGET_SERVICES.get((cbor.group(1) if cbor else target).partition(".")[0], "")
        caller = self.authority.caller(key) if key else None
        if caller is None:
            if not key and form_action in UNSIGNED_STS_ACTIONS:
                return self.app(environ, start_response)  # AWS serves these unsigned
            return self._answer(start_response, refused(UNKNOWN_KEY if key else MISSING_TOKEN, protocol, shaped_as))
        if credential is None or not service:  # the function's own key, in a scope the sandbox cannot read
            return self._answer(start_response, refused(UNREADABLE_SCOPE, protocol, shaped_as))
        call = Call(
            service,
            credential.group(2),
            caller.account_id,
            environ.get("REQUEST_METHOD", ""),
            path,
            target,
            body,
            urllib.parse.parse_qs(query),
            environ.get("HTTP_X_AMZN_PRINCIPAL", ""),
        )
        message = self.refusal_message(caller, call)
        if message is None:
            return self.app(environ, start_response)
        return self._answer(start_response, refusal(service, target, message, path))

    def _answer(self, start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
        self.refused += 1
        status, headers, data = response
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
