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
model accepts table ARNs of up to 1,024 characters). docs/sandbox.md's contract table lists them,
and what is left unchecked.

Patterns are AWS's Java regular expressions: matched whole, with Java's ASCII-only `\\w`, `\\d`,
`\\s` and POSIX classes (`\\p{Print}` and the like), Unicode categories (`\\p{L}`) and nested classes
as in Java, `.` excluding Java's line terminators, and a UTF-16 surrogate pair in a class read as
the code point it encodes. String lengths count code points (Smithy's length trait: Unicode scalar
values), blobs bytes, lists and maps entries. A value a model marks `sensitive`, or one holding such
a value, is named without its value, as AWS's answers do.

A request the sandbox cannot read as the model says (a body that is not JSON, a member of the wrong
type, an operation the model lacks) goes on to moto unchanged, as does one whose check fails
unexpectedly (said in the sandbox's log): the check only ever refuses, never breaks a request.
"""

from __future__ import annotations

import io
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import regex
from moto.core.model import Shape
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.request import Request, determine_request_protocol
from moto.core.routing import get_service_router
from moto.core.utils import get_service_model
from moto.moto_server.werkzeug_app import SIGNING_ALIASES
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from sandbox.request_pipeline.iam_requests import (
    QUERY_COMPATIBLE,
    SANDBOX_PATHS,
    UNSIGNED_STS_ACTIONS,
    Response,
    error_response,
)


@dataclass(frozen=True)
class Service:
    """A service the sandbox validates: its botocore model, the error its validation answers with, and
    its SigV4 signing name (which decides the error's form)."""

    model: str
    code: str
    signing_name: str
    status: int = 400


# By the service moto dispatches a request to (the signing name, lower-cased, moto's aliases applied):
# the services the stack and its functions call. The codes are AWS's: IoT (aws/aws-sdk-java#666),
# Lambda and DynamoDB (ValidationException in real answers), CloudWatch Logs
# (InvalidParameterException), IAM, STS and CloudWatch's query form (ValidationError).
SERVICES: dict[str, Service] = {
    "iot": Service("iot", "InvalidRequestException", "iot"),
    SIGNING_ALIASES["iotdata"]: Service("iot-data", "InvalidRequestException", "iotdata"),
    "dynamodb": Service("dynamodb", "ValidationException", "dynamodb"),
    "lambda": Service("lambda", "ValidationException", "lambda"),
    "logs": Service("logs", "InvalidParameterException", "logs"),
    "monitoring": Service("cloudwatch", "ValidationError", "monitoring"),
    "iam": Service("iam", "ValidationError", "iam"),
    "sts": Service("sts", "ValidationError", "sts"),
    "kms": Service("kms", "ValidationException", "kms"),
    "events": Service("events", "ValidationException", "events"),
}
VALIDATION_EXCEPTION = "ValidationException"  # what newer operations of a service declare instead of its own code
PATTERN_TIMEOUT = 1.0  # seconds; a pattern that cannot decide in that time (Java backtracks too) is not applied


# Java regular expressions -------------------------------------------------------------------------
# Java's \w, \d, \s and POSIX classes are ASCII-only (java.util.regex.Pattern); its Unicode categories
# (\p{L}) are not; its `.` excludes every line terminator. Nested classes ([a-z[0-9]]) are unions in
# Java, as in regex's VERSION1.
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
_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"
_TOKEN = re.compile(
    r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})|\\([pP]\{\w+\}|.)|(\[\^?)|(\])|(\.)|.", re.IGNORECASE | re.DOTALL
)


def _translate(pattern: str) -> str:
    out, depth = [], 0
    for token in _TOKEN.finditer(pattern):
        high, low, escape, opening, closing, dot = token.groups()
        if high:  # a UTF-16 surrogate pair: the code point it encodes
            out.append(f"\\U{0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00):08X}")
        elif escape is not None:
            lowered = escape[0].lower() + escape[1:]
            if lowered in _JAVA_ASCII:
                negated = escape[0] != lowered[0]
                out.append(f"[{'^' if negated else ''}{_JAVA_ASCII[lowered]}]")
            else:
                out.append(token.group(0))
        elif opening:
            depth += 1
            out.append(opening)
        elif closing and depth:
            depth -= 1
            out.append(closing)
        elif dot and not depth:
            out.append(_JAVA_DOT)
        else:
            out.append(token.group(0))
    return "".join(out)


_PATTERNS: dict[str, regex.Pattern[str] | None] = {}


