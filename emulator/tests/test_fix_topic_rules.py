"""Topic rules with a Lambda action: create, read back, replace, toggle, delete."""

from __future__ import annotations

import pytest

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:iotreg-handler"


def payload(sql="SELECT * FROM 'iotreg/+/telemetry'", **extra):
    return {
        "sql": sql,
        "awsIotSqlVersion": "2016-03-23",
        "ruleDisabled": False,
        "actions": [{"lambda": {"functionArn": FUNCTION_ARN}}],
        **extra,
    }


def test_rule_lifecycle(aws, name):
    iot = aws("iot")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule(ruleName=name)
    iot.create_topic_rule(ruleName=name, topicRulePayload=payload())
    got = iot.get_topic_rule(ruleName=name)
    rule = got["rule"]
    assert got["ruleArn"] == f"arn:aws:iot:us-east-1:123456789012:rule/{name}"
    assert rule["actions"] == [{"lambda": {"functionArn": FUNCTION_ARN}}]
    assert rule["ruleDisabled"] is False
    assert "errorAction" not in rule and "description" not in rule
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_topic_rule(ruleName=name, topicRulePayload=payload())

    iot.disable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is True
    iot.enable_topic_rule(ruleName=name)
    assert iot.get_topic_rule(ruleName=name)["rule"]["ruleDisabled"] is False

    new_sql = "SELECT temp FROM 'iotreg/+/telemetry'"
    iot.replace_topic_rule(ruleName=name, topicRulePayload=payload(new_sql, description="d"))
    rule = iot.get_topic_rule(ruleName=name)["rule"]
    assert rule["sql"] == new_sql and rule["description"] == "d"

    listed = {r["ruleName"]: r for r in iot.list_topic_rules()["rules"]}
    assert listed[name]["topicPattern"] == "iotreg/+/telemetry"

    iot.delete_topic_rule(ruleName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.get_topic_rule(ruleName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_topic_rule(ruleName=name)
