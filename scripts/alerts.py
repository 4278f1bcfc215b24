"""What an on-call person would receive: an SQS queue subscribed to the deployment's alert topic.

    alerts.py subscribe           creates the queue `alert-watcher`, subscribes it, prints its URL
    alerts.py show QUEUE_URL [N]  waits (up to 30 s) for N anomaly alerts (default 1), prints each

Used by scripts/demo.sh against the local AWS (AWS_ENDPOINT_URL and the fake credentials set by
scripts/local-aws.sh); it works the same against any account the environment points at.
"""
import json
import sys
import time

import boto3


def subscribe():
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topics = [t["TopicArn"] for t in sns.list_topics()["Topics"]
              if ":iot-temperature-alerts-" in t["TopicArn"]]
    if len(topics) != 1:
        sys.exit(f"expected one iotreg alert topic, found {topics}")
    url = sqs.create_queue(QueueName="alert-watcher")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topics[0], Protocol="sqs", Endpoint=arn)
    print(url)


def show(url, wanted):
    sqs = boto3.client("sqs")
    found, deadline = 0, time.time() + 30
    while found < wanted and time.time() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=1).get("Messages", []):
            envelope = json.loads(m["Body"])
            alert = json.loads(envelope["Message"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if alert.get("kind") != "anomaly":
                continue
            found += 1
            print(f"{envelope.get('Subject')}: {json.dumps(alert)}")
    if found < wanted:
        sys.exit(f"{found} of {wanted} anomaly alert(s) arrived within 30 s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["subscribe"]:
        subscribe()
    elif sys.argv[1:2] == ["show"] and len(sys.argv) in (3, 4):
        show(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    else:
        sys.exit(__doc__)