def java_pattern(pattern: str) -> regex.Pattern[str] | None:
    """AWS's pattern as a Python regular expression with Java's meaning, or None when it cannot be read
    (counted by `constraint_counts`; no pattern of the validated services is unreadable today)."""
    if pattern not in _PATTERNS:
        try:
            _PATTERNS[pattern] = regex.compile(_translate(pattern), regex.VERSION1)
        except regex.error:
            _PATTERNS[pattern] = None
    return _PATTERNS[pattern]


# What AWS enforces beyond the model -----------------------------------------------------------------
_FUNCTION_NAME_LIMIT = re.compile(r"If you specify only the function name, it(?: is|'s) limited to (\d+) characters")
_POSSIBLE_VALUES = re.compile(r"Possible values are: ([0-9, ]+?),? and (\d+)\.")
DYNAMODB_NAME = re.compile(r"[a-zA-Z0-9_.-]+")  # developerguide/HowItWorks.NamingRulesDataTypes.html
DYNAMODB_NAME_LENGTH = (3, 255)


@dataclass(frozen=True)
class Extra:
    """A check AWS makes beyond the model, and the error code it answers with ("" for the service's own)."""

    check: Callable[[Any], list[str]]
    code: str = ""


def _documented(shape: Shape, pattern: re.Pattern[str]) -> re.Match[str] | None:
    return pattern.search(re.sub(r"<[^>]+>", "", shape.documentation or ""))


def _beyond_the_model(service: str, member: str, shape: Shape) -> Extra | None:
    """A check AWS makes on this member beyond its model's constraints, or None. Resolved when the
    validator is built; tests/unit/sandbox/request_pipeline/test_model_validation.py fails when the
    model's wording no longer gives a rule it gave."""
    if service == "lambda" and shape.name in ("FunctionName", "NamespacedFunctionName"):
        found = _documented(shape, _FUNCTION_NAME_LIMIT)
        if found is None:
            return None
        limit = int(found.group(1))

        def function_name(value: Any) -> list[str]:
            if isinstance(value, str) and ":" not in value and len(value) > limit:
                return [f"Member must have length less than or equal to {limit}"]
            return []

        # Real answers name InvalidParameterValueException for this one (cloud-custodian#3352).
        return Extra(function_name, "InvalidParameterValueException")
    if service == "logs" and member == "retentionInDays":
        found = _documented(shape, _POSSIBLE_VALUES)
        if found is None:
            return None
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
_NUMBERS = ("integer", "long", "float", "double")


def _length(shape: Shape, value: Any) -> int | None:
    if shape.type_name == "string" and isinstance(value, str):
        return len(value)
    if shape.type_name == "blob" and isinstance(value, (bytes, bytearray)):
        return len(value)
    if shape.type_name in ("list", "map") and isinstance(value, (list, dict)):
        return len(value)
    return None


def _constraints(shape: Shape, value: Any) -> list[str]:
    """What the model says of one value, in the order AWS lists it: length or range, then pattern, enum.
    A value already over its length is not matched against the pattern (it is refused either way, and
    some patterns take quadratic time on long values)."""
    metadata = shape.metadata
    found = []
    if shape.type_name in _NUMBERS and isinstance(value, (int, float)) and not isinstance(value, bool):
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
        if pattern is not None and not found:
            compiled = java_pattern(pattern)
            try:
                matched = compiled is None or compiled.fullmatch(value, timeout=PATTERN_TIMEOUT) is not None
            except TimeoutError:
                matched = True
            if not matched:
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


