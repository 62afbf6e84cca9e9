"""CloudWatch metric alarms evaluated in the sandbox as CloudWatch evaluates them, on sandbox time.

moto stores alarms and never evaluates them. Here each metric alarm is evaluated at every minute of
sandbox time (every 10 s for periods under a minute), with its Period divided by
`sandbox.state.clock_scale()` (SandboxClockScale, default 60: a 5-minute period lasts 5 s), over
the metrics moto's backend holds (sandbox.cloudwatch.metrics), following
AlarmThatSendsEmail.html: Period makes each datapoint, the Statistic (Sum, Average, Minimum,
Maximum, SampleCount, pNN) over the datapoints of exactly the alarm's metric identity, M of the N
most recent real datapoints breaching (DatapointsToAlarm of EvaluationPeriods), an evaluation range
of N + 2 periods, TreatMissingData filling only as many missing datapoints as needed, the premature
ALARM rule, and AWS/DynamoDB metrics always ignoring missing data. Metric math is evaluated for
arithmetic (+ - * /, parentheses, numbers) and FILL(m, value) over MetricStat queries of one period.

A state change goes through moto's alarm (state, reason, reason data), is recorded in the alarm's
history (DescribeAlarmHistory, which moto lacks) and runs the new state's actions when actions are
enabled: an SNS topic gets CloudWatch's notification message (the JSON AWS sends, subject
`ALARM: "<name>" in <Region long name>`), once the topic's KMS key, if any, lets
cloudwatch.amazonaws.com use it (kms:GenerateDataKey, kms:Decrypt). What the sandbox does not
evaluate (composite alarms, anomaly detection, other metric-math functions, non-SNS actions)
sends the alarm to INSUFFICIENT_DATA, or fails the action, with a reason that says so.
"""

from __future__ import annotations

import json
import math
import operator
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.loaders
from moto.cloudwatch.models import Alarm, CloudWatchBackend, cloudwatch_backends
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from sandbox.cloudwatch.metrics import KEPT_SECONDS, Identity, Sample, series
from sandbox.kms import key_policy

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}
STATISTICS = ("Sum", "Average", "Minimum", "Maximum", "SampleCount")
_PERCENTILE = re.compile(r"^p(100|\d{1,2}(\.\d+)?)$")
EXTRA_PERIODS = 2  # the evaluation range beyond EvaluationPeriods (N = 3 fetches 5 in AWS's tables)
HISTORY_KEPT = 5000  # items per account and region
CLOUDWATCH = "cloudwatch.amazonaws.com"
KEY_ACTIONS = ["kms:GenerateDataKey", "kms:Decrypt"]  # what SNS asks KMS for on the publisher's behalf
_LOCK = threading.RLock()  # state changes and alarm replacement (PutMetricAlarm) are serialized


class NotEvaluated(Exception):
    """Something in the alarm the sandbox does not evaluate; the message says what."""


# The alarm, as the evaluator reads it ------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """One metric statistic the alarm watches (the alarm's own metric, or a MetricStat query)."""

    id: str
    identity: Identity
    period: int
    statistic: str
    unit: str | None


@dataclass(frozen=True)
class Spec:
    stats: tuple[Stat, ...]
    expressions: Mapping[str, str]  # metric-math query id -> expression
    returned: str  # the id of the query whose values are compared with the threshold
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    comparison: str
    threshold: float
    treat_missing: str  # as evaluated (AWS/DynamoDB metrics always ignore missing data)
    low_sample_count: str | None = None


def cadence(alarm: Alarm) -> int:
    """How often CloudWatch evaluates the alarm, in AWS seconds: each minute, or each 10 s for a
    high-resolution period (10 s or 30 s)."""
    periods = [int(alarm.period)] if alarm.period else []
    periods += [int(q.metric_stat.period) for q in alarm.metric_data_queries if q.metric_stat is not None]
    return 10 if periods and min(periods) < 60 else 60


