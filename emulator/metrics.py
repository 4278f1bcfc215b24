"""Metrics the emulated services publish into the emulator's own CloudWatch.

The shared interface (issue 16's decisions; the metrics part owns this module
and its version replaces this minimal one at merge)::

    record(metric, value=1.0, dimensions=None, *, namespace="AWS/IoT", unit="Count")

is thread-safe, never raises and never blocks on I/O: it puts the datapoint on
a queue; one daemon thread writes the queued datapoints into moto's CloudWatch
backend of account 123456789012 / us-east-1 (in-process, no request), so they
are there for GetMetricStatistics / GetMetricData within about a second.
"""

from __future__ import annotations

import datetime
import queue
import threading

ACCOUNT = "123456789012"
REGION = "us-east-1"

_queue: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
_started = False
_start_lock = threading.Lock()


def record(
    metric: str,
    value: float = 1.0,
    dimensions: dict[str, str] | None = None,
    *,
    namespace: str = "AWS/IoT",
    unit: str = "Count",
) -> None:
    try:
        _ensure_writer()
        stamp = datetime.datetime.now(datetime.timezone.utc)
        _queue.put((namespace, str(metric), float(value), dict(dimensions or {}), unit, stamp))
    except Exception:  # noqa: BLE001 - a metric must never break its caller
        pass


def _ensure_writer() -> None:
    global _started
    if _started:
        return
    with _start_lock:
        if not _started:
            threading.Thread(target=_write_forever, name="metrics-writer", daemon=True).start()
            _started = True


def _write_forever() -> None:
    while True:
        item = _queue.get()
        batch = [item]
        while True:  # whatever else is queued goes in the same pass
            try:
                batch.append(_queue.get_nowait())
            except queue.Empty:
                break
        try:
            _write(batch)
        except Exception:  # noqa: BLE001 - never let the writer die
            pass


def _write(batch: list[tuple]) -> None:
    from moto.cloudwatch.models import cloudwatch_backends

    backend = cloudwatch_backends[ACCOUNT][REGION]
    for namespace, metric, value, dimensions, unit, stamp in batch:
        backend.put_metric_data(
            namespace,
            [
                {
                    "MetricName": metric,
                    "Value": value,
                    "Unit": unit,
                    "Timestamp": stamp,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                }
            ],
        )
