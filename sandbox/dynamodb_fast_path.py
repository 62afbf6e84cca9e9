"""DynamoDB's GetItem and plain-SET UpdateItem answered straight from moto's tables.

While devices provision, half of the local AWS's CPU went to three DynamoDB calls per device (the
hook's conditional claim, the registry function's read and its conditional update), and most of
that was moto's machinery around them rather than the work: Flask routing, the model-driven
request parser and response serializer, two parses of the condition, two deep copies of the item,
and ten deep-copying validator passes over the update expression.

This WSGI layer answers the simple, successful forms of those two calls itself, on the same
tables, under the same write lock, with the same answer moto gives (the differential tests in
tests/unit/test_dynamodb_fast_path.py hold it to that). Everything else goes to moto unchanged:
any parameter outside the handled set, an update that is not `SET name = :value` /
`SET name = if_not_exists(name, :value)`, a key that does not match the schema, a value of a
type other than S, N, BOOL or NULL, an empty string, an item that does not exist yet, a table with
a stream, an unused or missing placeholder, and every failure (a condition that does not hold
included) — moto then makes the error, so errors have one source. Nothing is written before the
request is known to succeed.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from moto.dynamodb.comparisons import create_condition_expression_parser
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, bytesize
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.parsing.reserved_keywords import ReservedKeywords
from moto.dynamodb.responses import DynamoHandler
from moto.iam.models import get_account_id_from, mark_account_as_visited
from moto.utilities.aws_headers import gen_amz_crc32, gen_amzn_requestid_long

from sandbox import moto_atomic_dynamodb_writes

TARGET_PREFIX = "DynamoDB_20120810."
GET_ITEM_PARAMETERS = frozenset({"TableName", "Key", "ConsistentRead", "ReturnConsumedCapacity"})
UPDATE_ITEM_PARAMETERS = frozenset({
    "TableName", "Key", "UpdateExpression", "ConditionExpression", "ExpressionAttributeNames",
    "ExpressionAttributeValues", "ReturnValues", "ReturnValuesOnConditionCheckFailure", "ReturnConsumedCapacity",
})  # fmt: skip
VALUE_TYPES = frozenset({"S", "N", "BOOL", "NULL"})
MAX_ITEM_BYTES = 405000  # moto's LimitedSizeDict limit: above it moto raises, so moto must answer
UPDATE_CAPACITY = 0.5  # what moto's UpdateItem reports as ConsumedCapacity, asked for or not

_NAME = r"(#[A-Za-z0-9_]+|[A-Za-z][A-Za-z0-9_]*)"
_VALUE = r"(:[A-Za-z0-9_]+)"
_ACTION = re.compile(rf"\s*{_NAME}\s*=\s*(?:{_VALUE}|if_not_exists\s*\(\s*{_NAME}\s*,\s*{_VALUE}\s*\))\s*(,|$)")
_SET = re.compile(r"\s*SET\s", re.IGNORECASE)

# One SET action: (target name token, source name token or None, value placeholder).
Plan = tuple[tuple[str, str | None, str], ...]


class Declined(Exception):
    """The request is not one this layer answers: moto answers it."""


@functools.lru_cache(maxsize=512)
def update_plan(expression: str) -> Plan | None:
    """The SET actions of a plain update expression, or None when it is anything else (or invalid:
    moto's own parser must accept it, so reserved words and syntax errors stay moto's to report)."""
    start = _SET.match(expression)
    if start is None:
        return None
    actions: list[tuple[str, str | None, str]] = []
    position = start.end()
    while position < len(expression):
        action = _ACTION.match(expression, position)
        if action is None:
            return None
        target, value, source, default, separator = action.groups()
        actions.append((target, None, value) if value is not None else (target, source, default))
        position = action.end()
        if not separator:
            break
    if not actions or position < len(expression):
        return None
    reserved = ReservedKeywords.get_reserved_keywords()
    if any(token.upper() in reserved for action in actions for token in action[:2] if token and token[0] != "#"):
        return None  # moto refuses a reserved word used as a name
    try:
        UpdateExpressionParser.make(expression)
    except Exception:  # noqa: BLE001 - whatever moto refuses, moto reports
        return None
    return tuple(actions)


class DynamoDBFastPath:
    """WSGI layer in front of moto: answers what it can (see the module's docstring), passes the rest."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.answered = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if (
            target in ("DynamoDB_20120810.GetItem", "DynamoDB_20120810.UpdateItem")
            and environ.get("REQUEST_METHOD") == "POST"
            and environ.get("PATH_INFO") == "/"
            and not environ.get("HTTP_CONTENT_ENCODING")
            and "HTTP_X_MOTO_ACCOUNT_ID" not in environ
            and "MOTO_ACCOUNT_ID" not in os.environ
        ):
            body = environ["wsgi.input"].read()
            environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again if it answers
            try:
                answer = self._answer(target[len(TARGET_PREFIX) :], environ, body)
            except Declined:
                pass
            else:
                self.answered += 1
                headers = {"Content-Type": "application/x-amz-json-1.0", "server": "amazon.com"}
                gen_amzn_requestid_long(headers)
                gen_amz_crc32(answer, headers)
                headers["Access-Control-Allow-Origin"] = "*"
                start_response("200 OK", list(headers.items()))
                return [answer]
        return self.app(environ, start_response)

    def _answer(self, action: str, environ: dict[str, Any], body: bytes) -> bytes:
        try:
            request = json.loads(body)
        except ValueError:
            raise Declined from None
        if not isinstance(request, dict) or request.get("ReturnConsumedCapacity", "NONE") != "NONE":
            raise Declined
        backend = _backend(environ)
        table = backend.tables.get(request.get("TableName"))
        if table is None:
            raise Declined
        if action == "GetItem":
            if not request.keys() <= GET_ITEM_PARAMETERS or not isinstance(request.get("ConsistentRead", False), bool):
                raise Declined
            item = table.get_item(*_key(table, request.get("Key")))
            return json.dumps({"Item": item.to_json()["Attributes"]} if item else {}).encode()
        if not request.keys() <= UPDATE_ITEM_PARAMETERS or table.stream_shard is not None:
            raise Declined
        return_values = request.get("ReturnValues", "NONE")
        if return_values not in ("NONE", "ALL_NEW"):
            raise Declined
        if request.get("ReturnValuesOnConditionCheckFailure", "NONE") not in ("NONE", "ALL_OLD"):
            raise Declined
        attributes = _update(table, request)
        answer: dict[str, Any] = {}
        if return_values == "ALL_NEW":
            answer["Attributes"] = attributes
        answer["ConsumedCapacity"] = {"TableName": table.name, "CapacityUnits": UPDATE_CAPACITY}
        return json.dumps(answer).encode()


