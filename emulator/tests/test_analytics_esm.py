"""Lambda event source mappings on Kinesis streams: the API as AWS answers it
(fix lambda_event_source_mappings) and the poller that runs them
(emulator/datapath/stream_poller.py), on a server of this module's own."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config

from analytics_support import (
    batches,
    drain,
    mapping_view,
    put,
    queue,
    recorder,
    snapshot,
    stream,
    wait_for,
    wait_idle,
)
from conftest import clients_of, http_status, start_emulator

TRANSITION = 0.3


@pytest.fixture(scope="module")
def emu():
    server = start_emulator(env={"IOTREG_EMULATOR_ESM_TRANSITION_SECONDS": str(TRANSITION)})
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def aws(emu):
    return clients_of(emu)


@pytest.fixture(scope="module")
def raw_lambda(emu):
    """A Lambda client that sends what it is given (botocore's own checks off), as the Rust SDK does."""
    return boto3.client(
        "lambda",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
    )


def enabled(aws, uuid):
    return wait_for(lambda: aws("lambda").get_event_source_mapping(UUID=uuid)["State"] == "Enabled", 5)


# -- the API ----------------------------------------------------------------------


def test_create_returns_aws_defaults_and_becomes_enabled(aws, name):
    lam = aws("lambda")
    fn = recorder(aws, name)
    arn = stream(aws, name)
    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")
    assert http_status_of(created) == 202  # AWS answers 202 Accepted (moto: 201)
    uuid = created["UUID"]
    expected = {
        "UUID": uuid,
        "StartingPosition": "LATEST",
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 0,
        "ParallelizationFactor": 1,
        "EventSourceArn": arn,
        "FunctionArn": fn,
        "LastProcessingResult": "No records processed",
        "State": "Creating",
        "StateTransitionReason": "User action",
        "DestinationConfig": {"OnFailure": {}},
        "MaximumRecordAgeInSeconds": -1,
        "BisectBatchOnFunctionError": False,
        "MaximumRetryAttempts": -1,
        "TumblingWindowInSeconds": 0,
        "FunctionResponseTypes": [],
        "EventSourceMappingArn": f"arn:aws:lambda:us-east-1:123456789012:event-source-mapping:{uuid}",
    }
    got = {k: v for k, v in created.items() if k not in ("ResponseMetadata", "LastModified")}
    assert got == expected
    assert "LastModified" in created
    time.sleep(TRANSITION + 0.1)
    fetched = lam.get_event_source_mapping(UUID=uuid)
    assert fetched["State"] == "Enabled"
    assert {k: v for k, v in fetched.items() if k not in ("ResponseMetadata", "LastModified", "State")} == {
        k: v for k, v in expected.items() if k != "State"
    }


def http_status_of(response):
    return response["ResponseMetadata"]["HTTPStatusCode"]


def test_every_field_round_trips_and_updates(aws, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    _, qarn = queue(aws, name)
    created = lam.create_event_source_mapping(
        EventSourceArn=arn,
        FunctionName=name,
        StartingPosition="TRIM_HORIZON",
        BatchSize=25,
        MaximumBatchingWindowInSeconds=2,
        BisectBatchOnFunctionError=True,
        MaximumRetryAttempts=3,
        MaximumRecordAgeInSeconds=3600,
        DestinationConfig={"OnFailure": {"Destination": qarn}},
        FunctionResponseTypes=["ReportBatchItemFailures"],
        Enabled=False,
    )
    uuid = created["UUID"]
    fields = {
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": 25,
        "MaximumBatchingWindowInSeconds": 2,
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": 3,
        "MaximumRecordAgeInSeconds": 3600,
        "DestinationConfig": {"OnFailure": {"Destination": qarn}},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    for source in (created, lam.get_event_source_mapping(UUID=uuid)):
        assert {k: source[k] for k in fields} == fields
    # Created disabled: Creating, then Disabled.
    wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled", 5)

    updated = lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    assert updated["State"] == "Enabling"
    enabled(aws, uuid)
    updated = lam.update_event_source_mapping(UUID=uuid, BatchSize=7, MaximumRetryAttempts=-1)
    assert updated["State"] == "Updating"
    assert (updated["BatchSize"], updated["MaximumRetryAttempts"]) == (7, -1)
    enabled(aws, uuid)
    updated = lam.update_event_source_mapping(UUID=uuid, Enabled=False)
    assert updated["State"] == "Disabling"
    wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled", 5)
    again = lam.get_event_source_mapping(UUID=uuid)
    assert (again["BatchSize"], again["MaximumRetryAttempts"], again["MaximumRecordAgeInSeconds"]) == (7, -1, 3600)

    deleted = lam.delete_event_source_mapping(UUID=uuid)
    assert deleted["State"] == "Deleting"
    assert http_status_of(deleted) == 202
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=uuid)


def test_unknown_uuid_is_resource_not_found(aws):
    lam = aws("lambda")
    missing = "00000000-0000-0000-0000-000000000000"
    for call in (
        lambda: lam.get_event_source_mapping(UUID=missing),
        lambda: lam.update_event_source_mapping(UUID=missing, BatchSize=5),
        lambda: lam.delete_event_source_mapping(UUID=missing),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as excinfo:
            call()
        assert http_status(excinfo) == 404


def test_duplicate_mapping_is_a_conflict(aws, name):
    lam = aws("lambda")
    fn = recorder(aws, name)
    arn = stream(aws, name)
    first = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")
    with pytest.raises(lam.exceptions.ResourceConflictException) as excinfo:
        lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=fn, StartingPosition="TRIM_HORIZON")
    assert http_status(excinfo) == 409
    assert first["UUID"] in str(excinfo.value)
    # Another function on the same stream is fine.
    recorder(aws, name + "b")
    lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name + "b", StartingPosition="LATEST")


@pytest.mark.parametrize(
    "extra",
    [
        {},  # no StartingPosition
        {"StartingPosition": "SOMEWHERE"},
        {"StartingPosition": "AT_TIMESTAMP"},  # without StartingPositionTimestamp
        {"StartingPosition": "LATEST", "BatchSize": 0},
        {"StartingPosition": "LATEST", "BatchSize": 10001},
        {"StartingPosition": "LATEST", "MaximumBatchingWindowInSeconds": 301},
        {"StartingPosition": "LATEST", "MaximumRetryAttempts": -2},
        {"StartingPosition": "LATEST", "MaximumRetryAttempts": 10001},
        {"StartingPosition": "LATEST", "MaximumRecordAgeInSeconds": 59},
        {"StartingPosition": "LATEST", "MaximumRecordAgeInSeconds": 604801},
        {"StartingPosition": "LATEST", "ParallelizationFactor": 11},
        {"StartingPosition": "LATEST", "FunctionResponseTypes": ["Everything"]},
        {"StartingPosition": "LATEST", "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:lambda:us-east-1:123456789012:function:x"}}},
    ],
)
def test_invalid_parameters_are_refused(aws, raw_lambda, name, extra):
    recorder(aws, name)
    arn = stream(aws, name)
    with pytest.raises(raw_lambda.exceptions.InvalidParameterValueException) as excinfo:
        raw_lambda.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, **extra)
    assert http_status(excinfo) == 400
    assert aws("lambda").list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"] == []


