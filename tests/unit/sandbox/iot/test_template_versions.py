"""scripts/prune_template_versions.py: what is left of a template's versions after the stack prunes
them before a change (AWS keeps 5, and the Terraform provider deletes none)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sandbox.iot import missing_apis
from scripts import prune_template_versions

missing_apis.install()


def body(revision: int) -> str:
    return json.dumps({"Parameters": {}, "Resources": {}, "DeviceConfiguration": {"revision": str(revision)}})


@pytest.fixture
def iot() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("iot", region_name="us-east-1")
        client.create_provisioning_template(
            templateName="Fleet-dev-fleet",
            templateBody=body(1),
            enabled=True,
            type="FLEET_PROVISIONING",
            provisioningRoleArn="arn:aws:iam::123456789012:role/p",
        )
        yield client


def versions(iot: Any) -> list[tuple[int, bool]]:
    listed = iot.list_provisioning_template_versions(templateName="Fleet-dev-fleet")["versions"]
    return [(v["versionId"], v["isDefaultVersion"]) for v in listed]


def change(iot: Any, revision: int) -> None:
    """What Terraform does for a changed body: prune first (the stack's terraform_data), then a new default."""
    prune_template_versions.prune(iot, "Fleet-dev-fleet", keep=4)
    iot.create_provisioning_template_version(
        templateName="Fleet-dev-fleet", templateBody=body(revision), setAsDefault=True
    )


def test_without_pruning_the_sixth_change_is_refused_as_aws_refuses_it(iot: Any) -> None:
    for revision in range(2, 6):
        iot.create_provisioning_template_version(templateName="Fleet-dev-fleet", templateBody=body(revision))
    with pytest.raises(iot.exceptions.VersionsLimitExceededException):
        iot.create_provisioning_template_version(templateName="Fleet-dev-fleet", templateBody=body(6))


def test_any_number_of_changes_keeps_five_versions_with_the_newest_body_as_default(iot: Any) -> None:
    for revision in range(2, 12):
        change(iot, revision)

    assert versions(iot) == [(7, False), (8, False), (9, False), (10, False), (11, True)]
    described = iot.describe_provisioning_template(templateName="Fleet-dev-fleet")
    assert json.loads(described["templateBody"])["DeviceConfiguration"] == {"revision": "11"}


def test_pruning_keeps_the_default_version_even_when_it_is_the_oldest(iot: Any) -> None:
    for revision in range(2, 6):
        iot.create_provisioning_template_version(templateName="Fleet-dev-fleet", templateBody=body(revision))
    # versions 1..5, 1 still the default (none of the others was made default)

    deleted = prune_template_versions.prune(iot, "Fleet-dev-fleet", keep=4)

    assert deleted == [2]
    assert versions(iot) == [(1, True), (3, False), (4, False), (5, False)]


def test_a_template_that_does_not_exist_yet_has_nothing_to_prune(iot: Any) -> None:
    assert prune_template_versions.prune(iot, "Not-there", keep=4) == []
    assert prune_template_versions.main(["--template-name", "Not-there", "--region", "us-east-1"]) == 0
