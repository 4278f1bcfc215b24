"""Runs Lambda event source mappings of Kinesis data streams, as Lambda's pollers do.

What AWS does (Lambda developer guide: "Using Lambda with Kinesis Data
Streams" https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html,
"Retain discarded batch records for a Kinesis Data Streams event source"
https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html,
"Configuring partial batch response with Kinesis Data Streams"
https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html):
Lambda reads each shard from its checkpoint, invokes the function
synchronously with a batch of records of one shard, in order, one batch per
shard at a time, and checkpoints the batch when the function succeeds. On a
function error it retries the batch; ``BisectBatchOnFunctionError`` splits a
failed batch in two and retries the halves ("Splitting batches doesn't
consume the retry quota"); ``MaximumRetryAttempts`` and
``MaximumRecordAgeInSeconds`` end the retries, after which the batch is
discarded, an invocation record goes to the OnFailure destination, and the
shard moves on.

What the emulator does: one thread (``esm-poller``) looks every
``POLL_INTERVAL`` (0.1 s) at every enabled Kinesis mapping of every account
and region in moto's Lambda backend. For each shard of the mapping's stream
that has records after its checkpoint and no batch in flight, it takes up to
BatchSize records; it invokes at once when BatchSize records are there or
MaximumBatchingWindowInSeconds has passed since it first saw a record
waiting (0 = at once). The batch runs in a thread of its own (so one shard
per mapping has at most one invocation in flight, shards and mappings run in
parallel) through lambda_runtime.invoke (logs in CloudWatch Logs as for any
invocation). Then:

* success (no error; with ReportBatchItemFailures an empty or null
  ``batchItemFailures``): checkpoint = the batch's last sequence number;
* ReportBatchItemFailures with item failures: checkpoint before the lowest
  failed sequence number; the records from there on are retried (a failure,
  counted against the retries; with bisect they are not halved further:
  "the batch is bisected at the returned sequence number"); an
  ``itemIdentifier`` that is empty, null or not in the batch fails the whole
  batch;
* error (exception, timeout, the process dying, a missing function):
  with BisectBatchOnFunctionError and more than one record, the batch is
  split into two halves (first half first, the halves keep the parent's
  retry count: splitting consumes no retry); otherwise its retry count goes
  up by one and, once it exceeds MaximumRetryAttempts (-1 = never), the
  batch is given up; a retry waits ``RETRY_DELAY`` (0.2 s);
* before each invocation, records older than MaximumRecordAgeInSeconds
  (-1 = the stream's retention period) are split off the front of the batch
  and given up with condition ``RecordAgeExceeded``;
* a given-up batch: checkpoint = its last record; when the mapping has an
  OnFailure destination, AWS's invocation record (``requestContext``
  {requestId, functionArn, condition, approximateInvokeCount},
  ``responseContext`` {statusCode, executedVersion, functionError},
  ``version`` "1.0", ``timestamp``, ``KinesisBatchInfo`` {shardId,
  startSequenceNumber, endSequenceNumber, approximateArrivalOfFirstRecord,
  approximateArrivalOfLastRecord, batchSize, streamArn}) is sent there
  (SQS: SendMessage; SNS: Publish) from the mapping's account/region.
  approximateInvokeCount = the invocations of that exact batch.

LastProcessingResult: ``OK`` after a successful batch, ``PROBLEM: Function
call failed`` after a failed invocation, ``PROBLEM: Function not found`` /
``PROBLEM: Stream not found`` while the function or stream is missing (the
mapping then is not polled, and resumes when they are back).

A mapping that is disabled or deleted is no longer polled; a batch in
flight finishes its current invocation and stops without checkpointing
further (a re-enabled mapping resumes from its checkpoint).

``snapshot()`` is the emulator-only view ``GET /iotreg-test/event-source-mappings``
serves: per mapping UUID its counters and checkpoints.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import lambda_runtime
from .lambda_runtime import note

POLL_INTERVAL = 0.1
RETRY_DELAY = 0.2

_lock = threading.Lock()
_runtimes: dict[str, "MappingRuntime"] = {}
_thread: threading.Thread | None = None
_stop = threading.Event()


@dataclass
class MappingRuntime:
    uuid: str
    checkpoints: dict[str, int] = field(default_factory=dict)  # shard id -> last done sequence number
    busy: set = field(default_factory=set)  # shard ids with a batch in flight
    waiting_since: dict[str, float] = field(default_factory=dict)  # shard id -> monotonic
    invocations: int = 0
    batches_ok: int = 0
    records_ok: int = 0
    batches_given_up: int = 0
    records_given_up: int = 0
    failure_records_sent: int = 0
    bisections: int = 0
    problem: str | None = None


def _esm_module():
    from fixes import lambda_event_source_mappings

    return lambda_event_source_mappings


# -- the loop -------------------------------------------------------------------


def start() -> None:
    """Start the poller thread (idempotent)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        _thread = threading.Thread(target=_run, name="esm-poller", daemon=True)
        _thread.start()


