"""The local AWS's services as the sandbox's own data plane reaches them: in-process.

The fleet-provisioning service and the broker's access rules run in the same process as the local
AWS (moto's backends). Calling those backends directly costs dictionary work where the same call
through boto3 and HTTP cost a request each (about twenty per provisioned device, measured as most
of the sandbox's CPU). Everything a device can observe stays the same: moto's backends raise AWS's
errors (code, status, message), and Lambda functions run through the same local runtime as an
Invoke over HTTP. Tools outside the sandbox process (Terraform, the operator scripts, the
functions themselves) still use the HTTP endpoint, like any AWS client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from moto.awslambda.models import lambda_backends
from moto.core.exceptions import ServiceException, _RESTError
from moto.iot.models import FakeCertificate, IoTBackend, iot_backends
from moto.iotdata.models import iotdata_backends
from moto.logs.models import logs_backends

from sandbox.iot import certificates_from_sandbox_ca, missing_apis
from sandbox.iot.thread_safe_registry import REGISTRY_LOCK

DEFAULT_ACCOUNT = "123456789012"  # moto's default account: what the sandbox's credentials map to


class AwsError(Exception):
    """An AWS error answer: HTTP status, error code and message, as a client would see them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def _aws_error(error: Exception) -> AwsError:
    if isinstance(error, _RESTError):
        return AwsError(int(error.code or 400), str(error.error_type).split("#")[-1], str(error.message))
    if isinstance(error, ServiceException):
        return AwsError(int(getattr(error, "http_status_code", 400)), str(error.code), str(error.message))
    raise error


@dataclass(frozen=True)
class Invocation:
    payload: Any
    function_error: bool