def spec_of(alarm: Alarm) -> Spec:
    if alarm.rule is not None:
        raise NotEvaluated("composite alarms are not evaluated by the sandbox")
    if alarm.threshold_metric_id:
        raise NotEvaluated("anomaly detection alarms (ThresholdMetricId) are not evaluated by the sandbox")
    if alarm.comparison_operator not in COMPARISONS:
        raise NotEvaluated(f"ComparisonOperator {alarm.comparison_operator} is not evaluated by the sandbox")
    stats: list[Stat] = []
    expressions: dict[str, str] = {}
    returned: list[str] = []
    if alarm.metric_data_queries:
        for query in alarm.metric_data_queries:
            returns = query.return_data is None or str(query.return_data).lower() == "true"
            if returns:
                returned.append(query.id)
            if query.metric_stat is not None:
                metric = query.metric_stat.metric
                identity = Identity.of(
                    metric.namespace, metric.metric_name, ((d.name, d.value) for d in metric.dimensions)
                )
                stats.append(
                    Stat(
                        query.id,
                        identity,
                        int(query.metric_stat.period),
                        str(query.metric_stat.stat),
                        query.metric_stat.unit,
                    )
                )
            elif query.expression:
                expressions[query.id] = query.expression
        periods = {s.period for s in stats}
        if len(periods) != 1:
            raise NotEvaluated("metric math over queries of different periods is not evaluated by the sandbox")
        period = periods.pop()
        if len(returned) != 1:
            raise NotEvaluated("an alarm's metric math must return exactly one time series (ReturnData)")
    else:
        if not alarm.period or not alarm.metric_name:
            raise NotEvaluated("an alarm needs a metric and a Period, or metric math")
        statistic = alarm.extended_statistic or alarm.statistic
        identity = Identity.of(alarm.namespace, alarm.metric_name, ((d.name, d.value) for d in alarm.dimensions))
        stats.append(Stat("m1", identity, int(alarm.period), str(statistic), alarm.unit))
        period, returned = int(alarm.period), ["m1"]
    for stat in stats:
        if stat.statistic not in STATISTICS and not _PERCENTILE.match(stat.statistic):
            raise NotEvaluated(f"statistic {stat.statistic} is not evaluated by the sandbox")
    treat = alarm.treat_missing_data or "missing"
    if any(s.identity.namespace == "AWS/DynamoDB" for s in stats):
        treat = "ignore"  # "Alarms that evaluate metrics in the AWS/DynamoDB namespace always ignore missing data"
    n = int(alarm.evaluation_periods)
    return Spec(
        tuple(stats),
        expressions,
        returned[0],
        period,
        n,
        int(alarm.datapoints_to_alarm or n),
        alarm.comparison_operator,
        float(alarm.threshold),
        treat,
        alarm.evaluate_low_sample_count_percentile,
    )


# Statistics over one period ----------------------------------------------------------------------


def statistic(samples: list[Sample], name: str, low_sample_count: str | None = None) -> float | None:
    """The statistic over one period's samples, None when the period has no datapoint."""
    if not samples:
        return None
    count = sum(s.count for s in samples)
    if name == "SampleCount":
        return count
    if name == "Sum":
        return sum(s.total for s in samples)
    if name == "Average":
        return sum(s.total for s in samples) / count if count else None
    if name == "Minimum":
        return min(s.minimum for s in samples)
    if name == "Maximum":
        return max(s.maximum for s in samples)
    rank = float(name[1:])
    if low_sample_count == "ignore" and 0 < rank < 100:
        # "fewer than 10/(1-percentile) data points" from p50 up, "10/percentile" below
        needed = 10 / (1 - rank / 100) if rank >= 50 else 10 / (rank / 100)
        if count < needed:
            return None  # too few samples to be significant: the alarm ignores the period
    pairs = sorted(p for s in samples if s.values is not None for p in s.values)
    if not pairs:
        return None  # statistic sets carry no percentiles
    total = sum(c for _, c in pairs)
    wanted, seen = max(1.0, math.ceil(rank / 100 * total)), 0.0  # nearest rank
    for value, c in pairs:
        seen += c
        if seen >= wanted:
            return value
    return pairs[-1][0]


