"""The IoT registry objects devices are provisioned into: a thing type, the thing-group hierarchy
(one root, one child per device type) and one least-privilege IoT policy per device type."""

from __future__ import annotations

from collections.abc import Mapping

from cdktf_cdktf_provider_aws.iot_policy import IotPolicy
from cdktf_cdktf_provider_aws.iot_thing_group import IotThingGroup
from cdktf_cdktf_provider_aws.iot_thing_type import IotThingType
from constructs import Construct

from iot_fleet import documents
from iot_fleet.device_catalogue import DeviceType
from iot_fleet.naming import AccountContext

# Thing attributes devices are searched by in the registry (a thing type allows 3 searchable ones).
SEARCHABLE_ATTRIBUTES = ["serialNumber", "deviceType", "manufacturer"]


class DeviceFleet(Construct):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        prefix: str,
        device_types: Mapping[str, DeviceType],
        account: AccountContext,
    ) -> None:
        super().__init__(scope, id_)
        # Plain names (not references) because the template body must name them literally.
        self.thing_type_name = f"{prefix}-device"
        self.group_names = {name: f"{prefix}-{name}" for name in device_types}
        self.policy_names = {name: f"{prefix}-{name}-policy" for name in device_types}
        self.thing_type = IotThingType(
            self,
            "thing-type",
            name=self.thing_type_name,
            properties={
                "description": f"Devices provisioned by {prefix}",
                "searchable_attributes": SEARCHABLE_ATTRIBUTES,
            },
        )
        self.root_group = IotThingGroup(
            self,
            "root-group",
            name=f"{prefix}-devices",
            properties={"description": f"Every device provisioned by {prefix}"},
        )
        self.groups: dict[str, IotThingGroup] = {}
        self.policies: dict[str, IotPolicy] = {}
        for name, device_type in device_types.items():
            self.groups[name] = IotThingGroup(
                self,
                f"group-{name}",
                name=self.group_names[name],
                parent_group_name=self.root_group.name,
                properties={"description": device_type.description or f"{name} devices"},
            )
            self.policies[name] = IotPolicy(
                self,
                f"policy-{name}",
                name=self.policy_names[name],
                policy=documents.terraform_string(documents.device_policy(device_type), account.iot_arn_prefix),
            )
