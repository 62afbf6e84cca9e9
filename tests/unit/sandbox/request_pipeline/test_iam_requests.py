"""IAM where it decides the outcome: a function's AWS calls through the local AWS's HTTP front, as
boto3 in the function sees them, and the resource-based policies IoT is held to."""

from __future__ import annotations

import http.client
import io
import json
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox.iam.enforcement import AUTHORITY, AssumedRole
from sandbox.request_pipeline.iam_requests import Call, Unmapped, checks_for

ACCOUNT, REGION = "123456789012", "us-east-1"
TABLE = "iam-registry"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"
TRUST_LAMBDA = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


class LocalAws:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self, service: str, key: str = "sandbox", secret: str = "sandbox") -> Any:  # noqa: S107 - fake
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token="token",
            config=Config(retries={"total_max_attempts": 1}),
        )

    def function_client(self, service: str, role_arn: str) -> Any:
        function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:hook"
        key, secret = AUTHORITY.function_credentials(function_arn, role_arn, "hook")
        return self.client(service, key, secret)

    def role(self, name: str, statements: list[dict[str, Any]]) -> str:
        iam = self.client("iam")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
        self.put(name, statements)
        return str(arn)

    def put(self, role: str, statements: list[dict[str, Any]]) -> None:
        document = json.dumps({"Version": "2012-10-17", "Statement": statements})
        self.client("iam").put_role_policy(RoleName=role, PolicyName="policy", PolicyDocument=document)


def reset(server: str) -> None:
    """Empties moto's state (server mode: the backends are this process's own)."""
    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST"), timeout=10).close()  # noqa: S310 - http to loopback


@pytest.fixture
def aws(server: str) -> Iterator[LocalAws]:
    reset(server)
    local = LocalAws(server)
    local.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "serialNumber", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield local
    reset(server)


def denied(call: Any) -> ClientError:
    with pytest.raises(ClientError) as refused:
        call()
    return refused.value


def test_a_function_may_make_the_calls_its_role_allows_and_no_others(aws: LocalAws) -> None:
    role = aws.role("hook-role", [{"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": TABLE_ARN}])
    dynamodb = aws.function_client("dynamodb", role)
    key = {"serialNumber": {"S": "SN-1"}}

    dynamodb.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "x"}},
    )
    error = denied(lambda: dynamodb.get_item(TableName=TABLE, Key=key))

    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400  # DynamoDB's AccessDeniedException
    assert error.response["Error"]["Message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/hook-role/hook is not authorized to perform: dynamodb:GetItem "
        f"on resource: {TABLE_ARN} because no identity-based policy allows the dynamodb:GetItem action"
    )
    other = denied(
        lambda: dynamodb.update_item(
            TableName=TABLE + "-other",
            Key=key,
            UpdateExpression="SET a = :a",
            ExpressionAttributeValues={":a": {"S": "x"}},
        )
    )
    assert f"on resource: {TABLE_ARN}-other " in other.response["Error"]["Message"]
    assert aws.client("dynamodb").get_item(TableName=TABLE, Key=key)["Item"]["status"] == {"S": "x"}  # admin: unchecked


def test_an_explicit_deny_refuses_what_another_statement_allows(aws: LocalAws) -> None:
    role = aws.role(
        "deny-role",
        [
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "dynamodb:PutItem", "Resource": TABLE_ARN},
        ],
    )
    dynamodb = aws.function_client("dynamodb", role)
    error = denied(lambda: dynamodb.put_item(TableName=TABLE, Item={"serialNumber": {"S": "SN-2"}}))
    assert error.response["Error"]["Message"].endswith("with an explicit deny in an identity-based policy")
    dynamodb.get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-2"}})


