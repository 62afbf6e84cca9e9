"""DynamoDB's GetItem and plain-SET UpdateItem answered straight from moto's tables.

While devices provision, half of the local AWS's CPU went to three DynamoDB calls per device (the
hook's conditional claim, the registry function's read and its conditional update), and most of
that was moto's machinery around them rather than the work: Flask routing, the model-driven
request parser and response serializer, two parses of the condition, two deep copies of the item,
and ten deep-copying validator passes over the update expression.

This WSGI layer answers the simple, successful forms of those two calls itself, on the same
tables, under the same write lock, with the same answer moto gives (the differential tests in
tests/unit/sandbox/dynamodb/test_fast_path.py hold it to that). Everything else goes to moto unchanged:
any parameter outside the handled set, an update that is not `SET name = :value` /
`SET name = if_not_exists(name, :value)`, a key that does not match the schema, a value of a
type other than S, N, BOOL or NULL, an empty string, binary data anywhere in the item, an item
that does not exist yet, a table with a stream, an unused or missing placeholder, a body that is
not plain UTF-8 JSON, and every failure (a condition that does not hold, a table key named in the
update, an index key given the wrong type or an empty value, an item growing past moto's size
limit) — moto then makes the error, so errors have one source. Nothing is written before the
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

from sandbox.dynamodb import atomic_writes, index_partitions

TARGET_PREFIX = "DynamoDB_20120810."
GET_ITEM_PARAMETERS = frozenset({"TableName", "Key", "ConsistentRead", "ReturnConsumedCapacity"})
UPDATE_ITEM_PARAMETERS = frozenset(
    {
        "TableName",
        "Key",
        "UpdateExpression",
        "ConditionExpression",
        "ExpressionAttributeNames",
        "ExpressionAttributeValues",
        "ReturnValues",
        "ReturnValuesOnConditionCheckFailure",
        "ReturnConsumedCapacity",
    }
)
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
        atomic_writes.install()  # moto's writes take the lock this layer's writes take

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if (
            target in ("DynamoDB_20120810.GetItem", "DynamoDB_20120810.UpdateItem")
            and environ.get("REQUEST_METHOD") == "POST"
            and environ.get("PATH_INFO") == "/"
            and not environ.get("QUERY_STRING")  # moto reads a region from anywhere in the URL
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
            text = body.decode("utf-8")  # what moto accepts; json.loads(bytes) would also take UTF-16
            request = json.loads(text) if not text.startswith("\ufeff") else None
        except ValueError:
            raise Declined from None
        if not isinstance(request, dict) or request.get("ReturnConsumedCapacity", "NONE") != "NONE":
            raise Declined
        name = request.get("TableName")
        backend = _backend(environ)
        if not isinstance(name, str) or backend.tables.get(name) is None:
            raise Declined
        if action == "GetItem":
            if not request.keys() <= GET_ITEM_PARAMETERS or not isinstance(request.get("ConsistentRead", False), bool):
                raise Declined
            table = backend.tables[name]
            key = _key(table, request.get("Key"))
            with atomic_writes.LOCK:  # no write changes the item while it is read out
                item = table.get_item(*key)
                if item is not None and _has_binary(item.attrs.values()):
                    raise Declined
                return json.dumps({"Item": item.to_json()["Attributes"]} if item else {}).encode()
        if not request.keys() <= UPDATE_ITEM_PARAMETERS:
            raise Declined
        return_values = request.get("ReturnValues", "NONE")
        if return_values not in ("NONE", "ALL_NEW"):
            raise Declined
        if request.get("ReturnValuesOnConditionCheckFailure", "NONE") not in ("NONE", "ALL_OLD"):
            raise Declined
        return _update(backend, name, request, return_values == "ALL_NEW")


def _backend(environ: dict[str, Any]) -> Any:
    """The account and region moto would pick for this request (BaseResponse.setup_class)."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or DynamoHandler.region_regex.search(
        environ.get("HTTP_HOST", "")
    ):
        raise Declined
    # Parsed as moto's dispatcher parses it: Credential=<key>/<date>/<region>/<service>/aws4_request
    scope = authorization.split(",")[0].split()[1].split("/")
    if len(scope) != 5 or scope[3] != "dynamodb":
        raise Declined  # moto routes by the signed service: not ours to answer
    agent = DynamoHandler.region_from_useragent_regex.search(environ.get("HTTP_USER_AGENT", ""))
    region = agent.group(1) if agent else scope[2]
    key = DynamoHandler.access_key_regex.search(authorization)
    access_key = key.group(1) if key else "AKIAEXAMPLE"
    account = get_account_id_from(access_key)
    mark_account_as_visited(account_id=account, access_key=access_key, service="dynamodb", region=region)
    return dynamodb_backends[account][region]


