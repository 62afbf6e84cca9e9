"""What the sandbox broker lets a certificate do: derived from its IoT policies, matched as AWS IoT matches.

The rules are generated from the very policy documents the stack deploys (iot_fleet.documents), and
the topic matching is the broker plugin's own C function, built here with gcc and called directly.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from iot_fleet import documents
from iot_fleet.device_catalogue import load_catalogue
from sandbox.iot_data_plane.broker import access_rules
from sandbox.iot_data_plane.broker_plugin.build import SOURCE as PLUGIN_SOURCE

ARN = "arn:aws:iot:us-east-1:123456789012:"
THING = "gateway-SN-1"


def test_claim_certificate_may_use_only_the_provisioning_topics_of_its_template() -> None:
    rules = access_rules(None, [documents.claim_policy("Fleet", ARN)])

    topics = [
        "$aws/certificates/create/#",
        "$aws/certificates/create-from-csr/#",
        "$aws/provisioning-templates/Fleet/provision/#",
    ]
    expected = {"client claim-*"} | {f"{verb} {t}" for verb in ("publish", "receive", "subscribe") for t in topics}
    assert set(rules) == expected


@pytest.mark.parametrize(("prefix", "rule"), [("claim-", "client claim-*"), ("", "client *")])
def test_claim_certificate_connects_only_with_a_client_id_of_its_prefix(prefix: str, rule: str) -> None:
    """The claim policy's only Connect resource is client/<prefix>*; "" (the opt-out) allows any."""
    rules = access_rules(None, [documents.claim_policy("Fleet", ARN, client_id_prefix=prefix)])

    assert [r for r in rules if r.startswith("client ")] == [rule]


def test_device_certificate_is_confined_to_its_own_thing_and_client_id() -> None:
    gateway = load_catalogue()["gateway"]
    rules = access_rules(THING, [documents.device_policy(gateway, ARN)])

    assert "client gateway-SN-1" in rules
    assert [r for r in rules if r.startswith("client ")] == ["client gateway-SN-1"]
    assert "subscribe $aws/things/gateway-SN-1/shadow/#" in rules  # its own shadow only
    assert all(THING in rule for rule in rules), rules
    assert {r.split()[0] for r in rules} == {"client", "publish", "receive", "subscribe"}


def test_thing_scoped_grants_mean_nothing_without_an_attached_thing() -> None:
    gateway = load_catalogue()["gateway"]
    assert access_rules(None, [documents.device_policy(gateway, ARN)]) == []


def test_what_the_broker_cannot_express_is_not_granted() -> None:
    grants = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}client/*"},
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    f"{ARN}topic/a/${{iot:ClientId}}/x",  # a policy variable the sandbox does not bind
                    f"{ARN}topic/a/*/x",  # a wildcard inside a level
                    f"{ARN}topic/b/*",
                ],
            },
            {"Effect": "Allow", "Action": "iot:*", "Resource": f"{ARN}topic/c"},
        ],
    }
    assert access_rules(None, [grants]) == ["client *", "publish b/#", "publish c", "receive c"]


