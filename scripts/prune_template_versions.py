#!/usr/bin/env python
"""Delete a provisioning template's oldest versions, so that the next change fits AWS's limit.

AWS IoT keeps at most 5 versions of a provisioning template, and the Terraform AWS provider never
deletes one (terraform-provider-aws issue 35392): the sixth change of the template body would fail
with VersionsLimitExceededException. The stack runs this script just before each change of the
body (a terraform_data resource replaced with the body, which the template depends on); it keeps
the default version and the newest others, --keep in all. A template that does not exist yet has
nothing to prune.

Endpoints and credentials come from the environment as for any boto3 tool (the stack passes the
sandbox's for Target=sandbox).

Example: scripts/prune_template_versions.py --template-name IoTProvisioning-dev-fleet --keep 4
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def prune(iot: Any, template_name: str, keep: int) -> list[int]:
    """Deletes the oldest non-default versions until at most `keep` remain; returns the deleted ids."""
    try:
        pages = iot.get_paginator("list_provisioning_template_versions").paginate(templateName=template_name)
        versions = [version for page in pages for version in page["versions"]]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return []
        raise
    oldest_first = sorted(v["versionId"] for v in versions if not v["isDefaultVersion"])
    deleted = oldest_first[: max(0, len(versions) - keep)]
    for version_id in deleted:
        iot.delete_provisioning_template_version(templateName=template_name, versionId=version_id)
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template-name", required=True)
    parser.add_argument("--keep", type=int, default=4, help="versions to keep, the default one included (1-4)")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)
    if not 1 <= args.keep <= 4:
        parser.error("--keep must be 1 to 4: the change that follows adds a version, and AWS keeps at most 5")
    iot = boto3.client("iot", region_name=args.region, config=Config(retries={"max_attempts": 3, "mode": "standard"}))
    try:
        deleted = prune(iot, args.template_name, args.keep)
    except (ClientError, BotoCoreError) as error:
        print(f"prune_template_versions: {args.template_name}: {error}", file=sys.stderr)
        return 1
    if deleted:
        print(f"prune_template_versions: {args.template_name}: deleted versions {', '.join(map(str, deleted))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
