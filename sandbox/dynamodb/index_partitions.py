"""Queries of a global secondary index that read the partition they ask for, not the whole table.

moto answers a Query on a global secondary index by walking every item of the table and keeping those
whose index key matches: a cost that grows with the table, paid by every query (the reconciler queries
the status index every five AWS minutes, five seconds in the sandbox's clock), where DynamoDB reads the
partition alone. Here each table keeps, per global secondary index with one partition-key attribute,
which items hold each partition-key value: built by one walk on the index's first query, then kept up
to date by every write (put, update, delete: moto's own, the fast path's and a cancelled transaction's
restore call `written`). A query of such an index hands moto that partition's items as the table's
items; moto's own code still checks the key condition on each, sorts, pages, filters and projects, so
an entry left over by a write this misses costs a check, never a wrong answer. A query that names no
single partition value (or an index with a composite partition key) walks the table as before.
Delete when moto indexes its indexes.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import GlobalSecondaryIndex, Table

_QUERYING = threading.local()  # (table, its candidate items) while a partition query runs on this thread
_LOCK = threading.RLock()

PrimaryKey = tuple[DynamoType, DynamoType | None]


class Partitions:
    """One index's partition-key value -> the primary keys of the items holding it, and back."""

    def __init__(self, attribute: str, signature: str) -> None:
        self.attribute = attribute
        self.signature = signature  # the index's key schema when built: a changed index is built again
        self.keys: dict[DynamoType, dict[PrimaryKey, None]] = {}
        self.value_of: dict[PrimaryKey, DynamoType] = {}

    def place(self, key: PrimaryKey, item: Item | None) -> None:
        value = item.attrs.get(self.attribute) if item is not None else None
        old = self.value_of.get(key)
        moved = old is None or value is None or old != value  # DynamoType compares with DynamoTypes only
        if old is not None and moved:
            members = self.keys.get(old, {})
            members.pop(key, None)
            if not members:
                self.keys.pop(old, None)
            del self.value_of[key]
        if value is not None and moved:
            self.keys.setdefault(value, {})[key] = None
            self.value_of[key] = value


def _partition_attribute(index: Any) -> str | None:
    hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    return hashes[0] if isinstance(index, GlobalSecondaryIndex) and len(hashes) == 1 else None


def _partitions(table: Table) -> dict[str, Partitions]:
    found: dict[str, Partitions] = table.__dict__.setdefault("_sandbox_partitions", {})
    return found


def _primary_key(table: Table, item: Item) -> PrimaryKey:
    return item.hash_key, item.range_key if table.range_key_attr else None


def _built(table: Table, index: Any) -> Partitions | None:
    """The index's partitions, built by one walk of the table if they are not (or the index changed)."""
    attribute = _partition_attribute(index)
    if attribute is None:
        return None
    signature = repr(index.schema)
    partitions = _partitions(table)
    found = partitions.get(index.name)
    if found is None or found.signature != signature:
        found = Partitions(attribute, signature)
        for item in original_all_items(table):
            found.place(_primary_key(table, item), item)
        partitions[index.name] = found
    return found


def written(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """The item with this key was written (or deleted): each built index places it again."""
    partitions = table.__dict__.get("_sandbox_partitions")
    if not partitions:
        return
    with _LOCK:
        try:
            item = table.get_item(hash_key, range_key) if (range_key is not None or not table.range_key_attr) else None
        except Exception:  # noqa: BLE001 - no such item: it is placed nowhere
            item = None
        key = (hash_key, range_key if table.range_key_attr else None)
        for found in partitions.values():
            found.place(key, item)


def _key_of(table: Table, key: dict[str, Any]) -> PrimaryKey | None:
    try:
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    except (KeyError, TypeError, AttributeError):
        return None
    return hash_key, range_key


original_all_items = Table.all_items


def install() -> None:
    """Call before sandbox.dynamodb.atomic_writes, so the partitions change under its write lock."""
    if getattr(Table, "_sandbox_index_partitions", False):
        return
    query, put_item, delete_item = Table.query, Table.put_item, Table.delete_item
    update_item = DynamoDBBackend.update_item

    def all_items(self: Table) -> list[Item]:
        querying = getattr(_QUERYING, "value", None)
        if querying is not None and querying[0] is self:
            return list(querying[1])
        return original_all_items(self)

    @functools.wraps(query)
    def partition_query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        conditions = kwargs.get("hash_key_conditions")
        index = next((i for i in self.global_indexes if i.name == index_name), None) if index_name else None
        with _LOCK:
            found = _built(self, index) if index is not None else None
        value = None
        if found is not None:
            if conditions and len(conditions) == 1 and conditions[0][0] == found.attribute:
                value = conditions[0][1]
            elif not conditions and hash_key is not None:
                value = hash_key
        if value is None:
            return query(self, hash_key, *args, **kwargs)
        with _LOCK:
            assert found is not None
            keys = list(found.keys.get(value, ()))
        candidates = [item for h, r in keys if (item := self.get_item(h, r)) is not None]
        _QUERYING.value = (self, candidates)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _QUERYING.value = None

    @functools.wraps(put_item)
    def placed_put(self: Table, *args: Any, **kwargs: Any) -> Any:
        item = put_item(self, *args, **kwargs)
        if isinstance(item, Item):
            written(self, item.hash_key, item.range_key)
        return item

    @functools.wraps(delete_item)
    def placed_delete(self: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Any:
        try:
            return delete_item(self, hash_key, range_key)
        finally:
            written(self, hash_key, range_key)

    @functools.wraps(update_item)
    def placed_update(self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return update_item(self, table_name, key, *args, **kwargs)
        finally:
            table = self.tables.get(table_name)
            primary = _key_of(table, key) if table is not None else None
            if table is not None and primary is not None:
                written(table, *primary)

    Table.all_items = all_items
    Table.query = partition_query
    Table.put_item = placed_put
    Table.delete_item = placed_delete
    DynamoDBBackend.update_item = placed_update
    Table._sandbox_index_partitions = True
