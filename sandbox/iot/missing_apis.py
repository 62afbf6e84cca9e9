"""IoT control-plane APIs that moto 5.2 lacks and Terraform needs, added to moto's IoT service.

- Tags: ListTagsForResource, TagResource, UntagResource, and the tags given at create time
  (thing types, thing groups, policies, topic rules, provisioning templates).
- Provisioning templates and their versions: Create/Describe/Update/Delete/List, with the checks
  AWS makes beyond its model (the body is JSON, the hook target exists, a hook only on
  FLEET_PROVISIONING templates, at most 5 versions; names, sizes and required members are the
  model's, checked by sandbox.request_pipeline.model_validation).
- Event configurations (Describe/UpdateEventConfigurations) and v2 logging options.

Kept apart from the rest of the sandbox and named by what it adds: delete it when moto has these.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import botocore.session
from moto.core.responses import ActionResult, EmptyResult
from moto.iot.exceptions import (
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionsLimitExceededException,
)
from moto.iot.models import IoTBackend
from moto.iot.responses import IoTResponse

TEMPLATE_VERSIONS_MAX = 5
HOOK_PAYLOAD_VERSIONS = {"2020-04-01"}
# The registry-event types IoT has: the EventType enum of botocore's IoT service model.
EVENT_TYPES = tuple(botocore.session.get_session().get_service_model("iot").shape_for("EventType").enum)
LOCK = threading.RLock()  # guards what this module adds (templates, tags, settings); readers take it too


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TemplateVersion:
    version_id: int
    body: str
    created: datetime
    is_default: bool = False

    def summary(self) -> dict[str, Any]:
        return {"versionId": self.version_id, "creationDate": self.created, "isDefaultVersion": self.is_default}


@dataclass
class ProvisioningTemplate:
    name: str
    arn: str
    description: str
    enabled: bool
    role_arn: str
    hook: dict[str, str] | None
    type: str
    created: datetime = field(default_factory=_now)
    modified: datetime = field(default_factory=_now)
    versions: list[TemplateVersion] = field(default_factory=list)

    @property
    def default(self) -> TemplateVersion:
        return next(v for v in self.versions if v.is_default)

    def describe(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "templateArn": self.arn,
            "templateName": self.name,
            "description": self.description,
            "creationDate": self.created,
            "lastModifiedDate": self.modified,
            "defaultVersionId": self.default.version_id,
            "templateBody": self.default.body,
            "enabled": self.enabled,
            "provisioningRoleArn": self.role_arn,
            "type": self.type,
        }
        if self.hook:
            result["preProvisioningHook"] = dict(self.hook)
        return result


@dataclass
class IotExtras:
    """What this module keeps per account and region, beside moto's own IoT backend."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    templates: dict[str, ProvisioningTemplate] = field(default_factory=dict)
    events: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, False))
    events_created: datetime = field(default_factory=_now)
    events_modified: datetime = field(default_factory=_now)
    logging: dict[str, Any] = field(default_factory=lambda: {"defaultLogLevel": "DISABLED", "disableAllLogs": True})


def extras(backend: IoTBackend) -> IotExtras:
    with LOCK:
        if not hasattr(backend, "_sandbox_extras"):
            backend._sandbox_extras = IotExtras()
        return backend._sandbox_extras


def template(backend: IoTBackend, name: str) -> ProvisioningTemplate:
    found = extras(backend).templates.get(name)
    if found is None:
        raise ResourceNotFoundException(f"The provisioning template {name} does not exist")
    return found


def _arn(backend: IoTBackend, resource: str) -> str:
    return f"arn:{backend.partition}:iot:{backend.region_name}:{backend.account_id}:{resource}"


def _tag_list(tags: Any) -> dict[str, str]:
    if isinstance(tags, list):
        return {t["Key"]: t.get("Value", "") for t in tags if isinstance(t, dict) and "Key" in t}
    return {}


def _check_body(body: Any) -> str:
    # Its name, length and presence are the model's (sandbox.request_pipeline.model_validation).
    try:
        json.loads(body)
    except (TypeError, ValueError):
        raise InvalidRequestException("templateBody is not valid JSON") from None
    return body