def test_an_action_any_deny_names_is_granted_nowhere() -> None:
    """IoT subtracts a Deny from the Allows; the broker's rules cannot, so the action is refused."""
    allow = {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": f"{ARN}topic/t/*"}
    deny = {"Effect": "Deny", "Action": "iot:Publish", "Resource": f"{ARN}topic/t/secret"}
    assert access_rules(None, [{"Statement": [allow]}, {"Statement": [deny]}]) == ["receive t/#"]
    for spelled in ("iot:publish", "iot:Pub*", "IOT:*"):  # IoT matches actions case-insensitively, with wildcards
        deny = {"Effect": "Deny", "Action": spelled, "Resource": f"{ARN}topic/t/secret"}
        assert "publish t/#" not in access_rules(None, [{"Statement": [allow, deny]}]), spelled
    not_action = {"Effect": "Deny", "NotAction": "iot:Connect", "Resource": "*"}
    assert access_rules(None, [{"Statement": [allow, not_action]}]) == []


def test_grants_the_broker_cannot_evaluate_grant_nothing() -> None:
    topic = f"{ARN}topic/t"
    statements = [
        {"Effect": "Allow", "NotAction": "iot:Connect", "Resource": topic},
        {
            "Effect": "Allow",
            "Action": "iot:Publish",
            "Resource": topic,
            "Condition": {"StringEquals": {"iot:ClientId": "x"}},
        },
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": [f"{ARN}topic/a/+/b", f"{ARN}topic/a/#"]},
    ]
    assert access_rules("dev-1", [{"Statement": statements}]) == []


@pytest.mark.parametrize(
    "name", ["x\nreceive $aws/#", "gateway-SN-1\n", "gateway-SN-\u0663", "a/#", "+", "dev*", "a b"]
)
def test_a_thing_name_aws_would_refuse_never_becomes_part_of_a_rule(name: str) -> None:
    gateway = load_catalogue()["gateway"]
    assert access_rules(name, [documents.device_policy(gateway, ARN)]) == []


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not shutil.which("gcc") or not Path("/usr/include/mosquitto_broker.h").exists():
        pytest.fail("gcc and mosquitto-dev are needed (make setup installs them)")
    folder = tmp_path_factory.mktemp("plugin")
    # The broker provides these to the plugin at run time; outside it, inert stand-ins let it load.
    (folder / "broker.c").write_text(
        "\n".join(
            f"{kind} {name}(void) {{ return 0; }}"
            for kind, name in (
                ("void *", "mosquitto_client_id"),
                ("void *", "mosquitto_client_username"),
                ("void *", "mosquitto_client_certificate"),
                ("int", "mosquitto_set_username"),
                ("int", "mosquitto_broker_publish_copy"),
                ("void *", "mosquitto_malloc"),
                ("int", "mosquitto_free"),
                ("int", "mosquitto_callback_register"),
                ("int", "mosquitto_callback_unregister"),
                ("int", "mosquitto_kick_client_by_username"),
            )
        )
    )
    library = folder / "fleet_routing.so"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-shared",
            "-fPIC",
            "-o",
            str(library),
            str(PLUGIN_SOURCE),
            str(folder / "broker.c"),
            "-lcrypto",
        ],
        check=True,
    )
    loaded = ctypes.CDLL(str(library))
    loaded.rule_covers.restype = ctypes.c_bool
    loaded.rule_covers.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lambda rule, topic: bool(loaded.rule_covers(rule.encode(), topic.encode()))


@pytest.mark.parametrize(
    ("rule", "topic", "covered"),
    [
        ("devices/d1/telemetry", "devices/d1/telemetry", True),
        ("devices/d1/telemetry", "devices/d2/telemetry", False),
        ("devices/d1/telemetry", "devices/d1/telemetry/x", False),
        ("devices/d1/#", "devices/d1", True),  # MQTT: a/# matches a
        ("devices/d1/#", "devices/d1/a/b", True),
        ("devices/d1/#", "devices/d10/a", False),
        ("devices/+/telemetry", "devices/d1/telemetry", True),
        ("devices/+/telemetry", "devices/d1/x/telemetry", False),
        # Subscriptions: a filter is allowed only when every topic it can match is.
        ("devices/d1/#", "devices/d1/+", True),
        ("devices/d1/#", "devices/d1/#", True),
        ("devices/d1/telemetry", "devices/+/telemetry", False),
        ("devices/+/telemetry", "devices/+/telemetry", True),
        ("devices/+/telemetry", "devices/#", False),
        ("devices/d1/#", "#", False),
        # '#' is a wildcard only as the last level; elsewhere it matches nothing.
        ("devices/#/telemetry", "devices/victim/commands", False),
        ("$aws/things/#/shadow/get", "$aws/things/victim/shadow/update/accepted", False),
        ("#", "devices/d1/telemetry", True),
        # Wildcards never match $ topics from the first level (MQTT 4.7.2).
        ("#", "$aws/things/d1/shadow/get", False),
        ("+/things/d1/shadow/get", "$aws/things/d1/shadow/get", False),
        ("$aws/things/d1/shadow/#", "$aws/things/d1/shadow/get", True),
    ],
)
def test_broker_plugin_matches_topics_and_filters_as_mqtt_does(
    plugin: Any, rule: str, topic: str, covered: bool
) -> None:
    assert plugin(rule, topic) is covered


@pytest.mark.parametrize(
    "resource", [f"{ARN}topic/devices/x\n", f"{ARN}topic/devices/x\nreceive #", f"{ARN}client/a\n"]
)
def test_a_policy_resource_with_a_line_break_grants_nothing(resource: str) -> None:
    """A rules file holds one rule a line: a resource with a line break must never become (part of) a rule."""
    statement = {"Effect": "Allow", "Action": ["iot:Connect", "iot:Publish", "iot:Receive"], "Resource": resource}
    assert access_rules("dev-1", [{"Statement": [statement]}]) == []