def _shapes_within(shape: Shape) -> Iterator[Shape]:
    if shape.type_name == "structure":
        yield from shape.members.values()
    elif shape.type_name == "list":
        yield shape.member
    elif shape.type_name == "map":
        yield shape.key
        yield shape.value


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
    """The constraints of one service's model, checked on parsed requests. Everything it derives from
    the model is derived when it is built; checking a request only reads it."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.code = SERVICES[service].code
        self.model = get_service_model(SERVICES[service].model)
        self._extra: dict[tuple[str, str], Extra] = {}
        self._hidden: dict[str, bool] = {}
        self._codes: dict[str, str] = {}
        for name in self.model.operation_names:
            operation = self.model.operation_model(name)
            errors = {error.name for error in operation.error_shapes}
            own = VALIDATION_EXCEPTION in errors and self.code not in errors
            self._codes[name] = VALIDATION_EXCEPTION if own else self.code
            if operation.input_shape is not None:
                self._prepare(operation.input_shape, "", set())

    def _prepare(self, shape: Shape, member: str, path: set[str]) -> bool:
        """Resolves the checks beyond the model for every (member, shape) a request can hold, and whether
        each shape holds a sensitive value; returns the latter."""
        if shape.name in self._hidden:
            return self._hidden[shape.name]
        if shape.name in path:  # a recursive shape: what it holds is settled where the recursion started
            return bool(shape.metadata.get("sensitive"))
        path = path | {shape.name}
        hidden = bool(shape.metadata.get("sensitive"))
        for inner_name, inner in (
            shape.members.items() if shape.type_name == "structure" else ((member, s) for s in _shapes_within(shape))
        ):
            extra = _beyond_the_model(self.service, inner_name, inner)
            if extra is not None:
                self._extra[inner_name, inner.name] = extra
            hidden = self._prepare(inner, inner_name, path) or hidden
        self._hidden[shape.name] = hidden
        return hidden

    def extra_rules(self) -> dict[tuple[str, str], Extra]:
        return dict(self._extra)

    def check(self, operation: str, params: dict[str, Any]) -> Refusal | None:
        """Every violation in the request, as AWS words each, in the order of the model's members; None
        when there is none. The code is the service's, or ValidationException for an operation that
        declares it instead; where a check beyond the model has a code of its own, the first such
        problem's code answers (AWS documents none of this ordering)."""
        shape = self.model.operation_model(operation).input_shape
        found: list[tuple[str, str]] = []
        if shape is not None:
            self._structure(shape, params, "", found)
        return self._refusal(found, self._codes.get(operation, self.code))

    def check_shape(self, shape_name: str, value: Any, path: str) -> Refusal | None:
        """One value against a named shape of the model (for calls the sandbox serves in-process)."""
        found: list[tuple[str, str]] = []
        self._value(self.model.shape_for(shape_name), value, path, path.rpartition(".")[2], found)
        return self._refusal(found, self.code)

    @staticmethod
    def _refusal(found: list[tuple[str, str]], code: str) -> Refusal | None:
        if not found:
            return None
        return Refusal(next((own for own, _ in found if own), code), [problem for _, problem in found])

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
        extra = self._extra.get((member, shape.name))
        if extra is not None:
            known = {problem for _, problem in problems}
            problems += [(extra.code, p) for p in extra.check(value) if p not in known]
        if problems:
            shown = "" if self._hidden.get(shape.name, False) else f"'{_shown(value)}' "
            found.extend((code, f"Value {shown}at '{path}' failed to satisfy constraint: {p}") for code, p in problems)
        if shape.type_name == "structure":
            self._structure(shape, value, path, found)
        elif shape.type_name == "list" and isinstance(value, list):
            for index, item in enumerate(value, start=1):
                if item is not None:
                    self._value(shape.member, item, f"{path}.{index}.member", member, found)
        elif shape.type_name == "map" and isinstance(value, dict):
            self._map(shape, value, path, member, found)

    def _map(self, shape: Shape, value: dict[Any, Any], path: str, member: str, found: list[tuple[str, str]]) -> None:
        """AWS reports a map once for its keys and once for its values, each with all their constraints."""
        for side, items, item_shape in (("keys", value.keys(), shape.key), ("value", value.values(), shape.value)):
            if any(_constraints(item_shape, item) for item in items):
                shown = "" if self._hidden.get(shape.name, False) else f"'{_shown(value)}' "
                listed = ", ".join(_declared(item_shape))
                constraint = f"Map {side} must satisfy constraint: [{listed}]"
                found.append(("", f"Value {shown}at '{path}' failed to satisfy constraint: {constraint}"))
        if shape.value.type_name in ("structure", "list", "map"):
            for item_key, item in value.items():
                if item is not None:
                    self._value(shape.value, item, f"{path}.{item_key}", member, found)


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


_VALIDATORS: dict[str, Validator] = {}
_VALIDATORS_LOCK = threading.Lock()


def validator(service: str) -> Validator:
    with _VALIDATORS_LOCK:
        if service not in _VALIDATORS:
            _VALIDATORS[service] = Validator(service)
        return _VALIDATORS[service]


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
        for inner in _shapes_within(shape):
            walk(inner)

    for name in model.operation_names:
        input_shape = model.operation_model(name).input_shape
        if input_shape is not None:
            walk(input_shape)
    return counts


# The WSGI layer -----------------------------------------------------------------------------------
def service_of(environ: dict[str, Any]) -> str | None:
    """The service moto dispatches the request to, as moto reads it (werkzeug_app's
    infer_service_region_host): the credential scope's service, lower-cased, with moto's signing
    aliases; an unsigned request only for the STS calls AWS serves unsigned."""
    authorization = environ.get("HTTP_AUTHORIZATION") or ""
    if authorization:
        try:
            scope = authorization.split(",")[0].split()[1]
            _, _, _, service, _ = scope.split("/")
        except (IndexError, ValueError):
            return None
        return str(SIGNING_ALIASES.get(service.lower(), service)).lower()
    return "sts" if environ.get("sandbox.form_action") in UNSIGNED_STS_ACTIONS else None