def stop(timeout: float = 5.0) -> None:
    """Stop polling; batches in flight end after their current invocation."""
    global _thread
    _stop.set()
    with _lock:
        thread = _thread
        _thread = None
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def running() -> bool:
    with _lock:
        return _thread is not None and _thread.is_alive()


def _run() -> None:
    while not _stop.wait(POLL_INTERVAL):
        try:
            poll_once()
        except Exception:  # noqa: BLE001 - the poller must never die
            note("event source mapping poller error:\n" + traceback.format_exc().rstrip())


def _mappings() -> list[Any]:
    from moto.awslambda.models import lambda_backends

    found = []
    for account in list(lambda_backends.keys()):
        regions = lambda_backends[account]
        for region in list(regions.keys()):
            backend = regions[region]
            try:
                found.extend(list(backend._event_source_mappings.values()))
            except RuntimeError:  # changed while copied: next round
                continue
    return found


def poll_once() -> None:
    esm_mod = _esm_module()
    mappings = [m for m in _mappings() if esm_mod.is_kinesis(m.event_source_arn)]
    live = {m.uuid for m in mappings}
    with _lock:
        for gone in [u for u in _runtimes if u not in live]:
            del _runtimes[gone]
    for esm in mappings:
        if not esm_mod.polled(esm):
            continue
        with _lock:
            rt = _runtimes.setdefault(esm.uuid, MappingRuntime(esm.uuid))
        _poll_mapping(esm, rt)


def _stream_of(esm: Any) -> Any:
    from moto.kinesis.models import kinesis_backends

    parts = esm.event_source_arn.split(":")
    try:
        stream = kinesis_backends[parts[4]][parts[3]].streams.get(parts[5].split("/", 1)[1])
    except Exception:  # noqa: BLE001
        return None
    if stream is None or stream.arn != esm.event_source_arn:
        return None
    return stream


def _function_of(esm: Any) -> Any:
    from moto.awslambda.models import lambda_backends

    try:
        return lambda_backends[esm.account_id][esm.region].get_function(esm.function_arn)
    except Exception:  # noqa: BLE001 - UnknownFunctionException
        return None


def _set_result(esm: Any, rt: MappingRuntime, result: str) -> None:
    esm._iotreg_last_result = result
    rt.problem = result if result.startswith("PROBLEM") else None


def _start_sequence(esm: Any, shard_id: str, shard: Any) -> int:
    """The checkpoint a mapping starts a shard from (its first record = checkpoint + 1)."""
    position = esm.starting_position
    if position == "LATEST":
        return int(getattr(esm, "_iotreg_latest", {}).get(shard_id, 0))
    if position == "AT_TIMESTAMP" and esm.starting_position_timestamp is not None:
        at = float(esm.starting_position_timestamp)
        before = [seq for seq, rec in shard.records.items() if rec.created_at < at]
        return max(before) if before else 0
    return 0  # TRIM_HORIZON


def _poll_mapping(esm: Any, rt: MappingRuntime) -> None:
    stream = _stream_of(esm)
    if stream is None:
        _set_result(esm, rt, "PROBLEM: Stream not found")
        return
    if _function_of(esm) is None:
        _set_result(esm, rt, "PROBLEM: Function not found")
        return
    if rt.problem in ("PROBLEM: Stream not found", "PROBLEM: Function not found"):
        rt.problem = None
        esm._iotreg_last_result = "No records processed" if not rt.invocations else "OK"
    lock = _esm_module().KINESIS_LOCK
    batch_size = int(esm.batch_size or 100)
    window = float(esm.max_batch_window or 0)
    now = time.monotonic()
    for shard_id, shard in list(stream.shards.items()):
        with _lock:
            if shard_id in rt.busy:
                continue
        with lock:
            if shard_id not in rt.checkpoints:
                rt.checkpoints[shard_id] = _start_sequence(esm, shard_id, shard)
            checkpoint = rt.checkpoints[shard_id]
            records = []
            # moto numbers a shard's records 1, 2, 3, ... and never removes one.
            seq = checkpoint + 1
            while len(records) < batch_size:
                record = shard.records.get(seq)
                if record is None:
                    break
                records.append(record)
                seq += 1
        if not records:
            rt.waiting_since.pop(shard_id, None)
            continue
        since = rt.waiting_since.setdefault(shard_id, now)
        if len(records) < batch_size and now - since < window:
            continue
        rt.waiting_since.pop(shard_id, None)
        with _lock:
            rt.busy.add(shard_id)
        worker = threading.Thread(
            target=_process, args=(esm, rt, stream, shard_id, records), name=f"esm-{esm.uuid[:8]}-{shard_id[-4:]}", daemon=True
        )
        worker.start()


