"""moto's models without moto's record of every instance ever made.

moto's BaseModel appends each instance it makes to a list on its class (InstanceTrackerMeta), for its
`/moto-api/data.json` dashboard and for S3's reset, and nothing ever removes one. In the sandbox that
keeps every DynamoDB item copy made for a condition check or a query's answer, every CloudWatch
datapoint and every log event alive for good: the local AWS grew with each device provisioned by
copies nothing else held. Here instances are not tracked, so each lives as long as what holds it, as
in a service. S3's stay tracked: moto's S3 reset disposes of their spooled files through that list
(the sandbox's only S3 use is Terraform's state bucket); the dashboard, which the sandbox does not
use, then lists S3's objects only.
Delete when moto lets a server turn tracking off.
"""

from __future__ import annotations

from typing import Any

from moto.core import model_instances
from moto.core.common_models import BaseModel

TRACKED_MODULES = ("moto.s3.",)  # their reset walks instances_tracked


def install() -> None:
    """Call first: models made before it stay tracked."""
    if BaseModel.__dict__.get("_sandbox_untracked", False):
        return

    def __new__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        instance = super(BaseModel, cls).__new__(cls)
        if cls.__module__.startswith(TRACKED_MODULES):
            cls.instances_tracked.append(instance)
        return instance

    BaseModel.__new__ = __new__
    BaseModel._sandbox_untracked = True
    for models in model_instances.model_data.values():  # what import-time made: no request reaches it
        for model in models.values():
            if not model.__module__.startswith(TRACKED_MODULES):
                model.instances_tracked = []
