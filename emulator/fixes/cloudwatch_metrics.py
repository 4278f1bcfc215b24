"""Fix: CloudWatch reads a metric by namespace, name and its exact set of dimensions.

AWS behaviour restored
    "CloudWatch treats each unique combination of dimensions as a separate
    metric. If a specific combination of dimensions was not published, you
    can't retrieve statistics for it. You must specify the same dimensions
    that were used when the metrics were created" (CloudWatch API reference,
    GetMetricStatistics ``Dimensions``; GetMetricData's ``MetricStat`` names
    a metric the same way), and a metric belongs to one namespace.  The order
    in which dimensions are given does not matter.  GetMetricData rounds
    StartTime down to the whole minute and returns one value per period from
    there ("Start time less than 15 days ago - Round down to the nearest
    whole minute", GetMetricData ``StartTime``).  ListMetrics lists each
    metric (namespace, name, dimension set) once, however many datapoints it
    has.

What moto 5.2.1 does instead
    GetMetricData with dimensions ignores the namespace (``AWS/IoT Failure``
    also summed another namespace's ``Failure`` with the same dimensions) and
    compares dimension lists sorted by a ``Dimension.__lt__`` that compares a
    value with a name; without dimensions it sums every dimension set of the
    metric.  GetMetricStatistics accepts any metric whose dimensions include
    the requested ones (``Protocol=MQTT`` also matched ``Protocol=MQTT,
    ClientId=x``).  ListMetrics' duplicate check (``are_dimensions_same``)
    compares every dimension with every other one, so a metric with two or
    more dimensions (``RuleName`` + ``ActionType``) was listed once per
    datapoint, and one without dimensions was never de-duplicated.

Math expressions (an id), Metrics Insights queries (``SELECT ...``) and
everything else are left to moto as they were; a ``SEARCH(...)`` expression
is not evaluated (moto answers an empty series), see emulator/README.md.
"""

from __future__ import annotations

import datetime
from typing import Any

from ._util import patch


def _naive_utc(value: Any) -> Any:
    """moto keeps naive UTC datetimes; a request's may carry a time zone."""
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def _dimension_set(dimensions: Any) -> frozenset:
    """A metric's or a request's dimensions as a set of (name, value)."""
    out = set()
    for d in dimensions or ():
        if isinstance(d, dict):
            out.add((d.get("Name"), d.get("Value")))
        else:
            out.add((getattr(d, "name", None), getattr(d, "value", None)))
    return frozenset(out)


def _same_metric(datum: Any, namespace: str, name: str, dimensions: frozenset) -> bool:
    return (
        datum.namespace == namespace
        and datum.name == name
        and _dimension_set(datum.dimensions) == dimensions
    )


def _windows(start: datetime.datetime, end: datetime.datetime, period: int):
    """[from, to) periods from StartTime rounded down to the minute, up to EndTime."""
    step = datetime.timedelta(seconds=max(int(period), 1))
    t = start.replace(second=0, microsecond=0)
    while t < end:
        yield t, t + step
        t += step


def _statistic(data: list, stat: str, at: datetime.datetime):
    from moto.cloudwatch.models import Statistics

    stats = Statistics([stat], at)
    stats.metric_data = data
    return stats.get_statistics_for_type(stat)


def _metric_stat_result(backend: Any, query: dict, start, end, scan_by: str) -> dict:
    metric_stat = query["MetricStat"]
    metric = metric_stat["Metric"]
    namespace, name = metric.get("Namespace"), metric.get("MetricName")
    dims = _dimension_set(metric.get("Dimensions"))
    unit = metric_stat.get("Unit")
    stat = metric_stat["Stat"]
    data = [
        md
        for md in backend.get_all_metrics()
        if _same_metric(md, namespace, name, dims)
        and (not unit or md.unit == unit)
        and start.replace(second=0, microsecond=0) <= md.timestamp < end
    ]
    values: list = []
    timestamps: list = []
    for begin, finish in _windows(start, end, int(metric_stat["Period"])):
        window = [md for md in data if begin <= md.timestamp < finish]
        if window:
            value = _statistic(window, stat, begin)
            if value is not None:
                values.append(value)
                timestamps.append(begin)
    if scan_by == "TimestampDescending":
        values.reverse()
        timestamps.reverse()
    return {
        "id": query["Id"],
        "label": query.get("Label") or f"{name} {stat}",
        "values": values,
        "timestamps": timestamps,
        "status_code": "Complete",
    }


