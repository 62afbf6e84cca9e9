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
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, GlobalSecondaryIndex, Table

_QUERYING = threading.local()  # (table, its candidate items) while a partition query runs on this thread
_LOCK = threading.RLock()

PrimaryKey = tuple[DynamoType, DynamoType | None]
KEY_TYPES = frozenset({"S", "N", "B"})  # what a key attribute may hold


class Partitions:
    """One index's partition-key value -> the primary keys of the items holding it, and back."""

    def __init__(self, attribute: str, signature: str) -> None:
        self.attribute = attribute
        self.signature = signature  # the index's key schema when built: a changed index is built again
        self.keys: dict[DynamoType, dict[PrimaryKey, None]] = {}
        self.value_of: dict[PrimaryKey, DynamoType] = {}

    def place(self, key: PrimaryKey, item: Item | None) -> None:
        value = item.attrs.get(self.attribute) if item is not None else None
        if value is not None and value.type not in KEY_TYPES:
            value = None  # not an index key (moto stores it; DynamoDB refuses it): in no partition
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


def _sort_attributes(table: Table, index: Any) -> list[str]:
    """The attributes moto's query sorts an index's items by (as Table.query builds them)."""
    index_hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    index_ranges = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
    hash_attrs = [*index_hashes, table.hash_key_attr]
    if index_ranges:
        range_attrs: list[str | None] = [*index_ranges, table.range_key_attr]
    elif table.range_key_attr:
        range_attrs = [table.range_key_attr, table.range_key_attr]
    else:
        range_attrs = [table.hash_key_attr, table.range_key_attr]
    return list(table._generate_attr_to_sort_by(hash_attrs, range_attrs))


def _members(table: Table, found: Partitions, value: DynamoType) -> list[Item]:
    """The partition's items as they are now (an entry a write left behind is checked and dropped)."""
    with _LOCK:
        keys = list(found.keys.get(value, ()))
    return [
        item for h, r in keys if (item := table.get_item(h, r)) is not None and _holds(item, found.attribute, value)
    ]


def _holds(item: Item, attribute: str, value: DynamoType) -> bool:
    held = item.attrs.get(attribute)
    return held is not None and held == value  # DynamoType compares with DynamoTypes only


def _page_window(
    table: Table, index: Any, found: Partitions, value: DynamoType, args: tuple, kwargs: dict
) -> list[Item]:
    """The partition's items a page can hold, in moto's order: from the page's start key until the page
    is full (its Limit, or DynamoDB's 1 MB of items read) and one more, so moto knows a next page exists.

    moto sorts the whole partition and walks it from the start for every page, so reading a partition
    page by page cost its size times its pages. The partition's order is kept from a query's first page
    for the pages after it: an item that joins the partition meanwhile is missed by that pagination and
    one whose sort key changes may be met twice or not at all, as DynamoDB's pages are no snapshot
    either; each item is read as it is now, and one that left the partition is dropped. A query with a
    sort-key condition or legacy filters, read backwards, or over items that do not all hold the
    index's sort attributes, gets the whole partition."""
    range_comparison = kwargs.get("range_comparison", args[0] if args else None)
    limit = kwargs.get("limit", args[2] if len(args) > 2 else None)
    start = kwargs.get("exclusive_start_key", args[3] if len(args) > 3 else None)
    forward = kwargs.get("scan_index_forward", args[4] if len(args) > 4 else True)
    legacy = {k for k in kwargs if k not in _QUERY_ARGUMENTS}
    if range_comparison or legacy or forward is False:
        return _members(table, found, value)
    attributes = _sort_attributes(table, index)
    cache: dict[Any, list[tuple[tuple[DynamoType, ...], PrimaryKey]]] = table.__dict__.setdefault("_sandbox_sorted", {})
    ordered = cache.get((index.name, value)) if start else None
    if ordered is None:
        members = _members(table, found, value)
        if any(attribute not in item.attrs for item in members for attribute in attributes):
            return members  # moto leaves such items out of an index: let it
        ordered = [(tuple(item.attrs[a] for a in attributes), _primary_key(table, item)) for item in members]
        ordered.sort(key=lambda entry: entry[0])
        cache[(index.name, value)] = ordered
    at = 0
    if start:
        try:
            after = tuple(DynamoType(start[a]) for a in attributes)
        except (KeyError, TypeError):
            return _members(table, found, value)
        low, high = 0, len(ordered)
        while low < high:  # the first entry that sorts after the start key
            middle = (low + high) // 2
            if after < ordered[middle][0]:
                high = middle
            else:
                low = middle + 1
        at = low
    window: list[Item] = []
    size = 0
    for _, (hash_key, range_key) in ordered[at:]:
        item = table.get_item(hash_key, range_key)
        if item is None or not _holds(item, found.attribute, value):
            continue  # deleted, or moved to another partition since the first page
        window.append(item)
        size += item.size()
        if (limit and len(window) > limit) or size > RESULT_SIZE_LIMIT:
            break
    return window


_QUERY_ARGUMENTS = frozenset(
    {
        "index_name",
        "consistent_read",
        "filter_expression",
        "hash_key_conditions",
        "range_key_conditions",
        "range_comparison",
        "range_objs",
        "limit",
        "exclusive_start_key",
        "scan_index_forward",
        "projection_expressions",
    }
)


def primary_key_of(table: Table, key: dict[str, Any]) -> PrimaryKey | None:
    try:
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    except Exception:  # noqa: BLE001 - a malformed key: moto refuses the request itself
        return None
    if hash_key.type not in KEY_TYPES or (range_key is not None and range_key.type not in KEY_TYPES):
        return None
    return hash_key, range_key


original_all_items = Table.all_items


def table_named(backend: DynamoDBBackend, name: Any) -> Table | None:
    """The table a request names, by name or ARN, as moto finds it (None if there is none)."""
    try:
        return backend.get_table(name)
    except Exception:  # noqa: BLE001 - moto answers the request's error itself
        return None


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
        if value is None or getattr(value, "type", None) not in KEY_TYPES:
            return query(self, hash_key, *args, **kwargs)
        assert found is not None
        candidates = _page_window(self, index, found, value, args, kwargs)
        _QUERYING.value = (self, candidates)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _QUERYING.value = None

    @functools.wraps(put_item)
    def placed_put(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return put_item(self, item_attrs, *args, **kwargs)
        finally:
            primary = primary_key_of(self, item_attrs)
            if primary is not None:
                written(self, *primary)

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
            table = table_named(self, table_name)
            primary = primary_key_of(table, key) if table is not None else None
            if table is not None and primary is not None:
                written(table, *primary)

    Table.all_items = all_items
    Table.query = partition_query
    Table.put_item = placed_put
    Table.delete_item = placed_delete
    DynamoDBBackend.update_item = placed_update
    Table._sandbox_index_partitions = True