class RequestsValidated:
    """WSGI layer: a request to a validated service whose members break its model is refused in that
    service's error form before the local AWS sees it; anything the sandbox cannot read as one of the
    model's operations goes on to moto unchanged."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            found = self.refusal(environ)
        except Exception as error:  # noqa: BLE001 - the check never breaks a request: moto answers it
            print(f"sandbox: request validation skipped ({type(error).__name__}: {_loggable(str(error))})", flush=True)
            found = None
        if found is None:
            return self.app(environ, start_response)
        service, protocol, operation, refusal = found
        with self._lock:
            self.refused += 1
        # The client reads the refusal; the sandbox's log says it too, for whoever debugs a deploy.
        print(f"sandbox: {service} {operation} refused by its model: {_loggable(refusal.message)}", flush=True)
        status, headers, body = _answer(SERVICES[service], protocol, refusal)
        start_response(status, [*headers, ("x-amzn-RequestId", "sandbox-validation")])
        return [body]

    def refusal(self, environ: dict[str, Any]) -> tuple[str, str, str, Refusal] | None:
        """The service, protocol, operation and refusal of a request AWS's validation would refuse;
        else None."""
        path = environ.get("PATH_INFO", "") or ""
        if path.startswith(SANDBOX_PATHS):
            return None
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        form = _form(environ, body)
        service = service_of({**environ, "sandbox.form_action": form.get("Action")})
        if service not in SERVICES:
            return None
        checked = validator(service)
        request = Request({**environ, "wsgi.input": io.BytesIO(body)})
        try:
            protocol = determine_request_protocol(checked.model, request.content_type)
        except NotImplementedError:  # a content type the model lacks: moto reads the body as the model's own
            protocol = checked.model.protocol
        if protocol == "query":
            # moto reads a query request's parameters from the URL and the body, the body's winning.
            action = form.get("Action")
            if action not in checked.model.operation_names:
                return None
            operation = checked.model.operation_model(action)
            params = PROTOCOL_PARSERS["query"](operation).parse(_request_dict(request, body, form, {}))
        elif protocol in ("json", "rest-json"):
            if body.strip() and not isinstance(_json_object(body), dict):
                return None  # not a JSON object: moto answers it as it does
            if protocol == "json":  # the operation is the target's, whatever the Content-Type (as moto reads it)
                name = (environ.get("HTTP_X_AMZ_TARGET") or "").rpartition(".")[2]
                if name not in checked.model.operation_names:
                    return None
                operation, uri_params = checked.model.operation_model(name), {}
            else:
                try:
                    operation, uri_params = get_service_router(checked.model.service_name).match(request)
                except (HTTPException, NotImplementedError):
                    return None
            params = PROTOCOL_PARSERS[protocol](operation).parse(
                _request_dict(request, body, request.values, uri_params)
            )
        else:  # CBOR (CloudWatch's first protocol): moto 5.2.5 reads none of it
            return None
        if not isinstance(params, dict):
            return None
        refusal = checked.check(operation.name, params)
        return (service, protocol, operation.name, refusal) if refusal is not None else None


def _form(environ: dict[str, Any], body: bytes) -> MultiDict[str, str]:
    """The URL's parameters updated by the body's, whatever the Content-Type (as moto reads them)."""
    values: MultiDict[str, str] = MultiDict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "") or ""))
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return values
    if text and not text.lstrip().startswith(("{", "[")):
        for key, value in urllib.parse.parse_qs(text, keep_blank_values=True).items():
            values.setlist(key, value)
    return values


def _json_object(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _request_dict(request: Request, body: bytes, values: Any, uri_params: dict[str, Any]) -> Any:
    return {
        "method": request.method,
        "values": values,
        "headers": request.headers,
        "body": body,
        "url_path": request.path,
        "url_params": uri_params,
    }


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _loggable(text: str) -> str:
    """One line of ASCII: control characters, newlines and other scripts escaped."""
    return json.dumps(text)[1:-1]


def _answer(service: Service, protocol: str, refusal: Refusal) -> Response:
    name = service.signing_name
    if protocol == "json" and name in QUERY_COMPATIBLE:
        return error_response("json", name, refusal.code, service.status, refusal.message, query_code=refusal.code)
    if name == "dynamodb":  # DynamoDB's validation errors carry their own namespace
        content = json.dumps({"__type": f"com.amazon.coral.validate#{refusal.code}", "message": refusal.message})
        return f"{service.status} Bad Request", [("Content-Type", "application/x-amz-json-1.0")], content.encode()
    message = _NOT_XML.sub("\ufffd", refusal.message) if protocol == "query" else refusal.message
    return error_response(protocol, name, refusal.code, service.status, message)
