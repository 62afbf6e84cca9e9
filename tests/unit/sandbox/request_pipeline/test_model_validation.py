"""AWS's request validation in the sandbox (sandbox/request_pipeline/model_validation.py): requests
that break their service model, sent by boto3 with its own checks off (as another SDK or a
hand-built request would send them), refused in AWS's error shapes before anything is looked up."""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.request_pipeline.model_validation import SERVICES, constraint_counts, java_pattern, validator
from tests.unit.sandbox.request_pipeline.test_iam_requests import TRUST_LAMBDA

REGION = "us-east-1"
RETENTION_DAYS = (
    "[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
)


@pytest.fixture
def client(server: str) -> Iterator[Callable[[str], Any]]:
    def make(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=server,
            region_name=REGION,
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
            config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
        )

    reset = urllib.request.Request(f"{server}/moto-api/reset", method="POST")  # noqa: S310 - http to loopback
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - http to loopback
    yield make
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - http to loopback


def refused(call: Callable[..., Any], **request: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as raised:
        call(**request)
    error = raised.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Message"]


def one(value: str, member: str, constraint: str) -> str:
    return f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"


def function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def test_a_thing_name_of_129_characters_is_refused_and_nothing_is_created(client: Callable[[str], Any]) -> None:
    iot = client("iot")
    name = "t" * 129
    assert refused(iot.create_thing, thingName=name) == (
        "InvalidRequestException",
        400,
        one(name, "thingName", "Member must have length less than or equal to 128"),
    )
    assert iot.list_things()["things"] == []
    iot.create_thing(thingName="t" * 128)  # the model's limit itself is accepted
    assert [t["thingName"] for t in iot.list_things()["things"]] == ["t" * 128]


def test_a_thing_group_name_with_a_space_is_refused(client: Callable[[str], Any]) -> None:
    iot = client("iot")
    assert refused(iot.create_thing_group, thingGroupName="line 1") == (
        "InvalidRequestException",
        400,
        one("line 1", "thingGroupName", "Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+"),
    )
    assert iot.list_thing_groups()["thingGroups"] == []


def test_a_policy_name_with_a_slash_is_refused_by_iot_and_by_iam(client: Callable[[str], Any]) -> None:
    document = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}'
    pattern = "Member must satisfy regular expression pattern: [\\w+=,.@-]+"
    iot, iam = client("iot"), client("iam")
    assert refused(iot.create_policy, policyName="fleet/devices", policyDocument=document) == (
        "InvalidRequestException",
        400,
        one("fleet/devices", "policyName", pattern),
    )
    assert iot.list_policies()["policies"] == []
    assert refused(iam.create_policy, PolicyName="fleet/devices", PolicyDocument=document) == (
        "ValidationError",
        400,
        one("fleet/devices", "policyName", pattern),
    )
    assert iam.list_policies(Scope="Local")["Policies"] == []
    iot.create_policy(policyName="fleet+devices=,.@-_1", policyDocument=document)  # every character \w+=,.@- allows


