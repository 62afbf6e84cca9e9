"""The sandbox's stand-ins for what moto lacks, as a boto3 caller (Terraform, verify.py) sees them."""

from __future__ import annotations

import datetime
import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.iot.exceptions import ResourceNotFoundException
from moto.iot.models import iot_backends

from sandbox.local_aws import lambda_runtime
from sandbox.moto_patches import (
    indexed_iot_lookups,
    missing_iot_apis,
    parsed_update_expressions,
    thread_safe_iot_registry,
)

missing_iot_apis.install()
Pool = lambda_runtime.WorkerPool
BODY = json.dumps({"Parameters": {}, "Resources": {}})


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("iot", region_name="us-east-1")


def execution_role(name: str) -> str:
    """A role Lambda may assume (Lambda refuses any other as a function's execution role)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
        ],
    }
    iam = boto3.client("iam", region_name="us-east-1")
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def function(name: str, code: str, timeout: int = 3, env: dict[str, str] | None = None) -> str:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("app.py", code)
    role = execution_role(f"{name}-role")
    created = boto3.client("lambda", region_name="us-east-1").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Timeout=timeout,
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": env or {}},
    )
    return str(created["FunctionArn"])


def test_provisioning_template_round_trip_with_versions_tags_and_hook(iot: Any) -> None:
    hook = function("hook", "def handler(event, context):\n    return {'allowProvisioning': False}\n")
    created = iot.create_provisioning_template(
        templateName="Fleet-dev-fleet",
        templateBody=BODY,
        enabled=True,
        type="FLEET_PROVISIONING",
        provisioningRoleArn="arn:aws:iam::123456789012:role/p",
        tags=[{"Key": "Project", "Value": "Fleet"}],
        preProvisioningHook={"targetArn": hook, "payloadVersion": "2020-04-01"},
    )

    described = iot.describe_provisioning_template(templateName="Fleet-dev-fleet")
    assert (described["enabled"], described["defaultVersionId"], described["templateBody"]) == (True, 1, BODY)
    assert described["preProvisioningHook"] == {"targetArn": hook, "payloadVersion": "2020-04-01"}
    assert iot.list_tags_for_resource(resourceArn=created["templateArn"])["tags"] == [
        {"Key": "Project", "Value": "Fleet"}
    ]
    new_body = json.dumps({"Parameters": {"A": {"Type": "String"}}, "Resources": {}})
    iot.create_provisioning_template_version(templateName="Fleet-dev-fleet", templateBody=new_body, setAsDefault=True)
    assert iot.describe_provisioning_template(templateName="Fleet-dev-fleet")["templateBody"] == new_body
    assert len(iot.list_provisioning_template_versions(templateName="Fleet-dev-fleet")["versions"]) == 2
    iot.delete_provisioning_template(templateName="Fleet-dev-fleet")
    assert iot.list_provisioning_templates()["templates"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"templateName": "x" * 37}, "templateName"),
        ({"templateName": "bad name"}, "templateName"),
        ({"templateBody": "{" + " " * 10_240 + "}"}, "longer than"),
        ({"templateBody": "not json"}, "not valid JSON"),
        (
            {"preProvisioningHook": {"targetArn": "arn:aws:lambda:us-east-1:123456789012:function:none"}},
            "does not exist",
        ),
        ({"type": "JITP", "preProvisioningHook": {"targetArn": "x"}}, "FLEET_PROVISIONING"),
    ],
)
def test_template_refused_as_aws_refuses_it(iot: Any, change: dict[str, Any], message: str) -> None:
    request = {"templateName": "ok", "templateBody": BODY, "provisioningRoleArn": "arn:aws:iam::1:role/p", **change}
    with pytest.raises(ClientError) as refused:
        iot.create_provisioning_template(**request)
    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    assert message in refused.value.response["Error"]["Message"]
    assert iot.list_provisioning_templates()["templates"] == []


def test_event_configurations_and_tags_given_at_create(iot: Any) -> None:
    assert iot.describe_event_configurations()["eventConfigurations"]["THING"] == {"Enabled": False}
    iot.update_event_configurations(eventConfigurations={"THING": {"Enabled": True}})
    assert iot.describe_event_configurations()["eventConfigurations"]["THING"] == {"Enabled": True}

    group = iot.create_thing_group(thingGroupName="g", tags=[{"Key": "Env", "Value": "dev"}])
    assert iot.list_tags_for_resource(resourceArn=group["thingGroupArn"])["tags"] == [{"Key": "Env", "Value": "dev"}]
    iot.untag_resource(resourceArn=group["thingGroupArn"], tagKeys=["Env"])
    assert iot.list_tags_for_resource(resourceArn=group["thingGroupArn"])["tags"] == []


@pytest.fixture
def local_pool(tmp_path: Path) -> Iterator[lambda_runtime.WorkerPool]:
    pool = lambda_runtime.WorkerPool(tmp_path, "http://127.0.0.1:9")  # nothing listens: no AWS calls expected
    original = lambda_runtime.LambdaFunction._invoke_lambda
    lambda_runtime.install(pool)
    yield pool
    pool.stop()
    lambda_runtime.LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]


def invoke(name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    response = boto3.client("lambda", region_name="us-east-1").invoke(
        FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail"
    )
    return response, json.loads(response["Payload"].read())


def test_local_lambda_runs_the_handler_warm_with_its_environment(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    code = (
        "import os\nCOLD = []\n"
        "def handler(event, context):\n"
        "    COLD.append(1)\n    print('handled', event['n'])\n"
        "    return {'n': event['n'], 'invocations': len(COLD), 'table': os.environ['TABLE_NAME'],\n"
        "            'endpoint': os.environ['AWS_ENDPOINT_URL']}\n"
    )
    function("echo", code, env={"TABLE_NAME": "registry"})

    _, first = invoke("echo", {"n": 1})
    _, second = invoke("echo", {"n": 2})

    assert first == {"n": 1, "invocations": 1, "table": "registry", "endpoint": "http://127.0.0.1:9"}
    assert second["invocations"] == 2  # the same warm worker: imported once
    events = boto3.client("logs", region_name="us-east-1").filter_log_events(logGroupName="/aws/lambda/echo")
    assert any("handled 2" in e["message"] for e in events["events"])


def test_local_lambda_reports_errors_and_timeouts_as_lambda_does(
    iot: Any, local_pool: lambda_runtime.WorkerPool
) -> None:
    function("broken", "def handler(event, context):\n    raise ValueError('no')\n")
    function("slow", "import time\ndef handler(event, context):\n    time.sleep(30)\n", timeout=1)

    response, error = invoke("broken", {})
    assert response["FunctionError"] and error["errorType"] == "ValueError" and error["errorMessage"] == "no"
    response, timed_out = invoke("slow", {})
    assert response["FunctionError"] and "timed out after 1.00 seconds" in timed_out["errorMessage"]


def test_a_changed_configuration_stops_the_old_configurations_workers(
    iot: Any, local_pool: lambda_runtime.WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role change (or code, environment) makes a new configuration with workers of its own; the old
    one's idle workers stop at the function's next invocation, and a busy one when it finishes."""
    started: list[lambda_runtime.Worker] = []
    worker_class = lambda_runtime.Worker

    class Recorded(worker_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(lambda_runtime, "Worker", Recorded)
    code = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n"
    function("echo", code)
    lam = boto3.client("lambda", region_name="us-east-1")
    invoke("echo", {"n": 1})
    (first,) = started

    lam.update_function_configuration(FunctionName="echo", Role=execution_role("echo-role-2"))
    invoke("echo", {"n": 2})

    assert len(started) == 2 and not first.alive()  # the old idle worker is stopped, not kept
    busy = threading.Thread(target=invoke, args=("echo", {"sleep": 1.5}))
    busy.start()
    time.sleep(0.5)  # the second configuration's worker is busy now
    lam.update_function_configuration(FunctionName="echo", Environment={"Variables": {"CHANGED": "1"}})
    invoke("echo", {"n": 3})
    busy.join(10)

    assert len(started) == 3 and not started[1].alive()  # stopped when it finished, not put back idle
    assert [worker.alive() for worker in started] == [False, False, True]
    assert sum(len(idle) for idle in local_pool._idle.values()) == 1


def test_a_retried_add_permission_leaves_one_statement_and_a_clashing_one_is_refused(iot: Any) -> None:
    from sandbox.moto_patches import idempotent_lambda_permissions

    idempotent_lambda_permissions.install()
    function("target", "def handler(event, context):\n    return None\n")
    client = boto3.client("lambda", region_name="us-east-1")
    permission = {
        "FunctionName": "target",
        "StatementId": "AllowRule",
        "Action": "lambda:InvokeFunction",
        "Principal": "iot.amazonaws.com",
        "SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/r",
    }

    client.add_permission(**permission)
    client.add_permission(**permission)  # the same request again, as a retry sends it

    assert len(json.loads(client.get_policy(FunctionName="target")["Policy"])["Statement"]) == 1
    with pytest.raises(ClientError) as refused:
        client.add_permission(**{**permission, "SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/other"})
    assert refused.value.response["Error"]["Code"] == "ResourceConflictException"
    client.remove_permission(FunctionName="target", StatementId="AllowRule")
    with pytest.raises(ClientError):
        client.get_policy(FunctionName="target")


@pytest.fixture
def sandbox_ca(tmp_path: Path) -> Iterator[Any]:
    from moto.core.config import default_user_config
    from moto.iot.models import IoTBackend

    from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
    from sandbox.moto_patches import iot_certificates_from_sandbox_ca

    saved = (
        IoTBackend._generate_certificate_pem,
        IoTBackend.create_certificate_from_csr,
        dict(default_user_config.get("iot", {})),
    )
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    iot_certificates_from_sandbox_ca.install(authority)
    yield authority
    IoTBackend._generate_certificate_pem, IoTBackend.create_certificate_from_csr = saved[0], saved[1]  # type: ignore[method-assign]
    default_user_config["iot"] = saved[2]


def test_issued_certificates_chain_to_the_sandbox_ca_with_aws_ids(iot: Any, sandbox_ca: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.iot_data_plane.certificate_authority import certificate_id

    created = iot.create_keys_and_certificate(setAsActive=True)
    certificate = x509.load_pem_x509_certificate(created["certificatePem"].encode())
    certificate.verify_directly_issued_by(sandbox_ca.certificate)
    assert created["certificateId"] == certificate_id(created["certificatePem"])
    key = serialization.load_pem_private_key(created["keyPair"]["PrivateKey"].encode(), password=None)
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]

    device_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")]))
        .sign(device_key, hashes.SHA256())
    )
    from_csr = iot.create_certificate_from_csr(
        certificateSigningRequest=csr.public_bytes(serialization.Encoding.PEM).decode(), setAsActive=True
    )
    issued = x509.load_pem_x509_certificate(from_csr["certificatePem"].encode())
    issued.verify_directly_issued_by(sandbox_ca.certificate)
    assert issued.public_key().public_numbers() == device_key.public_key().public_numbers()  # type: ignore[union-attr]
    described = iot.describe_certificate(certificateId=from_csr["certificateId"])["certificateDescription"]
    assert described["status"] == "ACTIVE"
    # DescribeCertificate gives the certificate's own validity (moto made up "now plus a day").
    assert described["validity"]["notAfter"].timestamp() == issued.not_valid_after_utc.timestamp()
    assert described["validity"]["notBefore"].timestamp() == issued.not_valid_before_utc.timestamp()