def _backend(environ: dict[str, Any]) -> Any:
    """The account and region moto would pick for this request (BaseResponse.setup_class)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or DynamoHandler.region_regex.search(
        environ.get("HTTP_HOST", "")
    ):
        raise Declined
    agent = DynamoHandler.region_from_useragent_regex.search(environ.get("HTTP_USER_AGENT", ""))
    scope = authorization.split(",")[0].split("/")  # Credential=<key>/<date>/<region>/<service>/aws4_request
    if len(scope) < 4 or scope[3] != "dynamodb":
        raise Declined  # moto routes by the signed service: not ours to answer
    region = agent.group(1) if agent else scope[2]
    key = DynamoHandler.access_key_regex.search(authorization)
    access_key = key.group(1) if key else "AKIAEXAMPLE"
    account = get_account_id_from(access_key)
    mark_account_as_visited(account_id=account, access_key=access_key, service="dynamodb", region=region)
    return dynamodb_backends[account][region]


def _key(table: Any, key: Any) -> tuple[DynamoType, DynamoType | None]:
    """The key's hash and range values, when the key names exactly the table's key attributes with
    non-empty values of their declared types."""
    wanted = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    if not isinstance(key, dict) or sorted(key) != sorted(wanted):
        raise Declined
    types = {d["AttributeName"]: d["AttributeType"] for d in table.attr}
    values = []
    for name in wanted:
        value = key[name]
        if not isinstance(value, dict) or len(value) != 1 or types.get(name) not in value:
            raise Declined
        (raw,) = value.values()
        if not isinstance(raw, str) or not raw:
            raise Declined
        values.append(DynamoType(value))
    return values[0], values[1] if len(values) > 1 else None


_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _plain_value(kind: str, raw: Any) -> bool:
    """A non-empty S, a number, a BOOL or a NULL: values whose meaning moto and AWS agree on."""
    if kind == "S":
        return isinstance(raw, str) and raw != ""
    if kind == "N":
        return isinstance(raw, str) and _NUMBER.fullmatch(raw) is not None
    return (kind == "BOOL" and isinstance(raw, bool)) or (kind == "NULL" and raw is True)


def _existing(attrs: dict[str, Any], source: str, target: str) -> Any:
    """if_not_exists(source, ...) when source exists: its value (a copy when it lands elsewhere)."""
    return attrs[source] if source == target else copy.deepcopy(attrs[source])


def _update(table: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Applies the update if it is plain and its condition holds; the item's attributes after it."""
    plan = update_plan(request.get("UpdateExpression") or "")
    if plan is None:
        raise Declined
    names = request.get("ExpressionAttributeNames")
    values = request.get("ExpressionAttributeValues")
    if names == {} or values == {} or not isinstance(names or {}, dict) or not isinstance(values or {}, dict):
        raise Declined
    names, values = names or {}, values or {}
    for value in values.values():
        if not isinstance(value, dict) or len(value) != 1 or not _plain_value(*next(iter(value.items()))):
            raise Declined

    def resolve(token: str) -> str:
        if not token.startswith("#"):
            return token
        if token not in names:
            raise Declined
        return str(names[token])

    assignments = [(resolve(target), source and resolve(source), value) for target, source, value in plan]
    targets = [target for target, _, _ in assignments]
    if len(set(targets)) != len(targets) or set(targets) & {table.hash_key_attr, table.range_key_attr}:
        raise Declined
    if any(value not in values for _, _, value in assignments):
        raise Declined
    used_names = {token for action in plan for token in action[:2] if token and token.startswith("#")}
    used_values = {value for _, _, value in plan}
    condition = request.get("ConditionExpression")
    try:
        parser = create_condition_expression_parser(condition, names, values)
        check = parser.parse()
    except Exception:  # noqa: BLE001 - whatever moto refuses, moto reports
        raise Declined from None
    used_names.update(parser.expr_attr_names_found)
    used_values.update(parser.expr_attr_values_found)
    if not (names.keys() <= used_names and values.keys() <= used_values):
        raise Declined  # moto refuses unused placeholders (missing ones made the parses fail above)

    hash_key, range_key = _key(table, request.get("Key"))
    with moto_atomic_dynamodb_writes.LOCK:
        item = table.get_item(hash_key, range_key)
        if item is None:
            raise Declined  # the update would create the item: moto's path
        try:
            holds = condition is None or check.expr(item)
        except Exception:  # noqa: BLE001
            raise Declined from None
        if not holds:
            raise Declined  # moto answers ConditionalCheckFailedException (with the item, if asked)
        attrs = item.attrs
        new = {
            target: _existing(attrs, source, target) if source and source in attrs else DynamoType(values[value])
            for target, source, value in assignments
        }
        size = item.size() - sum(bytesize(k) + attrs[k].size() for k in new if k in attrs)
        if size + sum(bytesize(k) + v.size() for k, v in new.items()) > MAX_ITEM_BYTES:
            raise Declined
        for name, value in new.items():
            dict.__setitem__(attrs, name, value)  # size checked above, for the whole update at once
        return item.to_json()["Attributes"]  # as this update left it, whatever the next one does
