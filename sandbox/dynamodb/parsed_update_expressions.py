"""DynamoDB update expressions parsed once per distinct text, not twice per UpdateItem.

moto tokenizes and parses an UpdateExpression in its request handler and again in its backend, for
every call: a tenth of the local AWS's CPU while devices provision (each registration makes two
conditional updates, always with the same few expression texts). The parse tree is only read (the
backend's validator works on its own deep copy of it), so calls with equal text can share one;
a text that does not parse raises as before and is not remembered.
Delete when moto caches its parses itself.
"""

from __future__ import annotations

import functools
from typing import Any

from moto.dynamodb.parsing.expressions import UpdateExpressionParser

DISTINCT_EXPRESSIONS = 512


def install() -> None:
    if UpdateExpressionParser.__dict__.get("_sandbox_cached", False):
        return
    parse: Any = functools.lru_cache(maxsize=DISTINCT_EXPRESSIONS)(UpdateExpressionParser.make.__func__)
    setattr(UpdateExpressionParser, "make", classmethod(parse))  # noqa: B010 - a classmethod, replaced
    setattr(UpdateExpressionParser, "_sandbox_cached", True)  # noqa: B010