class MissingIotApis:
    """Operations added to IoTResponse; each method is named after the AWS operation."""

    # Tags -------------------------------------------------------------------------------------
    def list_tags_for_resource(self: Any) -> ActionResult:
        tags = extras(self.iot_backend).tags.get(self._get_param("resourceArn"), {})
        return ActionResult({"tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})

    def tag_resource(self: Any) -> ActionResult:
        store = extras(self.iot_backend).tags.setdefault(self._get_param("resourceArn"), {})
        store.update(_tag_list(self._get_param("tags")))
        return EmptyResult()

    def untag_resource(self: Any) -> ActionResult:
        store = extras(self.iot_backend).tags.get(self._get_param("resourceArn"), {})
        keys = self._get_param("tagKeys") or self.querystring.get("tagKeys", [])
        for key in keys:
            store.pop(key, None)
        return EmptyResult()

    # Provisioning templates -------------------------------------------------------------------
    def create_provisioning_template(self: Any) -> ActionResult:
        backend = self.iot_backend
        name = self._get_param("templateName")
        body = _check_body(self._get_param("templateBody"))
        role = self._get_param("provisioningRoleArn")
        kind = self._get_param("type") or "FLEET_PROVISIONING"
        hook = self._check_hook(self._get_param("preProvisioningHook"), kind)
        with LOCK:
            if name in extras(backend).templates:
                raise ResourceAlreadyExistsException(f"Template {name} already exists", name, _arn(backend, name))
            created = ProvisioningTemplate(
                name=name,
                arn=_arn(backend, f"provisioningtemplate/{name}"),
                description=self._get_param("description") or "",
                enabled=bool(self._get_param("enabled")),
                role_arn=role,
                hook=hook,
                type=kind,
            )
            created.versions.append(TemplateVersion(1, body, created.created, is_default=True))
            extras(backend).templates[name] = created
            extras(backend).tags[created.arn] = _tag_list(self._get_param("tags"))
        return ActionResult({"templateArn": created.arn, "templateName": name, "defaultVersionId": 1})

    def _check_hook(self: Any, hook: Any, kind: str) -> dict[str, str] | None:
        if not hook:
            return None
        if kind != "FLEET_PROVISIONING":
            raise InvalidRequestException("preProvisioningHook is supported only on FLEET_PROVISIONING templates")
        target = hook.get("targetArn", "")
        payload = hook.get("payloadVersion") or "2020-04-01"
        if payload not in HOOK_PAYLOAD_VERSIONS:
            raise InvalidRequestException(f"payloadVersion {payload} is not supported")
        from moto.awslambda.models import lambda_backends

        try:
            lambda_backends[self.current_account][self.region].get_function(target)
        except Exception:  # noqa: BLE001 - moto raises several types for a missing function
            raise InvalidRequestException(f"preProvisioningHook target {target} does not exist") from None
        return {"targetArn": target, "payloadVersion": payload}

    def describe_provisioning_template(self: Any) -> ActionResult:
        return ActionResult(template(self.iot_backend, self._get_param("templateName")).describe())

    def list_provisioning_templates(self: Any) -> ActionResult:
        summaries = [
            {
                "templateArn": t.arn,
                "templateName": t.name,
                "description": t.description,
                "creationDate": t.created,
                "lastModifiedDate": t.modified,
                "enabled": t.enabled,
                "type": t.type,
            }
            for t in extras(self.iot_backend).templates.values()
        ]
        return ActionResult({"templates": summaries})

    def update_provisioning_template(self: Any) -> ActionResult:
        found = template(self.iot_backend, self._get_param("templateName"))
        with LOCK:
            if self._get_param("description") is not None:
                found.description = self._get_param("description")
            if self._get_param("enabled") is not None:
                found.enabled = bool(self._get_param("enabled"))
            if self._get_param("provisioningRoleArn"):
                found.role_arn = self._get_param("provisioningRoleArn")
            if self._get_param("removePreProvisioningHook"):
                found.hook = None
            elif self._get_param("preProvisioningHook"):
                found.hook = self._check_hook(self._get_param("preProvisioningHook"), found.type)
            version_id = self._get_param("defaultVersionId")
            if version_id is not None:
                if not any(v.version_id == int(version_id) for v in found.versions):
                    raise ResourceNotFoundException(f"Version {version_id} does not exist")
                for version in found.versions:
                    version.is_default = version.version_id == int(version_id)
            found.modified = _now()
        return EmptyResult()

    def delete_provisioning_template(self: Any) -> ActionResult:
        backend = self.iot_backend
        found = template(backend, self._get_param("templateName"))
        with LOCK:
            del extras(backend).templates[found.name]
            extras(backend).tags.pop(found.arn, None)
        return EmptyResult()

    def create_provisioning_template_version(self: Any) -> ActionResult:
        found = template(self.iot_backend, self._get_param("templateName"))
        body = _check_body(self._get_param("templateBody"))
        with LOCK:
            if len(found.versions) >= TEMPLATE_VERSIONS_MAX:
                raise VersionsLimitExceededException(found.name)
            version = TemplateVersion(max(v.version_id for v in found.versions) + 1, body, _now())
            if self._get_param("setAsDefault"):
                for existing in found.versions:
                    existing.is_default = False
                version.is_default = True
            found.versions.append(version)
            found.modified = _now()
        return ActionResult(
            {
                "templateArn": found.arn,
                "templateName": found.name,
                "versionId": version.version_id,
                "isDefaultVersion": version.is_default,
            }
        )

    def describe_provisioning_template_version(self: Any) -> ActionResult:
        found = template(self.iot_backend, self._get_param("templateName"))
        version_id = int(self._get_param("versionId"))
        version = next((v for v in found.versions if v.version_id == version_id), None)
        if version is None:
            raise ResourceNotFoundException(f"Version {version_id} does not exist")
        return ActionResult({**version.summary(), "templateBody": version.body})

    def list_provisioning_template_versions(self: Any) -> ActionResult:
        found = template(self.iot_backend, self._get_param("templateName"))
        return ActionResult({"versions": [v.summary() for v in found.versions]})

    def delete_provisioning_template_version(self: Any) -> ActionResult:
        found = template(self.iot_backend, self._get_param("templateName"))
        version_id = int(self._get_param("versionId"))
        with LOCK:
            version = next((v for v in found.versions if v.version_id == version_id), None)
            if version is None:
                raise ResourceNotFoundException(f"Version {version_id} does not exist")
            if version.is_default:
                raise InvalidRequestException("The default version cannot be deleted")
            found.versions.remove(version)
        return EmptyResult()

    # Event configurations and logging ---------------------------------------------------------
    def describe_event_configurations(self: Any) -> ActionResult:
        state = extras(self.iot_backend)
        return ActionResult(
            {
                "eventConfigurations": {k: {"Enabled": v} for k, v in state.events.items()},
                "creationDate": state.events_created,
                "lastModifiedDate": state.events_modified,
            }
        )

    def update_event_configurations(self: Any) -> ActionResult:
        state = extras(self.iot_backend)
        for kind, setting in (self._get_param("eventConfigurations") or {}).items():
            if kind not in EVENT_TYPES:
                raise InvalidRequestException(f"Unknown event type {kind}")
            state.events[kind] = bool(setting.get("Enabled"))
        state.events_modified = _now()
        return EmptyResult()

    def set_v2_logging_options(self: Any) -> ActionResult:
        state = extras(self.iot_backend)
        for key in ("roleArn", "defaultLogLevel", "disableAllLogs"):
            if self._get_param(key) is not None:
                state.logging[key] = self._get_param(key)
        return EmptyResult()

    def get_v2_logging_options(self: Any) -> ActionResult:
        return ActionResult(dict(extras(self.iot_backend).logging))


def _capture_tags(method: str, resource: str, name_param: str) -> None:
    """Wraps moto's create_<x> so the tags sent with it are kept for ListTagsForResource."""
    original = getattr(IoTResponse, method)

    def create(self: Any) -> Any:
        result = original(self)
        tags = _tag_list(self._get_param("tags"))
        header = self.headers.get("x-amz-tagging") if hasattr(self, "headers") else None
        if header:
            tags.update(dict(parse_qsl(header)))
        arn = _arn(self.iot_backend, f"{resource}/{self._get_param(name_param)}")
        with LOCK:
            extras(self.iot_backend).tags[arn] = tags
        return result

    setattr(IoTResponse, method, create)


def install() -> None:
    """Adds the operations to moto's IoT service (idempotent)."""
    if getattr(IoTResponse, "_sandbox_missing_apis", False):
        return
    for name, member in vars(MissingIotApis).items():
        if callable(member) and not name.startswith("__"):
            setattr(IoTResponse, name, member)
    _capture_tags("create_thing_type", "thingtype", "thingTypeName")
    _capture_tags("create_thing_group", "thinggroup", "thingGroupName")
    _capture_tags("create_policy", "policy", "policyName")
    _capture_tags("create_topic_rule", "rule", "ruleName")
    IoTResponse._sandbox_missing_apis = True