def test_the_validity_switch_changes_only_certificates_issued_after_it_and_refuses_bad_values(
    iot: Any, sandbox_ca: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m sandbox certificate-validity` against a running HTTP front: certificates issued from
    then on get the validity asked for, refused values change nothing, `default` restores the start setting."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from werkzeug.serving import make_server

    from sandbox.iot_data_plane import certificate_validity

    def elsewhere(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b"local AWS"]

    def lifetime() -> float:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        issued = iot.create_certificate_from_csr(certificateSigningRequest=pem, setAsActive=True)
        certificate = x509.load_pem_x509_certificate(issued["certificatePem"].encode())
        return (certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds()

    switch = certificate_validity.CertificateValiditySwitch(elsewhere, sandbox_ca)
    server = make_server("127.0.0.1", 0, switch, True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.port}"
    try:
        assert lifetime() > 9 * 365 * 86400  # the start setting: 10 years
        assert certificate_validity.main(["25"], endpoint) == 0
        assert "valid 25 s" in capsys.readouterr().out
        assert 20 < lifetime() <= 25
        # Over HTTP, CreateKeysAndCertificate is how Terraform makes the claim certificate: not a device's.
        claim = x509.load_pem_x509_certificate(
            iot.create_keys_and_certificate(setAsActive=True)["certificatePem"].encode()
        )
        assert (claim.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days > 9 * 365
        for bad in ("0", "-5", "1.5", "soon", str(10 * 365 * 86400 + 1)):
            assert certificate_validity.main([bad], endpoint) == 2
            assert "give whole seconds from 1 to" in capsys.readouterr().err
        with pytest.raises(ValueError, match="seconds=0"):  # the server refuses what the CLI would not send
            certificate_validity.request(endpoint, "PUT", 0)
        assert certificate_validity.request(endpoint, "GET") == {"seconds": 25, "default": False}
        assert 20 < lifetime() <= 25
        assert certificate_validity.main(["default"], endpoint) == 0
        assert "the sandbox's start setting" in capsys.readouterr().out
        assert lifetime() > 9 * 365 * 86400
        with pytest.raises(urllib.error.HTTPError) as passed_on:  # any other path: the local AWS answers
            urllib.request.urlopen(f"{endpoint}/_sandbox/other")  # noqa: S310 - local http
        assert passed_on.value.read() == b"local AWS"
    finally:
        server.shutdown()
    assert certificate_validity.main([], endpoint) == 1  # nothing answers: says so
    assert "does not answer" in capsys.readouterr().err


def test_a_terraform_retry_of_a_completed_write_gets_the_first_answer_instead_of_running_twice() -> None:
    from sandbox.local_aws.http_front import RetriesAtMostOnce

    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        status = "409 Conflict" if environ["PATH_INFO"] == "/conflict" else "200 OK"
        start_response(status, [("Content-Type", "application/json")])
        return [f'{{"n": {len(calls)}}}'.encode()]

    guarded = RetriesAtMostOnce(app)

    def call(path: str, invocation: str | None, method: str = "POST", agent: str = TERRAFORM) -> tuple[str, bytes]:
        seen: dict[str, str] = {}
        environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "HTTP_USER_AGENT": agent}
        if invocation:
            environ["HTTP_AMZ_SDK_INVOCATION_ID"] = invocation
        body = b"".join(guarded(environ, lambda status, headers: seen.setdefault("status", status)))
        return seen["status"], body

    assert call("/rules/r", "id-1") == ("200 OK", b'{"n": 1}')
    assert call("/rules/r", "id-1") == ("200 OK", b'{"n": 1}')  # the retry: not run again
    assert call("/rules/r", "id-2") == ("200 OK", b'{"n": 2}')  # a new request runs
    assert call("/conflict", "id-3")[0] == "409 Conflict"
    assert call("/conflict", "id-3")[0] == "409 Conflict" and calls.count("/conflict") == 2  # failures re-run
    call("/rules/r", "id-4", method="GET")
    call("/rules/r", "id-4", method="GET")
    assert calls.count("/rules/r") == 4  # reads are never replayed
    function_sdk = "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux lang/python#3.11.7 cfg/retry-mode#standard"
    assert call("/items", "id-5", agent=function_sdk) == ("200 OK", b'{"n": 7}')
    assert call("/items", "id-5", agent=function_sdk) == ("200 OK", b'{"n": 8}')  # not Terraform: runs again, as on AWS


TERRAFORM = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.11.4 (+https://www.terraform.io) terraform-provider-aws/5.100.0 "
    "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.36.3 ua/2.1 os/linux lang/go#1.24.2"
)


def test_registry_lookups_by_key_answer_as_moto_scans_and_stay_consistent_under_threads(iot: Any) -> None:
    """Things and certificates are found by key (same answers as moto's scan), and registry calls from
    many threads (HTTP requests and the in-process fleet service at once) no longer trip over each other."""
    indexed_iot_lookups.install()
    thread_safe_iot_registry.install()
    backend = iot_backends["123456789012"]["us-east-1"]
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing(thingName="dev-1", thingTypeName="sensor", attributePayload={"attributes": {"a": "1"}})
    created = iot.create_keys_and_certificate(setAsActive=True)

    assert backend.describe_thing("dev-1").thing_type.thing_type_name == "sensor"
    assert backend.describe_certificate(created["certificateId"]).arn == created["certificateArn"]
    assert backend._get_principal(created["certificateArn"]).certificate_id == created["certificateId"]
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_thing(thingName="dev-2")
    with pytest.raises(ClientError, match="ResourceNotFound"):
        iot.describe_certificate(certificateId="0" * 64)

    errors: list[BaseException] = []
    iot.create_thing_group(thingGroupName="fleet")

    def create() -> None:
        for n in range(1500):
            backend.create_thing(f"race-{n}", "", None)
            backend.add_thing_to_thing_group("fleet", None, f"race-{n}", None)

    def list_the_group() -> None:  # moto's HTTP layer walks the listing after the call returns
        for _ in range(300):
            try:
                [thing.thing_name for thing in backend.list_things_in_thing_group("fleet")]
            except RuntimeError as error:
                errors.append(error)

    threads = [threading.Thread(target=create), threading.Thread(target=list_the_group)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so an unlocked walk is caught mid-way
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(backend.things) == 1501
    assert backend.describe_thing("race-1499").thing_name == "race-1499"
    with pytest.raises(ResourceNotFoundException):  # answered from the key alone: no scan
        backend.describe_thing("race-1500")


def test_update_expressions_parsed_once_still_apply_each_calls_own_values() -> None:
    """Calls with the same UpdateExpression text share one parse; each still writes its own values."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    parsed_update_expressions.install()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

        def update(key: str, status: str, expression: str = "SET #s = :s, n = if_not_exists(n, :n)") -> None:
            dynamodb.update_item(
                TableName="t",
                Key={"k": {"S": key}},
                UpdateExpression=expression,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":n": {"S": key}},
                ConditionExpression="attribute_not_exists(k) OR #s <> :s",
            )

        hits = UpdateExpressionParser.make.cache_info().hits
        for key, status in (("a", "one"), ("b", "two"), ("a", "three")):
            update(key, status)
        items = {i["k"]["S"]: (i["status"]["S"], i["n"]["S"]) for i in dynamodb.scan(TableName="t")["Items"]}
        assert items == {"a": ("three", "a"), "b": ("two", "b")}
        assert UpdateExpressionParser.make.cache_info().hits - hits >= 5  # one parse served all three calls
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            update("b", "two")
        for _ in range(2):  # a text that does not parse is refused every time
            with pytest.raises(ClientError, match="ValidationException"):
                update("a", "x", expression="SET = :s")


def test_the_http_front_keeps_connections_open_and_answers_each_request_whole() -> None:
    """Several requests on one connection (a Lambda function's boto3 client does this), each read to
    its end: fixed-length and chunked bodies, HEAD, an application error, and `Connection: close`."""
    import http.client
    import socket
    import time

    from werkzeug.serving import make_server

    from sandbox.local_aws.http_front import KeepAliveRequestHandler

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "999")])
        return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} ".encode(), body]

    server = make_server("127.0.0.1", 0, app, True, request_handler=KeepAliveRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def request(method: str, path: str, body: Any = None, **headers: str) -> tuple[int, bytes, Any]:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response

        assert request("POST", "/a", b'{"x": 1}')[:2] == (200, b'POST /a {"x": 1}')
        local_port = connection.sock.getsockname()[1]
        chunked = iter([b"chunk-1 ", b"chunk-2"])  # http.client sends an iterable with Transfer-Encoding: chunked
        assert request("POST", "/b", chunked)[:2] == (200, b"POST /b chunk-1 chunk-2")
        status, body, response = request("HEAD", "/c")
        assert (status, body, response.getheader("Content-Length")) == (200, b"", "999")
        assert request("POST", "/fail", b"{}")[0] == 500
        assert request("GET", "/d")[:2] == (200, b"GET /d ")
        assert connection.sock.getsockname()[1] == local_port  # all of them on the first connection
        status, body, response = request("GET", "/e", Connection="close")
        assert (status, body, response.getheader("Connection")) == (200, b"GET /e ", "close")
        assert response.will_close

        def raw(*parts: bytes) -> bytes:
            """What the server sends back on one connection, until it closes it (or 2 s pass)."""
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                answer = b""
                for part in parts:
                    sock.sendall(part)
                    time.sleep(0.1)
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except TimeoutError:
                    answer += b"<still open>"
                return answer

        post = b"POST /f HTTP/1.1\r\nHost: x\r\n"
        continued = raw(post + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"hi")
        assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and continued.endswith(
            b"POST /f hi<still open>"
        )
        assert raw(b"GET /g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").endswith(b"GET /g ")  # closed
        two_lengths = raw(post + b"Content-Length: 3\r\nContent-Length: 0\r\n\r\nabcGET /smuggled HTTP/1.1\r\n\r\n")
        assert two_lengths.startswith(b"HTTP/1.1 400") and b"/smuggled" not in two_lengths
        assert raw(post + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").startswith(
            b"HTTP/1.1 400"
        )
        assert raw(post + b"Content-Length: 100000000000000\r\n\r\nabc").startswith(b"HTTP/1.1 413")
    finally:
        server.shutdown()


def test_broker_rules_follow_registry_changes_made_over_http_without_a_pass_per_round(iot: Any) -> None:
    """The pass over every certificate runs when IoT was written over HTTP (a revocation, a policy
    change), when a CRL reload is still owed, or when forced; not every round while devices register
    in-process (each registration puts its own rules in force)."""
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.local_aws.account import LocalAccount, RegistryWrites

    RegistryWrites.install()

    class Broker:
        reload_pending = False

        def crl(self, revoked: list[int]) -> bytes:
            return b""

        def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
            return

    class Rules:
        passes = 0
        stopped = ()  # nothing to disconnect

        def refresh(self, forget: bool = False) -> tuple[dict[str, str], list[int]]:
            self.passes += 1
            return {}, []

    broker, rules = Broker(), Rules()
    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), broker)  # type: ignore[arg-type]
    service.rules = rules  # type: ignore[assignment]
    try:
        service.refresh_rules()  # the first round always looks
        service.refresh_rules()
        iot.list_things()  # a read changes nothing
        service.refresh_rules()
        assert rules.passes == 1
        iot.create_thing(thingName="made-over-http")
        service.refresh_rules()
        service.refresh_rules()
        assert rules.passes == 2
        broker.reload_pending = True  # mosquitto still owes a CRL reload
        service.refresh_rules()
        assert rules.passes == 3
        broker.reload_pending = False
        service.refresh_rules(force=True)
        service._last_pass -= fleet_provisioning.FULL_PASS_SECONDS  # a minute without a pass
        service.refresh_rules()
        assert rules.passes == 5
    finally:
        service.stop()


def test_broker_rules_follow_a_policy_change_for_certificates_already_in_force(iot: Any) -> None:
    """A new default version of a policy (what `cdktf deploy` of a changed policy does) changes the
    rules of every certificate it is attached to at the next pass, as AWS applies it to connected
    devices; a write that is not about access leaves the described certificates as they were."""
    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.local_aws.account import LocalAccount, RegistryWrites

    RegistryWrites.install()

    def policy(topic: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iot:Connect",
                        "Resource": "arn:aws:iot:us-east-1:123456789012:client/*",
                    },
                    {
                        "Effect": "Allow",
                        "Action": "iot:Publish",
                        "Resource": f"arn:aws:iot:us-east-1:123456789012:topic/{topic}",
                    },
                ],
            }
        )

    class Broker:
        reload_pending = False

        def __init__(self) -> None:
            self.written: dict[str, str] = {}

        def crl(self, revoked: list[int]) -> bytes:
            return b""

        def write_rules(self, rules: dict[str, str], crl: bytes) -> None:
            self.written = rules

    iot.create_policy(policyName="device", policyDocument=policy("telemetry/v1"))
    certificate = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_policy(policyName="device", target=certificate["certificateArn"])
    broker = Broker()
    service = fleet_provisioning.FleetProvisioningService(LocalAccount("us-east-1"), broker)  # type: ignore[arg-type]
    try:
        service.refresh_rules()
        (rules,) = broker.written.values()
        assert "publish telemetry/v1" in rules.splitlines()
        iot.create_thing(thingName="unrelated")  # not about access: the certificate stays described
        service.refresh_rules()
        assert list(broker.written.values()) == [rules]
        iot.create_policy_version(policyName="device", policyDocument=policy("telemetry/v2"), setAsDefault=True)
        service.refresh_rules()
        (rules,) = broker.written.values()
        assert "publish telemetry/v2" in rules.splitlines() and "publish telemetry/v1" not in rules.splitlines()
        iot.detach_policy(policyName="device", target=certificate["certificateArn"])
        service.refresh_rules()
        assert broker.written == {}  # no policy: the certificate may do nothing
    finally:
        service.stop()


def test_certificates_that_stop_being_active_are_named_for_disconnection_after_the_next_pass(iot: Any) -> None:
    """AWS closes the connections of a certificate once it is revoked, deactivated or deleted; the
    sandbox's pass names those certificates' identities (the broker's user names) so the broker can
    close them too. One whose policy was detached first (as decommissioning does) is named as well;
    one still ACTIVE, or never ACTIVE, is not."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.iot_data_plane.broker import RegistryRules
    from sandbox.local_aws.account import LocalAccount

    def certificate(name: str, status: str = "ACTIVE") -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        pem = (
            (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(key, hashes.SHA256())
            )
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        created = iot.register_certificate_without_ca(certificatePem=pem, status=status)
        if status == "ACTIVE":
            iot.attach_policy(policyName="device", target=created["certificateArn"])
        return created["certificateId"], created["certificateArn"]

    iot.create_policy(
        policyName="device",
        policyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "iot:Connect",
                        "Resource": "arn:aws:iot:us-east-1:123456789012:client/*",
                    }
                ],
            }
        ),
    )
    revoked, deactivated, deleted, detached, kept = (
        certificate(n) for n in ("revoked", "deactivated", "deleted", "detached", "kept")
    )
    never_active = certificate("never-active", status="INACTIVE")
    rules = RegistryRules(LocalAccount("us-east-1"))
    rules.refresh()
    assert rules.stopped == []

    iot.update_certificate(certificateId=revoked[0], newStatus="REVOKED")
    iot.update_certificate(certificateId=deactivated[0], newStatus="INACTIVE")
    iot.update_certificate(certificateId=deleted[0], newStatus="INACTIVE")
    iot.detach_policy(policyName="device", target=deleted[1])
    iot.delete_certificate(certificateId=deleted[0])
    iot.detach_policy(policyName="device", target=detached[1])
    rules.refresh(forget=True)  # the detachment: rules gone, the certificate still ACTIVE (AWS keeps it connected)
    assert rules.stopped == ["deactivated", "deleted", "revoked"]
    iot.update_certificate(certificateId=detached[0], newStatus="INACTIVE")
    iot.update_certificate(certificateId=never_active[0], newStatus="REVOKED")
    rules.refresh()
    assert rules.stopped == ["detached"]
    rules.refresh()
    assert rules.stopped == []  # named once
    assert kept[0] in {c.certificate_id for c in LocalAccount("us-east-1").certificates() if c.status == "ACTIVE"}


def test_a_rule_s_throttled_lambda_event_is_tried_again_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic rule invokes its function asynchronously: when the function's reserved concurrency is
    taken, Lambda keeps the event and tries again (rotation requests from many devices at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from sandbox.iot_data_plane import fleet_provisioning
    from sandbox.local_aws.account import AwsError

    calls: list[str] = []

    class Account:
        def invoke(self, function: str, event: Any) -> None:
            calls.append(function)
            if len(calls) < 3:
                raise AwsError(429, "TooManyRequestsException", "Rate Exceeded.")

        def event_max_age(self, function: str) -> float | None:
            return 120.0

    monkeypatch.setattr(fleet_provisioning.time, "sleep", lambda _: None)
    service = object.__new__(fleet_provisioning.FleetProvisioningService)
    service.account = Account()  # type: ignore[assignment]
    service._throttled = ThreadPoolExecutor(max_workers=1)

    service._invoke_asynchronously("arn:aws:lambda:us-east-1:123456789012:function:f", {"topic": "t"})
    service._throttled.shutdown(wait=True)  # the retries run on a pool of their own

    assert len(calls) == 3

    class Refusing(Account):
        def invoke(self, function: str, event: Any) -> None:
            raise AwsError(400, "InvalidRequestContentException", "bad")

    service.account = Refusing()  # type: ignore[assignment]
    with pytest.raises(AwsError, match="InvalidRequestContentException"):  # any other failure: the action's
        service._invoke_asynchronously("arn:aws:lambda:us-east-1:123456789012:function:f", {"topic": "t"})
