"""Lambda function + resource policy, as iotreg uses them for the IoT rule."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile

import pytest

from conftest import error_code, http_status

TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


@pytest.fixture
def function(aws, name):
    role = aws("iam").create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)["Role"]
    code = zip_bytes()
    aws("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": code},
    )
    return name, code


def test_get_function_state_fields(aws, function):
    name, code = function
    conf = aws("lambda").get_function(FunctionName=name)["Configuration"]
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
    assert conf["Runtime"] == "python3.12"
    assert conf["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
    assert conf["CodeSize"] == len(code)


def test_add_permission_conflict_and_remove(aws, function):
    name, _ = function
    lam = aws("lambda")
    rule_arn = "arn:aws:iot:us-east-1:123456789012:rule/iotreg_rule"
    kwargs = dict(
        FunctionName=name,
        StatementId="iotreg-iot-invoke",
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=rule_arn,
        SourceAccount="123456789012",
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    lam.add_permission(**kwargs)
    with pytest.raises(lam.exceptions.ResourceConflictException) as excinfo:
        lam.add_permission(**kwargs)
    assert http_status(excinfo) == 409
    statements = json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]
    assert len(statements) == 1
    statement = statements[0]
    assert statement["Sid"] == "iotreg-iot-invoke"
    assert statement["Principal"] == {"Service": "iot.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule_arn
    assert statement["Condition"]["StringEquals"]["AWS:SourceAccount"] == "123456789012"
    lam.remove_permission(FunctionName=name, StatementId="iotreg-iot-invoke")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.remove_permission(FunctionName=name, StatementId="iotreg-iot-invoke")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)


def test_delete_function(aws, function):
    name, _ = function
    lam = aws("lambda")
    lam.delete_function(FunctionName=name)
    for call in (lam.get_function, lam.delete_function, lam.get_policy):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as excinfo:
            call(FunctionName=name)
        assert error_code(excinfo) == "ResourceNotFoundException"
