"""The fault switch as boto3 meets it: the sandbox's HTTP front and local AWS in this process, a
DynamoDB client on a loopback port, each mode seen the way an SDK sees an outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError
from moto import mock_aws
from moto.cloudwatch.models import cloudwatch_backends
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.serving import make_server

from sandbox.cloudwatch import metrics as cloudwatch_metrics
from sandbox.cloudwatch.metrics import Identity, series
from sandbox.dynamodb.fast_path import DynamoDBFastPath
from sandbox.request_pipeline import faults
from sandbox.request_pipeline.faults import Fault, FaultSwitch
from sandbox.request_pipeline.http_front import Dispatcher, KeepAliveRequestHandler

cloudwatch_metrics.install()
TABLE, OTHER = "registry", "elsewhere"


class Sandbox:
    def __init__(self, switch: FaultSwitch, endpoint: str) -> None:
        self.switch, self.endpoint = switch, endpoint

    def client(self, attempts: int = 2) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
            config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}, read_timeout=10),
        )

    def item(self, serial: str, table: str = TABLE) -> dict[str, Any] | None:
        return self.client().get_item(TableName=table, Key={"serialNumber": {"S": serial}}).get("Item")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with mock_aws():  # a clean moto; requests over HTTP reach the server below, not the mock
        switch = FaultSwitch(DynamoDBFastPath(Dispatcher(create_backend_app)))
        server = make_server("127.0.0.1", 0, switch, True, request_handler=KeepAliveRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        box = Sandbox(switch, f"http://127.0.0.1:{server.port}")
        for table in (TABLE, OTHER):
            box.client().create_table(
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "serialNumber", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
            )
        try:
            yield box
        finally:
            server.shutdown()


def put(client: Any, serial: str, table: str = TABLE) -> Any:
    return client.put_item(TableName=table, Item={"serialNumber": {"S": serial}, "status": {"S": "enrolled"}})


def test_unavailable_answers_503_service_unavailable_to_every_attempt_and_applies_nothing(sandbox: Sandbox) -> None:
    sandbox.switch.set(Fault.parse("unavailable", TABLE, ["PutItem"]))

    with pytest.raises(ClientError) as refused:
        put(sandbox.client(attempts=2), "SN-1")

    answer = refused.value.response
    assert (answer["Error"]["Code"], answer["ResponseMetadata"]["HTTPStatusCode"]) == ("ServiceUnavailable", 503)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1  # the SDK retried, as after a real outage
    assert sandbox.switch.report()["affected"] == {"PutItem": 2}
    assert sandbox.item("SN-1") is None  # GetItem is not faulted
    put(sandbox.client(), "SN-1", OTHER)  # another table is not either
    assert sandbox.item("SN-1", OTHER) is not None


def test_throttle_refuses_as_dynamodb_does_and_publishes_its_throttle_metrics(sandbox: Sandbox) -> None:
    put(sandbox.client(), "SN-2")
    sandbox.switch.set(Fault.parse("throttle", None, ["GetItem"]))

    with pytest.raises(ClientError) as throttled:
        sandbox.client(attempts=1).get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-2"}})

    error = throttled.value.response["Error"]
    assert error["Code"] == "ProvisionedThroughputExceededException"
    assert error["Message"].startswith("Throughput exceeds the current capacity of your table or index.")  # on-demand
    index = series(cloudwatch_backends["123456789012"]["us-east-1"])
    by_operation = Identity.of("AWS/DynamoDB", "ThrottledRequests", {"TableName": TABLE, "Operation": "GetItem"})
    reads = Identity.of("AWS/DynamoDB", "ReadThrottleEvents", {"TableName": TABLE})
    assert [s.total for s in index.between(by_operation, 0, time.time() + 1)] == [1.0]
    assert [s.total for s in index.between(reads, 0, time.time() + 1)] == [1.0]
    assert index.between(Identity.of("AWS/DynamoDB", "ThrottledRequests", {"TableName": TABLE}), 0, 2e9) == []
    sandbox.switch.set(Fault.parse("throttle", TABLE, None))
    with pytest.raises(ClientError, match="ThrottlingException"):  # table management throttles otherwise
        sandbox.client(attempts=1).describe_table(TableName=TABLE)


def test_lose_answer_applies_the_write_drops_the_connection_and_answers_the_sdks_retry(sandbox: Sandbox) -> None:
    sandbox.switch.set(Fault.parse("lose-answer", TABLE, ["PutItem"]))

    with pytest.raises(ConnectionClosedError):
        put(sandbox.client(attempts=1), "SN-3")  # no retry left: the client never learns it worked
    assert sandbox.item("SN-3") is not None
    answered = put(sandbox.client(attempts=2), "SN-4")

    assert answered["ResponseMetadata"]["RetryAttempts"] == 1
    assert sandbox.item("SN-4") is not None
    assert sandbox.switch.report()["affected"] == {"PutItem": 2}  # one lost answer per request, retries answered


def test_slow_answers_late_and_still_applies(sandbox: Sandbox) -> None:
    sandbox.switch.set(Fault.parse("slow=0.6", TABLE, None))
    started = time.monotonic()

    put(sandbox.client(), "SN-5")

    assert time.monotonic() - started >= 0.6
    sandbox.switch.set(None)
    assert sandbox.item("SN-5") is not None


def test_the_switch_is_driven_over_http_and_refuses_what_it_cannot_do(sandbox: Sandbox) -> None:
    report = faults.request(
        sandbox.endpoint, "POST", {"mode": "throttle", "table": TABLE, "operations": ["UpdateItem", "GetItem"]}
    )
    assert report["fault"]["description"] == "registry throttle (table registry; GetItem, UpdateItem)"
    assert faults.request(sandbox.endpoint, "GET") == report
    typo = {"mode": "throttle", "operations": ["Getitem"]}
    for refused, why in (
        ({"mode": "slow=-1"}, "slow=<seconds>"),
        ({"mode": "off"}, "unknown fault mode"),
        (typo, "not DynamoDB operations: Getitem"),
    ):
        with pytest.raises(ValueError, match=why):
            faults.request(sandbox.endpoint, "POST", refused)
    assert faults.request(sandbox.endpoint, "GET") == report  # a refused change leaves the fault as it was
    assert faults.request(sandbox.endpoint, "DELETE")["fault"] is None
    put(sandbox.client(), "SN-6")
