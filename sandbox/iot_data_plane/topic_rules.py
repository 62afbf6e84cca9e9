"""The part of the AWS IoT SQL the sandbox evaluates for topic rules on device messages.

Supported: ``SELECT <items> FROM '<topic filter>'`` (no WHERE), where each item is ``*`` (every
field of a JSON object payload), a top-level field name, or one of ``topic()``, ``topic(n)``,
``clientid()``, ``principal()`` (the certificate id of an X.509 connection) and ``timestamp()``, each
optionally ``AS <name>`` (https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-functions.html).
A rule using anything else never fires here (``parse`` says why): the sandbox does not guess.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

_SQL = re.compile(r"^\s*SELECT\s+(?P<select>.+?)\s+FROM\s+'(?P<filter>[^']+)'\s*$", re.IGNORECASE | re.DOTALL)
_ITEM = re.compile(
    r"^(?:(?P<star>\*)|(?P<function>topic|clientid|principal|timestamp)\(\s*(?P<argument>\d*)\s*\)"
    r"|(?P<field>[A-Za-z_][A-Za-z0-9_]*))(?:\s+AS\s+(?P<alias>[A-Za-z_][A-Za-z0-9_]*))?$",
    re.IGNORECASE,
)


class Unsupported(ValueError):
    """SQL the sandbox does not evaluate."""


@dataclass(frozen=True)
class Item:
    kind: str  # "*", "field" or a function name
    name: str  # the output key ("" for *)
    argument: int | None = None  # topic(n)
    field: str = ""


@dataclass(frozen=True)
class Rule:
    topic_filter: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Sender:
    topic: str
    client_id: str
    principal: str


def parse(sql: str) -> Rule:
    match = _SQL.match(sql)
    if not match:
        raise Unsupported(f"not SELECT ... FROM '<filter>' (no WHERE or more is evaluated): {sql[:120]}")  # noqa: S608
    items: list[Item] = []
    for text in (part.strip() for part in match.group("select").split(",")):
        item = _ITEM.match(text)
        if not item:
            raise Unsupported(f"select item {text[:60]!r} is not evaluated by the sandbox")
        if item.group("star"):
            items.append(Item("*", ""))
        elif item.group("function"):
            function = item.group("function").lower()
            argument = int(item.group("argument")) if item.group("argument") else None
            if argument is not None and function != "topic":
                raise Unsupported(f"{function}() takes no argument")
            items.append(Item(function, item.group("alias") or function, argument))
        else:
            items.append(Item("field", item.group("alias") or item.group("field"), field=item.group("field")))
    return Rule(match.group("filter"), tuple(items))


def select(rule: Rule, payload: bytes, sender: Sender) -> dict[str, Any]:
    """The message the rule's actions get, as AWS builds it from the payload and the sender."""
    try:
        document = json.loads(payload or b"null")
    except ValueError:
        document = None
    fields = document if isinstance(document, dict) else {}
    message: dict[str, Any] = {}
    for item in rule.items:
        if item.kind == "*":
            message.update(fields)
        elif item.kind == "field":
            if item.field in fields:  # an undefined field is left out, as AWS does
                message[item.name] = fields[item.field]
        elif item.kind == "topic":
            levels = sender.topic.split("/")
            if item.argument is None:
                message[item.name] = sender.topic
            elif 1 <= item.argument <= len(levels):
                message[item.name] = levels[item.argument - 1]
        elif item.kind == "clientid":
            message[item.name] = sender.client_id
        elif item.kind == "principal":
            message[item.name] = sender.principal
        elif item.kind == "timestamp":
            message[item.name] = int(time.time() * 1000)
    return message
