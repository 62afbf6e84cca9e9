"""The local AWS's DynamoDB fast path answers exactly as moto does, or leaves the request to moto.

Each request runs twice on identical tables: once through the fast path, once through moto alone
(same account, another region). Status, body and the table afterwards must be the same, and the
fast path must have answered exactly the requests it is meant to answer.
"""

from __future__ import annotations

import binascii
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.test import Client

from sandbox.dynamodb import fast_path
from sandbox.dynamodb.fast_path import DynamoDBFastPath, update_plan
from sandbox.request_pipeline.http_front import Dispatcher

FAST, MOTO = "eu-west-1", "eu-west-2"
SERIAL = "SN-0001"
ENROLLED = {
    "serialNumber": {"S": SERIAL},
    "status": {"S": "enrolled"},
    "deviceType": {"S": "sensor"},
    "manufacturer": {"S": "Acme"},
    "count": {"N": "1.50"},
    "note": {"S": "café ☕"},
    "blank": {"S": ""},
}
BINARY = {"serialNumber": {"S": "SN-BIN"}, "blob": {"B": "AP8="}, "nested": {"M": {"b": {"BS": ["AP8="]}}}}
BIG = {"serialNumber": {"S": "SN-BIG"}, "big": {"S": "x" * 250_000}}
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261127/{region}/dynamodb/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0"
)
# The provisioning hook's claim, as it sends it (lambda/provisioning_hook).
HOOK_CLAIM = {
    "TableName": "registry",
    "Key": {"serialNumber": {"S": SERIAL}},
    "UpdateExpression": "SET #status = :provisioning, certificateId = :certificate, claimCertificateId = :claim, "
    "provisioningStartedAt = :now, updatedAt = :now, firmwareVersion = :firmware, "
    "thingName = if_not_exists(thingName, :derived)",
    "ConditionExpression": "((#status = :enrolled AND deviceType = :type AND (attribute_not_exists(manufacturer) "
    "OR manufacturer = :manufacturer)) AND (attribute_not_exists(thingName) OR thingName = :thing))",
    "ExpressionAttributeNames": {"#status": "status"},
    "ExpressionAttributeValues": {
        ":provisioning": {"S": "provisioning"},
        ":certificate": {"S": "c" * 64},
        ":claim": {"S": "d" * 64},
        ":now": {"S": "2026-11-27T13:00:00Z"},
        ":firmware": {"S": "1.0.0"},
        ":derived": {"S": "sensor-SN-0001"},
        ":enrolled": {"S": "enrolled"},
        ":type": {"S": "sensor"},
        ":manufacturer": {"S": "Acme"},
        ":thing": {"S": "sensor-SN-0001"},
    },
    "ReturnValues": "ALL_NEW",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}
# The registry-events function's update (lambda/registry_events), after the claim.
REGISTRY_UPDATE = {
    "TableName": "registry",
    "Key": {"serialNumber": {"S": SERIAL}},
    "UpdateExpression": "SET #status = :provisioned, thingName = :thing, thingId = :thingId, "
    "provisionedAt = :now, updatedAt = :now",
    "ConditionExpression": "#status = :provisioning AND certificateId = :certificate",
    "ExpressionAttributeNames": {"#status": "status"},
    "ExpressionAttributeValues": {
        ":provisioned": {"S": "provisioned"},
        ":provisioning": {"S": "provisioning"},
        ":thing": {"S": "sensor-SN-0001"},
        ":thingId": {"S": "id-1"},
        ":now": {"S": "2026-11-27T13:00:01Z"},
        ":certificate": {"S": "c" * 64},
    },
}


def with_changes(request: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(request))
    for name, value in changes.items():
        if value is None:
            changed.pop(name, None)
        else:
            changed[name] = value
    return changed


