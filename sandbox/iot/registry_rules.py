"""The IoT registry rules AWS enforces and moto 5.2.5 does not, added to moto's backend methods.

Both ways into the local IoT registry meet in those methods: the HTTP API (Terraform, boto3 tools)
and the fleet-provisioning service, which calls the backend in-process (sandbox.iot_data_plane.local_account).
Each refusal is AWS's error code, HTTP status and message; where AWS documents no message, the
table "AWS contracts the sandbox enforces" in docs/sandbox.md says so and what the wording follows.

- AWS's request validation of CreateThing, UpdateThing, CreateThingType, CreateThingGroup and
  UpdateThingGroup, from IoT's model (sandbox.request_pipeline.model_validation: names, thing
  attributes): the HTTP front checks every request so, and these methods check the fleet service's
  in-process calls the same way.
- At most 3 thing attributes without a thing type and 50 with one, counted after UpdateThing's merge.
- CreateThing with the name of an existing thing: with the same thing type and attributes it succeeds
  and returns the existing thing; with others it is refused (moto wrote the new thing over the old).
- IoT policy documents: 1 to 2,048 characters, whitespace excluded (CreatePolicy, CreatePolicyVersion).
- DeleteThingType: only once no thing has the type, and 5 minutes after DeprecateThingType on the
  sandbox's clock (SandboxClockScale). moto keeps no deprecation date: it is recorded here, shown by
  DescribeThingType as AWS shows it, and cleared by an undo.
- DeleteThing of a thing still attached to a principal: HTTP 400, as AWS answers (moto: 409).
- DeleteThingGroup with child groups: AWS's message (moto's starts with a space).

Delete each rule when moto enforces it; the Pipfile pins moto to the version this is written for.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from moto.core.utils import utcnow
from moto.iot.exceptions import (
    InvalidRequestException,
    IoTClientError,
    ResourceAlreadyExistsException,
    ThingStillAttached,
)
from moto.iot.models import IoTBackend

from sandbox.request_pipeline.model_validation import validator
from sandbox.state import clock_scale

ATTRIBUTES_WITHOUT_TYPE = 3
ATTRIBUTES_WITH_TYPE = 50
POLICY_DOCUMENT_MAX = 2048
JSON_WHITESPACE = frozenset(" \t\n\r")  # all the whitespace a JSON document can hold unescaped
DEPRECATION_WAIT = timedelta(minutes=5)


class MalformedPolicyException(IoTClientError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("MalformedPolicyException", message)


def _refuse_invalid(operation: str, request: dict[str, Any]) -> None:
    """AWS's request validation of the call, from its model (the fleet service calls in-process, past
    the HTTP front's check)."""
    given = {member: value for member, value in request.items() if value is not None and value != ""}
    refusal = validator("iot").check(operation, given)
    if refusal is not None:
        raise InvalidRequestException(refusal.message)