def test_a_role_change_is_in_force_for_the_next_request(aws: LocalAws) -> None:
    role = aws.role("changing-role", [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE_ARN}])
    dynamodb = aws.function_client("dynamodb", role)
    key = {"serialNumber": {"S": "SN-3"}}
    dynamodb.get_item(TableName=TABLE, Key=key)  # allowed, and now cached

    aws.put("changing-role", [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": TABLE_ARN}])

    denied(lambda: dynamodb.get_item(TableName=TABLE, Key=key))
    iam = aws.client("iam")
    iam.delete_role_policy(RoleName="changing-role", PolicyName="policy")
    reads = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": "*"}]}
    managed = iam.create_policy(PolicyName="reads", PolicyDocument=json.dumps(reads))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="changing-role", PolicyArn=managed)
    dynamodb.get_item(TableName=TABLE, Key=key)  # an attached managed policy counts as well
    iam.create_policy_version(
        PolicyArn=managed,
        SetAsDefault=True,
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:Put*", "Resource": "*"}]}
        ),
    )
    denied(lambda: dynamodb.get_item(TableName=TABLE, Key=key))  # only the default version counts


def test_a_function_whose_role_does_not_exist_may_do_nothing(aws: LocalAws) -> None:
    dynamodb = aws.function_client("dynamodb", f"arn:aws:iam::{ACCOUNT}:role/never-created")
    error = denied(lambda: dynamodb.get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-4"}}))
    assert "assumed-role/never-created/hook is not authorized to perform: dynamodb:GetItem" in str(error)


def test_a_table_with_a_customer_managed_key_also_needs_kms_decrypt_through_dynamodb(aws: LocalAws) -> None:
    key_arn = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    aws.client("dynamodb").create_table(
        TableName="encrypted",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn},
    )
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/encrypted"
    use_key = {
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}},
    }
    role = aws.role("kms-role", [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": table}])
    dynamodb = aws.function_client("dynamodb", role)

    error = denied(lambda: dynamodb.get_item(TableName="encrypted", Key={"id": {"S": "1"}}))
    assert f"perform: kms:Decrypt on resource: {key_arn} " in error.response["Error"]["Message"]

    aws.put("kms-role", [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": table}, use_key])
    dynamodb.get_item(TableName="encrypted", Key={"id": {"S": "1"}})
    kms = aws.function_client("kms", role)  # the same grant does not let the function call KMS itself
    kms_error = denied(lambda: kms.decrypt(KeyId=key_arn, CiphertextBlob=b"x" * 32))
    assert kms_error.response["Error"]["Code"] == "AccessDeniedException"
    assert f"perform: kms:Decrypt on resource: {key_arn} " in kms_error.response["Error"]["Message"]


def test_shadow_calls_are_checked_on_the_thing(aws: LocalAws) -> None:
    thing_arns = f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/sensor-*"
    role = aws.role("events-role", [{"Effect": "Allow", "Action": "iot:UpdateThingShadow", "Resource": thing_arns}])
    aws.client("iot").create_thing(thingName="sensor-1")
    aws.client("iot").create_thing(thingName="gateway-1")
    shadows = aws.function_client("iot-data", role)
    payload = json.dumps({"state": {"desired": {"on": True}}}).encode()

    shadows.update_thing_shadow(thingName="sensor-1", payload=payload)
    error = denied(lambda: shadows.update_thing_shadow(thingName="gateway-1", payload=payload))
    read = denied(lambda: shadows.get_thing_shadow(thingName="sensor-1"))

    assert error.response["Error"]["Code"] == "ForbiddenException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert f"iot:UpdateThingShadow on resource: arn:aws:iot:{REGION}:{ACCOUNT}:thing/gateway-1 " in str(error)
    assert "perform: iot:GetThingShadow" in str(read)


def test_an_action_with_no_resource_type_is_granted_only_by_resource_star(aws: LocalAws) -> None:
    """ListAttachedPolicies names a certificate, but the Service Authorization Reference gives the action
    no resource type: a grant on cert/* grants nothing (AWS's answer), a grant on "*" does."""
    iot = aws.client("iot")
    certificate = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    on_certificates = {
        "Effect": "Allow",
        "Action": "iot:ListAttachedPolicies",
        "Resource": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/*",
    }
    role = aws.role("rotation-role", [on_certificates])
    function_iot = aws.function_client("iot", role)

    error = denied(lambda: function_iot.list_attached_policies(target=certificate))
    aws.put("rotation-role", [{**on_certificates, "Resource": "*"}])
    allowed = function_iot.list_attached_policies(target=certificate)

    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert "is not authorized to perform: iot:ListAttachedPolicies on resource: " in str(error)
    assert allowed["policies"] == []


def test_a_call_the_sandbox_cannot_map_is_refused_saying_so(aws: LocalAws) -> None:
    role = aws.role("admin-role", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    error = denied(lambda: aws.function_client("iot", role).list_things())
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "cannot tell which IAM action and resource" in error.response["Error"]["Message"]
    limits = denied(lambda: aws.function_client("dynamodb", role).describe_limits())
    assert "fail closed" in limits.response["Error"]["Message"]
    aws.function_client("sts", role).get_caller_identity()  # needs no permission at all, as in AWS


@pytest.mark.parametrize(
    ("target", "body", "expected"),
    [
        (
            "DynamoDB_20120810.Query",
            {"TableName": "t", "IndexName": "byType"},
            [("dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/t/index/byType")],
        ),
        (
            "DynamoDB_20120810.BatchWriteItem",
            {"RequestItems": {"a": [], "b": []}},
            [
                ("dynamodb:BatchWriteItem", "arn:aws:dynamodb:us-east-1:123456789012:table/a"),
                ("dynamodb:BatchWriteItem", "arn:aws:dynamodb:us-east-1:123456789012:table/b"),
            ],
        ),
        (
            "DynamoDB_20120810.TransactWriteItems",
            {"TransactItems": [{"Put": {"TableName": "a"}}, {"ConditionCheck": {"TableName": "b"}}]},
            [
                ("dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/a"),
                ("dynamodb:ConditionCheckItem", "arn:aws:dynamodb:us-east-1:123456789012:table/b"),
            ],
        ),
    ],
)
def test_dynamodb_requests_map_to_the_actions_and_tables_aws_checks(
    aws: LocalAws, target: str, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    call = Call("dynamodb", REGION, ACCOUNT, "POST", "/", target, json.dumps(body).encode(), {})
    assert [(c.action, c.resource) for c in checks_for(call)] == expected


def test_unmappable_requests_raise() -> None:
    for call in (
        Call("dynamodb", REGION, ACCOUNT, "POST", "/", "DynamoDB_20120810.GetItem", b"{}", {}),  # no table
        Call("dynamodb", REGION, ACCOUNT, "POST", "/", "DynamoDB_20120810.GetItem", b"not json", {}),
        Call("iotdata", REGION, ACCOUNT, "GET", "/retainedMessage", "", b"", {}),
        Call("lambda", REGION, ACCOUNT, "POST", "/2015-03-31/functions/f/invocations", "", b"", {}),
    ):
        with pytest.raises(Unmapped):
            checks_for(call)


# Resource-based policies and trust ------------------------------------------------------------------
def zipped(code: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", code)
    return buffer.getvalue()


@pytest.fixture
def in_process() -> Iterator[Any]:
    with mock_aws():
        AUTHORITY.install()
        yield boto3.client("iam", region_name=REGION)


def test_iot_may_invoke_a_function_only_for_the_source_its_policy_names(in_process: Any) -> None:
    role = in_process.create_role(RoleName="fn", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    lam = boto3.client("lambda", region_name=REGION)
    arn = lam.create_function(
        FunctionName="hook",
        Runtime="python3.11",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": zipped("def handler(e, c): return e")},
    )["FunctionArn"]
    template = f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/fleet"
    assert not AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", template, ACCOUNT).allowed  # no policy

    lam.add_permission(
        FunctionName="hook",
        StatementId="iot",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=template,
    )

    assert AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", template, ACCOUNT).allowed
    assert not AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", template + "2", ACCOUNT).allowed
    assert not AUTHORITY.function_policy_allows(arn, "events.amazonaws.com", template, ACCOUNT).allowed
    assert not AUTHORITY.function_policy_allows(
        arn.replace("hook", "gone"), "iot.amazonaws.com", template, ACCOUNT
    ).allowed

    # The stack's form: the account (aws:SourceAccount), whatever ARN IoT names as the source.
    lam.remove_permission(FunctionName="hook", StatementId="iot")
    lam.add_permission(
        FunctionName="hook",
        StatementId="iot",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceAccount=ACCOUNT,
    )
    assert AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", template, ACCOUNT).allowed
    assert AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", template + "2", ACCOUNT).allowed
    other_account = template.replace(ACCOUNT, "999999999999")
    assert not AUTHORITY.function_policy_allows(arn, "iot.amazonaws.com", other_account, "999999999999").allowed


def test_a_role_is_assumable_only_by_the_service_and_account_its_trust_policy_names(in_process: Any) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "iot.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            }
        ],
    }
    role = in_process.create_role(RoleName="provisioning", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    source = f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/fleet"

    assert AUTHORITY.trusts(role, "iot.amazonaws.com", source, ACCOUNT).allowed
    assert not AUTHORITY.trusts(role, "iot.amazonaws.com", source, "999999999999").allowed  # confused deputy
    assert not AUTHORITY.trusts(role, "lambda.amazonaws.com", source, ACCOUNT).allowed
    assert not AUTHORITY.trusts(role + "-gone", "iot.amazonaws.com", source, ACCOUNT).allowed

    in_process.update_assume_role_policy(RoleName="provisioning", PolicyDocument=TRUST_LAMBDA)
    assert not AUTHORITY.trusts(role, "iot.amazonaws.com", source, ACCOUNT).allowed


def test_decisions_are_cached_and_an_iam_write_empties_the_cache(in_process: Any) -> None:
    arn = in_process.create_role(RoleName="cached", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    caller = AssumedRole(arn, "session")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    in_process.put_role_policy(RoleName="cached", PolicyName="p", PolicyDocument=json.dumps(policy))
    assert AUTHORITY.authorize(caller, "iot:CreateThing", "arn:aws:iot:us-east-1:1:thing/x").allowed
    generation = AUTHORITY.generation

    in_process.delete_role_policy(RoleName="cached", PolicyName="p")

    assert AUTHORITY.generation > generation
    assert not AUTHORITY.authorize(caller, "iot:CreateThing", "arn:aws:iot:us-east-1:1:thing/x").allowed


def test_a_request_mapped_to_a_resource_aws_never_checks_is_refused_saying_the_sandbox_is_at_fault(
    in_process: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """A defect in the sandbox's own request mapping fails closed, and says so, whatever the role allows."""
    arn = in_process.create_role(RoleName="mapped", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    caller = AssumedRole(arn, "session")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    in_process.put_role_policy(RoleName="mapped", PolicyName="p", PolicyDocument=json.dumps(policy))
    thing = "arn:aws:iot:us-east-1:123456789012:thing/x"

    decision = AUTHORITY.authorize(caller, "iot:AttachPolicy", thing)  # AttachPolicy targets a cert or group

    assert not decision.allowed
    assert "the sandbox asked IAM about a resource AWS does not check for iot:AttachPolicy" in AUTHORITY.denial(
        caller, "iot:AttachPolicy", thing, decision
    )
    assert f"sandbox: IAM: iot:AttachPolicy is never authorized against '{thing}' (a thing)" in capfd.readouterr().err
    assert AUTHORITY.authorize(caller, "iot:AttachPolicy", thing.replace("thing/", "cert/")).allowed


# Who may call at all -----------------------------------------------------------------------------------
MADE_UP_KEY = "AKIAMADEUP0000000000"


def unsigned(aws: LocalAws, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=aws.endpoint,
        region_name=REGION,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )


def code_and_status(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize(
    ("service", "call", "expected"),
    [
        ("dynamodb", lambda c: c.delete_table(TableName=TABLE), ("UnrecognizedClientException", 400)),
        ("logs", lambda c: c.describe_log_groups(), ("UnrecognizedClientException", 400)),
        ("kms", lambda c: c.list_keys(), ("UnrecognizedClientException", 400)),
        ("lambda", lambda c: c.list_functions(), ("UnrecognizedClientException", 403)),
        ("iot", lambda c: c.list_things(), ("UnrecognizedClientException", 403)),
        ("iam", lambda c: c.list_roles(), ("InvalidClientTokenId", 403)),
        ("sts", lambda c: c.get_caller_identity(), ("InvalidClientTokenId", 403)),
        ("cloudwatch", lambda c: c.list_metrics(), ("InvalidClientTokenId", 403)),
        ("sns", lambda c: c.list_topics(), ("InvalidClientTokenId", 403)),
    ],
)
def test_an_access_key_the_sandbox_does_not_know_is_refused_as_aws_refuses_it(
    aws: LocalAws, service: str, call: Callable[[Any], Any], expected: tuple[str, int]
) -> None:
    error = denied(lambda: call(aws.client(service, key=MADE_UP_KEY)))
    assert code_and_status(error) == expected
    assert error.response["Error"]["Message"] == "The security token included in the request is invalid."
    assert aws.client("dynamodb").describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE  # nothing done


@pytest.mark.parametrize(
    ("service", "call", "expected"),
    [
        ("dynamodb", lambda c: c.delete_table(TableName=TABLE), ("MissingAuthenticationTokenException", 400)),
        ("lambda", lambda c: c.list_functions(), ("MissingAuthenticationTokenException", 403)),
        ("iot", lambda c: c.list_things(), ("MissingAuthenticationTokenException", 403)),
        ("iam", lambda c: c.list_roles(), ("MissingAuthenticationToken", 403)),
        ("sts", lambda c: c.get_caller_identity(), ("MissingAuthenticationToken", 403)),
    ],
)
def test_an_unsigned_request_is_refused_as_aws_refuses_it(
    aws: LocalAws, service: str, call: Callable[[Any], Any], expected: tuple[str, int]
) -> None:
    error = denied(lambda: call(unsigned(aws, service)))
    assert code_and_status(error) == expected
    assert aws.client("dynamodb").describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE


def test_the_sandboxs_own_paths_and_the_calls_aws_serves_unsigned_need_no_signature(aws: LocalAws) -> None:
    with urllib.request.urlopen(f"{aws.endpoint}/_sandbox/health", timeout=10) as health:  # noqa: S310 - loopback
        assert health.status == 200
    reset(aws.endpoint)  # POST /moto-api/reset, unsigned
    role = aws.client("iam").create_role(RoleName="web", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    assumed = unsigned(aws, "sts").assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="session", WebIdentityToken="token-from-an-identity-provider"
    )
    assert assumed["Credentials"]["AccessKeyId"]


def test_a_functions_key_in_a_credential_scope_the_sandbox_cannot_read_is_refused(aws: LocalAws) -> None:
    """The reviewer's case: the key of a function whose role allows no DynamoDB action, in a
    Credential whose date is not yyyymmdd; before, the sandbox took it for an administrator's."""
    role = aws.role("hook-role", [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}])
    key, _ = AUTHORITY.function_credentials(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:hook", role, "hook")
    port = int(aws.endpoint.rsplit(":", 1)[1])
    for scope in (f"2025-01-01/{REGION}/dynamodb/aws4_request", f"20250101/{REGION}/dynamodb", "", "x"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request(
            "POST",
            "/",
            body=json.dumps({"TableName": TABLE}).encode(),
            headers={
                "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders=host, Signature=00",
                "X-Amz-Target": "DynamoDB_20120810.DeleteTable",
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        answer = connection.getresponse()
        body = json.loads(answer.read())
        connection.close()
        assert (answer.status, body["__type"]) == (400, "com.amazon.coral.service#IncompleteSignatureException")
    assert aws.client("dynamodb").describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE


def test_every_client_of_the_project_signs_as_the_sandboxs_administrator(tmp_path: Path) -> None:
    from sandbox.__main__ import environment
    from sandbox.iam.enforcement import ADMIN_ACCESS_KEY
    from tests.integration.conftest import sandbox_env

    assert environment()["AWS_ACCESS_KEY_ID"] == ADMIN_ACCESS_KEY  # `python -m sandbox env`, the tools
    assert sandbox_env(tmp_path)["AWS_ACCESS_KEY_ID"] == ADMIN_ACCESS_KEY  # the integration tests' tools
    assert LocalAws.client.__defaults__ == (ADMIN_ACCESS_KEY, "sandbox")  # these tests' own clients


# CloudWatch Logs on the stream's ARN -------------------------------------------------------------------
def test_create_log_stream_and_put_log_events_are_checked_on_the_streams_arn(aws: LocalAws) -> None:
    group = "/aws/lambda/hook"
    group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"
    aws.client("logs").create_log_group(logGroupName=group)
    role = aws.role(
        "logs-role",
        [{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": group_arn}],
    )
    logs = aws.function_client("logs", role)

    error = denied(lambda: logs.create_log_stream(logGroupName=group, logStreamName="2025/01/01/[$LATEST]abc"))
    assert f"logs:CreateLogStream on resource: {group_arn}:log-stream:2025/01/01/[$LATEST]abc " in str(error)

    aws.put(
        "logs-role",
        [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{group_arn}:log-stream:*",
            }
        ],
    )
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[{"timestamp": 1, "message": "m"}])
    aws.put("logs-role", [{"Effect": "Allow", "Action": "logs:CreateLogStream", "Resource": f"{group_arn}:*"}])
    logs.create_log_stream(logGroupName=group, logStreamName="s2")  # the audit role's form: <group arn>:*


def test_a_cloudwatch_logs_rule_action_needs_its_roles_three_log_permissions_on_the_stream_and_group(
    in_process: Any,
) -> None:
    from types import SimpleNamespace

    from sandbox.iot_data_plane.fleet_provisioning import FleetProvisioningService
    from sandbox.iot_data_plane.local_account import AwsError, LocalAccount

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"},
        ],
    }
    role = in_process.create_role(RoleName="audit", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    group, stream = "/aws/iot/fleet/audit", "rule-audit"
    group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=group)
    service = SimpleNamespace(account=LocalAccount(REGION))
    rule = f"arn:aws:iot:{REGION}:{ACCOUNT}:rule/audit"

    def write_with(actions: list[str], resources: list[str]) -> str:
        document = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}],
        }
        in_process.put_role_policy(RoleName="audit", PolicyName="write", PolicyDocument=json.dumps(document))
        try:
            FleetProvisioningService._authorize_log_write(service, role, rule, group, stream)  # type: ignore[arg-type]
        except AwsError as error:
            return error.message
        return "allowed"

    every = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    assert write_with(every, [group_arn, f"{group_arn}:*"]) == "allowed"  # the stack's audit role
    assert f"logs:CreateLogStream on resource: {group_arn}:log-stream:{stream} " in write_with(
        every, [group_arn, f"{group_arn}:log-stream:other"]
    )  # the group's ARN does not grant a stream in it
    assert f"logs:DescribeLogStreams on resource: {group_arn} " in write_with(every[:2], [group_arn, f"{group_arn}:*"])


# DynamoDB metadata calls --------------------------------------------------------------------------------
def test_a_tables_metadata_needs_no_kms_and_its_tags_are_checked_on_its_arn(aws: LocalAws) -> None:
    key_arn = aws.client("kms").create_key()["KeyMetadata"]["Arn"]
    aws.client("dynamodb").create_table(
        TableName="encrypted",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn},
    )
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/encrypted"

    def checks(target: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        call = Call(
            "dynamodb", REGION, ACCOUNT, "POST", "/", f"DynamoDB_20120810.{target}", json.dumps(body).encode(), {}
        )
        return [(c.action, c.resource) for c in checks_for(call)]

    for operation in ("DescribeTable", "DescribeTimeToLive", "DescribeContinuousBackups"):
        assert checks(operation, {"TableName": "encrypted"}) == [(f"dynamodb:{operation}", table)]
    assert checks("ListTagsOfResource", {"ResourceArn": table}) == [("dynamodb:ListTagsOfResource", table)]
    assert checks("GetItem", {"TableName": "encrypted"}) == [("dynamodb:GetItem", table), ("kms:Decrypt", key_arn)]
    with pytest.raises(Unmapped):
        checks("ListTagsOfResource", {"ResourceArn": "encrypted"})

    role = aws.role(
        "meta-role", [{"Effect": "Allow", "Action": ["dynamodb:Describe*", "dynamodb:ListTags*"], "Resource": table}]
    )
    dynamodb = aws.function_client("dynamodb", role)
    dynamodb.describe_time_to_live(TableName="encrypted")
    dynamodb.describe_continuous_backups(TableName="encrypted")
    dynamodb.list_tags_of_resource(ResourceArn=table)


# Lambda's trust in the execution role -------------------------------------------------------------------
TRUST_IOT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


def test_lambda_refuses_an_execution_role_it_cannot_assume_at_create_update_and_invoke(in_process: Any) -> None:
    lam = boto3.client("lambda", region_name=REGION)
    iot_only = in_process.create_role(RoleName="iot-only", AssumeRolePolicyDocument=TRUST_IOT)["Role"]["Arn"]
    lambda_role = in_process.create_role(RoleName="fn", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    code = {"ZipFile": zipped("def handler(e, c): return e")}

    refused = denied(
        lambda: lam.create_function(
            FunctionName="f", Runtime="python3.11", Role=iot_only, Handler="index.handler", Code=code
        )
    )
    assert code_and_status(refused) == ("InvalidParameterValueException", 400)
    assert refused.response["Error"]["Message"] == "The role defined for the function cannot be assumed by Lambda."
    assert lam.list_functions()["Functions"] == []

    lam.create_function(FunctionName="f", Runtime="python3.11", Role=lambda_role, Handler="index.handler", Code=code)
    refused = denied(lambda: lam.update_function_configuration(FunctionName="f", Role=iot_only))
    assert code_and_status(refused) == ("InvalidParameterValueException", 400)
    missing = denied(lambda: lam.update_function_configuration(FunctionName="f", Role=f"{iot_only}-gone"))
    assert missing.response["Error"]["Message"] == "The role defined for the function cannot be assumed by Lambda."
    assert lam.get_function_configuration(FunctionName="f")["Role"] == lambda_role  # unchanged

    in_process.update_assume_role_policy(RoleName="fn", PolicyDocument=TRUST_IOT)  # Lambda no longer may
    failed = denied(lambda: lam.invoke(FunctionName="f", Payload=b"{}"))
    assert code_and_status(failed) == ("AccessDeniedException", 403)
    assert failed.response["Error"]["Message"] == "The role defined for the function cannot be assumed by Lambda."
    in_process.update_assume_role_policy(RoleName="fn", PolicyDocument=TRUST_LAMBDA)
    lam.update_function_configuration(FunctionName="f", Role=lambda_role, Timeout=5)  # a role it can assume


# Permissions boundaries, moto's reset, the IAM lock ----------------------------------------------------
def test_a_permissions_boundary_limits_what_the_roles_policies_allow(in_process: Any) -> None:
    def managed(name: str, statements: list[dict[str, Any]]) -> str:
        document = json.dumps({"Version": "2012-10-17", "Statement": statements})
        return str(in_process.create_policy(PolicyName=name, PolicyDocument=document)["Policy"]["Arn"])

    boundary = managed(
        "only-logs",
        [
            {"Effect": "Allow", "Action": ["logs:*", "dynamodb:GetItem"], "Resource": "*"},
            {"Effect": "Deny", "Action": "logs:DeleteLogGroup", "Resource": "*"},
        ],
    )
    arn = in_process.create_role(
        RoleName="bounded", AssumeRolePolicyDocument=TRUST_LAMBDA, PermissionsBoundary=boundary
    )["Role"]["Arn"]
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["dynamodb:*", "logs:*"], "Resource": "*"}],
    }
    in_process.put_role_policy(RoleName="bounded", PolicyName="p", PolicyDocument=json.dumps(everything))
    caller = AssumedRole(arn, "f")
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:g"

    def decide(action: str, resource: str = TABLE_ARN) -> str:
        decision = AUTHORITY.authorize(caller, action, resource)
        return "allowed" if decision.allowed else AUTHORITY.denial(caller, action, resource, decision)

    assert decide("dynamodb:GetItem") == "allowed"  # both allow
    assert decide("dynamodb:DeleteTable").endswith(
        f"on resource: {TABLE_ARN} because no permissions boundary allows the dynamodb:DeleteTable action"
    )
    assert decide("logs:CreateLogGroup", group) == "allowed"
    assert decide("logs:DeleteLogGroup", group).endswith("with an explicit deny in a permissions boundary")
    in_process.put_role_policy(
        RoleName="bounded",
        PolicyName="p",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"}]}
        ),
    )
    assert decide("logs:CreateLogGroup", group).endswith(
        "because no identity-based policy allows the logs:CreateLogGroup action"
    )

    in_process.delete_role_permissions_boundary(RoleName="bounded")
    in_process.put_role_policy(RoleName="bounded", PolicyName="p", PolicyDocument=json.dumps(everything))
    assert decide("dynamodb:DeleteTable") == "allowed"  # no boundary: the role's policies alone
    in_process.put_role_permissions_boundary(RoleName="bounded", PermissionsBoundary=boundary)
    assert decide("dynamodb:DeleteTable") != "allowed"


def test_mutos_reset_empties_the_decision_cache(aws: LocalAws) -> None:
    role = aws.role("reset-role", [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE_ARN}])
    dynamodb = aws.function_client("dynamodb", role)
    dynamodb.get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-1"}})  # allowed, and cached

    reset(aws.endpoint)
    aws.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "serialNumber", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "serialNumber", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    denied(lambda: dynamodb.get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-1"}}))  # no such role now
    aws.role("reset-role", [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": TABLE_ARN}])
    denied(lambda: dynamodb.get_item(TableName=TABLE, Key={"serialNumber": {"S": "SN-1"}}))


def test_a_policy_read_waits_for_an_iam_write_in_progress(in_process: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto server writes IAM on its request threads; the sandbox reads a role's policies only between
    writes, never in the middle of one."""
    import threading

    from moto.iam.models import Role

    arn = in_process.create_role(RoleName="locked", AssumeRolePolicyDocument=TRUST_LAMBDA)["Role"]["Arn"]
    writing, finish = threading.Event(), threading.Event()
    put_policy = Role.put_policy

    def slow_put_policy(role: Any, name: str, document: str) -> None:
        role.policies[name] = json.dumps({"Statement": []})  # half-written: what a reader must never see
        writing.set()
        finish.wait(10)
        put_policy(role, name, document)

    monkeypatch.setattr(Role, "put_policy", slow_put_policy)
    allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
    writer = threading.Thread(
        target=lambda: in_process.put_role_policy(RoleName="locked", PolicyName="p", PolicyDocument=json.dumps(allow))
    )
    writer.start()
    assert writing.wait(10)
    seen: list[bool] = []
    reader = threading.Thread(
        target=lambda: seen.append(
            AUTHORITY.authorize(AssumedRole(arn, "s"), "iot:CreateThing", "arn:aws:iot:us-east-1:1:thing/x").allowed
        )
    )
    reader.start()
    reader.join(0.5)
    still_waiting = reader.is_alive()
    finish.set()
    writer.join(10)
    reader.join(10)
    assert still_waiting and seen == [True]  # it waited for the write, then saw all of it


def test_a_condition_on_a_key_aws_does_not_set_for_the_action_is_false(aws: LocalAws) -> None:
    """cloudwatch:namespace is set for PutMetricData only (Service Authorization Reference): a statement
    that allows ListMetrics on that condition allows nothing, as on AWS, though the request names one."""
    fleet_only = {"StringEquals": {"cloudwatch:namespace": "Fleet"}}
    role = aws.role(
        "metrics-role",
        [
            {
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData", "cloudwatch:ListMetrics"],
                "Resource": "*",
                "Condition": fleet_only,
            }
        ],
    )
    cloudwatch = aws.function_client("cloudwatch", role)
    cloudwatch.put_metric_data(Namespace="Fleet", MetricData=[{"MetricName": "Provisioned", "Value": 1.0}])
    refused = denied(lambda: cloudwatch.list_metrics(Namespace="Fleet"))
    assert refused.response["Error"]["Code"] == "AccessDeniedException"
    assert "cloudwatch:ListMetrics" in refused.response["Error"]["Message"]