def test_list_filters_by_stream_and_function(aws, name):
    lam = aws("lambda")
    fn_a = recorder(aws, name + "a")
    recorder(aws, name + "b")
    s1, s2 = stream(aws, name + "1"), stream(aws, name + "2")
    a1 = lam.create_event_source_mapping(EventSourceArn=s1, FunctionName=name + "a", StartingPosition="LATEST")["UUID"]
    a2 = lam.create_event_source_mapping(EventSourceArn=s2, FunctionName=fn_a, StartingPosition="LATEST")["UUID"]
    b1 = lam.create_event_source_mapping(EventSourceArn=s1, FunctionName=name + "b", StartingPosition="LATEST")["UUID"]

    def uuids(**kwargs):
        return sorted(m["UUID"] for m in lam.list_event_source_mappings(**kwargs)["EventSourceMappings"])

    assert uuids(EventSourceArn=s1) == sorted([a1, b1])
    assert uuids(FunctionName=name + "a") == sorted([a1, a2])
    assert uuids(FunctionName=fn_a) == sorted([a1, a2])
    assert uuids(FunctionName=f"123456789012:function:{name}a") == sorted([a1, a2])
    assert uuids(EventSourceArn=s1, FunctionName=name + "b") == [b1]
    listed = lam.list_event_source_mappings(EventSourceArn=s2)["EventSourceMappings"][0]
    assert listed == {k: v for k, v in lam.get_event_source_mapping(UUID=a2).items() if k != "ResponseMetadata"}


