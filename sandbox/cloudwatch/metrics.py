"""CloudWatch metrics in the sandbox: what the local AWS's services publish, and what CloudWatch Logs
extracts from embedded-metric-format (EMF) log lines, stored in moto's CloudWatch backend.

moto stores PutMetricData but nothing else publishes there: no AWS-namespace metrics, no EMF
extraction. Here every datapoint goes through moto's own `put_metric_data` (so GetMetricStatistics,
GetMetricData and ListMetrics see it over HTTP) and is also indexed by its metric identity:
namespace, name and the exact dimension set, as CloudWatch identifies a metric. An alarm on
`ThrottledRequests` with `TableName` alone therefore never sees the datapoints DynamoDB publishes
with `TableName` and `Operation` (moto's own filter matches dimension subsets).
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch.models import CloudWatchBackend, MetricAggregatedDatum, cloudwatch_backends
from moto.logs.models import LogsBackend

from sandbox.state import clock_scale

# MetricDatum.Unit, as the CloudWatch API model lists it (EMF takes the same names).
UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
# EMF limits (CloudWatch_Embedded_Metric_Format_Specification.html).
EMF_MAX_METRICS = 100
EMF_MAX_DIMENSION_KEYS = 30
EMF_MAX_VALUES = 100
EMF_MAX_DIMENSION_VALUE = 1024
EMF_MAX_BYTES = 256 * 1024
KEPT_SECONDS = 2 * 86400  # in AWS's time: an alarm looks back at most a day (EvaluationPeriods x Period)


@dataclass(frozen=True)
class Identity:
    """What CloudWatch calls one metric: namespace, name and exactly this set of dimensions."""

    namespace: str
    name: str
    dimensions: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, namespace: str, name: str, dimensions: Mapping[str, str] | Iterable[tuple[str, str]]) -> Identity:
        items = dimensions.items() if isinstance(dimensions, Mapping) else dimensions
        return cls(namespace, name, frozenset((str(k), str(v)) for k, v in items))


@dataclass(frozen=True)
class Sample:
    """One PutMetricData value (or statistic set) at its timestamp (epoch seconds)."""

    timestamp: float
    unit: str | None
    total: float
    count: float
    minimum: float
    maximum: float
    # (value, count) pairs; None for a statistic set. A period's merged sample holds a list that grows
    # while its period is open (alarms read closed periods only: their windows end at a period start).
    values: tuple[tuple[float, float], ...] | list[tuple[float, float]] | None

    def merged(self, other: Sample) -> Sample:
        """This sample and another of the same metric, unit and period, as one. A statistic set whose
        values are all one number (one sample, or minimum equal to maximum) still gives percentiles."""
        mine, theirs = self.known_values(), other.known_values()
        values: list[tuple[float, float]] | None = None
        if mine is not None and theirs is not None:
            # One list per period, extended in place: merging n values costs n, not n squared.
            values = mine if isinstance(mine, list) else list(mine)
            values.extend(theirs)
        return Sample(
            self.timestamp,
            self.unit,
            self.total + other.total,
            self.count + other.count,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
            values,
        )

    def known_values(self) -> tuple[tuple[float, float], ...] | list[tuple[float, float]] | None:
        if self.values is not None:
            return self.values
        if self.count and self.minimum == self.maximum:
            return ((self.minimum, self.count),)
        return None


class Series:
    """The samples of one backend's metrics, by identity and in timestamp order."""

    def __init__(self) -> None:
        self._samples: dict[Identity, list[Sample]] = {}
        self._keys: dict[Identity, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, identity: Identity, sample: Sample) -> None:
        """Adds a sample, merged into the one of its metric, unit and timestamp if there is one (the
        timestamps are the starts of storage periods: see _period_start)."""
        with self._lock:
            keys = self._keys.get(identity)
            if keys is None:
                keys = self._keys[identity] = []
                self._samples[identity] = []
            samples = self._samples[identity]
            # EMF timestamps may arrive out of order: look for the period's sample where it would be.
            first, after = bisect.bisect_left(keys, sample.timestamp), bisect.bisect_right(keys, sample.timestamp)
            for at in range(first, after):
                if samples[at].unit == sample.unit:
                    samples[at] = samples[at].merged(sample)
                    return
            keys.insert(after, sample.timestamp)
            samples.insert(after, sample)

    def between(self, identity: Identity, start: float, end: float) -> list[Sample]:
        """The samples with start <= timestamp < end."""
        with self._lock:
            keys = self._keys.get(identity)
            if not keys:
                return []
            return self._samples[identity][bisect.bisect_left(keys, start) : bisect.bisect_left(keys, end)]

    def identities(self) -> list[Identity]:
        with self._lock:
            return list(self._samples)

    def forget_before(self, cutoff: float) -> None:
        with self._lock:
            for identity, keys in self._keys.items():
                drop = bisect.bisect_left(keys, cutoff)
                if drop:
                    del keys[:drop]
                    del self._samples[identity][:drop]


