"""The IoT SQL the sandbox evaluates for topic rules on device messages: what a rule's action gets,
and rules it cannot evaluate never firing (rather than firing with a guessed message)."""

from __future__ import annotations

import json

import pytest

from iot_fleet.documents import ROTATION_SQL
from sandbox.iot_data_plane import topic_rules

SENDER = topic_rules.Sender("fleet/rotation/gateway-SN-1/request", "gateway-SN-1", "a" * 64)


def test_the_rotation_rule_gets_the_named_fields_and_who_sent_them_not_what_the_payload_claims() -> None:
    rule = topic_rules.parse(ROTATION_SQL)
    payload = json.dumps(
        {"requestId": "r1", "certificateSigningRequest": "csr", "principal": "f" * 64, "clientId": "other", "extra": 1}
    ).encode()

    message = topic_rules.select(rule, payload, SENDER)

    assert rule.topic_filter == "fleet/rotation/+/+"
    assert message == {
        "requestId": "r1",
        "certificateSigningRequest": "csr",
        "topic": SENDER.topic,
        "clientId": "gateway-SN-1",
        "principal": "a" * 64,
    }


def test_star_topic_levels_and_missing_fields() -> None:
    rule = topic_rules.parse("SELECT *, topic(3) AS thing, missing FROM 'fleet/#'")

    assert topic_rules.select(rule, b'{"a": 1}', SENDER) == {"a": 1, "thing": "gateway-SN-1"}
    assert topic_rules.select(rule, b"not json", SENDER) == {"thing": "gateway-SN-1"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM 'a/b' WHERE temperature > 50",
        "SELECT upper(name) AS n FROM 'a/b'",
        "SELECT state.reported.x FROM 'a/b'",
        "SELECT clientid(1) FROM 'a/b'",
        "DELETE FROM 'a/b'",
    ],
)
def test_sql_the_sandbox_does_not_evaluate_is_refused(sql: str) -> None:
    with pytest.raises(topic_rules.Unsupported):
        topic_rules.parse(sql)