def test_put_record_does_not_invoke_synchronously(aws, emu, name):
    """moto invoked every mapped function inside PutRecord; the emulator's PutRecord only stores."""
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, StartingPosition="TRIM_HORIZON", Enabled=False
    )["UUID"]
    put(aws, name, "k", {"n": 1})
    time.sleep(0.5)
    assert batches(aws, name) == []
    assert mapping_view(emu, uuid).get("invocations", 0) == 0


# -- the poller -------------------------------------------------------------------------


def test_batches_order_latest_and_trim_horizon(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name + "t")
    recorder(aws, name + "l")
    arn = stream(aws, name, shards=2)
    keys = ["alpha", "bravo", "charlie", "delta"]
    early = [put(aws, name, keys[i % 4], {"n": i}) for i in range(4)]
    trim = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name + "t", StartingPosition="TRIM_HORIZON", BatchSize=3
    )["UUID"]
    latest = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name + "l", StartingPosition="LATEST", BatchSize=3
    )["UUID"]
    for i in range(4, 14):
        put(aws, name, keys[i % 4], {"n": i})
    wait_idle(emu, trim, 14)
    wait_idle(emu, latest, 10)

    got_trim = batches(aws, name + "t")
    got_latest = batches(aws, name + "l")
    assert all(1 <= len(b) <= 3 for b in got_trim + got_latest)
    assert all(len({r[0] for r in b}) == 1 for b in got_trim + got_latest)  # one shard per batch
    records_trim = [r for b in got_trim for r in b]
    assert sorted(r[3]["n"] for r in records_trim) == list(range(14))
    assert sorted(r[3]["n"] for b in got_latest for r in b) == list(range(4, 14))
    for key in keys:  # publish order kept per partition key
        ns = [r[3]["n"] for r in records_trim if r[1] == key]
        assert ns == sorted(ns) and ns
    assert len(early) == 4
    view = mapping_view(emu, trim)
    assert view["lastProcessingResult"] == "OK"
    assert lam.get_event_source_mapping(UUID=trim)["LastProcessingResult"] == "OK"
    assert sum(int(v) for v in view["checkpoints"].values()) == 14  # moto numbers records 1.. per shard


def test_event_has_aws_kinesis_format(aws, emu, name):
    lam = aws("lambda")
    fn = recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")["UUID"]
    enabled(aws, uuid)
    seq = put(aws, name, "dev-1", {"temperature": 22.4})
    wait_idle(emu, uuid, 1)
    logs = aws("logs").filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="EVENT")["events"]
    event = json.loads(logs[0]["message"][len("EVENT ") :])
    role = aws("lambda").get_function(FunctionName=name)["Configuration"]["Role"]
    assert event == {
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": role,
        "awsRegion": "us-east-1",
        "eventSourceARN": arn,
    }
    assert batches(aws, name) == [[["shardId-000000000000", "dev-1", seq, {"temperature": 22.4}]]]
    assert fn.endswith(name)


def test_batching_window_gathers_records(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST", BatchSize=50, MaximumBatchingWindowInSeconds=1
    )["UUID"]
    enabled(aws, uuid)
    started = time.monotonic()
    for i in range(5):
        put(aws, name, "k", {"n": i})
        time.sleep(0.05)
    wait_idle(emu, uuid, 5)
    assert time.monotonic() - started >= 0.9
    assert [[r[3]["n"] for r in b] for b in batches(aws, name)] == [[0, 1, 2, 3, 4]]