def series(backend: CloudWatchBackend) -> Series:
    found = backend.__dict__.get("_sandbox_series")
    if found is None:
        found = backend.__dict__.setdefault("_sandbox_series", Series())
    return found


def _epoch(timestamp: Any) -> float:
    if isinstance(timestamp, datetime):
        aware = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)  # moto's are naive UTC
        return aware.timestamp()
    if isinstance(timestamp, (int, float)):
        return float(timestamp)
    return time.time()


def _samples(datum: Mapping[str, Any]) -> Iterable[Sample]:
    at, unit = _epoch(datum.get("Timestamp")), datum.get("Unit")
    if datum.get("Values"):
        counts = datum.get("Counts") or [1.0] * len(datum["Values"])
        for value, count in zip(datum["Values"], counts, strict=False):
            v, c = float(value), float(count)
            yield Sample(at, unit, v * c, c, v, v, ((v, c),))
    elif datum.get("StatisticValues"):
        stats = datum["StatisticValues"]
        yield Sample(
            at,
            unit,
            float(stats["Sum"]),
            float(stats["SampleCount"]),
            float(stats["Minimum"]),
            float(stats["Maximum"]),
            None,
        )
    else:
        v = float(datum.get("Value", 0))
        yield Sample(at, unit, v, 1.0, v, v, ((v, 1.0),))


@dataclass(frozen=True)
class Datum:
    name: str
    value: float | list[float]
    dimensions: Mapping[str, str]
    unit: str | None = None


def publish_all(
    account_id: str, region: str, namespace: str, data: list[Datum], timestamp: float | None = None
) -> None:
    """Publishes datapoints as an AWS service (or CloudWatch Logs, for EMF) does: in-process, in one
    call of moto's PutMetricData."""
    at = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC).replace(tzinfo=None)
    metric_data = []
    for datum in data:
        entry: dict[str, Any] = {
            "MetricName": datum.name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in datum.dimensions.items()],
            "Timestamp": at,
        }
        if isinstance(datum.value, list):
            entry["Values"] = [float(v) for v in datum.value]
        else:
            entry["Value"] = float(datum.value)
        if datum.unit:
            entry["Unit"] = datum.unit
        metric_data.append(entry)
    cloudwatch_backends[account_id][region].put_metric_data(namespace, metric_data)


def publish(
    account_id: str,
    region: str,
    namespace: str,
    name: str,
    value: float | list[float],
    dimensions: Mapping[str, str] | None = None,
    unit: str | None = None,
    timestamp: float | None = None,
) -> None:
    """Publishes one datapoint (see publish_all)."""
    publish_all(account_id, region, namespace, [Datum(name, value, dimensions or {}, unit)], timestamp)


# Embedded metric format -------------------------------------------------------------------------


@dataclass(frozen=True)
class EmfDatum:
    namespace: str
    name: str
    dimensions: dict[str, str]
    values: list[float]
    unit: str | None
    timestamp: float  # epoch seconds