def _attributes(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The attributes a payload gives, or None when it gives none (not even an empty map)."""
    if payload is None or "attributes" not in payload:
        return None
    return dict(payload["attributes"] or {})


def _check_attribute_count(thing_name: str, attributes: dict[str, Any], typed: bool) -> None:
    limit = ATTRIBUTES_WITH_TYPE if typed else ATTRIBUTES_WITHOUT_TYPE
    if len(attributes) > limit:
        kind = "with a thing type" if typed else "without a thing type"
        raise InvalidRequestException(
            f"A thing {kind} can have at most {limit} attributes: thing {thing_name} would have {len(attributes)}"
        )


def _check_policy_document(document: str | None) -> None:
    length = sum(1 for character in document or "" if character not in JSON_WHITESPACE)
    if not 1 <= length <= POLICY_DOCUMENT_MAX:
        raise MalformedPolicyException(
            f"policyDocument must have a minimum length of 1, with a maximum length of {POLICY_DOCUMENT_MAX}, "
            f"excluding whitespace (this one has {length})"
        )


INTERNAL_CERTIFICATE_STATUSES = ("PENDING_TRANSFER", "PENDING_ACTIVATION")  # UpdateCertificate refuses them


def _wait_message(thing_type_name: str) -> str:
    # Real AWS's text (seen in a CLI run). Older Terraform AWS providers retry on its second sentence;
    # 5.100 retries DeleteThingType on any InvalidRequestException for 6 minutes.
    return f"Cannot delete thing type : {thing_type_name}. Please wait for 5 minutes after deprecation and then retry"


def install() -> None:
    """Call before sandbox.iot.thread_safe_registry, so these checks run under the registry lock."""
    if IoTBackend.__dict__.get("_sandbox_registry_rules", False):
        return
    original = {
        name: getattr(IoTBackend, name)
        for name in (
            "create_thing",
            "update_thing",
            "create_thing_type",
            "create_thing_group",
            "update_thing_group",
            "deprecate_thing_type",
            "delete_thing_type",
            "delete_thing",
            "delete_thing_group",
            "create_policy",
            "create_policy_version",
            "update_certificate",
        )
    }

    def create_thing(
        self: IoTBackend,
        thing_name: str,
        thing_type_name: str,
        attribute_payload: dict[str, Any] | None,
        billing_group_name: str | None = None,
    ) -> Any:
        attributes = _attributes(attribute_payload) or {}
        request = {"thingName": thing_name, "thingTypeName": thing_type_name, "attributePayload": attribute_payload}
        _refuse_invalid("CreateThing", request)
        _check_attribute_count(thing_name, attributes, typed=bool(thing_type_name))
        arn = f"arn:{self.partition}:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        existing = self.things.get(arn)
        if existing is not None and existing.thing_name == thing_name:
            # AWS (API_CreateThing): the same name and configuration succeeds, a different one is refused.
            existing_type = existing.thing_type.thing_type_name if existing.thing_type is not None else ""
            if existing_type == (thing_type_name or "") and dict(existing.attributes) == attributes:
                return existing
            raise ResourceAlreadyExistsException(
                f"Thing {thing_name} already exists in account with different attributes", existing.thing_id, arn
            )
        return original["create_thing"](
            self,
            thing_name=thing_name,
            thing_type_name=thing_type_name,
            attribute_payload=attribute_payload,
            billing_group_name=billing_group_name,
        )

    def update_thing(
        self: IoTBackend,
        thing_name: str,
        thing_type_name: str,
        attribute_payload: dict[str, Any] | None,
        remove_thing_type: bool,
    ) -> None:
        given = _attributes(attribute_payload)
        request = {"thingName": thing_name, "thingTypeName": thing_type_name, "attributePayload": attribute_payload}
        _refuse_invalid("UpdateThing", request)
        thing = self.describe_thing(thing_name)
        # What the thing would hold afterwards: moto's merge, where an empty value removes an attribute.
        if given is None:
            after = dict(thing.attributes)
        else:
            merged = {**thing.attributes, **given} if (attribute_payload or {}).get("merge") else given
            after = {key: value for key, value in merged.items() if value}
        typed = bool(thing_type_name) or (thing.thing_type is not None and not remove_thing_type)
        _check_attribute_count(thing_name, after, typed)
        original["update_thing"](
            self,
            thing_name=thing_name,
            thing_type_name=thing_type_name,
            attribute_payload=attribute_payload,
            remove_thing_type=remove_thing_type,
        )

    def create_thing_type(self: IoTBackend, thing_type_name: str, thing_type_properties: dict[str, Any]) -> Any:
        _refuse_invalid("CreateThingType", {"thingTypeName": thing_type_name})
        return original["create_thing_type"](
            self, thing_type_name=thing_type_name, thing_type_properties=thing_type_properties
        )

    def create_thing_group(
        self: IoTBackend, thing_group_name: str, parent_group_name: str, thing_group_properties: dict[str, Any]
    ) -> Any:
        _refuse_invalid("CreateThingGroup", {"thingGroupName": thing_group_name, "parentGroupName": parent_group_name})
        return original["create_thing_group"](
            self,
            thing_group_name=thing_group_name,
            parent_group_name=parent_group_name,
            thing_group_properties=thing_group_properties,
        )

    def update_thing_group(
        self: IoTBackend, thing_group_name: str, thing_group_properties: dict[str, Any], expected_version: int
    ) -> Any:
        request = {"thingGroupName": thing_group_name, "thingGroupProperties": thing_group_properties}
        _refuse_invalid("UpdateThingGroup", request)
        return original["update_thing_group"](
            self,
            thing_group_name=thing_group_name,
            thing_group_properties=thing_group_properties,
            expected_version=expected_version,
        )

    def deprecate_thing_type(self: IoTBackend, thing_type_name: str, undo_deprecate: bool) -> Any:
        thing_type = original["deprecate_thing_type"](
            self, thing_type_name=thing_type_name, undo_deprecate=undo_deprecate
        )
        if thing_type.metadata["deprecated"]:
            # Deprecating a deprecated type again keeps its date (Terraform's delete deprecates first).
            thing_type.metadata.setdefault("deprecationDate", utcnow())
        else:
            thing_type.metadata.pop("deprecationDate", None)
        return thing_type

    def delete_thing_type(self: IoTBackend, thing_type_name: str) -> None:
        thing_type = self.describe_thing_type(thing_type_name)  # an unknown type: moto's 404
        if any(
            t.thing_type is not None and t.thing_type.thing_type_name == thing_type_name for t in self.things.values()
        ):
            raise InvalidRequestException(
                f"Cannot delete thing type : {thing_type_name}. "
                "You cannot delete a thing type if it has things associated with it"
            )
        deprecated = thing_type.metadata.get("deprecationDate")
        if deprecated is None or utcnow() - deprecated < DEPRECATION_WAIT / clock_scale():
            raise InvalidRequestException(_wait_message(thing_type_name))
        original["delete_thing_type"](self, thing_type_name=thing_type_name)

    def delete_thing(self: IoTBackend, thing_name: str) -> None:
        try:
            original["delete_thing"](self, thing_name=thing_name)
        except ThingStillAttached as refused:  # AWS's code and message, moto's status 409
            raise InvalidRequestException(refused.message) from None

    def delete_thing_group(self: IoTBackend, thing_group_name: str) -> None:
        if any(group.parent_group_name == thing_group_name for group in self.thing_groups.values()):
            raise InvalidRequestException(
                f"Cannot delete thing group : {thing_group_name} when there are still child groups attached to it"
            )
        original["delete_thing_group"](self, thing_group_name=thing_group_name)

    def create_policy(self: IoTBackend, policy_name: str, policy_document: str) -> Any:
        _check_policy_document(policy_document)
        return original["create_policy"](self, policy_name=policy_name, policy_document=policy_document)

    def create_policy_version(self: IoTBackend, policy_name: str, policy_document: str, set_as_default: bool) -> Any:
        _check_policy_document(policy_document)
        return original["create_policy_version"](
            self, policy_name=policy_name, policy_document=policy_document, set_as_default=set_as_default
        )

    def update_certificate(self: IoTBackend, certificate_id: str, new_status: str) -> None:
        # API_UpdateCertificate: PENDING_TRANSFER and PENDING_ACTIVATION are used internally by AWS IoT;
        # setting either throws (the page names no message: worded after it).
        if new_status in INTERNAL_CERTIFICATE_STATUSES:
            raise InvalidRequestException(
                f"Certificate status {new_status} is used internally by AWS IoT and cannot be set"
            )
        original["update_certificate"](self, certificate_id=certificate_id, new_status=new_status)

    for replacement in (
        create_thing,
        update_thing,
        create_thing_type,
        create_thing_group,
        update_thing_group,
        deprecate_thing_type,
        delete_thing_type,
        delete_thing,
        delete_thing_group,
        create_policy,
        create_policy_version,
        update_certificate,
    ):
        setattr(IoTBackend, replacement.__name__, replacement)
    IoTBackend._sandbox_registry_rules = True
