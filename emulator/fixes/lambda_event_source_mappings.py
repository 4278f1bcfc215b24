"""Fix: Lambda event source mappings on Kinesis data streams answer as AWS does.

AWS behaviour restored (Lambda developer guide, "Lambda parameters for Amazon
Kinesis Data Streams event source mappings",
https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-parameters.html,
and the API reference of CreateEventSourceMapping / UpdateEventSourceMapping,
https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html)
    * StartingPosition is required for a Kinesis stream (``TRIM_HORIZON``,
      ``LATEST`` or ``AT_TIMESTAMP`` with StartingPositionTimestamp).
    * Defaults: BatchSize 100 (1..10000), MaximumBatchingWindowInSeconds 0
      (0..300), ParallelizationFactor 1 (1..10), BisectBatchOnFunctionError
      false, MaximumRetryAttempts -1 (-1..10000, -1 = until the record
      expires), MaximumRecordAgeInSeconds -1 (-1 or 60..604800),
      TumblingWindowInSeconds 0, FunctionResponseTypes [] (only
      ``ReportBatchItemFailures``), DestinationConfig ``{"OnFailure": {}}``,
      Enabled true. Every one of them is returned by Create/Get/List/Update.
    * A new mapping is ``Creating`` (LastProcessingResult ``No records
      processed``, StateTransitionReason ``User action``) and becomes
      ``Enabled`` (or ``Disabled`` when created with Enabled=false); Update
      with Enabled=false answers ``Disabling`` then ``Disabled``, Enabled=true
      ``Enabling`` then ``Enabled``, any other change ``Updating``; Delete
      answers ``Deleting``.
    * A second mapping of the same stream to the same function:
      ResourceConflictException (409) naming the existing UUID.
    * CreateEventSourceMapping answers 202 (moto: 201).
    * Get / Update / Delete of an unknown UUID: ResourceNotFoundException (404).
    * ListEventSourceMappings filters by EventSourceArn and by FunctionName
      given as a name, an ARN or a partial ARN.
    * Out-of-range numbers: InvalidParameterValueException (400); a
      DestinationConfig.OnFailure.Destination that is not an SQS queue, SNS
      topic or S3 bucket ARN likewise.

What moto 5.2.1 does instead
    Defaults StartingPosition to TRIM_HORIZON instead of refusing; returns
    only the fields given (no defaults), ``State`` Enabled at once,
    StateTransitionReason ``User initiated``, no LastProcessingResult;
    accepts any number; lets the same stream+function be mapped twice;
    Update/Delete of an unknown UUID answer 404 with body ``{}`` and no error
    type; ListEventSourceMappings compares FunctionName with the text the
    mapping was created with; and every PutRecord on the stream invokes each
    mapped function synchronously, one record per invocation, inside the
    PutRecord request (Docker-only in moto; with the emulator's runtime the
    producer would wait for the handler). That push is removed here: the
    emulator's poller (emulator/datapath/stream_poller.py) runs the mappings.

Mappings of SQS queues and DynamoDB streams keep moto's behaviour.

Kinesis' Shard.put_record is made thread-safe (one lock, ``KINESIS_LOCK``,
also held by the poller while it reads a shard): moto computes the next
sequence number from the last one without a lock.

``State`` follows the clock: a transitional state lasts
``IOTREG_EMULATOR_ESM_TRANSITION_SECONDS`` (default 0.5 s) from the request.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

from ._util import patch

KINESIS_LOCK = threading.RLock()

STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
RESPONSE_TYPES = ("ReportBatchItemFailures",)
_DESTINATION = re.compile(r"^arn:[^:]+:(sqs|sns|s3):[^:]*:[^:]*:.+$")

# name -> (minimum, maximum) as the Kinesis parameters page lists them.
_RANGES = {
    "BatchSize": (1, 10000),
    "MaximumBatchingWindowInSeconds": (0, 300),
    "ParallelizationFactor": (1, 10),
    "MaximumRetryAttempts": (-1, 10000),
    "MaximumRecordAgeInSeconds": (-1, 604800),
    "TumblingWindowInSeconds": (0, 900),
}


def transition_seconds() -> float:
    try:
        return max(float(os.environ.get("IOTREG_EMULATOR_ESM_TRANSITION_SECONDS", "0.5")), 0.0)
    except ValueError:
        return 0.5


def is_kinesis(arn: Any) -> bool:
    parts = str(arn or "").split(":")
    return len(parts) >= 6 and parts[2] == "kinesis" and parts[5].startswith("stream/")


def _error(code: str, message: str, status: int):
    from moto.awslambda.exceptions import LambdaClientError

    error = LambdaClientError(code, message)
    error.code = status
    return error


def _invalid(message: str):
    return _error("InvalidParameterValueException", message, 400)


def _not_found():
    return _error("ResourceNotFoundException", "The resource you requested does not exist.", 404)


def validate(spec: dict, creating: bool) -> None:
    """AWS's checks of the Kinesis parameters; raises InvalidParameterValueException."""
    for name, (low, high) in _RANGES.items():
        if name not in spec or spec[name] is None:
            continue
        value = spec[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise _invalid(f"{name} {value} is out of range: valid values are {low} to {high}")
    age = spec.get("MaximumRecordAgeInSeconds")
    if isinstance(age, int) and 0 <= age < 60:
        raise _invalid(
            "MaximumRecordAgeInSeconds must be -1 (infinite) or between 60 and 604800, got " + str(age)
        )
    if creating:
        position = spec.get("StartingPosition")
        if not position:
            raise _invalid("StartingPosition is required for a Kinesis event source (TRIM_HORIZON, LATEST or AT_TIMESTAMP)")
        if position not in STARTING_POSITIONS:
            raise _invalid(f"Unsupported starting position {position!r}: use TRIM_HORIZON, LATEST or AT_TIMESTAMP")
        if position == "AT_TIMESTAMP" and spec.get("StartingPositionTimestamp") is None:
            raise _invalid("StartingPositionTimestamp is required with StartingPosition AT_TIMESTAMP")
    types = spec.get("FunctionResponseTypes")
    if types is not None:
        if not isinstance(types, list) or any(t not in RESPONSE_TYPES for t in types):
            raise _invalid(f"FunctionResponseTypes may only contain ReportBatchItemFailures, got {types!r}")
    config = spec.get("DestinationConfig")
    if config is not None:
        if not isinstance(config, dict):
            raise _invalid("DestinationConfig must be an object")
        on_failure = config.get("OnFailure") or {}
        destination = on_failure.get("Destination") if isinstance(on_failure, dict) else None
        if destination and not _DESTINATION.match(str(destination)):
            raise _invalid(
                f"The provided destination config DestinationConfig(onSuccess=null, onFailure=OnFailure("
                f"destination={destination})) is invalid: the destination must be an SQS queue, SNS topic or S3 bucket ARN"
            )
    if "BisectBatchOnFunctionError" in spec and not isinstance(spec["BisectBatchOnFunctionError"], bool):
        raise _invalid("BisectBatchOnFunctionError must be a boolean")
    if "Enabled" in spec and not isinstance(spec["Enabled"], bool):
        raise _invalid("Enabled must be a boolean")


# -- state --------------------------------------------------------------------


def set_phase(esm: Any, transitional: str | None) -> None:
    """Start a transitional state (Creating, Enabling, ...) lasting transition_seconds()."""
    esm._iotreg_phase = (transitional, time.monotonic() + transition_seconds()) if transitional else None
    esm.last_modified = round(time.time(), 3)


def state_of(esm: Any) -> str:
    phase = getattr(esm, "_iotreg_phase", None)
    if phase and phase[0] and time.monotonic() < phase[1]:
        return phase[0]
    return "Enabled" if esm.enabled else "Disabled"


def polled(esm: Any) -> bool:
    """Whether the poller reads the stream for this mapping now (Enabled or Updating)."""
    return bool(esm.enabled) and state_of(esm) in ("Enabled", "Updating")


def configuration(esm: Any) -> dict:
    """The mapping as AWS returns it for a Kinesis source."""
    destination = esm.destination_config if isinstance(esm.destination_config, dict) else {}
    on_failure = destination.get("OnFailure") if isinstance(destination.get("OnFailure"), dict) else {}
    config: dict[str, Any] = {
        "UUID": esm.uuid,
        "StartingPosition": esm.starting_position,
    }
    if esm.starting_position == "AT_TIMESTAMP" and esm.starting_position_timestamp is not None:
        config["StartingPositionTimestamp"] = esm.starting_position_timestamp
    config.update(
        {
            "BatchSize": esm.batch_size,
            "MaximumBatchingWindowInSeconds": _or(esm.max_batch_window, 0),
            "ParallelizationFactor": _or(esm.parallelization_factor, 1),
            "EventSourceArn": esm.event_source_arn,
            "FunctionArn": esm.function_arn,
            "LastModified": esm.last_modified,
            "LastProcessingResult": getattr(esm, "_iotreg_last_result", None) or "No records processed",
            "State": state_of(esm),
            "StateTransitionReason": "User action",
            "DestinationConfig": {"OnFailure": dict(on_failure)},
            "MaximumRecordAgeInSeconds": _or(esm.max_record_age, -1),
            "BisectBatchOnFunctionError": bool(esm.bisect_on_error),
            "MaximumRetryAttempts": _or(esm.max_retry_attempts, -1),
            "TumblingWindowInSeconds": _or(esm.tumbling_window, 0),
            "FunctionResponseTypes": list(esm.function_response_types or []),
            "EventSourceMappingArn": esm.arn,
        }
    )
    if esm.filter_criteria:
        config["FilterCriteria"] = esm.filter_criteria
    return config


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _function_name(name_or_arn: str) -> str:
    """The function's name in a name, ARN or partial ARN (``123456789012:function:f``)."""
    text = str(name_or_arn or "")
    if ":function:" in text:
        text = text.split(":function:", 1)[1]
    return text.split(":", 1)[0]


# -- moto patches ---------------------------------------------------------------


def _find(backend: Any, uuid: str) -> Any:
    esm = backend.get_event_source_mapping(uuid)
    if esm is None:
        raise _not_found()
    return esm


def _create(original):
    def create_event_source_mapping(self):
        spec = self.json_body
        if not is_kinesis(spec.get("EventSourceArn")):
            return original(self)
        validate(spec, creating=True)
        backend = self.backend
        func = backend.get_function(spec.get("FunctionName", ""))  # 404 for a missing function
        for other in list(backend._event_source_mappings.values()):
            if other.event_source_arn == spec["EventSourceArn"] and _function_name(other.function_arn) == func.function_name:
                raise _error(
                    "ResourceConflictException",
                    f"The event source arn ({spec['EventSourceArn']}) and function ({func.function_name}) "
                    f"provided mapping already exists. Please update or delete the existing mapping "
                    f"with UUID {other.uuid}",
                    409,
                )
        with KINESIS_LOCK:
            esm = backend.create_event_source_mapping(dict(spec))
            # Where LATEST starts: after the records already in each shard now.
            esm._iotreg_latest = _shard_heads(esm.event_source_arn)
        set_phase(esm, "Creating")
        return 202, {"status": 202}, json.dumps(configuration(esm))

    return create_event_source_mapping


def _shard_heads(stream_arn: str) -> dict[str, int]:
    from moto.kinesis.models import kinesis_backends

    parts = stream_arn.split(":")
    try:
        stream = kinesis_backends[parts[4]][parts[3]].streams.get(parts[5].split("/", 1)[1])
    except Exception:  # noqa: BLE001
        return {}
    if stream is None:
        return {}
    return {shard_id: shard.get_max_sequence_number() for shard_id, shard in stream.shards.items()}


def _get(original):
    def get_event_source_mapping(self):
        uuid = self.path.rstrip("/").split("/")[-1]
        esm = _find(self.backend, uuid)
        if not is_kinesis(esm.event_source_arn):
            return original(self)
        return 200, {}, json.dumps(configuration(esm))

    return get_event_source_mapping


_UPDATABLE = {
    "FunctionName",
    "BatchSize",
    "Enabled",
    "FilterCriteria",
    "MaximumBatchingWindowInSeconds",
    "ParallelizationFactor",
    "DestinationConfig",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "FunctionResponseTypes",
}


def _update(original):
    def update_event_source_mapping(self):
        uuid = self.path.rstrip("/").split("/")[-1]
        esm = _find(self.backend, uuid)
        if not is_kinesis(esm.event_source_arn):
            return original(self)
        spec = {k: v for k, v in self.json_body.items() if k in _UPDATABLE}
        validate(spec, creating=False)
        was_enabled = bool(esm.enabled)
        self.backend.update_event_source_mapping(uuid, spec)
        if "TumblingWindowInSeconds" in spec:
            esm.tumbling_window = spec["TumblingWindowInSeconds"]
        if bool(esm.enabled) != was_enabled:
            set_phase(esm, "Enabling" if esm.enabled else "Disabling")
        else:
            set_phase(esm, "Updating")
        return 202, {"status": 202}, json.dumps(configuration(esm))

    return update_event_source_mapping


def _delete(original):
    def delete_event_source_mapping(self):
        uuid = self.path.rstrip("/").split("/")[-1]
        esm = _find(self.backend, uuid)
        if not is_kinesis(esm.event_source_arn):
            return original(self)
        self.backend.delete_event_source_mapping(uuid)
        esm._iotreg_deleted = True
        config = configuration(esm)
        config["State"] = "Deleting"
        return 202, {"status": 202}, json.dumps(config)

    return delete_event_source_mapping


def _list(original):
    def list_event_source_mappings(self):
        source = self.querystring.get("EventSourceArn", [None])[0]
        function = self.querystring.get("FunctionName", [None])[0]
        mappings = list(self.backend._event_source_mappings.values())
        if source:
            mappings = [m for m in mappings if m.event_source_arn == source]
        if function:
            wanted = _function_name(function)
            mappings = [m for m in mappings if _function_name(m.function_arn) == wanted]
        result = [configuration(m) if is_kinesis(m.event_source_arn) else m.get_configuration() for m in mappings]
        return 200, {}, json.dumps({"EventSourceMappings": result})

    return list_event_source_mappings


def _put_record(self, partition_key: str, explicit_hash_key: str, data: str):
    """moto's Stream.put_record without the synchronous push to mapped functions."""
    from moto.kinesis.exceptions import InvalidArgumentError

    with KINESIS_LOCK:
        shard = self.get_shard_for_key(partition_key, explicit_hash_key)
        if shard is None:  # moto's ranges leave out the very last hash key
            raise InvalidArgumentError("explicit_hash_key")
        sequence_number = shard.put_record(partition_key, data, explicit_hash_key)
    return sequence_number, shard.shard_id


def apply() -> None:
    from moto.awslambda.responses import LambdaResponse
    from moto.kinesis.models import Stream

    for name, factory in (
        ("create_event_source_mapping", _create),
        ("get_event_source_mapping", _get),
        ("update_event_source_mapping", _update),
        ("delete_event_source_mapping", _delete),
        ("list_event_source_mappings", _list),
    ):
        original = getattr(LambdaResponse, f"_emulator_orig_{name}", getattr(LambdaResponse, name))
        patch(LambdaResponse, name, factory(original))
    patch(Stream, "put_record", _put_record)
