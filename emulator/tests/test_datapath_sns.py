"""Publish -> topic rule -> Lambda handler that alerts through SNS -> SQS.

The handler does what issue 7's function will do: for a HIGH reading it calls
``boto3.client("sns").publish(TopicArn=os.environ["ALERT_TOPIC_ARN"], ...)``,
with the topic ARN in a function environment variable. That works only if the
data path gives the handler the function's variables, boto3, and an SDK
configuration that reaches this emulator (emulator/datapath/lambda_runtime.py).
"""

from __future__ import annotations

import json
import time

import pytest

from test_datapath import (
    QUIET,
    allow,
    check_frame,
    create_rule,
    invocation,
    make_function,  # noqa: F401 - fixture
    publish,
    role,  # noqa: F401 - fixture
    unique,
)

ALERTING = """
import json, logging, os
import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)
sns = boto3.client("sns")  # created at import (init), as real functions do


def lambda_handler(event, context):
    thing = event.get("device", "unknown")
    temperature = event.get("temperature", 0)
    level = "HIGH" if temperature > 80 else ("MEDIUM" if temperature > 60 else "NORMAL")
    logger.info("marker=%s level=%s site=%s topic=%s", event.get("marker"), level,
                os.environ.get("SITE"), os.environ.get("ALERT_TOPIC_ARN"))
    if level == "HIGH":
        response = sns.publish(
            TopicArn=os.environ["ALERT_TOPIC_ARN"],
            Subject=f"HIGH temperature on {thing}",
            Message=json.dumps({"thing": thing, "level": level, "temperature": temperature,
                                "site": os.environ.get("SITE"), "marker": event.get("marker")}),
        )
        logger.info("alert published: %s", response["MessageId"])
    return {"level": level}
"""

SQL = "SELECT *, topic(3) AS device FROM 'sensor/temperature/+'"


def make_queue(aws, topic_arn: str, raw: bool) -> str:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # What a real deployment needs so that SNS may deliver (the emulator does
    # not check it, see emulator/README.md).
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    aws("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def drain(aws, url: str, wait: float) -> list[str]:
    """Every message body that arrives within ``wait`` seconds (deleted as read)."""
    sqs = aws("sqs")
    bodies: list[str] = []
    deadline = time.monotonic() + wait
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for message in got.get("Messages", []):
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if time.monotonic() >= deadline:
            return bodies
        time.sleep(0.05)


@pytest.fixture(scope="module")
def alerting(aws, make_function):  # noqa: F811
    topic = aws("sns").create_topic(Name=unique("alerts"))["TopicArn"]
    function = make_function(
        ALERTING,
        handler="index.lambda_handler",
        timeout=10,
        env={"ALERT_TOPIC_ARN": topic, "SITE": "plant-7"},
    )
    rule = create_rule(aws, SQL, function)
    allow(aws, function, rule)
    queues = {"envelope": make_queue(aws, topic, raw=False), "raw": make_queue(aws, topic, raw=True)}
    yield {"topic": topic, "function": function, "queues": queues}
    # Later tests publish on sensor/temperature/... too: stop alerting.
    aws("iot").delete_topic_rule(ruleName=rule)


def finished(aws, function: str, marker: str) -> list[str]:
    """The invocation's log once its REPORT is written (the handler returned)."""
    _, messages = invocation(aws, function, f"marker={marker} ")
    check_frame(messages)
    return messages


def test_normal_reading_sends_no_alert(aws, alerting):
    marker = unique("m")
    thing = unique("thing")
    publish(aws, f"sensor/temperature/{thing}", {"temperature": 20, "marker": marker})
    messages = finished(aws, alerting["function"], marker)
    assert any(f"marker={marker} level=NORMAL site=plant-7 topic={alerting['topic']}\n" in m for m in messages)
    assert not any("alert published" in m for m in messages)
    for url in alerting["queues"].values():
        assert drain(aws, url, QUIET) == []


def test_high_reading_sends_exactly_one_alert(aws, alerting):
    marker = unique("m")
    thing = unique("thing")
    publish(aws, f"sensor/temperature/{thing}", {"temperature": 85.5, "marker": marker})
    messages = finished(aws, alerting["function"], marker)
    # The function's environment variables reached the handler.
    assert any(f"marker={marker} level=HIGH site=plant-7 topic={alerting['topic']}\n" in m for m in messages)
    published = [m for m in messages if "alert published: " in m]
    assert len(published) == 1, messages
    message_id = published[0].rsplit("alert published: ", 1)[1].strip()

    # The handler returned after Publish answered; SNS delivers to SQS before
    # answering, so everything is in the queues now.
    envelope_bodies = drain(aws, alerting["queues"]["envelope"], QUIET)
    raw_bodies = drain(aws, alerting["queues"]["raw"], QUIET)
    assert len(envelope_bodies) == 1 and len(raw_bodies) == 1, (envelope_bodies, raw_bodies)
    expected = {"thing": thing, "level": "HIGH", "temperature": 85.5, "site": "plant-7", "marker": marker}

    # Default delivery: the SNS envelope, the handler's text in "Message".
    envelope = json.loads(envelope_bodies[0])
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == message_id
    assert envelope["TopicArn"] == alerting["topic"]
    assert envelope["Subject"] == f"HIGH temperature on {thing}"
    assert json.loads(envelope["Message"]) == expected
    # RawMessageDelivery: the body is the handler's text itself.
    assert json.loads(raw_bodies[0]) == expected


def test_updated_environment_is_used_by_the_next_invocation(aws, alerting):
    other_topic = aws("sns").create_topic(Name=unique("alerts"))["TopicArn"]
    queue = make_queue(aws, other_topic, raw=True)
    lam = aws("lambda")
    lam.update_function_configuration(
        FunctionName=alerting["function"],
        Environment={"Variables": {"ALERT_TOPIC_ARN": other_topic, "SITE": "plant-8"}},
    )
    try:
        marker = unique("m")
        thing = unique("thing")
        publish(aws, f"sensor/temperature/{thing}", {"temperature": 99, "marker": marker})
        finished(aws, alerting["function"], marker)
        bodies = drain(aws, queue, QUIET)
        assert [json.loads(b)["site"] for b in bodies] == ["plant-8"]
        assert json.loads(bodies[0])["thing"] == thing
        for url in alerting["queues"].values():  # the old topic got nothing
            assert drain(aws, url, QUIET) == []
    finally:
        lam.update_function_configuration(
            FunctionName=alerting["function"],
            Environment={"Variables": {"ALERT_TOPIC_ARN": alerting["topic"], "SITE": "plant-7"}},
        )


def test_invoke_runs_the_same_handler(aws, alerting):
    marker = unique("m")
    response = aws("lambda").invoke(
        FunctionName=alerting["function"],
        Payload=json.dumps({"temperature": 81, "device": "direct", "marker": marker}),
    )
    assert "FunctionError" not in response, response["Payload"].read()
    assert json.loads(response["Payload"].read()) == {"level": "HIGH"}
    bodies = drain(aws, alerting["queues"]["raw"], QUIET)
    assert [json.loads(b)["thing"] for b in bodies] == ["direct"]
    assert len(drain(aws, alerting["queues"]["envelope"], QUIET)) == 1

