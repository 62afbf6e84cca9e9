"""DynamoDB applies each write (and its condition) atomically; moto server, serving requests on
threads, does not. Without this, two concurrent conditional updates of one item can both succeed,
which would hide exactly the race the provisioning hook's conditional write exists to stop.
A Query takes the same lock: moto filters an index's items, then sorts them by reading their keys
again, and an update removing a key in between (a sparse index, such as the registry's
rotation-index) failed the query with a KeyError, where DynamoDB answers from each item's state.
Delete when moto serializes writes itself.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_QUERIES = ("query",)  # see above: moto reads an item's keys twice
LOCK = threading.RLock()  # also taken by sandbox.dynamodb.fast_path for its writes


def install() -> None:
    if getattr(DynamoDBBackend, "_sandbox_atomic_writes", False):
        return
    for name in (*_WRITES, *_QUERIES):
        original = getattr(DynamoDBBackend, name)

        @functools.wraps(original)
        def atomic(self: DynamoDBBackend, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, atomic)
    DynamoDBBackend._sandbox_atomic_writes = True