# -- one shard's batch --------------------------------------------------------------


@dataclass
class Batch:
    records: list
    retries: int = 0
    invocations: int = 0
    last_response: dict | None = None


def _still_wanted(esm: Any) -> bool:
    return not getattr(esm, "_iotreg_deleted", False) and bool(esm.enabled) and not _stop.is_set()


def _process(esm: Any, rt: MappingRuntime, stream: Any, shard_id: str, records: list) -> None:
    try:
        _run_batches(esm, rt, stream, shard_id, [Batch(list(records))])
    except Exception:  # noqa: BLE001
        note(f"event source mapping {esm.uuid}: error on {shard_id}:\n" + traceback.format_exc().rstrip())
    finally:
        with _lock:
            rt.busy.discard(shard_id)


def _advance(rt: MappingRuntime, shard_id: str, record: Any) -> None:
    with _lock:
        rt.checkpoints[shard_id] = max(rt.checkpoints.get(shard_id, 0), int(record.sequence_number))


def _run_batches(esm: Any, rt: MappingRuntime, stream: Any, shard_id: str, pending: list[Batch]) -> None:
    while pending:
        if not _still_wanted(esm):
            return
        batch = pending[0]
        expired, batch.records = _split_expired(esm, stream, batch.records)
        if expired:
            _give_up(esm, rt, stream, shard_id, Batch(expired, invocations=0), "RecordAgeExceeded")
            if not batch.records:
                pending.pop(0)
                continue
        fn = _function_of(esm)
        if fn is None:
            _set_result(esm, rt, "PROBLEM: Function not found")
            return  # not checkpointed: picked up again once the function exists
        event = {"Records": [_event_record(esm, stream, shard_id, r, fn) for r in batch.records]}
        result = lambda_runtime.invoke(fn, event, fn.function_arn)
        batch.invocations += 1
        with _lock:
            rt.invocations += 1
        response = {"statusCode": 200, "executedVersion": "$LATEST"}
        if result.error is not None:
            response["functionError"] = "Unhandled"
        batch.last_response = response
        failed_from = None
        if result.error is None and "ReportBatchItemFailures" in (esm.function_response_types or []):
            failed_from = _partial_failure(result.payload, batch.records)
        if result.error is None and failed_from is None:
            for record in batch.records:
                _advance(rt, shard_id, record)
            with _lock:
                rt.batches_ok += 1
                rt.records_ok += len(batch.records)
            _set_result(esm, rt, "OK")
            pending.pop(0)
            continue
        _set_result(esm, rt, "PROBLEM: Function call failed")
        if failed_from is not None and failed_from > 0:
            # The records before the lowest failed one are done.
            for record in batch.records[:failed_from]:
                _advance(rt, shard_id, record)
            with _lock:
                rt.records_ok += failed_from
            batch.records = batch.records[failed_from:]
        elif esm.bisect_on_error and len(batch.records) > 1 and not failed_from:
            half = len(batch.records) // 2
            pending[0:1] = [
                Batch(batch.records[:half], retries=batch.retries),
                Batch(batch.records[half:], retries=batch.retries),
            ]
            with _lock:
                rt.bisections += 1
            continue
        batch.retries += 1
        limit = esm.max_retry_attempts if esm.max_retry_attempts is not None else -1
        if limit != -1 and batch.retries > limit:
            _give_up(esm, rt, stream, shard_id, batch, "RetryAttemptsExhausted")
            pending.pop(0)
            continue
        _stop.wait(RETRY_DELAY)


def _partial_failure(payload: bytes, records: list) -> int | None:
    """Index of the lowest failed record, 0 for a whole-batch failure, None for success."""
    try:
        response = json.loads(payload or b"null")
    except ValueError:
        return None
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    if not isinstance(failures, list):
        return 0
    positions = {str(r.sequence_number): i for i, r in enumerate(records)}
    lowest = None
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident not in positions:
            return 0  # empty, null or unknown identifier: the whole batch failed
        lowest = positions[ident] if lowest is None else min(lowest, positions[ident])
    return lowest


