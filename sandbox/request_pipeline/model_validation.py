"""Requests refused as AWS's request validation refuses them, from botocore's service models.

AWS checks each request's members against its service model (`required`, `min`, `max`, `pattern`,
`enum`) before it looks anything up, and answers every violation of a request in one error:
"2 validation errors detected: Value 'a b' at 'thingName' failed to satisfy constraint: Member must
satisfy regular expression pattern: [a-zA-Z0-9:_-]+; ...". moto checks almost none of it, and
botocore checks only `required`, `min` and types on the client (a client built with
`parameter_validation=False`, or another SDK, sends anything). So the sandbox reads the same model
botocore ships (the one moto routes and parses requests with) and refuses what it refuses.

What AWS enforces beyond its model, where AWS's own text says so, is added here with its source:
the model's documentation for Lambda function names (64 characters unless an ARN) and log
retention (the listed day counts), and DynamoDB's developer guide for table and index names (the
model accepts table ARNs of up to 1,024 characters). docs/sandbox.md's contract table lists them.

Patterns are AWS's Java regular expressions: matched whole, with Java's ASCII-only `\\w`, `\\d`,
`\\s` and POSIX classes (`\\p{Print}` and the like), Unicode categories (`\\p{L}`) as in Java, and a
UTF-16 surrogate pair in a class read as the code points it encodes. Lengths count UTF-16 code
units for strings (Java's `String.length()`), bytes for blobs and entries for lists and maps.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import regex
from moto.core.model import OperationModel, Shape
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.request import Request, determine_request_protocol
from moto.core.routing import get_service_router
from moto.core.utils import get_service_model
from werkzeug.exceptions import HTTPException

from sandbox.request_pipeline.iam_requests import QUERY_COMPATIBLE, SANDBOX_PATHS, Response, error_response


@dataclass(frozen=True)
class Service:
    """A service the sandbox validates: its botocore model and the error its validation answers with."""

    model: str
    code: str
    status: int = 400


# By SigV4 signing name: the services the stack and its functions call. The codes are AWS's: IoT
# (aws/aws-sdk-java#666), Lambda and DynamoDB (ValidationException in real answers), CloudWatch Logs
# (InvalidParameterException), IAM, STS and CloudWatch's query form (ValidationError).
SERVICES: dict[str, Service] = {
    "iot": Service("iot", "InvalidRequestException"),
    "iotdata": Service("iot-data", "InvalidRequestException"),
    "dynamodb": Service("dynamodb", "ValidationException"),
    "lambda": Service("lambda", "ValidationException"),
    "logs": Service("logs", "InvalidParameterException"),
    "monitoring": Service("cloudwatch", "ValidationError"),
    "iam": Service("iam", "ValidationError"),
    "sts": Service("sts", "ValidationError"),
    "kms": Service("kms", "ValidationException"),
    "events": Service("events", "ValidationException"),
}
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")


# Java regular expressions -------------------------------------------------------------------------
# Java's \w, \d, \s and POSIX classes are ASCII-only (java.util.regex.Pattern); its Unicode
# categories (\p{L}) are not. Nested classes ([a-z[0-9]]) are unions in Java, as in regex's VERSION1.
_JAVA_ASCII = {
    "w": "a-zA-Z_0-9",
    "d": "0-9",
    "s": " \\t\\n\\x0B\\f\\r",
    "p{Lower}": "a-z",
    "p{Upper}": "A-Z",
    "p{ASCII}": "\\x00-\\x7F",
    "p{Alpha}": "a-zA-Z",
    "p{Digit}": "0-9",
    "p{Alnum}": "a-zA-Z0-9",
    "p{Punct}": "!-/:-@\\[-`{-~",
    "p{Graph}": "!-~",
    "p{Print}": " -~",
    "p{Blank}": " \\t",
    "p{Cntrl}": "\\x00-\\x1F\\x7F",
    "p{XDigit}": "0-9a-fA-F",
    "p{Space}": " \\t\\n\\x0B\\f\\r",
}
_ESCAPE = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})|\\([pP]\{\w+\}|.)", re.IGNORECASE | re.DOTALL)


def _java_escape(match: re.Match[str]) -> str:
    if match.group(1):  # a UTF-16 surrogate pair: the code point it encodes
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"
    escape = match.group(3)
    lowered = escape[0].lower() + escape[1:]
    if lowered in _JAVA_ASCII:
        negated = escape[0] != lowered[0]
        return f"[{'^' if negated else ''}{_JAVA_ASCII[lowered]}]"
    return match.group(0)


@functools.cache
def java_pattern(pattern: str) -> regex.Pattern[str] | None:
    """AWS's pattern as a Python regular expression with Java's meaning, or None when it cannot be read
    (counted by `constraint_counts`; no pattern of the validated services is unreadable today)."""
    try:
        return regex.compile(_ESCAPE.sub(_java_escape, pattern), regex.VERSION1)
    except regex.error:
        return None


# What AWS enforces beyond the model -----------------------------------------------------------------
_FUNCTION_NAME_LIMIT = re.compile(r"If you specify only the function name, it is limited to (\d+) characters")
_POSSIBLE_VALUES = re.compile(r"Possible values are: ([0-9, ]+?),? and (\d+)\.")
DYNAMODB_NAME = re.compile(r"[a-zA-Z0-9_.-]+")  # developerguide/HowItWorks.NamingRulesDataTypes.html
DYNAMODB_NAME_LENGTH = (3, 255)


def _documented(shape: Shape, pattern: re.Pattern[str]) -> re.Match[str]:
    found = pattern.search(re.sub(r"<[^>]+>", "", shape.documentation or ""))
    if found is None:  # the model's wording changed: the rule must be read again, not guessed
        raise LookupError(f"the model's documentation of {shape.name} no longer says {pattern.pattern!r}")
    return found


@dataclass(frozen=True)
class Extra:
    """A check AWS makes beyond the model, and the error code it answers with ("" for the service's own)."""

    check: Callable[[Any], list[str]]
    code: str = ""


def _beyond_the_model(service: str, member: str, shape: Shape) -> Extra | None:
    """A check AWS makes on this member beyond its model's constraints, or None."""
    if service == "lambda" and shape.name in ("FunctionName", "NamespacedFunctionName") and shape.documentation:
        limit = int(_documented(shape, _FUNCTION_NAME_LIMIT).group(1))

        def function_name(value: Any) -> list[str]:
            if isinstance(value, str) and ":" not in value and len(value) > limit:
                return [f"Member must have length less than or equal to {limit}"]
            return []

        # Real answers name InvalidParameterValueException for this one (cloud-custodian#3352).
        return Extra(function_name, "InvalidParameterValueException")
    if service == "logs" and member == "retentionInDays" and "Possible values are" in (shape.documentation or ""):
        found = _documented(shape, _POSSIBLE_VALUES)
        allowed = [int(day) for day in found.group(1).split(",")] + [int(found.group(2))]

        def retention(value: Any) -> list[str]:
            if value in allowed:
                return []
            return [f"Member must satisfy enum value set: [{', '.join(map(str, allowed))}]"]

        return Extra(retention)
    if service == "dynamodb" and shape.name in ("TableArn", "TableName", "IndexName"):

        def table_name(value: Any) -> list[str]:
            if not isinstance(value, str) or value.startswith("arn:"):
                return []
            low, high = DYNAMODB_NAME_LENGTH
            found = []
            if len(value) > high:
                found.append(f"Member must have length less than or equal to {high}")
            if len(value) < low:
                found.append(f"Member must have length greater than or equal to {low}")
            if DYNAMODB_NAME.fullmatch(value) is None:
                found.append(f"Member must satisfy regular expression pattern: {DYNAMODB_NAME.pattern}")
            return found

        return Extra(table_name)
    return None


# The model walk -----------------------------------------------------------------------------------
def _length(shape: Shape, value: Any) -> int | None:
    if shape.type_name == "string" and isinstance(value, str):
        return len(value.encode("utf-16-le")) // 2
    if shape.type_name == "blob" and isinstance(value, (bytes, bytearray)):
        return len(value)
    if shape.type_name in ("list", "map") and isinstance(value, (list, dict)):
        return len(value)
    return None


def _constraints(shape: Shape, value: Any) -> list[str]:
    """What the model says of one value, in the order AWS lists it: length or range, then pattern, enum."""
    metadata = shape.metadata
    found = []
    if shape.type_name in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in metadata and value > metadata["max"]:
            found.append(f"Member must have value less than or equal to {_number(metadata['max'])}")
        if "min" in metadata and value < metadata["min"]:
            found.append(f"Member must have value greater than or equal to {_number(metadata['min'])}")
        return found
    length = _length(shape, value)
    if length is not None:
        if "max" in metadata and length > metadata["max"]:
            found.append(f"Member must have length less than or equal to {_number(metadata['max'])}")
        if "min" in metadata and length < metadata["min"]:
            found.append(f"Member must have length greater than or equal to {_number(metadata['min'])}")
    if shape.type_name == "string" and isinstance(value, str):
        pattern = metadata.get("pattern")
        if pattern is not None:
            compiled = java_pattern(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                found.append(f"Member must satisfy regular expression pattern: {pattern}")
        enum = metadata.get("enum")
        if enum and value not in enum:
            found.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    return found


def _number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _shown(value: Any) -> str:
    """A value as AWS's message prints it (Java's toString of the parsed request)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_shown(k)}={_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (bytes, bytearray)):
        return f"java.nio.HeapByteBuffer[pos=0 lim={len(value)} cap={len(value)}]"
    return str(value)


def _member_path(parent: str, member: str) -> str:
    name = member[:1].lower() + member[1:]
    return f"{parent}.{name}" if parent else name


@dataclass(frozen=True)
class Refusal:
    """A request's violations, in AWS's words, and the error code they are answered with."""

    code: str
    problems: list[str]

    @property
    def message(self) -> str:
        count = len(self.problems)
        return f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(self.problems)


class Validator:
    """The constraints of one service's model, checked on parsed requests."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.code = SERVICES[service].code
        self.model = get_service_model(SERVICES[service].model)
        self._extra: dict[tuple[str, str], Extra | None] = {}

    def check(self, operation: str, params: dict[str, Any]) -> Refusal | None:
        """Every violation in the request, as AWS words each, in the order of the model's members; None
        when there is none. Where a check beyond the model has a code of its own, the first such
        problem's code answers (AWS documents none of this ordering)."""
        shape = self.model.operation_model(operation).input_shape
        found: list[tuple[str, str]] = []
        if shape is not None:
            self._structure(shape, params, "", found)
        return self._refusal(found)

    def check_shape(self, shape_name: str, value: Any, path: str) -> Refusal | None:
        """One value against a named shape of the model (for calls the sandbox serves in-process)."""
        found: list[tuple[str, str]] = []
        self._value(self.model.shape_for(shape_name), value, path, path.rpartition(".")[2], found)
        return self._refusal(found)

    def _refusal(self, found: list[tuple[str, str]]) -> Refusal | None:
        if not found:
            return None
        code = next((code for code, _ in found if code), self.code)
        return Refusal(code, [problem for _, problem in found])

    def _structure(self, shape: Shape, value: Any, path: str, found: list[tuple[str, str]]) -> None:
        if not isinstance(value, dict) or getattr(shape, "is_document_type", False):
            return
        required = shape.required_members
        for member, member_shape in shape.members.items():
            member_path = _member_path(path, member)
            if member not in value or value[member] is None:
                if member in required:
                    found.append(
                        ("", f"Value null at '{member_path}' failed to satisfy constraint: Member must not be null")
                    )
                continue
            self._value(member_shape, value[member], member_path, member, found)

    def _value(self, shape: Shape, value: Any, path: str, member: str, found: list[tuple[str, str]]) -> None:
        problems = [("", problem) for problem in _constraints(shape, value)]
        key = (member, shape.name)
        if key not in self._extra:
            self._extra[key] = _beyond_the_model(self.service, member, shape)
        extra = self._extra[key]
        if extra is not None:
            known = {problem for _, problem in problems}
            problems += [(extra.code, p) for p in extra.check(value) if p not in known]
        shown = "" if shape.metadata.get("sensitive") else f"'{_shown(value)}' "
        found.extend((code, f"Value {shown}at '{path}' failed to satisfy constraint: {p}") for code, p in problems)
        if shape.type_name == "structure":
            self._structure(shape, value, path, found)
        elif shape.type_name == "list" and isinstance(value, list):
            for index, item in enumerate(value, start=1):
                if item is not None:
                    self._value(shape.member, item, f"{path}.{index}.member", member, found)
        elif shape.type_name == "map" and isinstance(value, dict):
            self._map(shape, value, path, found)

    def _map(self, shape: Shape, value: dict[Any, Any], path: str, found: list[tuple[str, str]]) -> None:
        """AWS reports a map once for its keys and once for its values, each with all their constraints."""
        shown = f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint"
        for side, items, item_shape in (("keys", value.keys(), shape.key), ("value", value.values(), shape.value)):
            if any(_constraints(item_shape, item) for item in items):
                listed = ", ".join(_declared(item_shape))
                found.append(("", f"{shown}: Map {side} must satisfy constraint: [{listed}]"))
        for item_key, item in value.items():
            if shape.value.type_name in ("structure", "list", "map") and item is not None:
                self._value(shape.value, item, f"{path}.{item_key}", str(item_key), found)


def _declared(shape: Shape) -> Iterator[str]:
    """Every constraint a shape declares, as AWS lists them for a map's keys or values."""
    metadata = shape.metadata
    if "max" in metadata:
        yield f"Member must have length less than or equal to {_number(metadata['max'])}"
    if "min" in metadata:
        yield f"Member must have length greater than or equal to {_number(metadata['min'])}"
    if "pattern" in metadata:
        yield f"Member must satisfy regular expression pattern: {metadata['pattern']}"
    if metadata.get("enum"):
        yield f"Member must satisfy enum value set: [{', '.join(metadata['enum'])}]"


@functools.cache
def validator(service: str) -> Validator:
    return Validator(service)


def constraint_counts(service: str) -> dict[str, int]:
    """How many constraints the validator enforces for a service: each shape's min, max, pattern, enum
    and required members, over the shapes its operations' requests can hold (each shape counted once)."""
    model = validator(service).model
    counts = {"min": 0, "max": 0, "pattern": 0, "enum": 0, "required": 0, "unreadable patterns": 0}
    seen: set[str] = set()

    def walk(shape: Shape) -> None:
        if shape.name in seen:
            return
        seen.add(shape.name)
        metadata = shape.metadata
        for key in ("min", "max"):
            counts[key] += key in metadata
        if "pattern" in metadata:
            counts["pattern" if java_pattern(metadata["pattern"]) is not None else "unreadable patterns"] += 1
        counts["enum"] += bool(metadata.get("enum"))
        if shape.type_name == "structure":
            counts["required"] += len(shape.required_members)
            for member_shape in shape.members.values():
                walk(member_shape)
        elif shape.type_name == "list":
            walk(shape.member)
        elif shape.type_name == "map":
            walk(shape.key)
            walk(shape.value)

    for name in model.operation_names:
        input_shape = model.operation_model(name).input_shape
        if input_shape is not None:
            walk(input_shape)
    return counts


# The WSGI layer -----------------------------------------------------------------------------------
class RequestsValidated:
    """WSGI layer: a request to a validated service whose members break its model is refused in that
    service's error form before the local AWS sees it; anything the sandbox cannot route to one of
    the model's operations, or cannot parse as the model says, goes on to moto unchanged."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.refused = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = self.refusal(environ)
        if found is None:
            return self.app(environ, start_response)
        signing_name, protocol, operation, refusal = found
        self.refused += 1
        # The client reads the refusal; the sandbox's log says it too, for whoever debugs a deploy.
        print(f"sandbox: {signing_name} {operation} refused by its model: {refusal.message}", flush=True)
        status, headers, body = _answer(signing_name, protocol, refusal)
        start_response(status, [*headers, ("x-amzn-RequestId", "sandbox-validation")])
        return [body]

    def refusal(self, environ: dict[str, Any]) -> tuple[str, str, str, Refusal] | None:
        """The signing name, protocol, operation and refusal of a request AWS's validation would refuse;
        else None."""
        path = environ.get("PATH_INFO", "") or ""
        if path.startswith(SANDBOX_PATHS):
            return None
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", "") or "")
        signing_name = scope.group(1) if scope else ""
        if signing_name not in SERVICES:
            return None
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        request = Request({**environ, "wsgi.input": io.BytesIO(body)})
        checked = validator(signing_name)
        try:
            protocol = determine_request_protocol(checked.model, request.content_type)
            operation, uri_params = get_service_router(checked.model.service_name).match(request)
            params = _parse(operation, protocol, request, body, uri_params)
        except (HTTPException, NotImplementedError, KeyError, ValueError, TypeError, AttributeError):
            return None  # not an operation of the model in a form the sandbox reads: moto answers it
        refusal = checked.check(operation.name, params)
        return (signing_name, protocol, operation.name, refusal) if refusal is not None else None


def _parse(operation: OperationModel, protocol: str, request: Request, body: bytes, uri: dict[str, Any]) -> Any:
    parser = PROTOCOL_PARSERS[protocol](operation)
    return parser.parse(
        {
            "method": request.method,
            "values": request.values,
            "headers": request.headers,
            "body": body,
            "url_path": request.path,
            "url_params": uri,
        }
    )


def _answer(signing_name: str, protocol: str, refusal: Refusal) -> Response:
    status = SERVICES[signing_name].status
    if protocol == "json" and signing_name in QUERY_COMPATIBLE:
        return error_response("json", signing_name, refusal.code, status, refusal.message, query_code=refusal.code)
    if signing_name == "dynamodb":  # DynamoDB's validation errors carry their own namespace
        content = json.dumps({"__type": f"com.amazon.coral.validate#{refusal.code}", "message": refusal.message})
        return f"{status} Bad Request", [("Content-Type", "application/x-amz-json-1.0")], content.encode()
    return error_response(protocol, signing_name, refusal.code, status, refusal.message)