class InvalidEmf(ValueError):
    """A log event that is an EMF document (it has `_aws`) but that CloudWatch would not extract."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def extract_emf(message: str) -> list[EmfDatum]:
    """The metrics CloudWatch extracts from one log event: one datapoint per metric per dimension set,
    at the record's Timestamp, with its Unit. [] when the event is not an EMF document at all;
    InvalidEmf when it is one CloudWatch would reject (the whole record is then dropped, as
    CloudWatch drops it and counts it under AWS/Logs EMFValidationErrors)."""
    text = message.strip()
    if not text.startswith("{") or '"_aws"' not in text:
        return []
    if len(text.encode()) > EMF_MAX_BYTES:
        raise InvalidEmf("the event is larger than 256 KB")
    try:
        root = json.loads(text)
    except ValueError:
        return []  # not JSON: an ordinary log line that mentions _aws
    if not isinstance(root, dict) or "_aws" not in root:
        return []
    metadata = root["_aws"]
    if not isinstance(metadata, dict):
        raise InvalidEmf("_aws is not an object")
    stamp, directives = metadata.get("Timestamp"), metadata.get("CloudWatchMetrics")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise InvalidEmf("_aws.Timestamp is not an integer number of milliseconds")
    if not isinstance(directives, list):
        raise InvalidEmf("_aws.CloudWatchMetrics is not an array")
    extracted: list[EmfDatum] = []
    for directive in directives:
        extracted += _directive(root, directive, stamp / 1000)
    return extracted


def _directive(root: dict[str, Any], directive: Any, timestamp: float) -> list[EmfDatum]:
    if not isinstance(directive, dict):
        raise InvalidEmf("a MetricDirective is not an object")
    namespace, dimension_sets, metrics = (directive.get(k) for k in ("Namespace", "Dimensions", "Metrics"))
    if not isinstance(namespace, str) or not 1 <= len(namespace) <= 1024:
        raise InvalidEmf("Namespace is not a string of 1 to 1024 characters")
    if namespace.startswith("AWS/"):
        raise InvalidEmf(f"Namespace {namespace}: names beginning with AWS/ are reserved for AWS services")
    if not isinstance(dimension_sets, list) or not dimension_sets:
        raise InvalidEmf("Dimensions is not a non-empty array of dimension sets")
    if not isinstance(metrics, list) or len(metrics) > EMF_MAX_METRICS:
        raise InvalidEmf(f"Metrics is not an array of at most {EMF_MAX_METRICS} metric definitions")
    resolved: list[dict[str, str]] = []
    for keys in dimension_sets:
        if not isinstance(keys, list) or len(keys) > EMF_MAX_DIMENSION_KEYS:
            raise InvalidEmf(f"a dimension set is not an array of at most {EMF_MAX_DIMENSION_KEYS} keys")
        dimensions: dict[str, str] = {}
        for key in keys:
            value = root.get(key) if isinstance(key, str) else None
            if not isinstance(value, str) or len(value) > EMF_MAX_DIMENSION_VALUE:
                raise InvalidEmf(f"dimension {key!r} has no string value (at most 1024 characters) on the root")
            dimensions[key] = value
        resolved.append(dimensions)
    extracted = []
    for definition in metrics:
        name = definition.get("Name") if isinstance(definition, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidEmf("a metric definition has no Name")
        unit = definition.get("Unit")
        if unit is not None and unit not in UNITS:
            raise InvalidEmf(f"metric {name}: Unit {unit!r} is not a CloudWatch unit")
        if definition.get("StorageResolution", 60) not in (1, 60):
            raise InvalidEmf(f"metric {name}: StorageResolution is neither 1 nor 60")
        target = root.get(name)
        values = target if isinstance(target, list) else [target]
        if not values or len(values) > EMF_MAX_VALUES or not all(_number(v) for v in values):
            raise InvalidEmf(f"metric {name}: the root has no number (or array of at most 100 numbers) for it")
        for dimensions in resolved:
            extracted.append(
                EmfDatum(
                    namespace, name, dict(dimensions), [float(v) for v in values if v is not None], unit, timestamp
                )
            )
    return extracted


# AWS services' own metrics ------------------------------------------------------------------------


def iot_request_answered(account_id: str, region: str, request_topic: str, answer_topic: str) -> None:
    """AWS/IoT's fleet-provisioning metrics: 0 or 1 at every call (metrics_dimensions.html).
    RegisterThingFailed by TemplateName; the two certificate metrics have no dimension."""
    failed = 1.0 if answer_topic.endswith("/rejected") else 0.0
    if request_topic == "$aws/certificates/create/json":
        publish(account_id, region, "AWS/IoT", "CreateKeysAndCertificateFailed", failed, unit="Count")
    elif request_topic == "$aws/certificates/create-from-csr/json":
        publish(account_id, region, "AWS/IoT", "CreateCertificateFromCsrFailed", failed, unit="Count")
    else:
        parts = request_topic.split("/")
        if len(parts) == 5 and parts[:2] == ["$aws", "provisioning-templates"] and parts[3:] == ["provision", "json"]:
            publish(account_id, region, "AWS/IoT", "RegisterThingFailed", failed, {"TemplateName": parts[2]}, "Count")


READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "ExecuteStatement"})
WRITE_OPERATIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "BatchExecuteStatement",
        "ExecuteTransaction",
    }
)


def dynamodb_throttled(account_id: str, region: str, table: str, operation: str, events: int = 1) -> None:
    """AWS/DynamoDB after a throttled request (metrics-dimensions.html): ThrottledRequests once per
    request by TableName and Operation; ReadThrottleEvents or WriteThrottleEvents per event by
    TableName. DynamoDB publishes them only when throttling happens."""
    kind = "ReadThrottleEvents" if operation in READ_OPERATIONS else "WriteThrottleEvents"
    publish_all(
        account_id,
        region,
        "AWS/DynamoDB",
        [
            Datum("ThrottledRequests", 1, {"TableName": table, "Operation": operation}, "Count"),
            Datum(kind, float(events), {"TableName": table}, "Count"),
        ],
    )


# Storage periods ------------------------------------------------------------------------------------

# CloudWatch stores a standard-resolution metric (StorageResolution 60, the default, and every AWS
# service's) at 1-minute resolution and a high-resolution one (StorageResolution 1) down to one second
# (API_MetricDatum.html): the datapoints of one such period are one statistic set to every query
# (Sum, SampleCount, Minimum, Maximum; the alarms' index keeps the values too, for percentiles). So
# does the sandbox, in its clock (an AWS minute lasts 60 / SandboxClockScale seconds), so its memory
# grows with time, not with each datapoint.
AGGREGATES_KEPT = 20000  # periods still open for merging; an older one gets a second statistic set
_STORE_LOCK = threading.Lock()


def _period_start(timestamp: float, high_resolution: bool, scale: float) -> float:
    period = (1.0 if high_resolution else 60.0) / scale
    return math.floor(timestamp / period) * period


def _store(
    backend: CloudWatchBackend,
    namespace: str,
    name: str,
    dimensions: list[dict[str, str]],
    identity: Identity,
    sample: Sample,
) -> None:
    """Merges a sample into moto's statistic set of its metric, unit and period (a new one if none)."""
    open_periods: OrderedDict[tuple[Identity, str | None, float], MetricAggregatedDatum] = backend.__dict__.setdefault(
        "_sandbox_periods", OrderedDict()
    )
    key = (identity, sample.unit, sample.timestamp)
    found = open_periods.get(key)
    if found is not None:
        found.sum += sample.total
        found.sample_count += sample.count
        found.min = min(found.min, sample.minimum)
        found.max = max(found.max, sample.maximum)
        return
    stored = MetricAggregatedDatum(
        namespace=namespace,
        name=name,
        min_stat=sample.minimum,
        max_stat=sample.maximum,
        sample_count=sample.count,
        sum_stat=sample.total,
        dimensions=dimensions,
        timestamp=datetime.fromtimestamp(sample.timestamp, UTC).replace(tzinfo=None),  # moto's are naive UTC
        unit=sample.unit,
    )
    backend.metric_data.append(stored)
    open_periods[key] = stored
    if len(open_periods) > AGGREGATES_KEPT:
        open_periods.popitem(last=False)


