"""The topic rule kinesis action (emulator/datapath/kinesis_action.py, iam_eval.py):
in-process units, then iot-data Publish -> rule -> stream -> mapping -> function on a
server of this module's own, and the action's refusals."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from analytics_support import batches, recorder, stream, wait_idle
from conftest import clients_of, start_emulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datapath import iam_eval, iotsql, kinesis_action  # noqa: E402

IOT_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)
LAMBDA_TRUST = IOT_TRUST.replace("iot.amazonaws.com", "lambda.amazonaws.com")
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


# -- in-process ---------------------------------------------------------------------------


def test_substitution_templates():
    message = iotsql.Message("sensor/temperature/dev-7", {"device": "x", "t": 22.5, "nested": {"a": 1}}, 1700000000123)
    assert kinesis_action.substitute("${topic(3)}", message) == "dev-7"
    assert kinesis_action.substitute("${topic()}", message) == "sensor/temperature/dev-7"
    assert kinesis_action.substitute("p-${device}-${t}", message) == "p-x-22.5"
    assert kinesis_action.substitute("${nested}", message) == '{"a":1}'
    assert kinesis_action.substitute("${timestamp()}", message) == "1700000000123"
    assert kinesis_action.substitute("${missing}", message) == ""
    assert kinesis_action.substitute("plain", message) == "plain"
    first = kinesis_action.substitute("${newuuid()}", message)
    second = kinesis_action.substitute("${newuuid()}", message)
    assert re.fullmatch(UUID_RE, first) and re.fullmatch(UUID_RE, second) and first != second
    with pytest.raises(kinesis_action.TemplateError):
        kinesis_action.substitute("${upper(device)}", message)
    with pytest.raises(kinesis_action.TemplateError):
        kinesis_action.substitute("${}", message)


STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/telemetry"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.mark.parametrize(
    "documents, allowed",
    [
        ([policy({"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": STREAM})], True),
        ([policy({"Effect": "Allow", "Action": ["kinesis:Put*"], "Resource": "arn:aws:kinesis:*:*:stream/tele*"})], True),
        ([policy({"Effect": "Allow", "Action": "KINESIS:PUTRECORD", "Resource": "*"})], True),
        ([policy({"Effect": "Allow", "Action": "*", "Resource": "*"})], True),
        ([policy({"Effect": "Allow", "NotAction": "kinesis:DeleteStream", "Resource": STREAM})], True),
        ([policy({"Effect": "Allow", "Action": "kinesis:PutRecords", "Resource": STREAM})], False),
        ([policy({"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": STREAM + "-other"})], False),
        ([policy({"Effect": "Allow", "Action": "kinesis:PutRecord", "NotResource": STREAM})], False),
        ([policy({"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": STREAM, "Condition": {"Bool": {"aws:SecureTransport": "true"}}})], False),
        (
            [
                policy({"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}),
                policy({"Effect": "Deny", "Action": "kinesis:PutRecord", "Resource": STREAM}),
            ],
            False,
        ),
        ([], False),
    ],
)
def test_iam_evaluation(documents, allowed):
    assert iam_eval.evaluate(documents, "kinesis:PutRecord", STREAM)[0] is allowed


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu():
    server = start_emulator(env={"IOTREG_EMULATOR_ESM_TRANSITION_SECONDS": "0.1"})
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def aws(emu):
    return clients_of(emu)


def iot_role(aws, name, trust=IOT_TRUST, inline=None, managed=None):
    iam = aws("iam")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    if inline is not None:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=inline)
    if managed is not None:
        policy_arn = iam.create_policy(PolicyName=f"{name}-m", PolicyDocument=managed)["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    return arn


def put_record_policy(stream_arn):
    return policy({"Effect": "Allow", "Action": "kinesis:PutRecord", "Resource": stream_arn})


def kinesis_rule(aws, name, stream_name, role_arn, partition_key="${topic(3)}", sql=None):
    aws("iot").create_topic_rule(
        ruleName=name,
        topicRulePayload={
            "sql": sql or f"SELECT *, topic(3) AS device, timestamp() AS aws_timestamp FROM '{name}/temperature/+'",
            "awsIotSqlVersion": "2016-03-23",
            "ruleDisabled": False,
            "actions": [{"kinesis": {"roleArn": role_arn, "streamName": stream_name, "partitionKey": partition_key}}],
        },
    )


def stream_records(aws, stream_name):
    kinesis = aws("kinesis")
    found = []
    for shard in kinesis.describe_stream(StreamName=stream_name)["StreamDescription"]["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator)["Records"]:
            found.append((record["PartitionKey"], json.loads(record["Data"])))
    return found


def test_publish_rule_stream_mapping_function(aws, emu, name):
    stream_arn = stream(aws, name, shards=2)
    role = iot_role(aws, name, managed=put_record_policy(stream_arn))
    kinesis_rule(aws, name, name, role)
    recorder(aws, name + "fn")
    uuid = aws("lambda").create_event_source_mapping(
        EventSourceArn=stream_arn, FunctionName=name + "fn", StartingPosition="LATEST", BatchSize=10
    )["UUID"]
    data = aws("iot-data")
    sent = []
    for i in range(6):
        device = f"sensor-000{i % 2}"
        reading = {"temperature": 20 + i, "humidity": 45, "device": "ignored", "battery_level": 87}
        data.publish(topic=f"{name}/temperature/{device}", qos=1, payload=json.dumps(reading).encode())
        sent.append((device, 20 + i))
    wait_idle(emu, uuid, 6)
    got = [r for b in batches(aws, name + "fn") for r in b]
    assert sorted((r[1], r[3]["temperature"]) for r in got) == sorted(sent)
    for device in ("sensor-0000", "sensor-0001"):  # partition key = the device; its order kept
        temps = [r[3]["temperature"] for r in got if r[1] == device]
        assert temps == sorted(temps) and len(temps) == 3
    for _, key, _, record in got:
        assert record["device"] == key  # SELECT's topic(3) AS device replaced the payload's
        assert isinstance(record["aws_timestamp"], int)
        assert record["humidity"] == 45 and record["battery_level"] == 87


def test_refusals_write_nothing(aws, emu, name):
    good_arn = stream(aws, name + "good")
    other_arn = stream(aws, name + "other")
    bad_arn = stream(aws, name + "bad")
    iot = aws("iot")
    cases = {
        # PutRecord allowed only on another stream
        "wrongres": iot_role(aws, name + "wrongres", inline=put_record_policy(other_arn)),
        # trusted by lambda, not iot
        "untrusted": iot_role(aws, name + "untrusted", trust=LAMBDA_TRUST, inline=put_record_policy(bad_arn)),
        # allowed by a managed policy, denied inline
        "denied": iot_role(
            aws,
            name + "denied",
            managed=policy({"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}),
            inline=policy({"Effect": "Deny", "Action": "kinesis:PutRecord", "Resource": bad_arn}),
        ),
        "norole": f"arn:aws:iam::123456789012:role/{name}-missing",
    }
    for label, role in cases.items():
        kinesis_rule(aws, f"{name}_{label}", name + "bad", role, sql=f"SELECT * FROM '{name}/bad/+'")
    allowed = iot_role(aws, name + "ok", inline=put_record_policy(bad_arn))
    kinesis_rule(aws, f"{name}_nostream", name + "absent", allowed, sql=f"SELECT * FROM '{name}/bad/+'")
    kinesis_rule(aws, f"{name}_emptykey", name + "bad", allowed, partition_key="${nothing}", sql=f"SELECT * FROM '{name}/bad/+'")
    control_role = iot_role(aws, name + "control", inline=put_record_policy(good_arn))
    kinesis_rule(aws, f"{name}_control", name + "good", control_role, partition_key="${newuuid()}", sql=f"SELECT * FROM '{name}/+/+'")

    data = aws("iot-data")
    data.publish(topic=f"{name}/bad/dev1", qos=1, payload=b'{"n": 1}')
    data.publish(topic=f"{name}/control/dev1", qos=1, payload=b'{"n": 2}')
    # The dispatcher handles messages in order: once the control record is there, every
    # rule has run on the first message.
    deadline = time.monotonic() + 10
    while len(stream_records(aws, name + "good")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    good = stream_records(aws, name + "good")
    assert sorted(r[1]["n"] for r in good) == [1, 2]
    assert all(re.fullmatch(UUID_RE, key) for key, _ in good)
    assert stream_records(aws, name + "bad") == []
    log = emu.log()
    assert f"rule {name}_wrongres: not allowed to put records into {bad_arn}" in log
    assert f"rule {name}_untrusted: not allowed" in log and "cannot be assumed by iot.amazonaws.com" in log
    assert f"rule {name}_denied: not allowed" in log and "explicitly denied" in log
    assert f"rule {name}_norole: not allowed" in log and "does not exist" in log
    assert f"rule {name}_nostream: kinesis stream {name}absent does not exist" in log
    assert f"rule {name}_emptykey: kinesis partition key '' must be 1 to 256 characters" in log
    assert iot.get_topic_rule(ruleName=f"{name}_control")["rule"]["actions"][0]["kinesis"]["streamName"] == name + "good"