def test_a_dynamodb_table_name_of_2_characters_is_refused_even_where_a_lookup_would_say_not_found(
    client: Callable[[str], Any],
) -> None:
    dynamodb = client("dynamodb")
    expected = (
        "ValidationException",
        400,
        one("ab", "tableName", "Member must have length greater than or equal to 3"),
    )
    schema = {
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    assert refused(dynamodb.create_table, TableName="ab", **schema) == expected
    assert dynamodb.list_tables()["TableNames"] == []
    assert refused(dynamodb.describe_table, TableName="ab") == expected  # not ResourceNotFoundException
    assert refused(dynamodb.get_item, TableName="a!b", Key={"k": {"S": "x"}})[2] == one(
        "a!b", "tableName", "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    )
    dynamodb.create_table(TableName="abc", **schema)


def test_a_lambda_function_name_of_65_characters_is_refused_and_an_arn_of_that_length_is_not(
    client: Callable[[str], Any],
) -> None:
    lambda_client, iam = client("lambda"), client("iam")
    role = iam.create_role(RoleName="function-role", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    name = "f" * 65
    request = {"Runtime": "python3.11", "Role": role, "Handler": "handler.handler", "Code": {"ZipFile": function_zip()}}
    assert refused(lambda_client.create_function, FunctionName=name, **request) == (
        "InvalidParameterValueException",
        400,
        one(name, "functionName", "Member must have length less than or equal to 64"),
    )
    assert lambda_client.list_functions()["Functions"] == []
    assert refused(lambda_client.get_function, FunctionName=name)[0] == "InvalidParameterValueException"
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:{'f' * 64}"
    assert refused(lambda_client.get_function, FunctionName=arn)[0] == "ResourceNotFoundException"  # looked up
    assert refused(lambda_client.get_function, FunctionName="my function") == (
        "ValidationException",
        400,
        one("my function", "functionName", f"Member must satisfy regular expression pattern: {_function_pattern()}"),
    )


def _function_pattern() -> str:
    shape = validator("lambda").model.operation_model("GetFunction").input_shape.members["FunctionName"]
    return str(shape.metadata["pattern"])


def test_a_log_retention_of_2_days_is_refused_with_the_documented_values(client: Callable[[str], Any]) -> None:
    logs = client("logs")
    logs.create_log_group(logGroupName="/fleet/audit")
    assert refused(logs.put_retention_policy, logGroupName="/fleet/audit", retentionInDays=2) == (
        "InvalidParameterException",
        400,
        one("2", "retentionInDays", f"Member must satisfy enum value set: {RETENTION_DAYS}"),
    )
    assert "retentionInDays" not in logs.describe_log_groups()["logGroups"][0]
    logs.put_retention_policy(logGroupName="/fleet/audit", retentionInDays=3)
    assert logs.describe_log_groups()["logGroups"][0]["retentionInDays"] == 3


@pytest.mark.parametrize(
    ("change", "member", "constraint"),
    [
        ({"templateName": "x" * 37}, "templateName", "Member must have length less than or equal to 36"),
        (
            {"templateName": "bad name"},
            "templateName",
            "Member must satisfy regular expression pattern: ^[0-9A-Za-z_-]+$",
        ),
        (
            {"templateBody": "{" + " " * 10_239 + "}"},
            "templateBody",
            "Member must have length less than or equal to 10240",
        ),
        ({"provisioningRoleArn": None}, "provisioningRoleArn", "Member must not be null"),
    ],
)
def test_a_provisioning_template_outside_the_model_is_refused(
    client: Callable[[str], Any], change: dict[str, Any], member: str, constraint: str
) -> None:
    iot = client("iot")
    request = {"templateName": "ok", "templateBody": "{}", "provisioningRoleArn": "arn:aws:iam::123456789012:role/p"}
    request = {k: v for k, v in {**request, **change}.items() if v is not None}
    code, status, message = refused(iot.create_provisioning_template, **request)
    assert (code, status) == ("InvalidRequestException", 400)
    assert message.startswith("1 validation error detected: Value ") and message.endswith(
        f"at '{member}' failed to satisfy constraint: {constraint}"
    )
    assert iot.list_provisioning_templates()["templates"] == []


def test_every_violation_of_a_request_is_reported_in_one_answer(client: Callable[[str], Any]) -> None:
    code, status, message = refused(
        client("iam").create_role, RoleName="a b", Path="no-slashes", AssumeRolePolicyDocument=TRUST_LAMBDA
    )
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("2 validation errors detected: Value 'no-slashes' at 'path' failed to satisfy")
    assert "; Value 'a b' at 'roleName' failed to satisfy constraint" in message
    code, _, message = refused(client("iot").describe_thing, thingName="a b")
    assert code == "InvalidRequestException"  # not ResourceNotFoundException: nothing was looked up


def test_a_missing_required_member_and_a_value_outside_the_enum_are_refused(client: Callable[[str], Any]) -> None:
    dynamodb = client("dynamodb")
    code, _, message = refused(
        dynamodb.create_table,
        TableName="registry",
        KeySchema=[{"AttributeName": "k", "KeyType": "PRIMARY"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="ON_DEMAND",
    )
    assert code == "ValidationException"
    assert (
        "Value 'PRIMARY' at 'keySchema.1.member.keyType' failed to satisfy constraint: Member must satisfy enum "
        in (message)
    )
    assert "Value 'ON_DEMAND' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: " in (
        message
    )
    assert refused(client("sts").assume_role, RoleArn="arn:aws:iam::123456789012:role/x")[2] == (
        "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_cloudwatch_answers_in_its_query_compatible_json_form(client: Callable[[str], Any]) -> None:
    cloudwatch = client("cloudwatch")
    with pytest.raises(ClientError) as raised:
        cloudwatch.put_metric_alarm(
            AlarmName="a",
            MetricName="m",
            Namespace="n",
            Period=60,
            EvaluationPeriods=0,
            Threshold=1.0,
            ComparisonOperator="GreaterThanThreshold",
            Statistic="Sum",
        )
    error = raised.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert (
        "at 'evaluationPeriods' failed to satisfy constraint: Member must have value greater than or equal to 1"
        in (error["Error"]["Message"])
    )
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []


def test_a_sensitive_member_is_named_but_its_value_is_not_echoed() -> None:
    refusal = validator("iam").check("CreateLoginProfile", {"UserName": "operator", "Password": "secret-\u20ac"})
    assert refusal is not None
    assert refusal.message == (
        "1 validation error detected: Value at 'password' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+"
    )
    assert "secret" not in refusal.message


def test_java_patterns_keep_javas_meaning() -> None:
    word = java_pattern("[\\w+=,.@-]+")
    assert word is not None and word.fullmatch("a_b+c") and not word.fullmatch("ä")  # Java's \w is ASCII
    letters = java_pattern("[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*")
    assert letters is not None and letters.fullmatch("Grüße 12") and not letters.fullmatch("a;b")  # \p{L}: Unicode
    printable = java_pattern("\\p{Print}+")
    assert printable is not None and printable.fullmatch("a b~") and not printable.fullmatch("é")  # POSIX: ASCII
    posix_in_class = java_pattern("[\\p{Upper}\\p{Digit}_]+")
    assert posix_in_class is not None and posix_in_class.fullmatch("AB_9") and not posix_in_class.fullmatch("ab")
    pair = java_pattern("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\r\\n\\t]*")
    assert pair is not None and pair.fullmatch("role \U0001f600") and not pair.fullmatch("\x01")
    assert java_pattern("[a-z]+") is not None and not java_pattern("[a-z]+").fullmatch("abc\n")  # type: ignore[union-attr]


def test_every_pattern_of_the_validated_services_is_read_and_the_counts_are_reported() -> None:
    counts = {service: constraint_counts(service) for service in SERVICES}
    for service in ("iot", "dynamodb", "lambda", "logs", "monitoring", "iam"):
        assert counts[service]["unreadable patterns"] == 0, service
        assert min(counts[service][kind] for kind in ("min", "max", "pattern", "enum")) > 0, (service, counts)


# Review findings: nothing AWS accepts is refused, nothing breaks, nothing secret is echoed -------
def signed_environ(
    service: str, body: bytes, *, path: str = "/", query: str = "", content_type: str = "", target: str = ""
) -> dict[str, Any]:
    """A request as an SDK sends it, signed for `service` with the administrator's key."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from werkzeug.test import EnvironBuilder

    headers = {"Content-Type": content_type} if content_type else {}
    if target:
        headers["X-Amz-Target"] = target
    url = f"http://127.0.0.1{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials("sandbox", "sandbox"), service, REGION).add_auth(request)
    signed = {k: v for k, v in request.headers.items() if k.lower() != "content-type"}
    return EnvironBuilder(
        method="POST", path=path, query_string=query, headers=signed, data=body, content_type=content_type or None
    ).get_environ()


def through_layer(environ: dict[str, Any]) -> tuple[str, bytes]:
    """What the validation layer answers, with an application behind it that answers 200 "passed"."""
    from sandbox.request_pipeline.model_validation import RequestsValidated

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"passed:" + environ["wsgi.input"].read()]

    seen: dict[str, str] = {}
    body = b"".join(RequestsValidated(app)(environ, lambda status, headers: seen.setdefault("status", status)))
    return seen["status"], body


def test_a_lambda_operation_whose_model_states_no_name_limit_is_served(client: Callable[[str], Any]) -> None:
    listed = client("lambda").list_event_source_mappings(FunctionName="my-function")  # "it's limited to 64"
    assert listed["EventSourceMappings"] == []
    rules = validator("lambda").extra_rules()
    assert {("FunctionName", "FunctionName"), ("FunctionName", "NamespacedFunctionName")} <= set(rules)
    assert ("retentionInDays", "Days") in validator("logs").extra_rules()  # the model's wording still gives both


def test_a_secret_in_a_sensitive_map_is_never_echoed(client: Callable[[str], Any]) -> None:
    code, _, message = refused(
        client("lambda").update_function_configuration,
        FunctionName="hook",
        Environment={"Variables": {"DB_PASSWORD": "hunter2-SECRET", "API-KEY": "sk_live_abc"}},
    )
    assert code == "ValidationException"
    assert message.startswith(
        "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: "
        "Map keys must satisfy constraint: ["
    )
    assert "hunter2" not in message and "sk_live" not in message


def test_requests_the_check_cannot_read_go_on_to_moto_and_odd_ones_are_refused_cleanly() -> None:
    deep: Any = {"S": "leaf"}
    for _ in range(200):
        deep = {"M": {"a": deep}}
    for environ in (
        signed_environ(
            "kms", b'{"Limit": 1e400}', content_type="application/x-amz-json-1.1", target="TrentService.ListKeys"
        ),
        signed_environ(
            "dynamodb",
            json.dumps({"TableName": "registry", "Item": {"k": deep}}).encode(),
            content_type="application/x-amz-json-1.0",
            target="DynamoDB_20120810.PutItem",
        ),
        signed_environ(
            "dynamodb", b"{not json", content_type="application/x-amz-json-1.0", target="DynamoDB_20120810.GetItem"
        ),
    ):
        assert through_layer(environ)[0] == "200 OK"
    lone_surrogate = signed_environ(
        "logs",
        b'{"logGroupName": "/g\\ud83d"}',
        content_type="application/x-amz-json-1.1",
        target="Logs_20140328.CreateLogGroup",
    )
    status, body = through_layer(lone_surrogate)
    assert status.startswith("400") and b"logGroupName" in body


def test_an_over_long_value_is_refused_for_its_length_without_running_its_pattern() -> None:
    bucket = "a" + "0" * 20_000 + "\n"  # quadratic for S3Bucket's pattern, were it run
    refusal = validator("dynamodb").check(
        "ExportTableToPointInTime", {"TableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t", "S3Bucket": bucket}
    )
    assert refusal is not None
    assert [p.rpartition(": ")[2] for p in refusal.problems] == ["Member must have length less than or equal to 255"]


def test_the_service_and_action_are_read_as_moto_reads_them() -> None:
    trust = urllib.parse.quote(TRUST_LAMBDA)
    form = "application/x-www-form-urlencoded; charset=utf-8"
    # The body's Action wins over the URL's (moto runs CreateRole here).
    mixed = signed_environ(
        "iam",
        f"Action=CreateRole&Version=2010-05-08&RoleName=bad+nine&AssumeRolePolicyDocument={trust}".encode(),
        query="Action=ListRoles",
        content_type=form,
    )
    assert through_layer(mixed)[0].startswith("400")
    # No Content-Type at all: moto still reads the form.
    bare = signed_environ(
        "iam", f"Action=CreateRole&Version=2010-05-08&RoleName=bad+nine&AssumeRolePolicyDocument={trust}".encode()
    )
    assert through_layer(bare)[0].startswith("400")
    # A signing name moto aliases (eventbridge: events) or spells in capitals.
    rule = json.dumps({"Name": "bad name!", "ScheduleExpression": "rate(5 minutes)"}).encode()
    assert through_layer(
        signed_environ("eventbridge", rule, content_type="application/x-amz-json-1.1", target="AWSEvents.PutRule")
    )[0].startswith("400")
    table = json.dumps({"TableName": "ab"}).encode()
    assert through_layer(
        signed_environ(
            "DynamoDB", table, content_type="application/x-amz-json-1.0", target="DynamoDB_20120810.DescribeTable"
        )
    )[0].startswith("400")
    # A JSON service's request under a form Content-Type: moto reads the JSON body, so does the check.
    retention = json.dumps({"logGroupName": "/g", "retentionInDays": 2}).encode()
    assert through_layer(
        signed_environ("logs", retention, content_type=form, target="Logs_20140328.PutRetentionPolicy")
    )[0].startswith("400")


def test_the_sts_calls_aws_serves_unsigned_are_validated_too(server: str) -> None:
    from botocore import UNSIGNED

    sts = boto3.client(
        "sts",
        endpoint_url=server,
        region_name=REGION,
        config=Config(signature_version=UNSIGNED, parameter_validation=False, retries={"total_max_attempts": 1}),
    )
    code, status, message = refused(
        sts.assume_role_with_web_identity,
        RoleArn="arn:aws:iam::123456789012:role/web",
        RoleSessionName="bad name!",
        WebIdentityToken="t" * 10,
    )
    assert (code, status) == ("ValidationError", 400)
    assert "at 'roleSessionName' failed to satisfy constraint" in message


def test_a_control_character_in_a_query_refusal_keeps_the_answer_readable(client: Callable[[str], Any]) -> None:
    code, status, message = refused(client("iam").create_role, RoleName="a\x01b", AssumeRolePolicyDocument=TRUST_LAMBDA)
    assert (code, status) == ("ValidationError", 400) and "at 'roleName'" in message


def test_an_operation_that_declares_validation_exception_answers_with_it() -> None:
    refusal = validator("iot").check("CreateCommand", {"commandId": "bad id"})
    assert refusal is not None and refusal.code == "ValidationException"
    assert validator("iot").check("CreateThing", {"thingName": "bad id"}).code == "InvalidRequestException"  # type: ignore[union-attr]
