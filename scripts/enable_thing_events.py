#!/usr/bin/env python
"""Turn on AWS IoT's THING registry events, leaving every other event type as it is.

The registry-events rule listens on $aws/events/thing/..., which IoT publishes only while the THING
event type is on. Event configurations are one setting per account and region, shared with every
other workload there: the stack turns THING on and changes nothing else. The Terraform provider's
aws_iot_event_configurations resource cannot do that (it reads back every type, so it must state all
eleven and would switch off the ones it does not want), so the stack runs this script once, when it
is created, before the rule. Destroying the stack leaves THING on: other workloads may rely on it.

AWS's UpdateEventConfigurations page does not say whether types left out of the request keep their
setting, so the request names every type IoT reports, each with the setting it has now, and THING on:
the same result under either reading.

Endpoints and credentials come from the environment as for any boto3 tool (the stack passes the
sandbox's for Target=sandbox).

Example: scripts/enable_thing_events.py --region us-east-1
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def enable_thing_events(iot: Any) -> bool:
    """Turns THING on with every other type as found; False if it was on already."""
    found = iot.describe_event_configurations()["eventConfigurations"]
    if found.get("THING", {}).get("Enabled"):
        return False
    wanted = {kind: {"Enabled": bool(setting.get("Enabled"))} for kind, setting in found.items()}
    wanted["THING"] = {"Enabled": True}
    iot.update_event_configurations(eventConfigurations=wanted)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    iot = boto3.client("iot", region_name=args.region, config=Config(retries={"mode": "standard"}))
    try:
        changed = enable_thing_events(iot)
    except (BotoCoreError, ClientError) as error:
        print(f"enable_thing_events: {error}", file=sys.stderr)
        return 1
    print("THING registry events turned on" if changed else "THING registry events were on already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