def plain_set(expression: str, names: dict[str, str] | None = None, **values: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": "registry",
        "Key": {"serialNumber": {"S": SERIAL}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": {f":{k}": v for k, v in values.items()},
        "ReturnValues": "ALL_NEW",
    }
    if names:
        request["ExpressionAttributeNames"] = names
    return request


class Twins:
    """Two equal sets of tables, one behind the fast path and one behind moto alone."""

    def __init__(self) -> None:
        self.fast_path = DynamoDBFastPath(Dispatcher(create_backend_app))
        self.clients = {FAST: Client(self.fast_path), MOTO: Client(Dispatcher(create_backend_app))}
        for region in (FAST, MOTO):
            self.call(
                region,
                "CreateTable",
                {  # as the stack's device registry: status and type indexed
                    "TableName": "registry",
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [{"AttributeName": "serialNumber", "KeyType": "HASH"}],
                    "AttributeDefinitions": [
                        {"AttributeName": name, "AttributeType": "S"}
                        for name in ("serialNumber", "deviceType", "status")
                    ],
                    "GlobalSecondaryIndexes": [
                        {
                            "IndexName": f"{name}-index",
                            "KeySchema": [{"AttributeName": name, "KeyType": "HASH"}],
                            "Projection": {"ProjectionType": "ALL"},
                        }
                        for name in ("deviceType", "status")
                    ],
                },
            )
            self.call(
                region,
                "CreateTable",
                {
                    "TableName": "ranged",
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [
                        {"AttributeName": "k", "KeyType": "HASH"},
                        {"AttributeName": "r", "KeyType": "RANGE"},
                    ],
                    "AttributeDefinitions": [
                        {"AttributeName": "k", "AttributeType": "S"},
                        {"AttributeName": "r", "AttributeType": "N"},
                    ],
                },
            )
            for item in (ENROLLED, BINARY, BIG):
                self.call(region, "PutItem", {"TableName": "registry", "Item": item})
            self.call(region, "PutItem", {"TableName": "ranged", "Item": {"k": {"S": "a"}, "r": {"N": "1"}}})

    def call(
        self,
        region: str,
        action: str,
        request: Any,
        body: bytes | None = None,
        path: str = "/",
        authorization: str = AUTHORIZATION,
    ) -> tuple[int, Any, Any]:
        """Status, body (parsed if JSON) and headers; a crash of moto counts as a 500 naming its error."""
        try:
            response = self.clients[region].post(
                path,
                data=json.dumps(request) if body is None else body,
                headers={
                    "X-Amz-Target": f"DynamoDB_20120810.{action}",
                    "Content-Type": "application/x-amz-json-1.0",
                    "Authorization": authorization.format(region=region),
                },
            )
        except Exception as crash:  # noqa: BLE001 - the werkzeug test client re-raises what the app raised
            return 500, type(crash).__name__, {}
        data = response.get_data()
        if "x-amz-crc32" in response.headers:
            assert response.headers["x-amz-crc32"] == str(binascii.crc32(data))  # botocore checks it
        try:
            return response.status_code, json.loads(data), response.headers
        except ValueError:
            return response.status_code, data, response.headers

    def both(self, action: str, request: Any, **transport: Any) -> tuple[int, Any, bool]:
        """Runs the request on both; returns moto's answer and whether the fast path answered."""
        answered = self.fast_path.answered
        fast = self.call(FAST, action, request, **transport)
        fast_answered = self.fast_path.answered > answered
        alone = self.call(MOTO, action, request, **transport)
        assert fast[:2] == alone[:2]
        assert fast[2].get("Content-Type") == alone[2].get("Content-Type")
        for table in ("registry", "ranged"):
            assert self.items(FAST, table) == self.items(MOTO, table)
        return alone[0], alone[1], fast_answered

    def items(self, region: str, table: str) -> list[Any]:
        return sorted(self.call(region, "Scan", {"TableName": table})[1]["Items"], key=json.dumps)


@pytest.fixture
def twins() -> Iterator[Twins]:
    with mock_aws():  # a clean moto for each test
        yield Twins()


def test_the_calls_devices_make_are_answered_by_the_fast_path_exactly_as_moto_answers_them(twins: Twins) -> None:
    status, body, fast = twins.both(
        "GetItem", {"TableName": "registry", "Key": {"serialNumber": {"S": SERIAL}}, "ConsistentRead": True}
    )
    assert (status, fast, body["Item"]["note"]) == (200, True, {"S": "café ☕"})
    status, body, fast = twins.both("UpdateItem", HOOK_CLAIM)
    assert (status, fast, body["Attributes"]["status"], body["Attributes"]["thingName"]) == (
        200,
        True,
        {"S": "provisioning"},
        {"S": "sensor-SN-0001"},
    )
    status, body, fast = twins.both("UpdateItem", REGISTRY_UPDATE)
    assert (status, fast, body) == (200, True, {"ConsumedCapacity": {"TableName": "registry", "CapacityUnits": 0.5}})
    status, body, fast = twins.both("GetItem", {"TableName": "registry", "Key": {"serialNumber": {"S": "SN-none"}}})
    assert (status, body, fast) == (200, {}, True)


def test_refusals_come_from_moto_and_change_nothing(twins: Twins) -> None:
    twins.both("UpdateItem", HOOK_CLAIM)
    status, body, fast = twins.both("UpdateItem", HOOK_CLAIM)  # a replay: its condition no longer holds
    assert (status, fast) == (400, False)
    assert body["__type"].endswith("ConditionalCheckFailedException")
    assert body["Item"]["status"] == {"S": "provisioning"}
    status, body, fast = twins.both("UpdateItem", with_changes(HOOK_CLAIM, ReturnValuesOnConditionCheckFailure=None))
    assert (status, fast, "Item" in body) == (400, False, False)


@pytest.mark.parametrize(
    ("request_", "answered"),
    [
        (plain_set("SET a = :a, b = if_not_exists(b, :b)", a={"N": "-12.5e3"}, b={"BOOL": False}), True),
        (plain_set("set a = :a", a={"NULL": True}), True),
        (plain_set("SET  a=:a ,b =  if_not_exists( manufacturer ,:b )", a={"S": "x"}, b={"S": "y"}), True),
        (plain_set("SET a = if_not_exists(#c, :b)", names={"#c": "count"}, b={"S": "y"}), True),  # copy of count
        (plain_set("SET a = if_not_exists(count, :b)", b={"S": "y"}), False),  # reserved word
        (plain_set("SET #s = :s", names={"#s": "status"}, s={"S": "x"}) | {"ReturnValues": "NONE"}, True),
        (plain_set("SET status = :s", s={"S": "x"}), False),  # a reserved word: moto refuses
        (plain_set("SET a = :a", a={"S": "x"}, unused={"S": "y"}), False),  # unused value: moto refuses
        (plain_set("SET #a = :a", names={"#a": "a", "#b": "b"}, a={"S": "x"}), False),  # unused name
        (plain_set("SET a = :missing", a={"S": "x"}), False),
        (plain_set("SET serialNumber = :a", a={"S": "x"}), False),  # the key cannot change
        (plain_set("SET a = :a, a = :b", a={"S": "x"}, b={"S": "y"}), False),  # overlapping paths
        (plain_set("SET a = :a", a={"S": ""}), False),  # empty strings: moto's path
        (plain_set("SET a = :a", a={"N": "twelve"}), False),
        (plain_set("SET a = :a", a={"SS": ["x"]}), False),
        (plain_set("SET a = :a REMOVE manufacturer", a={"S": "x"}), False),
        (plain_set("SET a = :a + :b", a={"N": "1"}, b={"N": "2"}), False),
        (plain_set("SET a.b = :a", a={"S": "x"}), False),
        (plain_set("SET a = :a,", a={"S": "x"}), False),  # syntax error: moto refuses
        (plain_set("SET a = :a", a={"S": "x"}) | {"ReturnValues": "UPDATED_NEW"}, False),
        (plain_set("SET a = :a", a={"S": "x"}) | {"ReturnConsumedCapacity": "TOTAL"}, False),
        (plain_set("SET a = :a", a={"S": "x"}) | {"Key": {"serialNumber": {"S": "SN-new"}}}, False),  # creates it
        (plain_set("SET a = :a", a={"S": "x"}) | {"Key": {"serialNumber": {"N": "1"}}}, False),  # wrong key type
        (plain_set("SET a = :a", a={"S": "x"}) | {"Key": {"serialNumber": {"S": ""}}}, False),
        (plain_set("SET a = :a", a={"S": "x"}) | {"TableName": "missing"}, False),
        (plain_set("SET a = :a", a={"S": "x" * 410_000}), False),  # over the item size limit
        (plain_set("SET a = :a", a={"S": "x"}) | {"ConditionExpression": "attribute_exists(nope)"}, False),
        (plain_set("SET a = :a", a={"S": "x"}) | {"ConditionExpression": "count > :a"}, False),  # reserved word
        (plain_set("SET a = :a", a={"S": "x"}) | {"Expected": {"status": {"Value": {"S": "enrolled"}}}}, False),
        (
            plain_set("SET a = :a", a={"S": "x"}) | {"TableName": "ranged", "Key": {"k": {"S": "a"}, "r": {"N": "1"}}},
            True,
        ),
        (plain_set("SET a = :a", a={"S": "x"}) | {"TableName": "ranged", "Key": {"k": {"S": "a"}}}, False),
        (plain_set("SET deviceType = :a", a={"S": "gateway"}), True),  # an index key, right type
        (plain_set("SET deviceType = :a", a={"N": "5"}), False),  # an index key of another type: moto refuses
        (plain_set("SET deviceType = if_not_exists(#c, :a)", names={"#c": "count"}, a={"S": "x"}), False),  # N
        (plain_set("SET deviceType = if_not_exists(blank, :a)", a={"S": "x"}), False),  # empty index key
        (plain_set("SET a = if_not_exists(serialNumber, :a)", a={"S": "x"}), False),  # the table key named
        (plain_set("SET #a = :a", names={"#a": 5}, a={"S": "x"}), False),  # type: ignore[dict-item]
        (plain_set("SET #a = :a", names={"#a": ""}, a={"S": "x"}), False),
        (plain_set("SET a = :a", a={"S": "x"}) | {"Key": {"serialNumber": {"S": "SN-BIN"}}}, False),  # binary
        (plain_set("SET big = :a", a={"S": "y" * 250_000}) | {"Key": {"serialNumber": {"S": "SN-BIG"}}}, False),
        (
            plain_set("SET big = if_not_exists(big, :a)", a={"S": "y"}) | {"Key": {"serialNumber": {"S": "SN-BIG"}}},
            False,
        ),  # moto's size rule counts the value being replaced too
        (plain_set("SET small = :a", a={"S": "y"}) | {"Key": {"serialNumber": {"S": "SN-BIG"}}}, True),
    ],
)
def test_update_item_answers_as_moto_whichever_path_answers(twins: Twins, request_: Any, answered: bool) -> None:
    assert twins.both("UpdateItem", request_)[2] is answered


@pytest.mark.parametrize(
    ("request_", "answered"),
    [
        ({"TableName": "registry", "Key": {"serialNumber": {"S": SERIAL}}}, True),
        ({"TableName": "ranged", "Key": {"k": {"S": "a"}, "r": {"N": "1"}}}, True),
        ({"TableName": "registry", "Key": {"serialNumber": {"S": SERIAL}}, "ProjectionExpression": "note"}, False),
        ({"TableName": "registry", "Key": {"serialNumber": {"S": SERIAL}}, "ReturnConsumedCapacity": "TOTAL"}, False),
        ({"TableName": "registry", "Key": {"serialNumber": {"S": ""}}}, False),
        ({"TableName": "registry", "Key": {"serialNumber": {"S": SERIAL}, "extra": {"S": "x"}}}, False),
        ({"TableName": "registry", "Key": {"other": {"S": SERIAL}}}, False),
        ({"TableName": "missing", "Key": {"serialNumber": {"S": SERIAL}}}, False),
        ({"TableName": "ranged", "Key": {"k": {"S": "a"}}}, False),
        ({"TableName": "registry", "Key": {"serialNumber": {"S": "SN-BIN"}}}, False),  # binary: moto encodes it
        ({"TableName": "registry", "Key": {"serialNumber": {"S": "SN-BIG"}}}, True),
    ],
)
def test_get_item_answers_as_moto_whichever_path_answers(twins: Twins, request_: Any, answered: bool) -> None:
    assert twins.both("GetItem", request_)[2] is answered


@pytest.mark.parametrize(
    "transport",
    [
        {"path": "/?u=https://dynamodb.us-west-2.amazonaws.com"},  # moto takes the region from the URL
        {"authorization": AUTHORIZATION.replace("/aws4_request", "")},  # moto routes it elsewhere
        {"authorization": AUTHORIZATION.replace("/dynamodb/", "/s3/")},
        {"body": json.dumps(HOOK_CLAIM).encode("utf-16")},  # moto reads UTF-8 only
        {"body": b"\xef\xbb\xbf" + json.dumps(HOOK_CLAIM).encode()},
    ],
)
def test_requests_moto_would_route_or_read_differently_are_left_to_moto(twins: Twins, transport: Any) -> None:
    assert twins.both("UpdateItem", HOOK_CLAIM, **transport)[2] is False


def test_concurrent_claims_of_one_serial_through_the_fast_path_let_exactly_one_through(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook's conditional claim stays atomic: 20 devices with one serial, one wins. Each
    condition check is slowed down, so that without the write lock several claims would see the
    serial still enrolled."""
    parse_condition = fast_path.create_condition_expression_parser

    def slow_condition(*args: Any) -> Any:
        parser = parse_condition(*args)
        check = parser.parse()

        class Slow:
            def expr(self, item: Any) -> bool:
                holds = check.expr(item)
                time.sleep(0.02)
                return bool(holds)

        parser.parse = Slow  # type: ignore[method-assign]
        return parser

    monkeypatch.setattr(fast_path, "create_condition_expression_parser", slow_condition)
    statuses: list[int] = []
    start = threading.Barrier(20)

    def claim(n: int) -> None:
        request = with_changes(HOOK_CLAIM)
        request["ExpressionAttributeValues"][":certificate"] = {"S": f"{n:064d}"}
        client = Client(twins.fast_path)
        start.wait()
        response = client.post(
            "/",
            data=json.dumps(request),
            headers={
                "X-Amz-Target": "DynamoDB_20120810.UpdateItem",
                "Authorization": "AWS4-HMAC-SHA256 "
                f"Credential=AKIAIOSFODNN7EXAMPLE/20261127/{FAST}/dynamodb/aws4_request",
            },
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] + [400] * 19


def test_only_plain_set_expressions_have_a_plan() -> None:
    assert update_plan("SET a = :x, #b = if_not_exists(c, :y)") == (("a", None, ":x"), ("#b", "c", ":y"))
    for expression in ("SET a = :x REMOVE b", "ADD a :x", "SET a = b", "SET a = :x + :y", "SET a[0] = :x", "SET "):
        assert update_plan(expression) is None