def _declared_types(table: Any) -> dict[str, str]:
    """The type of each attribute the table declares (its keys and its indexes' keys)."""
    return {d["AttributeName"]: d["AttributeType"] for d in table.attr}


def _key(table: Any, key: Any) -> tuple[DynamoType, DynamoType | None]:
    """The key's hash and range values, when the key names exactly the table's key attributes with
    non-empty values of their declared types."""
    wanted = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    if not isinstance(key, dict) or sorted(key) != sorted(wanted):
        raise Declined
    types = _declared_types(table)
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


def _has_binary(values: Iterable[DynamoType]) -> bool:
    """Whether B or BS data is anywhere in these values (moto's serializer encodes it; not here)."""
    for value in values:
        if value.type in ("B", "BS"):
            return True
        if value.type == "M" and _has_binary(value.value.values()):
            return True
        if value.type == "L" and _has_binary(value.value):
            return True
    return False


def _update(backend: Any, table_name: str, request: dict[str, Any], all_new: bool) -> bytes:
    """Applies the update if it is plain and succeeds; the answer (the item after it, if asked)."""
    table = backend.tables[table_name]
    plan = update_plan(request.get("UpdateExpression") or "")
    if plan is None:
        raise Declined
    names = request.get("ExpressionAttributeNames")
    values = request.get("ExpressionAttributeValues")
    if names == {} or values == {} or not isinstance(names or {}, dict) or not isinstance(values or {}, dict):
        raise Declined
    names, values = names or {}, values or {}
    if not all(isinstance(name, str) and name for name in names.values()):
        raise Declined
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
    paths = set(targets) | {source for _, source, _ in assignments if source}
    if len(set(targets)) != len(targets) or paths & {table.hash_key_attr, table.range_key_attr}:
        raise Declined  # overlapping paths, or a table key named anywhere in the update: moto refuses
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
    declared = _declared_types(table)
    index_keys = set(table.attribute_keys)

    with atomic_writes.LOCK:
        if backend.tables.get(table_name) is not table or table.stream_shard is not None:
            raise Declined
        item = table.get_item(hash_key, range_key)
        if item is None or _has_binary(item.attrs.values()):
            raise Declined  # an update that creates the item, or binary data: moto's path
        attrs = item.attrs
        try:
            holds = condition is None or check.expr(item)
        except Exception:  # noqa: BLE001
            raise Declined from None
        if not holds:
            raise Declined  # moto answers ConditionalCheckFailedException (with the item, if asked)
        new = {
            target: _existing(attrs, source, target) if source and source in attrs else DynamoType(values[value])
            for target, source, value in assignments
        }
        size = item.size()
        for name, value in new.items():
            if name in declared and declared[name] != value.type:
                raise Declined  # an index key of another type: moto refuses
            if name in index_keys and value.type in ("S", "B") and not value.value:
                raise Declined  # an empty index key: moto refuses
            # moto's item-size rule, action by action: the item as it is plus the new entry
            entry = bytesize(name) + value.size()
            if size + entry > MAX_ITEM_BYTES:
                raise Declined
            size += entry - (bytesize(name) + attrs[name].size() if name in attrs else 0)
        before = {name: attrs[name] for name in new if name in attrs}
        for name, value in new.items():
            dict.__setitem__(attrs, name, value)  # checked above, for the whole update at once
        index_partitions.written(table, hash_key, range_key)
        try:
            answer: dict[str, Any] = {"Attributes": item.to_json()["Attributes"]} if all_new else {}
            answer["ConsumedCapacity"] = {"TableName": table.name, "CapacityUnits": UPDATE_CAPACITY}
            return json.dumps(answer).encode()  # as this update left the item, whatever the next one does
        except Exception:  # noqa: BLE001 - not expected; if it happens, leave the item as it was
            restored = {
                name: before.get(name, value) for name, value in attrs.items() if name in before or name not in new
            }
            dict.clear(attrs)
            dict.update(attrs, restored)
            index_partitions.written(table, hash_key, range_key)
            raise Declined from None
