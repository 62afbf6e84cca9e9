"""DynamoDB TransactWriteItems that sets aside the items it names, not whole tables.

moto makes a deep copy of every table a transaction names before it runs, to put back if the
transaction is cancelled: a cost that grows with the table (0.44 s at 10,000 items, measured), paid
by every device the provisioning hook admits (its claim is one transaction). DynamoDB's transaction
changes only the items it names, so those are all there is to put back: this copies each named item
(or notes its absence) before moto runs the transaction, hands moto its tables themselves in place of
its copies, and on cancellation restores the named items. Every other part of the transaction
(validation, conditions, the order of writes, the errors) is moto's own.
Delete when moto rolls back per item.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

from sandbox.dynamodb import index_partitions

_TRANSACTION = threading.local()  # set while this thread runs moto's transact_write_items


def _named_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> list[tuple[Table, Any, Any]]:
    """(table, hash key, range key) of each item the transaction names, in a table that exists."""
    named = []
    for entry in transact_items:
        for op in entry.values():
            if not isinstance(op, dict):
                continue
            table = index_partitions.table_named(backend, op.get("TableName", ""))
            key = op.get("Key") if "Key" in op else op.get("Item")
            if table is None or not isinstance(key, dict):
                continue  # moto refuses it itself, before anything is written
            primary = index_partitions.primary_key_of(table, key)
            if primary is None:
                continue  # a missing or malformed key: moto refuses the transaction itself
            named.append((table, *primary))
    return named


def _restore(table: Table, hash_key: Any, range_key: Any, item: Any) -> None:
    try:
        _put_back(table, hash_key, range_key, item)
    finally:
        index_partitions.written(table, hash_key, range_key)


def _put_back(table: Table, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items.get(hash_key, {}).pop(range_key, None)
        if hash_key in table.items and not table.items[hash_key]:
            del table.items[hash_key]
    else:
        table.items[hash_key][range_key] = item


def install() -> None:
    """Call before sandbox.dynamodb.atomic_writes: the items are set aside under its lock."""
    if getattr(DynamoDBBackend, "_sandbox_item_level_transactions", False):
        return
    transact = DynamoDBBackend.transact_write_items

    def __deepcopy__(self: Table, memo: dict[int, Any]) -> Any:
        if getattr(_TRANSACTION, "active", False):
            return self  # moto's "copy" of a table a transaction names: the items are set aside instead
        reductor = self.__reduce_ex__(4)
        return copy._reconstruct(self, memo, *reductor)  # type: ignore[attr-defined]  # deepcopy's own way

    @functools.wraps(transact)
    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> Any:
        set_aside = [
            (table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key)))
            for table, hash_key, range_key in _named_items(self, transact_items)
        ]
        # A stream record of a write the transaction makes and then undoes must go too.
        streams = {id(t): (t.stream_shard, len(t.stream_shard.items)) for t, *_ in set_aside if t.stream_shard}
        _TRANSACTION.active = True
        try:
            return transact(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(set_aside):
                _restore(table, hash_key, range_key, item)
            for shard, length in streams.values():
                del shard.items[length:]
            raise
        finally:
            _TRANSACTION.active = False

    Table.__deepcopy__ = __deepcopy__
    DynamoDBBackend.transact_write_items = transact_write_items
    DynamoDBBackend._sandbox_item_level_transactions = True
