"""IoT tags given at creation are kept and can be listed / changed."""

from __future__ import annotations

import json

import pytest


def tags_of(iot, arn):
    return {t["Key"]: t["Value"] for t in iot.list_tags_for_resource(resourceArn=arn)["tags"]}


def test_thing_type_tags(aws, name):
    iot = aws("iot")
    arn = iot.create_thing_type(
        thingTypeName=name, tags=[{"Key": "managed-by", "Value": "iotreg"}]
    )["thingTypeArn"]
    assert tags_of(iot, arn) == {"managed-by": "iotreg"}
    iot.tag_resource(resourceArn=arn, tags=[{"Key": "env", "Value": "test"}])
    assert tags_of(iot, arn) == {"managed-by": "iotreg", "env": "test"}
    iot.untag_resource(resourceArn=arn, tagKeys=["env"])
    assert tags_of(iot, arn) == {"managed-by": "iotreg"}
    iot.deprecate_thing_type(thingTypeName=name)
    iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_tags_for_resource(resourceArn=arn)


def test_rule_and_policy_tags(aws, name):
    iot = aws("iot")
    iot.create_topic_rule(
        ruleName=name,
        topicRulePayload={"sql": "SELECT * FROM 'a'", "actions": []},
        tags="managed-by=iotreg&stack=one",
    )
    rule_arn = iot.get_topic_rule(ruleName=name)["ruleArn"]
    assert tags_of(iot, rule_arn) == {"managed-by": "iotreg", "stack": "one"}
    iot.replace_topic_rule(
        ruleName=name, topicRulePayload={"sql": "SELECT * FROM 'b'", "actions": []}
    )
    assert tags_of(iot, rule_arn) == {"managed-by": "iotreg", "stack": "one"}

    policy_arn = iot.create_policy(
        policyName=name,
        policyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        tags=[{"Key": "managed-by", "Value": "iotreg"}],
    )["policyArn"]
    assert tags_of(iot, policy_arn) == {"managed-by": "iotreg"}
