"""Helpers shared by test_analytics_*.py: a recording Kinesis consumer and waiting."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request
import zipfile

WAIT = 15.0

LAMBDA_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)

# Prints one line per invocation: GOT [[shardId, partitionKey, sequenceNumber, data], ...]
# Raises for a record whose data has "poison": true (unless REPORT_ITEMS is set, then it
# reports that record as a batch item failure); no boto3 import, so an invocation is quick.
RECORDER = """
import base64, json, os

def handler(event, context):
    got = []
    poison = None
    for record in event["Records"]:
        data = json.loads(base64.b64decode(record["kinesis"]["data"]))
        shard = record["eventID"].split(":")[0]
        got.append([shard, record["kinesis"]["partitionKey"], record["kinesis"]["sequenceNumber"], data])
        if isinstance(data, dict) and data.get("poison") and poison is None:
            poison = record["kinesis"]["sequenceNumber"]
    print("GOT " + json.dumps(got))
    print("EVENT " + json.dumps({k: v for k, v in event["Records"][0].items() if k != "kinesis"}))
    if poison is not None:
        if os.environ.get("REPORT_ITEMS"):
            return {"batchItemFailures": [{"itemIdentifier": poison}]}
        raise ValueError("poison record " + poison)
    return {"batchItemFailures": []}
"""


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


def lambda_role(aws, name: str) -> str:
    return aws("iam").create_role(RoleName=f"{name}-fn", AssumeRolePolicyDocument=LAMBDA_TRUST)["Role"]["Arn"]


def recorder(aws, name: str, env: dict | None = None, timeout: int = 10) -> str:
    """A function running RECORDER; its ARN."""
    return aws("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=lambda_role(aws, name),
        Handler="recorder.handler",
        Code={"ZipFile": zip_of({"recorder.py": RECORDER})},
        Timeout=timeout,
        Environment={"Variables": env or {}},
    )["FunctionArn"]


def stream(aws, name: str, shards: int = 1) -> str:
    kinesis = aws("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    return kinesis.describe_stream(StreamName=name)["StreamDescription"]["StreamARN"]


def put(aws, stream_name: str, key: str, data: dict) -> str:
    return aws("kinesis").put_record(StreamName=stream_name, Data=json.dumps(data).encode(), PartitionKey=key)[
        "SequenceNumber"
    ]


def queue(aws, name: str) -> tuple[str, str]:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drain(aws, url: str) -> list[dict]:
    sqs = aws("sqs")
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def batches(aws, function_name: str) -> list[list]:
    """Every batch the recorder got, in the order the invocations were logged."""
    logs = aws("logs")
    try:
        events = []
        kwargs = {"logGroupName": f"/aws/lambda/{function_name}", "filterPattern": "GOT"}
        while True:
            page = logs.filter_log_events(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    events.sort(key=lambda e: (e["timestamp"], e["eventId"]))
    return [json.loads(e["message"][4:]) for e in events if e["message"].startswith("GOT ")]


def snapshot(emulator) -> dict:
    with urllib.request.urlopen(emulator.url + "/iotreg-test/event-source-mappings", timeout=5) as response:
        return json.loads(response.read())


def mapping_view(emulator, uuid: str) -> dict:
    return snapshot(emulator)["mappings"].get(uuid, {})


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def wait_idle(emulator, uuid: str, records_done: int, timeout: float = WAIT) -> dict:
    """Wait until the mapping has settled (no batch in flight) with ``records_done`` records
    processed or given up."""

    def done():
        view = mapping_view(emulator, uuid)
        total = view.get("recordsOk", 0) + view.get("recordsGivenUp", 0)
        return view if total >= records_done and not view.get("inFlight") else None

    return wait_for(done, timeout)


def b64(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()
