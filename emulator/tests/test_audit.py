"""Audited moto behaviour iotreg relies on that needed no fix (guards regressions)."""

from __future__ import annotations

import json

import pytest

from conftest import error_code, http_status

DOC = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)


@pytest.mark.parametrize(
    "op, kwargs",
    [
        ("describe_thing", {"thingName": "NAME"}),
        ("update_thing", {"thingName": "NAME", "attributePayload": {"attributes": {}}}),
        ("describe_thing_type", {"thingTypeName": "NAME"}),
        ("deprecate_thing_type", {"thingTypeName": "NAME"}),
        ("delete_thing_type", {"thingTypeName": "NAME"}),
        ("describe_certificate", {"certificateId": "0" * 64}),
        ("update_certificate", {"certificateId": "0" * 64, "newStatus": "INACTIVE"}),
        ("delete_certificate", {"certificateId": "0" * 64}),
        ("get_policy", {"policyName": "NAME"}),
        ("delete_policy", {"policyName": "NAME"}),
        ("list_policy_versions", {"policyName": "NAME"}),
        ("list_targets_for_policy", {"policyName": "NAME"}),
        ("list_thing_principals", {"thingName": "NAME"}),
        ("get_topic_rule", {"ruleName": "NAME"}),
        ("delete_topic_rule", {"ruleName": "NAME"}),
        ("enable_topic_rule", {"ruleName": "NAME"}),
        ("disable_topic_rule", {"ruleName": "NAME"}),
    ],
)
def test_iot_missing_resource_is_resource_not_found(aws, name, op, kwargs):
    iot = aws("iot")
    kwargs = {k: (name if v == "NAME" else v) for k, v in kwargs.items()}
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as excinfo:
        getattr(iot, op)(**kwargs)
    assert error_code(excinfo) == "ResourceNotFoundException"
    assert http_status(excinfo) == 404


@pytest.mark.parametrize(
    "op, kwargs",
    [
        ("get_role", {"RoleName": "NAME"}),
        ("delete_role", {"RoleName": "NAME"}),
        ("list_attached_role_policies", {"RoleName": "NAME"}),
        ("list_role_policies", {"RoleName": "NAME"}),
        ("delete_role_policy", {"RoleName": "NAME", "PolicyName": "p"}),
        ("detach_role_policy", {"RoleName": "NAME", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
    ],
)
def test_iam_missing_role_is_no_such_entity(aws, name, op, kwargs):
    iam = aws("iam")
    kwargs = {k: (name if v == "NAME" else v) for k, v in kwargs.items()}
    with pytest.raises(iam.exceptions.NoSuchEntityException) as excinfo:
        getattr(iam, op)(**kwargs)
    assert error_code(excinfo) == "NoSuchEntity"
    assert http_status(excinfo) == 404


def test_lambda_and_logs_missing_resources(aws, name):
    lam, logs = aws("lambda"), aws("logs")
    for call in (lam.get_function, lam.delete_function, lam.get_policy):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            call(FunctionName=name)
    with pytest.raises(logs.exceptions.ResourceNotFoundException) as excinfo:
        logs.delete_log_group(logGroupName=f"/aws/lambda/{name}")
    assert error_code(excinfo) == "ResourceNotFoundException"


def test_iot_policy_versions_and_delete_preconditions(aws, name):
    iot = aws("iot")
    created = iot.create_policy(policyName=name, policyDocument=DOC)
    assert created["policyVersionId"] == "1"
    assert json.loads(iot.get_policy(policyName=name)["policyDocument"]) == json.loads(DOC)
    cert = iot.create_keys_and_certificate(setAsActive=True)["certificateArn"]
    iot.attach_policy(policyName=name, target=cert)
    assert [p["policyName"] for p in iot.list_attached_policies(target=cert)["policies"]] == [name]
    assert iot.list_targets_for_policy(policyName=name)["targets"] == [cert]
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_policy(policyName=name)  # attached
    iot.detach_policy(policyName=name, target=cert)
    assert iot.list_attached_policies(target=cert)["policies"] == []

    v2 = iot.create_policy_version(policyName=name, policyDocument=DOC, setAsDefault=True)
    assert v2["policyVersionId"] == "2" and v2["isDefaultVersion"] is True
    versions = iot.list_policy_versions(policyName=name)["policyVersions"]
    assert {(v["versionId"], v["isDefaultVersion"]) for v in versions} == {("1", False), ("2", True)}
    assert iot.get_policy(policyName=name)["defaultVersionId"] == "2"
    with pytest.raises(iot.exceptions.DeleteConflictException):
        iot.delete_policy(policyName=name)  # non-default version 1 still exists
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_policy_version(policyName=name, policyVersionId="2")  # default
    iot.delete_policy_version(policyName=name, policyVersionId="1")
    iot.delete_policy(policyName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_policy(policyName=name)


def test_iam_role_lifecycle_and_delete_preconditions(aws, name):
    iam = aws("iam")
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]
    assert iam.get_role(RoleName=name)["Role"]["Arn"] == role["Arn"]
    with pytest.raises(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    managed = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    iam.attach_role_policy(RoleName=name, PolicyArn=managed)
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [managed]
    iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=DOC)
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["inline"]

    with pytest.raises(iam.exceptions.DeleteConflictException) as excinfo:
        iam.delete_role(RoleName=name)  # managed policy attached
    assert http_status(excinfo) == 409
    iam.detach_role_policy(RoleName=name, PolicyArn=managed)
    with pytest.raises(iam.exceptions.DeleteConflictException):
        iam.delete_role(RoleName=name)  # inline policy present
    iam.delete_role_policy(RoleName=name, PolicyName="inline")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_role_policy(RoleName=name, PolicyName="inline")
    iam.delete_role(RoleName=name)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=name)


def test_log_group_lifecycle(aws, name):
    logs = aws("logs")
    group = f"/aws/lambda/{name}"
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    logs.create_log_group(logGroupName=group)
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in found] == [group]
    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []


def test_caller_identity(aws):
    identity = aws("sts").get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert identity["Arn"].endswith(":user/moto")


# -- SNS -> SQS and CloudWatch (issue 7: alerts, alarm, dashboard) ------------


def _queue(aws, name: str) -> tuple[str, str]:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _receive(aws, url: str) -> list[dict]:
    got = aws("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
    )
    return got.get("Messages", [])


def test_sns_publish_reaches_subscribed_queues(aws, name):
    sns = aws("sns")
    topic = sns.create_topic(Name=name)["TopicArn"]
    assert sns.create_topic(Name=name)["TopicArn"] == topic  # idempotent, as on AWS
    envelope_url, envelope_arn = _queue(aws, f"{name}-env")
    raw_url, raw_arn = _queue(aws, f"{name}-raw")
    envelope_sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=envelope_arn, ReturnSubscriptionArn=True)
    raw_sub = sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=raw_arn, Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )
    attributes = sns.get_subscription_attributes(SubscriptionArn=envelope_sub["SubscriptionArn"])["Attributes"]
    assert attributes["PendingConfirmation"] == "false"  # same-account SQS: confirmed at once
    assert attributes["RawMessageDelivery"] == "false"

    published = sns.publish(
        TopicArn=topic, Subject="HIGH temperature", Message='{"thing": "dev1", "level": "HIGH"}',
        MessageAttributes={"level": {"DataType": "String", "StringValue": "HIGH"}},
    )
    # Delivered before Publish answers: nothing to wait for.
    [envelope_message] = _receive(aws, envelope_url)
    body = json.loads(envelope_message["Body"])
    assert body["Type"] == "Notification" and body["MessageId"] == published["MessageId"]
    assert body["TopicArn"] == topic and body["Subject"] == "HIGH temperature"
    assert body["Message"] == '{"thing": "dev1", "level": "HIGH"}'
    assert body["MessageAttributes"] == {"level": {"Type": "String", "Value": "HIGH"}}
    assert {"Timestamp", "Signature", "SignatureVersion", "SigningCertURL", "UnsubscribeURL"} <= set(body)
    assert "MessageAttributes" not in envelope_message  # only inside the envelope
    [raw_message] = _receive(aws, raw_url)
    assert raw_message["Body"] == '{"thing": "dev1", "level": "HIGH"}'
    assert raw_message["MessageAttributes"] == {"level": {"StringValue": "HIGH", "DataType": "String"}}

    # Switching raw delivery off again, and unsubscribing, take effect at once.
    sns.set_subscription_attributes(
        SubscriptionArn=raw_sub["SubscriptionArn"], AttributeName="RawMessageDelivery", AttributeValue="false"
    )
    sns.unsubscribe(SubscriptionArn=envelope_sub["SubscriptionArn"])
    sns.publish(TopicArn=topic, Message="second")
    assert json.loads(_receive(aws, raw_url)[0]["Body"])["Message"] == "second"
    assert _receive(aws, envelope_url) == []
    sns.delete_topic(TopicArn=topic)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.publish(TopicArn=topic, Message="gone")


def test_cloudwatch_alarm_and_dashboard_lifecycle(aws, name):
    cw = aws("cloudwatch")  # boto3 speaks JSON 1.0 here; CBOR: test_fix_cloudwatch_cbor.py
    alarm = {
        "AlarmName": name,
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "FunctionName", "Value": "f"}],
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:alerts"],
    }
    cw.put_metric_alarm(**alarm)
    cw.put_metric_alarm(**{**alarm, "Threshold": 5.0})  # same name: replaced in place
    [got] = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert got["Threshold"] == 5.0 and got["AlarmActions"] == alarm["AlarmActions"]
    assert got["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"
    assert got["StateValue"] == "OK"  # moto; AWS starts at INSUFFICIENT_DATA
    cw.delete_alarms(AlarmNames=[name])
    assert cw.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []
    cw.delete_alarms(AlarmNames=[name])  # moto: a missing alarm is no error

    body = json.dumps({"widgets": [{"type": "text", "x": 0, "y": 0, "width": 6, "height": 3,
                                    "properties": {"markdown": "hi"}}]})
    assert cw.put_dashboard(DashboardName=name, DashboardBody=body)["DashboardValidationMessages"] == []
    got = cw.get_dashboard(DashboardName=name)
    assert got["DashboardBody"] == body  # stored verbatim
    assert got["DashboardArn"] == f"arn:aws:cloudwatch::123456789012:dashboard/{name}"
    cw.delete_dashboards(DashboardNames=[name])
    for call in (lambda: cw.get_dashboard(DashboardName=name), lambda: cw.delete_dashboards(DashboardNames=[name])):
        with pytest.raises(cw.exceptions.ClientError) as excinfo:
            call()
        assert error_code(excinfo) == "ResourceNotFound" and http_status(excinfo) == 404
    with pytest.raises(cw.exceptions.DashboardInvalidInputError) as excinfo:
        cw.put_dashboard(DashboardName=name, DashboardBody="not json")
    assert error_code(excinfo) == "InvalidParameterInput" and http_status(excinfo) == 400