def _split_expired(esm: Any, stream: Any, records: list) -> tuple[list, list]:
    limit = esm.max_record_age if esm.max_record_age not in (None, -1) else None
    if limit is None:
        limit = float(getattr(stream, "retention_period_hours", 24) or 24) * 3600
    now = time.time()
    cut = 0
    while cut < len(records) and now - records[cut].created_at > float(limit):
        cut += 1
    return records[:cut], records[cut:]


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event_record(esm: Any, stream: Any, shard_id: str, record: Any, fn: Any) -> dict:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": str(record.sequence_number),
            "data": record.data if isinstance(record.data, str) else base64.b64encode(record.data).decode(),
            "approximateArrivalTimestamp": round(record.created_at, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record.sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": fn.role,
        "awsRegion": stream.region,
        "eventSourceARN": stream.arn,
    }


def invocation_record(esm: Any, stream: Any, shard_id: str, batch: Batch, condition: str) -> dict:
    """AWS's on-failure invocation record for a discarded Kinesis batch."""
    first, last = batch.records[0], batch.records[-1]
    return {
        "requestContext": {
            "requestId": str(uuidlib.uuid4()),
            "functionArn": esm.function_arn,
            "condition": condition,
            "approximateInvokeCount": batch.invocations,
        },
        "responseContext": batch.last_response or {"statusCode": 0, "executedVersion": "$LATEST", "functionError": ""},
        "version": "1.0",
        "timestamp": _iso(time.time()),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": str(first.sequence_number),
            "endSequenceNumber": str(last.sequence_number),
            "approximateArrivalOfFirstRecord": _iso(first.created_at),
            "approximateArrivalOfLastRecord": _iso(last.created_at),
            "batchSize": len(batch.records),
            "streamArn": stream.arn,
        },
    }


def _give_up(esm: Any, rt: MappingRuntime, stream: Any, shard_id: str, batch: Batch, condition: str) -> None:
    for record in batch.records:
        _advance(rt, shard_id, record)
    with _lock:
        rt.batches_given_up += 1
        rt.records_given_up += len(batch.records)
    note(
        f"event source mapping {esm.uuid}: {len(batch.records)} record(s) of {shard_id} "
        f"({batch.records[0].sequence_number}..{batch.records[-1].sequence_number}) discarded: {condition}"
    )
    destination = ((esm.destination_config or {}).get("OnFailure") or {}).get("Destination")
    if not destination:
        return
    body = json.dumps(invocation_record(esm, stream, shard_id, batch, condition))
    try:
        _send(destination, body)
        with _lock:
            rt.failure_records_sent += 1
    except Exception as error:  # noqa: BLE001 - a missing queue/topic must not stop the shard
        note(f"event source mapping {esm.uuid}: cannot send the invocation record to {destination}: {error!r}")


def _send(destination: str, body: str) -> None:
    parts = destination.split(":")
    service, region, account = parts[2], parts[3], parts[4]
    if service == "sqs":
        from moto.sqs.models import sqs_backends

        sqs_backends[account][region].send_message(parts[5], body)
    elif service == "sns":
        from moto.sns.models import sns_backends

        sns_backends[account][region].publish(body, arn=destination)
    else:
        raise ValueError(f"the emulator does not deliver to {service} destinations")


# -- emulator-only view ---------------------------------------------------------------


def snapshot() -> dict:
    """Per Kinesis mapping: state, counters and checkpoints (GET /iotreg-test/event-source-mappings)."""
    esm_mod = _esm_module()
    result = {}
    for esm in _mappings():
        if not esm_mod.is_kinesis(esm.event_source_arn):
            continue
        with _lock:
            rt = _runtimes.get(esm.uuid) or MappingRuntime(esm.uuid)
            entry = {
                "state": esm_mod.state_of(esm),
                "functionArn": esm.function_arn,
                "eventSourceArn": esm.event_source_arn,
                "lastProcessingResult": getattr(esm, "_iotreg_last_result", None) or "No records processed",
                "invocations": rt.invocations,
                "batchesOk": rt.batches_ok,
                "recordsOk": rt.records_ok,
                "batchesGivenUp": rt.batches_given_up,
                "recordsGivenUp": rt.records_given_up,
                "failureRecordsSent": rt.failure_records_sent,
                "bisections": rt.bisections,
                "inFlight": sorted(rt.busy),
                "checkpoints": {k: str(v) for k, v in sorted(rt.checkpoints.items())},
            }
        result[esm.uuid] = entry
    return {"poller": "running" if running() else "stopped", "mappings": result}