def _make_get_metric_data(original):
    def get_metric_data(self, queries, start_time, end_time, scan_by: str = "TimestampAscending"):
        from moto.cloudwatch.exceptions import ValidationError
        from moto.cloudwatch.metric_data_expression_parser import parse_expression

        start = _naive_utc(start_time).replace(microsecond=0)
        end = _naive_utc(end_time).replace(microsecond=0)
        if start > end:
            raise ValidationError("The parameter EndTime must be greater than StartTime.")
        if start == end:
            raise ValidationError("The parameter StartTime must not equal parameter EndTime.")
        results: list[dict] = []
        answer: list[dict] = []
        for query in queries:
            if "MetricStat" in query:
                result = _metric_stat_result(self, query, start, end, scan_by)
                results.append(result)
                if query.get("ReturnData", True) not in (False, "false"):
                    answer.append(result)
        for query in queries:
            expression = query.get("Expression")
            if expression is None or "MetricStat" in query:
                continue
            if expression.lstrip().upper().startswith("SELECT"):
                answer.extend(original(self, [query], start_time, end_time, scan_by))
                continue
            values, timestamps = parse_expression(expression, results)
            answer.append(
                {
                    "id": query["Id"],
                    "label": query.get("Label") or query["Id"],
                    "values": values,
                    "timestamps": timestamps,
                    "status_code": "Complete",
                }
            )
        return answer

    return get_metric_data


def _make_get_metric_statistics(original):  # noqa: ARG001 - replaced whole
    def get_metric_statistics(
        self, namespace, metric_name, start_time, end_time, period, stats, dimensions, unit=None
    ):
        from moto.cloudwatch.exceptions import InvalidParameterValue
        from moto.cloudwatch.models import Statistics

        start = _naive_utc(start_time).replace(microsecond=0)
        end = _naive_utc(end_time).replace(microsecond=0)
        if start >= end:
            raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
        dims = _dimension_set(dimensions)
        data = [
            md
            for md in self.get_all_metrics()
            if _same_metric(md, namespace, metric_name, dims)
            and (not unit or md.unit == unit)
            and start.replace(second=0) <= md.timestamp < end
        ]
        out = []
        for begin, finish in _windows(start, end, int(period)):
            window = [md for md in data if begin <= md.timestamp < finish]
            if window:
                s = Statistics(stats, begin)
                s.metric_data = window
                s.unit = window[-1].unit
                out.append(s)
        return out

    return get_metric_statistics


def _make_get_filtered_metrics(original):  # noqa: ARG001 - replaced whole
    def get_filtered_metrics(self, metric_name, namespace, dimensions):
        seen: set = set()
        out = []
        for md in self.get_all_metrics():
            if not md.filter(namespace=namespace, name=metric_name, dimensions=dimensions):
                continue
            key = (md.namespace, md.name, _dimension_set(md.dimensions))
            if key not in seen:
                seen.add(key)
                out.append(md)
        return out

    return get_filtered_metrics


def apply() -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    for name, make in (
        ("get_metric_data", _make_get_metric_data),
        ("get_metric_statistics", _make_get_metric_statistics),
        ("get_filtered_metrics", _make_get_filtered_metrics),
    ):
        original = getattr(CloudWatchBackend, f"_emulator_orig_{name}", None) or getattr(CloudWatchBackend, name)
        patch(CloudWatchBackend, name, make(original))
