"""SNS email / email-json subscriptions stay pending confirmation, as on AWS."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import error_code, http_status

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fixes import sns_email_pending as fix  # noqa: E402

ACCOUNT = "123456789012"


@pytest.fixture
def topic(aws, name):
    return aws("sns").create_topic(Name=name)["TopicArn"]


def by_topic(aws, topic_arn: str) -> list[dict]:
    return aws("sns").list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]


def all_subscriptions(aws) -> list[dict]:
    sns = aws("sns")
    found: list[dict] = []
    kwargs: dict = {}
    while True:
        page = sns.list_subscriptions(**kwargs)
        found.extend(page["Subscriptions"])
        if not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]


def real_arn(aws, topic_arn: str, endpoint: str, protocol: str = "email") -> str:
    return aws("sns").subscribe(
        TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint, ReturnSubscriptionArn=True
    )["SubscriptionArn"]


def make_queue(aws, name: str) -> tuple[str, str]:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def counts(aws, topic_arn: str) -> dict[str, str]:
    attributes = aws("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    return {
        key: attributes[key]
        for key in ("SubscriptionsConfirmed", "SubscriptionsPending", "SubscriptionsDeleted")
    }


def expected(confirmed: str, pending: str) -> dict[str, str]:
    return {
        "SubscriptionsConfirmed": confirmed,
        "SubscriptionsPending": pending,
        "SubscriptionsDeleted": "0",
    }


def receive_all(aws, url: str) -> list[str]:
    sqs = aws("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not got.get("Messages"):
            return bodies
        for message in got["Messages"]:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.parametrize("protocol", ["email", "email-json"])
def test_subscribe_answers_pending_confirmation(aws, topic, name, protocol):
    sns = aws("sns")
    endpoint = f"{name}@example.com"
    answer = sns.subscribe(TopicArn=topic, Protocol=protocol, Endpoint=endpoint)
    assert answer["SubscriptionArn"] == "pending confirmation"
    # Again while pending: same answer, no second subscription.
    again = sns.subscribe(TopicArn=topic, Protocol=protocol, Endpoint=endpoint)
    assert again["SubscriptionArn"] == "pending confirmation"
    listed = by_topic(aws, topic)
    assert listed == [
        {
            "SubscriptionArn": "PendingConfirmation",
            "Owner": ACCOUNT,
            "Protocol": protocol,
            "Endpoint": endpoint,
            "TopicArn": topic,
        }
    ]


def test_return_subscription_arn_gives_the_real_arn(aws, topic, name):
    sns = aws("sns")
    endpoint = f"{name}@example.com"
    assert sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=endpoint)[
        "SubscriptionArn"
    ] == "pending confirmation"
    arn = real_arn(aws, topic, endpoint)
    assert arn.startswith(f"{topic}:")
    assert real_arn(aws, topic, endpoint) == arn  # the same subscription
    assert len(by_topic(aws, topic)) == 1
    attributes = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    assert attributes["PendingConfirmation"] == "true"
    assert attributes["ConfirmationWasAuthenticated"] == "false"
    assert attributes["SubscriptionArn"] == arn
    assert attributes["Protocol"] == "email"
    assert attributes["Endpoint"] == endpoint
    assert attributes["TopicArn"] == topic
    assert attributes["Owner"] == ACCOUNT


def test_list_subscriptions_shows_pending(aws, topic, name):
    sns = aws("sns")
    endpoint = f"{name}@example.com"
    sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint=endpoint)
    mine = [s for s in all_subscriptions(aws) if s["TopicArn"] == topic]
    assert mine == [
        {
            "SubscriptionArn": "PendingConfirmation",
            "Owner": ACCOUNT,
            "Protocol": "email-json",
            "Endpoint": endpoint,
            "TopicArn": topic,
        }
    ]


@pytest.mark.parametrize("literal", ["PendingConfirmation", "pending confirmation"])
def test_unsubscribe_pending_literal_is_invalid_parameter(aws, topic, name, literal):
    sns = aws("sns")
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=f"{name}@example.com")
    with pytest.raises(sns.exceptions.InvalidParameterException) as excinfo:
        sns.unsubscribe(SubscriptionArn=literal)
    assert error_code(excinfo) == "InvalidParameter"
    assert http_status(excinfo) == 400
    # The same validation applies to the subscription attribute calls.
    with pytest.raises(sns.exceptions.InvalidParameterException) as excinfo:
        sns.get_subscription_attributes(SubscriptionArn=literal)
    assert http_status(excinfo) == 400
    with pytest.raises(sns.exceptions.InvalidParameterException) as excinfo:
        sns.set_subscription_attributes(
            SubscriptionArn=literal, AttributeName="RawMessageDelivery", AttributeValue="true"
        )
    assert http_status(excinfo) == 400
    # Nothing was removed.
    assert [s["SubscriptionArn"] for s in by_topic(aws, topic)] == ["PendingConfirmation"]


def test_unsubscribe_real_arn_removes_it(aws, topic, name):
    sns = aws("sns")
    endpoint = f"{name}@example.com"
    arn = real_arn(aws, topic, endpoint)
    sns.unsubscribe(SubscriptionArn=arn)
    assert by_topic(aws, topic) == []
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_subscription_attributes(SubscriptionArn=arn)
    # A new subscription of the same address is pending again.
    assert sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=endpoint)[
        "SubscriptionArn"
    ] == "pending confirmation"


def test_delete_topic_removes_pending_subscriptions(aws, topic, name):
    sns = aws("sns")
    arn = real_arn(aws, topic, f"{name}@example.com")
    sns.delete_topic(TopicArn=topic)
    assert not [s for s in all_subscriptions(aws) if s["TopicArn"] == topic]
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_subscription_attributes(SubscriptionArn=arn)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.list_subscriptions_by_topic(TopicArn=topic)


def test_sqs_subscription_unchanged_and_still_delivered(aws, topic, name):
    sns = aws("sns")
    url, queue_arn = make_queue(aws, name)
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=f"{name}@example.com")
    sqs_answer = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sqs_arn = sqs_answer["SubscriptionArn"]
    assert sqs_arn.startswith(f"{topic}:")  # confirmed at once: real ARN
    attributes = sns.get_subscription_attributes(SubscriptionArn=sqs_arn)["Attributes"]
    assert attributes["PendingConfirmation"] == "false"
    assert attributes["ConfirmationWasAuthenticated"] == "true"
    listed = {s["Protocol"]: s["SubscriptionArn"] for s in by_topic(aws, topic)}
    assert listed == {"email": "PendingConfirmation", "sqs": sqs_arn}

    published = sns.publish(TopicArn=topic, Message="alert", Subject="HIGH")
    bodies = receive_all(aws, url)
    assert len(bodies) == 1
    envelope = json.loads(bodies[0])
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["Message"] == "alert"
    assert envelope["TopicArn"] == topic


def test_topic_attributes_count_confirmed_and_pending(aws, topic, name):
    sns = aws("sns")
    assert counts(aws, topic) == expected("0", "0")
    _, queue_arn = make_queue(aws, name)
    sqs_arn = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    endpoint = f"{name}@example.com"
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=endpoint)
    assert counts(aws, topic) == expected("1", "1")
    # A repeated Subscribe is the same subscription: nothing more counted.
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=endpoint)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    assert counts(aws, topic) == expected("1", "1")

    sns.unsubscribe(SubscriptionArn=sqs_arn)
    assert counts(aws, topic) == expected("0", "1")
    sns.unsubscribe(SubscriptionArn=real_arn(aws, topic, endpoint))
    assert counts(aws, topic) == expected("0", "0")


def test_topic_attributes_count_only_that_topic(aws, topic, name):
    sns = aws("sns")
    other = sns.create_topic(Name=f"{name}-other")["TopicArn"]
    try:
        _, queue_arn = make_queue(aws, name)
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=f"{name}@example.com")
        # The other topic: the same queue and address, plus more of its own.
        sns.subscribe(TopicArn=other, Protocol="sqs", Endpoint=queue_arn)
        sns.subscribe(TopicArn=other, Protocol="email", Endpoint=f"{name}@example.com")
        sns.subscribe(TopicArn=other, Protocol="email-json", Endpoint=f"{name}-2@example.com")
        _, second_queue_arn = make_queue(aws, f"{name}-2")
        sns.subscribe(TopicArn=other, Protocol="sqs", Endpoint=second_queue_arn)
        assert counts(aws, topic) == expected("1", "1")
        assert counts(aws, other) == expected("2", "2")
    finally:
        sns.delete_topic(TopicArn=other)
    assert counts(aws, topic) == expected("1", "1")


def test_topic_attributes_counts_after_delete_topic(aws, topic, name):
    sns = aws("sns")
    _, queue_arn = make_queue(aws, name)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=f"{name}@example.com")
    sns.delete_topic(TopicArn=topic)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_topic_attributes(TopicArn=topic)
    # Created again under the same name: a new topic without subscriptions.
    assert sns.create_topic(Name=name)["TopicArn"] == topic
    assert counts(aws, topic) == expected("0", "0")


def test_publish_skips_pending_subscription_in_process(name):
    """moto delivers no email anyway, so check the skip itself, in this process."""
    from moto.sns.models import Subscription, sns_backends
    from moto.sns.responses import SNSResponse
    from moto.sqs.models import sqs_backends

    fix.apply()
    fix.apply()  # idempotent: still wraps moto's own method, once
    assert Subscription._emulator_orig_publish.__qualname__ == "Subscription.publish"
    assert Subscription.publish.__qualname__ == "_make_publish.<locals>.publish"
    assert SNSResponse._emulator_orig_get_topic_attributes.__qualname__ == (
        "SNSResponse.get_topic_attributes"
    )

    backend = sns_backends[ACCOUNT]["us-east-1"]
    topic = backend.create_topic(name)
    queue = sqs_backends[ACCOUNT]["us-east-1"].create_queue(name)
    try:
        email = backend.subscribe(topic.arn, f"{name}@example.com", "email")
        sqs = backend.subscribe(topic.arn, queue.queue_arn, "sqs")
        assert email.attributes["PendingConfirmation"] is True
        assert sqs.attributes["PendingConfirmation"] is False

        reached: list[str] = []
        publish = fix._make_publish(lambda sub, *args, **kwargs: reached.append(sub.protocol))
        for subscription in (email, sqs):
            publish(subscription, "alert", "message-id")
        assert reached == ["sqs"]

        topic.publish("alert")  # the real chain: the queue still gets it
        assert len(queue.messages) == 1
    finally:
        backend.delete_topic(topic.arn)
        sqs_backends[ACCOUNT]["us-east-1"].delete_queue(name)