class LocalAccount:
    """One account and region of the local AWS. Every method raises AwsError for an AWS error answer."""

    def __init__(self, region: str, account_id: str = DEFAULT_ACCOUNT) -> None:
        self.region = region
        self.account_id = account_id

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    @property
    def iot(self) -> IoTBackend:
        return iot_backends[self.account_id][self.region]

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (_RESTError, ServiceException) as error:
            raise _aws_error(error) from None

    # IoT registry -------------------------------------------------------------------------------
    # A certificate made over the fleet-provisioning MQTT API waits in PENDING_ACTIVATION until
    # RegisterThing sets it as the template says (fleet-provision-api.html).
    PENDING = "PENDING_ACTIVATION"

    def create_keys_and_certificate(self) -> tuple[FakeCertificate, str]:
        """Over MQTT: a device certificate (certificates_from_sandbox_ca), PENDING_ACTIVATION."""
        with certificates_from_sandbox_ca.device_certificates():
            certificate, keys = self._call(self.iot.create_keys_and_certificate, set_as_active=False)
        return self._pending(certificate), keys["PrivateKey"]

    def create_certificate_from_csr(self, csr: str) -> FakeCertificate:
        """Over MQTT: PENDING_ACTIVATION."""
        try:
            certificate = self._call(self.iot.create_certificate_from_csr, csr, set_as_active=False)
        except ValueError as error:  # not a PEM CSR at all
            raise AwsError(400, "InvalidRequestException", f"The CSR cannot be read: {error}") from None
        return self._pending(certificate)

    def _pending(self, certificate: FakeCertificate) -> FakeCertificate:
        with REGISTRY_LOCK:
            certificate.status = self.PENDING
        return certificate

    def remove_pending_certificate(self, certificate_id: str) -> bool:
        """Deletes a certificate that is still PENDING_ACTIVATION and on no thing; False if it is gone, or
        registered since, or attached (nothing of it is then touched)."""
        with REGISTRY_LOCK:
            try:
                certificate = self.iot.describe_certificate(certificate_id)
            except (_RESTError, ServiceException):
                return False
            if certificate.status != self.PENDING:
                return False
            try:
                self.iot.delete_certificate(certificate_id, force_delete=False)
            except (_RESTError, ServiceException):
                return False
        return True

    def provisioning_template(self, name: str) -> dict[str, Any]:
        with missing_apis.LOCK:  # the lock template changes are made under
            return dict(self._call(missing_apis.template, self.iot, name).describe())

    def thing(self, name: str) -> Any | None:
        try:
            return self._call(self.iot.describe_thing, name)
        except AwsError as error:
            if error.status == 404:
                return None
            raise

    def create_thing(self, name: str, thing_type: str | None, attributes: dict[str, str] | None) -> Any:
        """AWS's rules for names and attributes are moto's backend's (sandbox.iot.registry_rules)."""
        payload = {"attributes": attributes} if attributes else None
        return self._call(self.iot.create_thing, name, thing_type or "", payload)

    def add_thing_to_thing_group(self, group: str, thing: str) -> None:
        self._call(self.iot.add_thing_to_thing_group, group, None, thing, None)

    def attach_policy(self, policy: str, target: str) -> None:
        self._call(self.iot.attach_policy, policy, target)

    def attach_thing_principal(self, thing: str, principal: str) -> None:
        self._call(self.iot.attach_thing_principal, thing, principal)

    def update_certificate(self, certificate_id: str, status: str) -> None:
        self._call(self.iot.update_certificate, certificate_id, status)

    def certificate(self, certificate_id: str) -> FakeCertificate | None:
        with REGISTRY_LOCK:
            return self.iot.certificates.get(certificate_id)

    def certificates(self) -> list[FakeCertificate]:
        with REGISTRY_LOCK:
            return list(self.iot.certificates.values())

    def attached_policy_names(self, target: str) -> list[str]:
        return [policy.name for policy in self._call(self.iot.list_attached_policies, target)]

    def policy_document(self, name: str) -> dict[str, Any]:
        document = self._call(self.iot.get_policy, name).document
        return json.loads(document) if isinstance(document, str) else dict(document)

    def principal_things(self, principal: str) -> list[str]:
        return list(self._call(self.iot.list_principal_things, principal))

    def topic_rules(self) -> list[dict[str, Any]]:
        """Each enabled-or-not rule as GetTopicRule describes it (ruleName, sql, actions, ruleDisabled)."""
        with REGISTRY_LOCK:
            return [rule.to_get_dict()["rule"] for rule in self.iot.rules.values()]

    # Lambda ---------------------------------------------------------------------------------------
    def invoke(self, function: str, event: Any) -> Invocation:
        """A RequestResponse invoke: the function's answer, and whether it ended in an error."""
        backend = lambda_backends[self.account_id][self.region]
        fn = self._call(backend.get_function, function)
        headers: dict[str, str] = {}
        payload = self._call(fn.invoke, json.dumps(event), {}, headers)
        try:
            decoded = json.loads(payload or b"null")
        except ValueError:
            decoded = None
        return Invocation(decoded, "x-amz-function-error" in headers)

    def event_max_age(self, function: str) -> float | None:
        """The function's MaximumEventAgeInSeconds for asynchronous events, if it set one."""
        backend = lambda_backends[self.account_id][self.region]
        configs = getattr(self._call(backend.get_function, function), "event_invoke_config", [])
        age = configs[-1].config.get("MaximumEventAgeInSeconds") if configs else None
        return float(age) if age is not None else None

    # IoT device shadow ----------------------------------------------------------------------------
    def get_thing_shadow(self, thing: str) -> dict[str, Any]:
        """The shadow document as of now (a copy: moto merges later updates into its own dicts)."""
        backend = iotdata_backends[self.account_id][self.region]
        with REGISTRY_LOCK:
            return dict(json.loads(json.dumps(self._call(backend.get_thing_shadow, thing, None).to_dict())))

    def update_thing_shadow(self, thing: str, payload: str) -> dict[str, Any]:
        backend = iotdata_backends[self.account_id][self.region]
        with REGISTRY_LOCK:
            shadow = self._call(backend.update_thing_shadow, thing, payload, None)
            return dict(json.loads(json.dumps(shadow.to_response_dict())))

    # CloudWatch Logs ------------------------------------------------------------------------------
    def log_stream_exists(self, group: str, stream: str) -> bool:
        return stream in getattr(logs_backends[self.account_id][self.region].groups.get(group), "streams", {})

    def put_log_event(self, group: str, stream: str, timestamp_ms: int, message: str) -> None:
        backend = logs_backends[self.account_id][self.region]
        if not self.log_stream_exists(group, stream):
            try:
                self._call(backend.create_log_stream, group, stream)
            except AwsError as error:
                if error.code != "ResourceAlreadyExistsException":
                    raise
        self._call(backend.put_log_events, group, stream, [{"timestamp": timestamp_ms, "message": message}])