# Installation --------------------------------------------------------------------------------------


def install() -> None:
    """Indexes every datapoint moto stores, and extracts EMF from every log event CloudWatch Logs takes."""
    if getattr(CloudWatchBackend.put_metric_data, "_sandbox", False):
        return
    store = CloudWatchBackend.put_metric_data

    scale = clock_scale()

    def put_metric_data(self: CloudWatchBackend, namespace: str, metric_data: list[dict[str, Any]]) -> None:
        index = series(self)
        with _STORE_LOCK:
            kept = len(self.metric_data)
            store(self, namespace, metric_data)  # moto validates first: a refused request stores nothing
            del self.metric_data[kept:]  # moto's datapoints, one per value: stored by period below instead
            for datum in metric_data:
                dimensions = [{"Name": d["Name"], "Value": d["Value"]} for d in datum.get("Dimensions") or ()]
                identity = Identity.of(namespace, datum["MetricName"], ((d["Name"], d["Value"]) for d in dimensions))
                high_resolution = str(datum.get("StorageResolution", "60")) == "1"
                for sample in _samples(datum):
                    stored = replace(sample, timestamp=_period_start(sample.timestamp, high_resolution, scale))
                    index.add(identity, stored)
                    _store(self, namespace, datum["MetricName"], dimensions, identity, stored)

    put_metric_data._sandbox = True  # type: ignore[attr-defined]
    CloudWatchBackend.put_metric_data = put_metric_data

    take = LogsBackend.put_log_events

    def put_log_events(
        self: LogsBackend, log_group_name: str, log_stream_name: str, log_events: list[dict[str, Any]]
    ) -> Any:
        taken = take(self, log_group_name, log_stream_name, log_events)
        for event in log_events:
            try:
                extracted = extract_emf(str(event.get("message", "")))
            except InvalidEmf as error:
                print(f"cloudwatch: an EMF record in {log_group_name} was not extracted: {error}", flush=True)
                continue
            for namespace in dict.fromkeys(d.namespace for d in extracted):
                data = [Datum(d.name, d.values, d.dimensions, d.unit) for d in extracted if d.namespace == namespace]
                publish_all(self.account_id, self.region_name, namespace, data, extracted[0].timestamp)
        return taken

    LogsBackend.put_log_events = put_log_events
