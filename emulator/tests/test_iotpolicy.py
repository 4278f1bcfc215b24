"""emulator/iotpolicy: the AWS IoT Core policy evaluator, in-process.

The TABLE holds the example policies of the AWS IoT Core Developer Guide (each
commented with the guide page it comes from; ARNs as printed there, region
us-east-1, account 123456789012, placeholders such as ``thingName`` kept),
iotreg's own device policy (templates/device-policy.json) and the MQTT-shadow
policy the product will ship, each with at least one allowed and one denied
request.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
REPO = os.path.dirname(os.path.dirname(HERE))

from iotpolicy import (  # noqa: E402
    ALLOWED,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    Context,
    context_for,
    evaluate,
    policies_for_principal,
)

A = "arn:aws:iot:us-east-1:123456789012:"


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(actions, resources, condition=None):
    statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def deny(actions, resources):
    return {"Effect": "Deny", "Action": actions, "Resource": resources}


def render(template: str) -> dict:
    for key, value in (("partition", "aws"), ("region", "us-east-1"), ("account", "123456789012")):
        template = template.replace("{{" + key + "}}", value)
    assert "{{" not in template
    return json.loads(template)


# The two policies iotreg ships: the default (MQTT shadow) and the recipe's, word for word.
with open(os.path.join(REPO, "templates", "device-policy.json")) as _f:
    DEVICE_POLICY = render(_f.read())
with open(os.path.join(REPO, "templates", "device-policy-recipe.json")) as _f:
    RECIPE_POLICY = render(_f.read())

THING = "${iot:Connection.Thing.ThingName}"
SHADOW = f"$aws/things/{THING}/shadow"

POLICIES = {
    # connect-policy.html ("Connect policy examples"), first example: deny
    # client1/client2, allow a client id that is an attached thing's name.
    "connect-deny-clients": doc(
        deny(["iot:Connect"], [A + "client/client1", A + "client/client2"]),
        allow(
            ["iot:Connect"],
            [A + "client/${iot:Connection.Thing.ThingName}"],
            {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
        ),
    ),
    # connect-policy.html: "for unregistered devices", client1 only.
    "connect-unregistered": doc(allow(["iot:Connect"], [A + "client/client1"])),
    # connect-and-pub.html ("Connect and publish policy examples"), registered devices.
    "connect-pub-registered": doc(
        allow(["iot:Publish"], [A + "topic/${iot:Connection.Thing.ThingName}"]),
        allow(["iot:Connect"], [A + "client/${iot:Connection.Thing.ThingName}"]),
    ),
    # connect-and-pub.html, devices not registered as things.
    "connect-pub-unregistered": doc(
        allow(["iot:Publish"], [A + "topic/${iot:ClientId}"]),
        allow(["iot:Connect"], [A + "client/client1"]),
    ),
    # pub-sub-policy.html (earlier edition, "Policies for MQTT Clients"): '+' is
    # literal, the client may subscribe to the filter foo/+/bar only.
    "subscribe-literal-plus": doc(
        allow(["iot:Connect"], ["*"]),
        allow(["iot:Subscribe"], [A + "topicfilter/foo/+/bar"]),
    ),
    # pub-sub-policy.html (earlier edition): everything in the account.
    "iot-star": doc(allow(["iot:*"], ["*"])),
    # pub-sub-policy.html (earlier edition): publish to all topics (and connect).
    "publish-all": doc(allow(["iot:Publish", "iot:Connect"], ["*"])),
    # pub-sub-policy.html (earlier edition): '*' at the end of a topic filter.
    "subscribe-foo-bar-star": doc(
        allow(["iot:Connect"], ["*"]),
        allow(["iot:Subscribe"], [A + "topicfilter/foo/bar/*"]),
    ),
    # pub-sub-policy.html, wildcard table: topicfilter/some/*/topic ('*') and
    # the advice to use '?' to stay within one level (here three '?').
    "wildcard-table": doc(
        allow(["iot:Subscribe"], [A + "topicfilter/some/*/topic"]),
        allow(["iot:Subscribe"], [A + "topicfilter/other/???/topic"]),
    ),
    # pub-sub-policy.html: Allow a topic prefix, Deny one topic inside it (Deny wins).
    "deny-inside-allowed-prefix": doc(
        allow(["iot:Publish"], [A + "topic/department/*"]),
        deny(["iot:Publish"], [A + "topic/department/admins"]),
    ),
    # basic-policy-variables.html: ${iot:ClientId} in a topic filter; a client
    # connecting with client id '+' may subscribe to the filter my/+/topic.
    "clientid-topicfilter": doc(allow(["iot:Subscribe"], [A + "topicfilter/my/${iot:ClientId}/topic"])),
    # thing-policy-examples.html: connect only when the certificate is attached to the thing.
    "thing-is-attached": doc(
        allow(["iot:Connect"], ["*"], {"Bool": {"iot:Connection.Thing.IsAttached": ["true"]}})
    ),
    # thing-policy-examples.html: publish when the thing has type Thing_Type_Name
    # and attributeName = attributeValue.
    "thing-type-and-attribute": doc(
        allow(
            ["iot:Publish"],
            A + "topic/device/stats",
            {
                "StringEquals": {
                    "iot:Connection.Thing.Attributes[attributeName]": "attributeValue",
                    "iot:Connection.Thing.ThingTypeName": "Thing_Type_Name",
                },
                "Bool": {"iot:Connection.Thing.IsAttached": "true"},
            },
        )
    ),
    # thing-policy-examples.html: a topic that starts with a thing attribute
    # ("If the device certificate is not associated with the thing, this
    # variable won't be resolved and will result in an access denied error").
    "thing-attribute-topic": doc(
        allow(["iot:Publish"], A + "topic/${iot:Connection.Thing.Attributes[attributeName]}/*")
    ),
    # device-shadow-mqtt.html ("Device Shadow MQTT topics"): the example
    # policies of /get and /update/accepted, thing name thingName.
    "shadow-topics": doc(
        allow(["iot:Publish"], [A + "topic/$aws/things/thingName/shadow/get"]),
        allow(["iot:Subscribe"], [A + "topicfilter/$aws/things/thingName/shadow/update/accepted"]),
        allow(["iot:Receive"], [A + "topic/$aws/things/thingName/shadow/update/accepted"]),
    ),
    # Not from the guide (the emulator's own checks): the ${*} ${?} ${$} escapes
    # (IAM "Variables and tags", referenced by iot-policy-variables.html).
    "escapes": doc(
        allow(["iot:Publish"], [A + "topic/star${*}", A + "topic/q${?}", A + "topic/${$}{iot:ClientId}"])
    ),
    # iotreg's recipe preset, templates/device-policy-recipe.json (aws, us-east-1,
    # 123456789012): the recipe's policy, with the shadow's HTTP actions only.
    "iotreg-device": RECIPE_POLICY,
    # The MQTT-shadow device policy the product will ship.
    "iotreg-mqtt-shadow": doc(
        allow(["iot:Connect"], [A + f"client/{THING}"]),
        allow(
            ["iot:Publish"],
            [
                A + f"topic/sensor/temperature/{THING}",
                A + f"topic/{SHADOW}/update",
                A + f"topic/{SHADOW}/get",
            ],
        ),
        allow(
            ["iot:Subscribe"],
            [A + f"topicfilter/{SHADOW}/{s}" for s in (
                "update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected")],
        ),
        allow(
            ["iot:Receive"],
            [A + f"topic/{SHADOW}/{s}" for s in (
                "update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected")],
        ),
        allow(["iot:GetThingShadow", "iot:UpdateThingShadow"], [A + f"thing/{THING}"]),
    ),
}

# Connections.
THING1 = Context(
    "thing1",
    thing_name="thing1",
    is_attached=True,
    thing_type_name="Thing_Type_Name",
    attributes={"attributeName": "attributeValue"},
)
THING1_UNATTACHED = Context("thing1")  # client id thing1, thing not attached to the certificate
THING1_OTHER_ATTR = Context("thing1", thing_name="thing1", is_attached=True,
                            thing_type_name="Thing_Type_Name", attributes={"attributeName": "x"})
THING1_OTHER_TYPE = Context("thing1", thing_name="thing1", is_attached=True,
                            thing_type_name="Other", attributes={"attributeName": "attributeValue"})
THING1_NO_ATTR = Context("thing1", thing_name="thing1", is_attached=True)
CLIENT1_THING = Context("client1", thing_name="client1", is_attached=True)
CLIENT1 = Context("client1")
CLIENT2 = Context("client2")
PLUS = Context("+")
THINGNAME = Context("thingName", thing_name="thingName", is_attached=True)

OK, DENY, NONE = ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY
SH1 = "$aws/things/thing1/shadow"

TABLE = [
    # policy, action, resource (after the account), context, expected
    ("connect-deny-clients", "iot:Connect", "client/thing1", THING1, OK),
    ("connect-deny-clients", "iot:Connect", "client/client1", CLIENT1_THING, DENY),
    ("connect-deny-clients", "iot:Connect", "client/client2", CLIENT2, DENY),
    ("connect-deny-clients", "iot:Connect", "client/thing1", THING1_UNATTACHED, NONE),
    ("connect-deny-clients", "iot:Connect", "client/thing2", THING1, NONE),
    ("connect-unregistered", "iot:Connect", "client/client1", CLIENT1, OK),
    ("connect-unregistered", "iot:Connect", "client/client2", CLIENT2, NONE),
    ("connect-unregistered", "iot:Publish", "topic/client1", CLIENT1, NONE),
    ("connect-pub-registered", "iot:Connect", "client/thing1", THING1, OK),
    ("connect-pub-registered", "iot:Publish", "topic/thing1", THING1, OK),
    ("connect-pub-registered", "iot:Publish", "topic/thing2", THING1, NONE),
    ("connect-pub-registered", "iot:Publish", "topic/thing1", THING1_UNATTACHED, NONE),
    ("connect-pub-registered", "iot:Connect", "client/thing1", THING1_UNATTACHED, NONE),
    ("connect-pub-unregistered", "iot:Publish", "topic/client1", CLIENT1, OK),
    ("connect-pub-unregistered", "iot:Publish", "topic/client2", CLIENT1, NONE),
    ("connect-pub-unregistered", "iot:Connect", "client/client1", CLIENT2, OK),
    ("connect-pub-unregistered", "iot:Connect", "client/client2", CLIENT2, NONE),
    ("subscribe-literal-plus", "iot:Subscribe", "topicfilter/foo/+/bar", CLIENT1, OK),
    ("subscribe-literal-plus", "iot:Subscribe", "topicfilter/foo/baz/bar", CLIENT1, NONE),
    ("subscribe-literal-plus", "iot:Subscribe", "topicfilter/foo/goo/bar", CLIENT1, NONE),
    ("subscribe-literal-plus", "iot:Connect", "client/anything", CLIENT1, OK),
    ("subscribe-literal-plus", "iot:Publish", "topic/foo/+/bar", CLIENT1, NONE),
    ("iot-star", "iot:Publish", "topic/any/thing", CLIENT1, OK),
    ("iot-star", "iot:UpdateThingShadow", "thing/thing1", CLIENT1, OK),
    ("iot-star", "greengrass:Discover", "thing/thing1", CLIENT1, NONE),
    ("publish-all", "iot:Publish", "topic/a/b/c", CLIENT1, OK),
    ("publish-all", "iot:Subscribe", "topicfilter/a/b/c", CLIENT1, NONE),
    ("subscribe-foo-bar-star", "iot:Subscribe", "topicfilter/foo/bar/baz", CLIENT1, OK),
    ("subscribe-foo-bar-star", "iot:Subscribe", "topicfilter/foo/bar/#", CLIENT1, OK),
    ("subscribe-foo-bar-star", "iot:Subscribe", "topicfilter/foo/#", CLIENT1, NONE),
    ("subscribe-foo-bar-star", "iot:Subscribe", "topicfilter/foo/baz", CLIENT1, NONE),
    ("wildcard-table", "iot:Subscribe", "topicfilter/some/a/b/topic", CLIENT1, OK),
    ("wildcard-table", "iot:Subscribe", "topicfilter/some/+/topic", CLIENT1, OK),
    ("wildcard-table", "iot:Subscribe", "topicfilter/some/#", CLIENT1, NONE),
    ("wildcard-table", "iot:Subscribe", "topicfilter/other/abc/topic", CLIENT1, OK),
    ("wildcard-table", "iot:Subscribe", "topicfilter/other/abcd/topic", CLIENT1, NONE),
    ("wildcard-table", "iot:Subscribe", "topicfilter/other/+/topic", CLIENT1, NONE),
    ("deny-inside-allowed-prefix", "iot:Publish", "topic/department/sales", CLIENT1, OK),
    ("deny-inside-allowed-prefix", "iot:Publish", "topic/department/admins", CLIENT1, DENY),
    ("deny-inside-allowed-prefix", "iot:Publish", "topic/department/admins/x", CLIENT1, OK),
    ("deny-inside-allowed-prefix", "iot:Publish", "topic/finance/x", CLIENT1, NONE),
    ("clientid-topicfilter", "iot:Subscribe", "topicfilter/my/+/topic", PLUS, OK),
    ("clientid-topicfilter", "iot:Subscribe", "topicfilter/my/+/topic", CLIENT1, NONE),
    ("clientid-topicfilter", "iot:Subscribe", "topicfilter/my/client1/topic", CLIENT1, OK),
    ("thing-is-attached", "iot:Connect", "client/thing1", THING1, OK),
    ("thing-is-attached", "iot:Connect", "client/thing1", THING1_UNATTACHED, NONE),
    ("thing-type-and-attribute", "iot:Publish", "topic/device/stats", THING1, OK),
    ("thing-type-and-attribute", "iot:Publish", "topic/device/stats", THING1_OTHER_ATTR, NONE),
    ("thing-type-and-attribute", "iot:Publish", "topic/device/stats", THING1_OTHER_TYPE, NONE),
    ("thing-type-and-attribute", "iot:Publish", "topic/device/stats", THING1_UNATTACHED, NONE),
    ("thing-type-and-attribute", "iot:Publish", "topic/device/other", THING1, NONE),
    ("thing-attribute-topic", "iot:Publish", "topic/attributeValue/reading", THING1, OK),
    ("thing-attribute-topic", "iot:Publish", "topic/x/reading", THING1, NONE),
    ("thing-attribute-topic", "iot:Publish", "topic/attributeValue/reading", THING1_UNATTACHED, NONE),
    ("thing-attribute-topic", "iot:Publish", "topic/attributeValue/reading", THING1_NO_ATTR, NONE),
    ("shadow-topics", "iot:Publish", "topic/$aws/things/thingName/shadow/get", THINGNAME, OK),
    ("shadow-topics", "iot:Publish", "topic/$aws/things/otherThing/shadow/get", THINGNAME, NONE),
    ("shadow-topics", "iot:Publish", "topic/$aws/things/thingName/shadow/update", THINGNAME, NONE),
    ("shadow-topics", "iot:Subscribe", "topicfilter/$aws/things/thingName/shadow/update/accepted", THINGNAME, OK),
    ("shadow-topics", "iot:Subscribe", "topic/$aws/things/thingName/shadow/update/accepted", THINGNAME, NONE),
    ("shadow-topics", "iot:Subscribe", "topicfilter/$aws/things/thingName/shadow/#", THINGNAME, NONE),
    ("shadow-topics", "iot:Receive", "topic/$aws/things/thingName/shadow/update/accepted", THINGNAME, OK),
    ("shadow-topics", "iot:Receive", "topic/$aws/things/thingName/shadow/update/rejected", THINGNAME, NONE),
    ("escapes", "iot:Publish", "topic/star*", CLIENT1, OK),
    ("escapes", "iot:Publish", "topic/starX", CLIENT1, NONE),
    ("escapes", "iot:Publish", "topic/q?", CLIENT1, OK),
    ("escapes", "iot:Publish", "topic/qX", CLIENT1, NONE),
    ("escapes", "iot:Publish", "topic/${iot:ClientId}", CLIENT1, OK),
    ("escapes", "iot:Publish", "topic/client1", CLIENT1, NONE),
    ("iotreg-device", "iot:Connect", "client/thing1", THING1, OK),
    ("iotreg-device", "iot:Connect", "client/thing2", THING1, NONE),
    ("iotreg-device", "iot:Connect", "client/thing1", THING1_UNATTACHED, NONE),
    ("iotreg-device", "iot:Publish", "topic/sensor/temperature/thing1", THING1, OK),
    ("iotreg-device", "iot:Publish", "topic/sensor/temperature/thing2", THING1, NONE),
    ("iotreg-device", "iot:Publish", "topic/sensor/temperature/thing1", THING1_UNATTACHED, NONE),
    ("iotreg-device", "iot:Publish", f"topic/{SH1}/update", THING1, NONE),
    ("iotreg-device", "iot:Subscribe", "topicfilter/sensor/temperature/thing1", THING1, NONE),
    ("iotreg-device", "iot:GetThingShadow", "thing/thing1", THING1, OK),
    ("iotreg-device", "iot:UpdateThingShadow", "thing/thing1", THING1, OK),
    ("iotreg-device", "iot:DeleteThingShadow", "thing/thing1", THING1, NONE),
    ("iotreg-device", "iot:UpdateThingShadow", "thing/thing2", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Connect", "client/thing1", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Connect", "client/thing1", THING1_UNATTACHED, NONE),
    ("iotreg-mqtt-shadow", "iot:Publish", "topic/sensor/temperature/thing1", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Publish", f"topic/{SH1}/update", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Publish", f"topic/{SH1}/get", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Publish", f"topic/{SH1}/delete", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Publish", "topic/$aws/things/thing2/shadow/update", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Publish", f"topic/{SH1}/update/accepted", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/update/accepted", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/update/rejected", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/update/delta", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/get/accepted", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/get/rejected", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/update/documents", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/#", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/+/accepted", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Subscribe", "topicfilter/$aws/things/thing2/shadow/update/delta", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Subscribe", f"topicfilter/{SH1}/update/delta", THING1_UNATTACHED, NONE),
    ("iotreg-mqtt-shadow", "iot:Receive", f"topic/{SH1}/update/delta", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Receive", f"topic/{SH1}/get/accepted", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:Receive", f"topicfilter/{SH1}/update/delta", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:Receive", "topic/$aws/things/thing2/shadow/update/delta", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:GetThingShadow", "thing/thing1", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:UpdateThingShadow", "thing/thing1", THING1, OK),
    ("iotreg-mqtt-shadow", "iot:GetThingShadow", "thing/thing2", THING1, NONE),
    ("iotreg-mqtt-shadow", "iot:DeleteThingShadow", "thing/thing1", THING1, NONE),
]


@pytest.mark.parametrize(
    "policy,action,resource,context,expected",
    TABLE,
    ids=[f"{p}-{a.split(':')[1]}-{r}-{e}" for p, a, r, _, e in TABLE],
)
def test_table(policy, action, resource, context, expected):
    decision = evaluate([(policy, POLICIES[policy])], action, A + resource, context)
    assert decision.reason == expected
    assert decision.allowed is (expected == ALLOWED)
    if expected != IMPLICIT_DENY:
        assert decision.policy_name == policy
        assert decision.statement_index is not None


def test_the_mqtt_shadow_rows_test_the_template_iotreg_ships():
    """The "iotreg-mqtt-shadow" rows hold for templates/device-policy.json as shipped."""
    def grants(policy):
        return sorted(
            (s["Effect"], a, r)
            for s in policy["Statement"]
            for a in s["Action"]
            for r in s["Resource"]
        )

    assert grants(DEVICE_POLICY) == grants(POLICIES["iotreg-mqtt-shadow"])


def test_every_policy_has_an_allowed_and_a_denied_row():
    for name in POLICIES:
        outcomes = {expected for policy, _, _, _, expected in TABLE if policy == name}
        assert ALLOWED in outcomes, name
        assert outcomes & {EXPLICIT_DENY, IMPLICIT_DENY}, name


# --- the evaluator's other rules ------------------------------------------------


def test_decision_names_the_deciding_statement_and_deny_wins_across_policies():
    allow_all = doc(allow("iot:*", "*"))
    deny_one = doc(allow("iot:Connect", "*"), deny("iot:Publish", A + "topic/secret"))
    decision = evaluate([("a", allow_all), ("b", deny_one)], "iot:Publish", A + "topic/secret", CLIENT1)
    assert (decision.allowed, decision.reason) == (False, EXPLICIT_DENY)
    assert (decision.policy_name, decision.policy_index, decision.statement_index) == ("b", 1, 1)
    assert [m.policy_name for m in decision.allows] == ["a"]
    decision = evaluate([allow_all, deny_one], "iot:Connect", A + "client/c", CLIENT1)
    assert decision.allowed and decision.policy_name is None and decision.policy_index == 0
    assert [(m.policy_index, m.statement_index) for m in decision.allows] == [(0, 0), (1, 0)]
    assert evaluate([], "iot:Connect", A + "client/c", CLIENT1).reason == IMPLICIT_DENY


def test_statement_object_strings_and_json_text():
    text = json.dumps({"Statement": {"Effect": "Allow", "Action": "iot:Connect", "Resource": A + "client/c"}})
    assert evaluate([text], "iot:Connect", A + "client/c", CLIENT1).allowed
    assert not evaluate(["not json"], "iot:Connect", A + "client/c", CLIENT1).allowed


def test_actions_case_insensitive_with_wildcards():
    policy = doc(allow(["iot:get*", "IOT:Publis?"], "*"))
    assert evaluate([policy], "iot:GetThingShadow", A + "thing/t", CLIENT1).allowed
    assert evaluate([policy], "IoT:publish", A + "topic/t", CLIENT1).allowed
    assert not evaluate([policy], "iot:UpdateThingShadow", A + "thing/t", CLIENT1).allowed
    assert evaluate([doc(allow("*", "*"))], "iot:Anything", "x", CLIENT1).allowed


def test_resources_case_sensitive_and_question_mark_is_one_character():
    policy = doc(allow("iot:Publish", A + "topic/Room?"))
    assert evaluate([policy], "iot:Publish", A + "topic/Room1", CLIENT1).allowed
    assert not evaluate([policy], "iot:Publish", A + "topic/room1", CLIENT1).allowed
    assert not evaluate([policy], "iot:Publish", A + "topic/Room12", CLIENT1).allowed


def test_not_action_and_not_resource():
    policy = doc(
        {"Effect": "Allow", "NotAction": "iot:Subscribe", "Resource": "*"},
        {"Effect": "Deny", "Action": "iot:Publish", "NotResource": A + "topic/ok/*"},
    )
    assert evaluate([policy], "iot:Publish", A + "topic/ok/1", CLIENT1).allowed
    assert evaluate([policy], "iot:Publish", A + "topic/no", CLIENT1).reason == EXPLICIT_DENY
    assert evaluate([policy], "iot:Subscribe", A + "topicfilter/ok/1", CLIENT1).reason == IMPLICIT_DENY
    # NotResource with a variable without value: the statement does not apply
    unresolved = doc(allow("iot:Connect", "*"),
                     {"Effect": "Deny", "Action": "iot:Connect", "NotResource": A + f"client/{THING}"})
    assert evaluate([unresolved], "iot:Connect", A + "client/x", CLIENT1).allowed


def test_malformed_statements_never_apply():
    for statement in (
        {"Action": "iot:*", "Resource": "*"},  # no Effect
        {"Effect": "allow", "Action": "iot:*", "Resource": "*"},  # Effect is case-sensitive
        {"Effect": "Allow", "Resource": "*"},  # no Action
        {"Effect": "Allow", "Action": "iot:*"},  # no Resource
        "Allow",
    ):
        assert not evaluate([doc(statement)], "iot:Connect", A + "client/c", CLIENT1).allowed


def test_missing_context_values_reported():
    policy = doc(allow("iot:Connect", A + f"client/{THING}"))
    decision = evaluate([policy], "iot:Connect", A + "client/thing1", THING1_UNATTACHED)
    assert decision.missing_context_values == ("iot:Connection.Thing.ThingName",)
    assert evaluate([policy], "iot:Connect", A + "client/thing1", THING1).missing_context_values == ()
    # an unknown variable and the IAM default-value form have no value either
    for variable in ("${iot:Nope}", "${iot:ClientId, 'x'}"):
        assert not evaluate([doc(allow("iot:Connect", A + f"client/{variable}"))],
                            "iot:Connect", A + "client/client1", CLIENT1).allowed


def test_variable_names_case_insensitive_attribute_names_not():
    policy = doc(allow("iot:Publish", A + "topic/${IOT:connection.thing.thingname}"))
    assert evaluate([policy], "iot:Publish", A + "topic/thing1", THING1).allowed
    upper = doc(allow("iot:Publish", A + "topic/${iot:Connection.Thing.Attributes[ATTRIBUTENAME]}"))
    assert not evaluate([upper], "iot:Publish", A + "topic/attributeValue", THING1).allowed


def test_substituted_values_are_literal():
    policy = doc(allow("iot:Publish", A + "topic/${iot:ClientId}/data"))
    star = Context("*")
    assert not evaluate([policy], "iot:Publish", A + "topic/anything/data", star).allowed
    assert evaluate([policy], "iot:Publish", A + "topic/*/data", star).allowed


def _cond(condition, context, action="iot:Connect"):
    return evaluate([doc(allow(action, "*", condition))], action, A + "client/c", context).allowed


def test_string_conditions():
    assert _cond({"StringEquals": {"iot:ClientId": ["a", "client1"]}}, CLIENT1)
    assert not _cond({"StringEquals": {"iot:ClientId": "Client1"}}, CLIENT1)
    assert _cond({"StringEqualsIgnoreCase": {"iot:ClientId": "CLIENT1"}}, CLIENT1)
    assert _cond({"StringLike": {"iot:ClientId": "client?"}}, CLIENT1)
    assert _cond({"StringLike": {"iot:ClientId": "cl*"}}, CLIENT1)
    assert not _cond({"StringLike": {"iot:ClientId": "x*"}}, CLIENT1)
    assert not _cond({"StringNotEquals": {"iot:ClientId": ["a", "client1"]}}, CLIENT1)
    assert _cond({"StringNotEquals": {"iot:ClientId": ["a", "b"]}}, CLIENT1)
    assert not _cond({"StringNotLike": {"iot:ClientId": "client*"}}, CLIENT1)
    assert _cond({"StringNotEqualsIgnoreCase": {"iot:ClientId": "x"}}, CLIENT1)
    # variables in condition values
    assert _cond({"StringEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}}, THING1)
    assert not _cond({"StringEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}}, THING1_UNATTACHED)
    # ...even under a negated operator an unresolved variable makes the block false
    assert not _cond({"StringNotEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}}, THING1_UNATTACHED)
    # several keys and several operators: all must hold
    both = {"StringEquals": {"iot:ClientId": "thing1", "iot:Connection.Thing.ThingTypeName": "Other"}}
    assert not _cond(both, THING1)


def test_missing_keys_negation_ifexists_and_null():
    absent = "iot:Connection.Thing.ThingTypeName"
    assert not _cond({"StringEquals": {absent: "x"}}, CLIENT1)
    assert _cond({"StringNotEquals": {absent: "x"}}, CLIENT1)
    assert _cond({"StringEqualsIfExists": {absent: "x"}}, CLIENT1)
    assert not _cond({"StringEqualsIfExists": {absent: "x"}}, THING1)
    assert _cond({"StringEqualsIfExists": {absent: "Thing_Type_Name"}}, THING1)
    assert _cond({"Null": {absent: "true"}}, CLIENT1)
    assert not _cond({"Null": {absent: "false"}}, CLIENT1)
    assert _cond({"Null": {absent: "false"}}, THING1)
    # IsAttached always has a value
    assert _cond({"Bool": {"iot:Connection.Thing.IsAttached": "false"}}, THING1_UNATTACHED)
    assert _cond({"Bool": {"iot:Connection.Thing.IsAttached": True}}, THING1)
    assert not _cond({"Bool": {"iot:Connection.Thing.IsAttached": "true"}}, THING1_UNATTACHED)


def test_arn_and_ip_conditions_and_unknown_operators():
    arn_ctx = Context("arn:aws:iot:us-east-1:123456789012:thing/t1")
    assert _cond({"ArnLike": {"iot:ClientId": "arn:aws:iot:*:123456789012:thing/*"}}, arn_ctx)
    assert _cond({"ArnEquals": {"iot:ClientId": "arn:aws:iot:us-east-1:123456789012:thing/t?"}}, arn_ctx)
    assert not _cond({"ArnLike": {"iot:ClientId": "arn:aws:iot:*:999999999999:thing/*"}}, arn_ctx)
    assert not _cond({"ArnLike": {"iot:ClientId": "arn:aws:iot:*"}}, arn_ctx)  # fields compared one by one
    assert _cond({"ArnNotLike": {"iot:ClientId": "arn:aws:iot:*:999999999999:*"}}, arn_ctx)
    ip = Context("c", source_ip="203.0.113.7")
    assert _cond({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, ip)
    assert not _cond({"IpAddress": {"aws:SourceIp": ["198.51.100.0/24"]}}, ip)
    assert _cond({"NotIpAddress": {"aws:SourceIp": "198.51.100.0/24"}}, ip)
    assert not _cond({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, CLIENT1)
    # unknown operators are never satisfied, also in a Deny
    assert not _cond({"NumericEquals": {"iot:ClientId": "1"}}, Context("1"))
    assert not _cond({"ForAllValues:StringEquals": {"iot:ConnectAttributes": ["PersistentConnect"]}}, CLIENT1)
    deny_unknown = doc(allow("iot:*", "*"),
                       {"Effect": "Deny", "Action": "iot:*", "Resource": "*",
                        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}})
    assert evaluate([deny_unknown], "iot:Connect", A + "client/c", CLIENT1).allowed


def test_certificate_variables():
    ctx = Context("c", certificate={"Subject.CommonName": "device-7"})
    policy = doc(allow("iot:Publish", A + "topic/${iot:Certificate.Subject.CommonName}/x"))
    assert evaluate([policy], "iot:Publish", A + "topic/device-7/x", ctx).allowed
    assert not evaluate([policy], "iot:Publish", A + "topic/device-7/x", CLIENT1).allowed


# --- reading moto's backend (in-process, an account no other test uses) -----------


@pytest.fixture
def backend():
    from moto.iot.models import iot_backends

    iot = iot_backends["210987654321"]["us-east-1"]
    iot.reset()
    yield iot
    iot.reset()


def test_policies_for_principal_reads_default_versions(backend):
    cert = backend.create_keys_and_certificate(set_as_active=True)[0]
    other = backend.create_keys_and_certificate(set_as_active=True)[0]
    first = doc(allow("iot:Connect", "*"))
    second = doc(allow("iot:Publish", "*"))
    backend.create_policy("p1", json.dumps(first))
    backend.create_policy("p2", json.dumps(second))
    backend.create_policy("unattached", json.dumps(second))
    backend.attach_policy("p1", cert.arn)
    backend.attach_policy("p2", cert.arn)
    backend.attach_policy("p2", other.arn)
    assert policies_for_principal(backend, cert.arn) == [("p1", first), ("p2", second)]
    assert policies_for_principal(backend, cert.certificate_id) == [("p1", first), ("p2", second)]
    assert policies_for_principal(backend, other.arn) == [("p2", second)]

    newer = doc(allow("iot:Subscribe", "*"))
    backend.create_policy_version("p1", json.dumps(newer), set_as_default=False)
    assert policies_for_principal(backend, cert.arn)[0] == ("p1", first)
    backend.set_default_policy_version("p1", "2")
    assert policies_for_principal(backend, cert.arn)[0] == ("p1", newer)
    backend.detach_policy("p2", cert.arn)
    assert policies_for_principal(backend, cert.arn) == [("p1", newer)]


def test_context_for_attached_thing_only(backend):
    cert = backend.create_keys_and_certificate(set_as_active=True)[0]
    backend.create_thing_type("sensor", {})
    backend.create_thing("dev1", "sensor", {"attributes": {"room": "lab"}})
    backend.create_thing("dev2", None, {"attributes": {}})
    backend.attach_thing_principal("dev1", cert.arn)

    ctx = context_for(backend, cert.arn, "dev1", "us-east-1", "210987654321")
    assert (ctx.client_id, ctx.thing_name, ctx.is_attached) == ("dev1", "dev1", True)
    assert ctx.thing_type_name == "sensor" and dict(ctx.attributes) == {"room": "lab"}
    assert ctx.principal == cert.certificate_id and ctx.account == "210987654321"
    assert ctx.certificate.get("Subject.CommonName")  # moto's certificates have a CN

    for client_id in ("dev2", "nobody", None):  # dev2 exists but is not attached
        ctx = context_for(backend, cert.arn, client_id, "us-east-1", "210987654321")
        assert (ctx.thing_name, ctx.is_attached, ctx.thing_type_name) == (None, False, None)
        assert ctx.value("iot:Connection.Thing.ThingName") is None
        assert ctx.value("iot:Connection.Thing.IsAttached") == "false"