def test_bisect_isolates_the_poison_record(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    url, qarn = queue(aws, name)
    uuid = lam.create_event_source_mapping(
        EventSourceArn=arn,
        FunctionName=name,
        StartingPosition="TRIM_HORIZON",
        BatchSize=8,
        BisectBatchOnFunctionError=True,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": qarn}},
        Enabled=False,
    )["UUID"]
    seqs = [put(aws, name, "dev", {"n": i, "poison": i == 5}) for i in range(8)]
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    view = wait_idle(emu, uuid, 8)
    assert (view["recordsOk"], view["recordsGivenUp"], view["batchesGivenUp"]) == (7, 1, 1)

    failures = drain(aws, url)
    assert len(failures) == 1
    record = failures[0]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["functionArn"].endswith(f":function:{name}")
    assert record["requestContext"]["approximateInvokeCount"] == 2  # first try + MaximumRetryAttempts 1
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["version"] == "1.0"
    info = record["KinesisBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == seqs[5]
    assert info["batchSize"] == 1
    assert info["shardId"] == "shardId-000000000000"
    assert info["streamArn"] == arn
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")

    got = batches(aws, name)
    # 8 -> [0..3] ok, [4..7] fails -> [4,5] fails -> [4] ok, [5] fails twice, [6,7] ok
    assert [[r[3]["n"] for r in b] for b in got] == [
        list(range(8)),
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [5],
        [6, 7],
    ]
    # The stream is not stopped: later records still flow.
    put(aws, name, "dev", {"n": 8})
    wait_idle(emu, uuid, 9)
    assert [r[3]["n"] for r in batches(aws, name)[-1]] == [8]
    assert drain(aws, url) == []


def test_retries_without_bisect_give_up_the_whole_batch(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    url, qarn = queue(aws, name)
    uuid = lam.create_event_source_mapping(
        EventSourceArn=arn,
        FunctionName=name,
        StartingPosition="TRIM_HORIZON",
        BatchSize=3,
        MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": qarn}},
        Enabled=False,
    )["UUID"]
    seqs = [put(aws, name, "dev", {"n": i, "poison": i == 1}) for i in range(3)]
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    view = wait_idle(emu, uuid, 3)
    assert (view["invocations"], view["recordsGivenUp"], view["bisections"]) == (3, 3, 0)
    [record] = drain(aws, url)
    assert record["requestContext"]["approximateInvokeCount"] == 3
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (seqs[0], seqs[2], 3)
    assert lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == "PROBLEM: Function call failed"
    put(aws, name, "dev", {"n": 3})
    wait_idle(emu, uuid, 4)
    assert [r[3]["n"] for r in batches(aws, name)[-1]] == [3]
    assert lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == "OK"


def test_report_batch_item_failures_retries_from_the_failed_record(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name, env={"REPORT_ITEMS": "1"})
    arn = stream(aws, name)
    url, qarn = queue(aws, name)
    uuid = lam.create_event_source_mapping(
        EventSourceArn=arn,
        FunctionName=name,
        StartingPosition="TRIM_HORIZON",
        BatchSize=5,
        MaximumRetryAttempts=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig={"OnFailure": {"Destination": qarn}},
        Enabled=False,
    )["UUID"]
    seqs = [put(aws, name, "dev", {"n": i, "poison": i == 2}) for i in range(5)]
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    wait_idle(emu, uuid, 5)
    assert [[r[3]["n"] for r in b] for b in batches(aws, name)] == [[0, 1, 2, 3, 4], [2, 3, 4]]
    [record] = drain(aws, url)
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (seqs[2], seqs[4], 3)


def test_disabled_mapping_stops_and_resumes(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")["UUID"]
    enabled(aws, uuid)
    put(aws, name, "k", {"n": 0})
    wait_idle(emu, uuid, 1)
    lam.update_event_source_mapping(UUID=uuid, Enabled=False)
    put(aws, name, "k", {"n": 1})
    time.sleep(0.8)
    assert len(batches(aws, name)) == 1
    assert mapping_view(emu, uuid)["invocations"] == 1
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    wait_idle(emu, uuid, 2)
    assert [[r[3]["n"] for r in b] for b in batches(aws, name)] == [[0], [1]]


def test_deleted_mapping_stops(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")["UUID"]
    enabled(aws, uuid)
    put(aws, name, "k", {"n": 0})
    wait_idle(emu, uuid, 1)
    lam.delete_event_source_mapping(UUID=uuid)
    put(aws, name, "k", {"n": 1})
    time.sleep(0.8)
    assert [[r[3]["n"] for r in b] for b in batches(aws, name)] == [[0]]
    assert uuid not in snapshot(emu)["mappings"]


def test_missing_function_is_a_problem_until_it_is_back(aws, emu, name):
    lam = aws("lambda")
    recorder(aws, name)
    arn = stream(aws, name)
    uuid = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, StartingPosition="LATEST")["UUID"]
    enabled(aws, uuid)
    lam.delete_function(FunctionName=name)
    put(aws, name, "k", {"n": 0})
    wait_for(lambda: lam.get_event_source_mapping(UUID=uuid)["LastProcessingResult"] == "PROBLEM: Function not found", 5)
    assert mapping_view(emu, uuid)["invocations"] == 0
    aws("iam").delete_role(RoleName=f"{name}-fn")
    recorder(aws, name)
    wait_idle(emu, uuid, 1)
    assert [[r[3]["n"] for r in b] for b in batches(aws, name)] == [[0]]


def test_poller_endpoint_reports_the_poller(emu):
    view = snapshot(emu)
    assert view["poller"] == "running"
    assert isinstance(view["mappings"], dict)
