"""AWS/IoT metrics (and any other namespace) into the emulator's own CloudWatch.

    import metrics
    metrics.record("Connect.Success", dimensions={"Protocol": "MQTT"})
    metrics.record("FailedJobExecutionTotalCount", 2, {"JobId": "fw-1"})

What AWS does (AWS IoT developer guide, "AWS IoT metrics and dimensions",
https://docs.aws.amazon.com/iot/latest/developerguide/metrics_dimensions.html):
"When you interact with AWS IoT, the service sends metrics and dimensions to
CloudWatch every minute", in the namespace ``AWS/IoT`` of the account and
region, one datapoint per metric, dimension set and minute.

What the emulator does: ``record`` adds one value to an aggregate kept per
(namespace, metric, dimensions, unit, minute) -- sum, sample count, minimum,
maximum -- and returns at once: it takes one short in-memory lock, does no
I/O, never blocks on moto and never raises (a value that is not a finite
number, an empty metric name or a dimension that is not a string is dropped
and counted; the flusher reports the count on stderr).  A flusher thread
puts what was recorded into moto's CloudWatch backend in-process (account
123456789012, us-east-1, moto's ``put_metric_data`` with ``StatisticValues``
and the minute's start as the timestamp) about every second, instead of once
a minute, so that a test sees a metric about a second after the event rather
than after up to a minute.  The price: a minute's activity may arrive as
several partial statistic sets with the same timestamp (one per second in
which something happened).  CloudWatch aggregates statistic sets, so Sum,
SampleCount, Minimum and Maximum over any period are what AWS's single
datapoint would give; only an Average over raw datapoints would differ, and
no AWS/IoT metric is read that way.

``/moto-api/reset`` empties CloudWatch with everything else: values recorded
before the reset and not yet flushed are dropped with it (the flusher and the
reset exclude each other), and recording goes on afterwards into the new
backend.  ``stop()`` flushes what is left and ends the thread (server.py
calls it at shutdown); ``record`` after ``stop`` starts a new flusher.

Used by the device gateway (Connect.*, PublishIn.*, Subscribe.*,
Connection.AuthNError), the rules engine (TopicMatch, Success / Failure) and
the jobs engine (job execution metrics).  See emulator/README.md, "Metrics".
"""

from __future__ import annotations

import datetime
import math
import sys
import threading
import time
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
FLUSH_INTERVAL = 1.0

_lock = threading.Lock()  # guards _pending, _dropped and _flusher: held for microseconds
# (namespace, metric, dimensions as sorted (name, value) pairs, unit, minute start in epoch s)
#   -> [sum, sample count, minimum, maximum]
_pending: dict[tuple, list[float]] = {}
_dropped = 0
_flusher: threading.Thread | None = None
_stopping = threading.Event()
# Held while a batch goes into moto and while moto resets: a batch taken before a reset
# never lands in the backend made after it.
_flush_lock = threading.Lock()


def record(
    metric: str,
    value: float = 1.0,
    dimensions: dict[str, str] | None = None,
    *,
    namespace: str = "AWS/IoT",
    unit: str = "Count",
) -> None:
    """Adds ``value`` to ``metric`` with these dimensions for the current minute.

    Thread-safe, never raises, never blocks on I/O; the datapoint is in the
    emulator's CloudWatch within about a second."""
    global _dropped
    try:
        number = float(value)
        if (
            not isinstance(metric, str)
            or not metric
            or not isinstance(namespace, str)
            or not namespace
            or not isinstance(unit, str)
            or not math.isfinite(number)
        ):
            raise ValueError(metric)
        dims = ()
        if dimensions:
            dims = tuple(sorted(dimensions.items()))
            if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in dims):
                raise ValueError(dimensions)
        minute = int(time.time()) // 60 * 60
        key = (namespace, metric, dims, unit, minute)
        with _lock:
            agg = _pending.get(key)
            if agg is None:
                _pending[key] = [number, 1.0, number, number]
            else:
                agg[0] += number
                agg[1] += 1.0
                if number < agg[2]:
                    agg[2] = number
                if number > agg[3]:
                    agg[3] = number
            running = _flusher is not None and _flusher.is_alive()
        if not running:
            _start()
    except Exception:  # noqa: BLE001 - a metric must never break its caller
        try:
            with _lock:
                _dropped += 1
        except Exception:  # noqa: BLE001
            pass


def _start() -> None:
    global _flusher
    with _lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _stopping.clear()
        _flusher = threading.Thread(target=_run, name="cloudwatch-metrics", daemon=True)
        _flusher.start()


def start() -> None:
    """Starts the flusher now (``record`` starts it on first use anyway)."""
    try:
        _start()
    except Exception:  # noqa: BLE001
        pass


def _run() -> None:
    while not _stopping.wait(FLUSH_INTERVAL):
        flush()
    flush()


def _note(message: str) -> None:
    try:
        sys.stderr.write(f"iotreg-emulator: metrics: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def _take() -> tuple[dict[tuple, list[float]], int]:
    global _pending, _dropped
    with _lock:
        taken, _pending = _pending, {}
        dropped, _dropped = _dropped, 0
    return taken, dropped


def flush() -> int:
    """Puts everything recorded so far into moto's CloudWatch; the number of statistic sets."""
    with _flush_lock:
        taken, dropped = _take()
        if dropped:
            _note(f"{dropped} value(s) dropped: not a finite number, or a bad name or dimension")
        if not taken:
            return 0
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for (namespace, metric, dims, unit, minute), (total, count, low, high) in taken.items():
            by_namespace.setdefault(namespace, []).append(
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    # moto keeps naive UTC datetimes (its utcnow()) and compares with them.
                    "Timestamp": datetime.datetime.fromtimestamp(minute, datetime.timezone.utc).replace(tzinfo=None),
                    "StatisticValues": {"Sum": total, "SampleCount": count, "Minimum": low, "Maximum": high},
                    "Unit": unit,
                }
            )
        try:
            from moto.cloudwatch.models import cloudwatch_backends

            backend = cloudwatch_backends[ACCOUNT][REGION]
            for namespace, data in by_namespace.items():
                backend.put_metric_data(namespace, data)
        except Exception as error:  # noqa: BLE001 - the flusher must keep running
            _note(f"could not put {len(taken)} statistic set(s) into CloudWatch: {error!r}")
            return 0
        return len(taken)


def stop(timeout: float = 5.0) -> None:
    """Flushes what is left and ends the flusher thread."""
    global _flusher
    with _lock:
        thread = _flusher
    _stopping.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
    flush()


def discard() -> None:
    """Forgets what was recorded and not yet flushed (moto is being reset)."""
    _take()


def apply() -> None:
    """Makes moto's reset drop unflushed values too; safe to call more than once."""
    from moto.core.base_backend import BackendDict

    if getattr(BackendDict, "_emulator_metrics_reset", False):
        return
    original = BackendDict.reset  # a classmethod, bound to BackendDict

    def reset(cls) -> None:
        with _flush_lock:
            original()
            discard()

    BackendDict.reset = classmethod(reset)
    BackendDict._emulator_metrics_reset = True


__all__ = ["record", "flush", "start", "stop", "apply", "discard"]