# Metric math -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))")
Values = list[float | None]


def evaluate_expression(expression: str, series_of: Callable[[str], Values], length: int) -> Values:
    """+ - * / and parentheses over time series and numbers, and FILL(series, number); a missing value
    stays missing through arithmetic. Anything else raises NotEvaluated."""
    tokens = [(n, i, o) for n, i, o in _TOKEN.findall(expression) if n or i or o.strip()]
    position = 0

    def peek() -> tuple[str, str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take(symbol: str | None = None) -> tuple[str, str, str]:
        nonlocal position
        token = peek()
        if token is None or (symbol is not None and token[2] != symbol):
            raise NotEvaluated(f"metric math {expression!r} could not be read by the sandbox")
        position += 1
        return token

    def combine(left: Values | float, right: Values | float, op: Callable[[float, float], float]) -> Values | float:
        if isinstance(left, float) and isinstance(right, float):
            return op(left, right)
        a = left if isinstance(left, list) else [left] * length
        b = right if isinstance(right, list) else [right] * length
        out: Values = []
        for x, y in zip(a, b, strict=True):
            try:
                out.append(None if x is None or y is None else op(x, y))
            except ZeroDivisionError:
                out.append(None)
        return out

    def atom() -> Values | float:
        number, name, symbol = take()
        if number:
            return float(number)
        if symbol == "(":
            value = sum_()
            take(")")
            return value
        if symbol == "-":
            return combine(-1.0, atom(), operator.mul)
        if name and peek() is not None and peek()[2] == "(":  # type: ignore[index]
            take("(")
            if name.upper() != "FILL":
                raise NotEvaluated(f"metric math function {name} is not evaluated by the sandbox")
            filled = sum_()
            take(",")
            fill_number, fill_name, _ = take()
            if not fill_number:
                raise NotEvaluated(f"FILL({fill_name or '...'}) is not evaluated by the sandbox: give a number")
            take(")")
            vector = filled if isinstance(filled, list) else [filled] * length
            return [float(fill_number) if v is None else v for v in vector]
        if name:
            return series_of(name)
        raise NotEvaluated(f"metric math {expression!r} could not be read by the sandbox")

    def product() -> Values | float:
        value = atom()
        while (token := peek()) is not None and token[2] in ("*", "/"):
            take()
            value = combine(value, atom(), operator.mul if token[2] == "*" else operator.truediv)
        return value

    def sum_() -> Values | float:
        value = product()
        while (token := peek()) is not None and token[2] in ("+", "-"):
            take()
            value = combine(value, product(), operator.add if token[2] == "+" else operator.sub)
        return value

    result = sum_()
    if peek() is not None:
        raise NotEvaluated(f"metric math {expression!r} could not be read by the sandbox")
    return result if isinstance(result, list) else [result] * length


# One evaluation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    start: float  # epoch seconds (real time): the period's first instant
    value: float | None
    samples: float  # sample count behind the value (0 for metric math)


Fetch = Callable[[Identity, float, float], list[Sample]]


def slots(spec: Spec, fetch: Fetch, end: float, scale: float) -> list[Slot]:
    """The evaluation range's datapoints, oldest first, ending at `end` (real epoch seconds)."""
    length = spec.evaluation_periods + EXTRA_PERIODS
    width = spec.period / scale
    starts = [end - (length - i) * width for i in range(length)]
    by_id: dict[str, Values] = {}
    counts: list[float] = [0.0] * length
    for stat in spec.stats:
        values: Values = []
        for i, start in enumerate(starts):
            found = [s for s in fetch(stat.identity, start, start + width) if stat.unit in (None, s.unit)]
            values.append(statistic(found, stat.statistic, spec.low_sample_count))
            if stat.id == spec.returned:
                counts[i] = sum(s.count for s in found)
        by_id[stat.id] = values
    resolving: set[str] = set()

    def series_of(query: str) -> Values:
        if query in by_id:
            return by_id[query]
        if query not in spec.expressions or query in resolving:
            raise NotEvaluated(f"metric math refers to {query}, which is not a query of the alarm")
        resolving.add(query)
        by_id[query] = evaluate_expression(spec.expressions[query], series_of, length)
        return by_id[query]

    returned = series_of(spec.returned)
    return [Slot(start, value, counts[i]) for i, (start, value) in enumerate(zip(starts, returned, strict=True))]


@dataclass(frozen=True)
class Decision:
    state: str | None  # None: the alarm keeps its state
    used: tuple[int, ...]  # indexes of the real datapoints evaluated
    filled: int  # missing datapoints filled in (breaching or not, by TreatMissingData)


def decide(spec: Spec, values: list[float | None]) -> Decision:
    """The alarm state for the evaluation range's values (oldest first), by AlarmThatSendsEmail.html's
    rules; its two tables of examples are unit tests (tests/unit/sandbox/cloudwatch/test_alarms.py)."""
    breaches = COMPARISONS[spec.comparison][0]
    n, m = spec.evaluation_periods, spec.datapoints_to_alarm
    real = [i for i, v in enumerate(values) if v is not None]
    breaching = [i for i in real if breaches(values[i], spec.threshold)]  # type: ignore[arg-type]
    if len(real) >= n:  # enough real datapoints: the N most recent decide, nothing is filled in
        used = real[-n:]
        return Decision(ALARM if len([i for i in used if i in breaching]) >= m else OK, tuple(used), 0)
    fill = n - len(real)  # fewer: all real ones count, plus as few filled-in ones as needed
    if spec.treat_missing == "breaching":
        return Decision(ALARM if len(breaching) + fill >= m else OK, tuple(real), fill)
    if spec.treat_missing == "notBreaching":
        return Decision(ALARM if len(breaching) >= m else OK, tuple(real), fill)
    if not real:  # missing: not enough data; ignore: keep the state
        return Decision(INSUFFICIENT_DATA if spec.treat_missing == "missing" else None, (), 0)
    if len(breaching) >= m:
        return Decision(ALARM, tuple(real), 0)
    recent = [i for i in breaching if i >= len(values) - n]
    if (
        spec.treat_missing == "missing"
        and len(breaching) == len(real)
        and recent
        and len(values) - recent[0] >= m  # the oldest breaching datapoint is at least M periods old
    ):
        return Decision(ALARM, tuple(real), 0)  # "avoiding premature transitions": ALARM all the same
    if len(breaching) < len(real):
        return Decision(OK, tuple(real), 0)
    return Decision(None, tuple(real), 0)  # only a recent breach: wait for the next datapoint


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%d/%m/%y %H:%M:%S")


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def reason(spec: Spec, decision: Decision, found: list[Slot], old: str, new: str) -> str:
    """StateReason as CloudWatch words it."""
    if new == INSUFFICIENT_DATA:
        return f"Insufficient Data: {_plural(spec.evaluation_periods, 'datapoint')} " + (
            "was unknown." if spec.evaluation_periods == 1 else "were unknown."
        )
    text = COMPARISONS[spec.comparison][1]
    treated = "[Breaching]" if spec.treat_missing == "breaching" else "[NonBreaching]"
    if not decision.used:
        were = "was" if decision.filled == 1 else "were"
        return (
            f"Threshold Crossed: no datapoints were received for {_plural(decision.filled, 'period')} and "
            f"{_plural(decision.filled, 'missing datapoint')} {were} treated as {treated}."
        )
    breaches = COMPARISONS[spec.comparison][0]
    shown = [i for i in reversed(decision.used) if breaches(found[i].value, spec.threshold) == (new == ALARM)]  # type: ignore[arg-type]
    points = ", ".join(f"{found[i].value!r} ({_when(found[i].start)})" for i in shown)
    verb = ("was" if len(shown) == 1 else "were") + ("" if new == ALARM else " not")
    if spec.evaluation_periods == 1 and not decision.filled:
        said = f"Threshold Crossed: 1 datapoint [{points}] {verb} {text} the threshold ({spec.threshold!r})."
    else:
        said = (
            f"Threshold Crossed: {len(shown)} out of the last {_plural(len(decision.used), 'datapoint')} [{points}] "
            f"{verb} {text} the threshold ({spec.threshold!r})"
        )
        if decision.filled:
            said += f" and {_plural(decision.filled, 'missing datapoint')} treated as {treated}"
        least = spec.datapoints_to_alarm if new == ALARM else 1
        said += f" (minimum {_plural(least, 'datapoint')} for {old} -> {new} transition)."
    return said


def reason_data(spec: Spec, decision: Decision, found: list[Slot], now: float) -> dict[str, Any]:
    def stamp(epoch: float) -> str:
        return _iso(datetime.fromtimestamp(epoch, UTC))

    data: dict[str, Any] = {"version": "1.0", "queryDate": stamp(now), "startDate": stamp(found[0].start)}
    if not spec.expressions:
        data["statistic"] = spec.stats[0].statistic
        if spec.stats[0].unit:
            data["unit"] = spec.stats[0].unit
    data["period"] = spec.period
    data["recentDatapoints"] = [found[i].value for i in decision.used]
    data["threshold"] = spec.threshold
    data["evaluatedDatapoints"] = [
        {
            "timestamp": stamp(found[i].start),
            **({"sampleCount": found[i].samples} if not spec.expressions else {}),
            "value": found[i].value,
        }
        for i in reversed(decision.used)
    ]
    return data


# State changes: history and actions ---------------------------------------------------------------


def history(backend: CloudWatchBackend) -> list[dict[str, Any]]:
    found = backend.__dict__.get("_sandbox_alarm_history")
    if found is None:
        found = backend.__dict__.setdefault("_sandbox_alarm_history", [])
    return found


def _record(backend: CloudWatchBackend, alarm: Alarm, kind: str, summary: str, data: dict[str, Any]) -> None:
    items = history(backend)
    items.append(
        {
            "AlarmName": alarm.name,
            "AlarmType": "CompositeAlarm" if alarm.rule is not None else "MetricAlarm",
            "Timestamp": utcnow(),
            "HistoryItemType": kind,
            "HistorySummary": summary,
            "HistoryData": json.dumps(data),
        }
    )
    del items[:-HISTORY_KEPT]


@cache
def region_name(region: str) -> str:
    """The Region's long name, as alarm notifications give it ("US East (N. Virginia)")."""
    for partition in botocore.loaders.Loader().load_data("endpoints")["partitions"]:
        if region in partition["regions"]:
            return str(partition["regions"][region]["description"])
    return region


def _trigger(alarm: Alarm) -> dict[str, Any]:
    treat = f"- TreatMissingData: {alarm.treat_missing_data or 'missing'}"
    common = {
        "Period": int(
            alarm.period
            or (
                alarm.metric_data_queries[0].metric_stat.period
                if alarm.metric_data_queries and alarm.metric_data_queries[0].metric_stat
                else 0
            )
        ),
        "EvaluationPeriods": int(alarm.evaluation_periods),
        **({"DatapointsToAlarm": int(alarm.datapoints_to_alarm)} if alarm.datapoints_to_alarm else {}),
        "ComparisonOperator": alarm.comparison_operator,
        "Threshold": float(alarm.threshold),
        "TreatMissingData": treat,
        "EvaluateLowSampleCountPercentile": alarm.evaluate_low_sample_count_percentile or "",
    }
    if not alarm.metric_data_queries:
        extended = bool(alarm.extended_statistic)
        return {
            "MetricName": alarm.metric_name,
            "Namespace": alarm.namespace,
            "StatisticType": "ExtendedStatistic" if extended else "Statistic",
            **(
                {"ExtendedStatistic": alarm.extended_statistic}
                if extended
                else {"Statistic": str(alarm.statistic or "").upper()}
            ),
            "Unit": alarm.unit,
            "Dimensions": [{"value": d.value, "name": d.name} for d in alarm.dimensions],
            **common,
        }
    metrics = []
    for query in alarm.metric_data_queries:
        entry: dict[str, Any] = {"Id": query.id}
        if query.expression:
            entry["Expression"] = query.expression
        if query.label:
            entry["Label"] = query.label
        if query.metric_stat is not None:
            stat = query.metric_stat
            entry["MetricStat"] = {
                "Metric": {
                    "Dimensions": [{"value": d.value, "name": d.name} for d in stat.metric.dimensions],
                    "MetricName": stat.metric.metric_name,
                    "Namespace": stat.metric.namespace,
                },
                "Period": int(stat.period),
                "Stat": stat.stat,
            }
        entry["ReturnData"] = query.return_data is None or str(query.return_data).lower() == "true"
        metrics.append(entry)
    return {**common, "Metrics": metrics}


def notification(alarm: Alarm, old: str, account_id: str) -> dict[str, Any]:
    """The message CloudWatch publishes to an alarm's SNS topic (samples in AlarmThatSendsEmail.html)."""
    return {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description or None,
        "AWSAccountId": account_id,
        "AlarmConfigurationUpdatedTimestamp": _iso(alarm.configuration_updated_timestamp),
        "NewStateValue": alarm.state_value,
        "NewStateReason": alarm.state_reason,
        "StateChangeTime": _iso(alarm.state_updated_timestamp),
        "Region": region_name(alarm.region_name),
        "AlarmArn": alarm.alarm_arn,
        "OldStateValue": old,
        "OKActions": list(alarm.ok_actions),
        "AlarmActions": list(alarm.alarm_actions),
        "InsufficientDataActions": list(alarm.insufficient_data_actions),
        "Trigger": _trigger(alarm),
    }


def subject(alarm: Alarm) -> str:
    return f'{alarm.state_value}: "{alarm.name}" in {region_name(alarm.region_name)}'[:100]  # SNS: 100 at most


def _publish(alarm: Alarm, account_id: str, topic_arn: str, message: str) -> str | None:
    """Publishes to the topic as CloudWatch does; None, or the error the alarm's history records."""
    from moto.kms.models import kms_backends
    from moto.sns.exceptions import SNSNotFoundError
    from moto.sns.models import sns_backends

    parts = topic_arn.split(":")
    sns = sns_backends[parts[4]][parts[3]]
    try:
        topic = sns.get_topic(topic_arn)
    except SNSNotFoundError:
        return f"Topic {topic_arn} does not exist"
    if topic.kms_master_key_id:
        kms = kms_backends[parts[4]][parts[3]]
        denied = "CloudWatch Alarms does not have authorization to access the SNS topic encryption key."
        try:
            key = kms.describe_key(topic.kms_master_key_id)
        except Exception:  # noqa: BLE001 - an AWS-managed key (alias/aws/sns) or none at all: CloudWatch may not use it
            return f"{denied} (sandbox: no customer managed key {topic.kms_master_key_id})"
        if key.key_state != "Enabled":
            return f"{denied} (sandbox: the key is {key.key_state})"
        allowed, why = key_policy.service_may_use(
            key.policy,
            CLOUDWATCH,
            KEY_ACTIONS,
            key.arn,
            {
                "aws:SourceAccount": account_id,
                "aws:SourceArn": alarm.alarm_arn,
                "kms:EncryptionContext:aws:sns:topicArn": topic.arn,
            },
        )
        if not allowed:
            return f"{denied} (sandbox: {why})"
    sns.publish(message, topic_arn, subject=subject(alarm))
    return None


def _act(backend: CloudWatchBackend, alarm: Alarm, old: str) -> None:
    actions = {OK: alarm.ok_actions, ALARM: alarm.alarm_actions, INSUFFICIENT_DATA: alarm.insufficient_data_actions}
    if not alarm.actions_enabled:
        return
    for arn in actions.get(alarm.state_value, []):
        message = json.dumps(notification(alarm, old, backend.account_id))
        if arn.split(":")[2:3] == ["sns"]:
            try:
                error = _publish(alarm, backend.account_id, arn, message)
            except Exception as failure:  # noqa: BLE001 - recorded as the failed action, as CloudWatch records it
                error = f"{type(failure).__name__}: {failure}"
        else:
            error = "the sandbox performs SNS actions only"
        data: dict[str, Any] = {
            "actionState": "Failed" if error else "Succeeded",
            "stateUpdateTimestamp": int(time.time() * 1000),
            "notificationResource": arn,
            "publishedMessage": None if error else message,
        }
        if error:
            data["error"] = error
            print(f"cloudwatch: alarm {alarm.name}: failed to execute action {arn}: {error}", flush=True)
        summary = (
            f"Failed to execute action {arn}. Received error: {error!r}"
            if error
            else f"Successfully executed action {arn}"
        )
        _record(backend, alarm, "Action", summary, data)


def transition(backend: CloudWatchBackend, alarm: Alarm, state: str, why: str, data: dict[str, Any]) -> None:
    """A state change: moto's alarm, its history, then the new state's actions."""
    with _LOCK:
        old, old_reason = alarm.state_value, alarm.state_reason
        alarm.update_state(why, json.dumps(data), state)
    _changed(backend, alarm, old, old_reason)


def _changed(backend: CloudWatchBackend, alarm: Alarm, old: str, old_reason: str) -> None:
    _record(
        backend,
        alarm,
        "StateUpdate",
        f"Alarm updated from {old} to {alarm.state_value}",
        {
            "version": "1.0",
            "oldState": {"stateValue": old, "stateReason": old_reason},
            "newState": {
                "stateValue": alarm.state_value,
                "stateReason": alarm.state_reason,
                "stateReasonData": json.loads(alarm.state_reason_data or "{}"),
            },
        },
    )
    _act(backend, alarm, old)


# The evaluator ----------------------------------------------------------------------------------


def evaluate(backend: CloudWatchBackend, alarm: Alarm, now: float, scale: float) -> None:
    """Evaluates one alarm as of `now` and changes its state when CloudWatch would."""
    try:
        spec = spec_of(alarm)
        step = cadence(alarm) / scale
        end = math.floor(now / step) * step
        found = slots(spec, series(backend).between, end, scale)
        decision = decide(spec, [s.value for s in found])
    except NotEvaluated as unsupported:
        why = f"Unchecked: {unsupported}"
        if (alarm.state_value, alarm.state_reason) != (INSUFFICIENT_DATA, why):
            print(f"cloudwatch: alarm {alarm.name} is not evaluated: {unsupported}", flush=True)
            transition(backend, alarm, INSUFFICIENT_DATA, why, {"version": "1.0"})
        return
    if decision.state is None or decision.state == alarm.state_value:
        return
    why = reason(spec, decision, found, alarm.state_value, decision.state)
    transition(backend, alarm, decision.state, why, reason_data(spec, decision, found, now))


class AlarmEvaluator:
    """Evaluates every alarm of every account and region each minute of sandbox time (10 s for alarms
    with shorter periods), in a thread of the local AWS's process."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloudwatch-alarms", daemon=True)
        self._evaluated: dict[str, float] = {}  # alarm ARN -> the boundary it was last evaluated at
        self._failures: dict[str, str] = {}  # alarm ARN -> the last evaluation error reported

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        step = 60 / self.scale
        while not self._stopping.wait(max(0.05, step - time.time() % step)):
            try:
                step = self.evaluate_all(time.time())
            except Exception as error:  # noqa: BLE001 - keep evaluating; the next round retries
                print(f"cloudwatch: evaluating alarms failed: {type(error).__name__}: {error}", flush=True)

    def evaluate_all(self, now: float) -> float:
        """Evaluates the alarms whose evaluation is due; returns the time to the next round (the
        shortest cadence among the alarms)."""
        shortest = 60 / self.scale
        for _, regions in list(cloudwatch_backends.items()):
            for _, backend in list(regions.items()):
                for alarm in list(backend.alarms.values()):
                    step = cadence(alarm) / self.scale
                    shortest = min(shortest, step)
                    boundary = math.floor(now / step) * step
                    if self._evaluated.get(alarm.alarm_arn) == boundary:
                        continue
                    self._evaluated[alarm.alarm_arn] = boundary
                    try:
                        evaluate(backend, alarm, now, self.scale)
                    except Exception as error:  # noqa: BLE001 - one broken alarm must not stop the others
                        said = f"{type(error).__name__}: {error}"
                        if self._failures.get(alarm.alarm_arn) != said:  # once, not every round
                            self._failures[alarm.alarm_arn] = said
                            print(f"cloudwatch: evaluating alarm {alarm.name} failed: {said}", flush=True)
                series(backend).forget_before(now - KEPT_SECONDS / self.scale)
        return shortest


# What moto lacks or does differently -------------------------------------------------------------


def describe_alarm_history(self: CloudWatchResponse) -> ActionResult:
    name, kind = self._get_param("AlarmName"), self._get_param("HistoryItemType")
    types = self._get_param("AlarmTypes") or ["MetricAlarm", "CompositeAlarm"]
    start, end = self._get_param("StartDate"), self._get_param("EndDate")
    limit = int(self._get_param("MaxRecords") or 100)
    offset = int(self._get_param("NextToken") or 0)
    items = [
        item
        for item in history(self.cloudwatch_backend)
        if (name is None or item["AlarmName"] == name)
        and (kind is None or item["HistoryItemType"] == kind)
        and item["AlarmType"] in types
        and (start is None or item["Timestamp"] >= start)
        and (end is None or item["Timestamp"] <= end)
    ]
    if self._get_param("ScanBy") != "TimestampAscending":
        items.reverse()
    page = items[offset : offset + limit]
    result: dict[str, Any] = {"AlarmHistoryItems": page}
    if offset + limit < len(items):
        result["NextToken"] = str(offset + limit)
    return ActionResult(result)


def install() -> None:
    """New alarms start in INSUFFICIENT_DATA and an updated one keeps its state (PutMetricAlarm), as
    AWS does; SetAlarmState changes are recorded and acted on; DescribeAlarmHistory answers."""
    if getattr(CloudWatchBackend.put_metric_alarm, "_sandbox", False):
        return
    put = CloudWatchBackend.put_metric_alarm

    def put_metric_alarm(self: CloudWatchBackend, *args: Any, **kwargs: Any) -> Alarm:
        name = kwargs.get("name", args[0] if args else None)
        with _LOCK:
            previous = self.alarms.get(str(name))
            alarm = put(self, *args, **kwargs)
            if previous is not None:
                alarm.state_value, alarm.state_reason = previous.state_value, previous.state_reason
                alarm.state_reason_data = previous.state_reason_data
                alarm.state_updated_timestamp = previous.state_updated_timestamp
            else:
                alarm.state_value, alarm.state_reason = INSUFFICIENT_DATA, "Unchecked: Initial alarm creation"
            verb = "updated" if previous is not None else "created"
            _record(
                self,
                alarm,
                "ConfigurationUpdate",
                f'Alarm "{alarm.name}" {verb}',
                {"version": "1.0", "type": "Update" if previous is not None else "Create"},
            )
        return alarm

    put_metric_alarm._sandbox = True  # type: ignore[attr-defined]
    CloudWatchBackend.put_metric_alarm = put_metric_alarm

    set_state = CloudWatchBackend.set_alarm_state

    def set_alarm_state(self: CloudWatchBackend, alarm_name: str, why: str, data: str, state_value: str) -> None:
        with _LOCK:
            alarm = self.alarms.get(alarm_name)
            before = (alarm.state_value, alarm.state_reason) if alarm is not None else None
            set_state(self, alarm_name, why, data, state_value)  # moto's checks, then the change
        if alarm is not None and before is not None and before[0] != alarm.state_value:
            _changed(self, alarm, *before)  # lasts until the next evaluation, as in AWS

    CloudWatchBackend.set_alarm_state = set_alarm_state
    CloudWatchResponse.describe_alarm_history = describe_alarm_history
