"""IoT TestAuthorization (fix iot_test_authorization), through boto3 against the emulator."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import error_code, http_status

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

A = "arn:aws:iot:us-east-1:123456789012:"
THING = "${iot:Connection.Thing.ThingName}"
SHADOW = f"$aws/things/{THING}/shadow"
SHADOW_REPLIES = ("update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected")

MQTT_SHADOW_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["iot:Connect"], "Resource": [A + f"client/{THING}"]},
        {
            "Effect": "Allow",
            "Action": ["iot:Publish"],
            "Resource": [
                A + f"topic/sensor/temperature/{THING}",
                A + f"topic/{SHADOW}/update",
                A + f"topic/{SHADOW}/get",
            ],
        },
        {"Effect": "Allow", "Action": ["iot:Subscribe"],
         "Resource": [A + f"topicfilter/{SHADOW}/{s}" for s in SHADOW_REPLIES]},
        {"Effect": "Allow", "Action": ["iot:Receive"],
         "Resource": [A + f"topic/{SHADOW}/{s}" for s in SHADOW_REPLIES]},
        {"Effect": "Allow", "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow"],
         "Resource": [A + f"thing/{THING}"]},
    ],
}


def device_policy() -> str:
    with open(os.path.join(REPO, "templates", "device-policy.json")) as handle:
        text = handle.read()
    for key, value in (("partition", "aws"), ("region", "us-east-1"), ("account", "123456789012")):
        text = text.replace("{{" + key + "}}", value)
    return text


@pytest.fixture
def device(aws, name):
    """A thing `name` with an active certificate attached to it."""
    iot = aws("iot")
    cert = iot.create_keys_and_certificate(setAsActive=True)
    iot.create_thing(thingName=name)
    iot.attach_thing_principal(thingName=name, principal=cert["certificateArn"])
    return cert


def policy(iot, name: str, document) -> dict:
    text = document if isinstance(document, str) else json.dumps(document)
    created = iot.create_policy(policyName=name, policyDocument=text)
    return {"policyName": name, "policyArn": created["policyArn"]}


def decide(iot, principal, client_id, *auth_infos, **extra):
    kwargs = {"authInfos": [{"actionType": t, "resources": [A + r for r in rs]} for t, rs in auth_infos]}
    if principal is not None:
        kwargs["principal"] = principal
    if client_id is not None:
        kwargs["clientId"] = client_id
    kwargs.update(extra)
    return iot.test_authorization(**kwargs)["authResults"]


def test_device_policy_for_the_attached_thing(aws, name, device):
    iot = aws("iot")
    ref = policy(iot, f"{name}-device", device_policy())
    iot.attach_policy(policyName=ref["policyName"], target=device["certificateArn"])
    results = decide(
        iot, device["certificateArn"], name,
        ("CONNECT", [f"client/{name}"]),
        ("PUBLISH", [f"topic/sensor/temperature/{name}"]),
        ("PUBLISH", ["topic/sensor/temperature/someone-else"]),
        ("SUBSCRIBE", [f"topicfilter/sensor/temperature/{name}"]),
        ("CONNECT", ["client/someone-else"]),
    )
    assert [r["authDecision"] for r in results] == [
        "ALLOWED", "ALLOWED", "IMPLICIT_DENY", "IMPLICIT_DENY", "IMPLICIT_DENY"]
    first = results[0]
    assert first["authInfo"] == {"actionType": "CONNECT", "resources": [A + f"client/{name}"]}
    assert first["allowed"] == {"policies": [ref]}
    assert first["denied"] == {"implicitDeny": {"policies": []}, "explicitDeny": {"policies": []}}
    assert first["missingContextValues"] == []
    assert results[2]["allowed"] == {"policies": []}
    assert results[2]["denied"]["implicitDeny"] == {"policies": [ref]}


def test_client_id_not_an_attached_thing(aws, name, device):
    iot = aws("iot")
    ref = policy(iot, f"{name}-device", device_policy())
    iot.attach_policy(policyName=ref["policyName"], target=device["certificateArn"])
    iot.create_thing(thingName=f"{name}-unattached")
    for client_id in (f"{name}-unattached", "no-such-thing"):
        (result,) = decide(iot, device["certificateArn"], client_id, ("CONNECT", [f"client/{client_id}"]))
        assert result["authDecision"] == "IMPLICIT_DENY"
        assert result["missingContextValues"] == ["iot:Connection.Thing.ThingName"]
    # no clientId at all: no iot:ClientId and no thing
    (result,) = decide(iot, device["certificateArn"], None, ("CONNECT", [f"client/{name}"]))
    assert result["authDecision"] == "IMPLICIT_DENY"


def test_mqtt_shadow_policy(aws, name, device):
    iot = aws("iot")
    ref = policy(iot, f"{name}-shadow", MQTT_SHADOW_POLICY)
    iot.attach_policy(policyName=ref["policyName"], target=device["certificateArn"])
    shadow = f"$aws/things/{name}/shadow"
    allowed = [
        ("CONNECT", [f"client/{name}"]),
        ("PUBLISH", [f"topic/sensor/temperature/{name}", f"topic/{shadow}/update", f"topic/{shadow}/get"]),
        ("SUBSCRIBE", [f"topicfilter/{shadow}/{s}" for s in SHADOW_REPLIES]),
        ("RECEIVE", [f"topic/{shadow}/{s}" for s in SHADOW_REPLIES]),
    ]
    denied = [
        ("PUBLISH", [f"topic/{shadow}/delete"]),
        ("PUBLISH", ["topic/$aws/things/other/shadow/update"]),
        ("SUBSCRIBE", [f"topicfilter/{shadow}/#"]),  # '#' is literal in a policy
        ("SUBSCRIBE", [f"topicfilter/{shadow}/+/accepted"]),
        ("SUBSCRIBE", [f"topicfilter/{shadow}/update/documents"]),
        ("RECEIVE", [f"topic/{shadow}/update/documents"]),
        ("SUBSCRIBE", [f"topicfilter/{shadow}/update/accepted", f"topicfilter/{shadow}/delete/accepted"]),
    ]
    results = decide(iot, device["certificateArn"], name, *allowed)  # at most 10 authInfos a call
    assert [r["authDecision"] for r in results] == ["ALLOWED"] * len(allowed)
    results = decide(iot, device["certificateArn"], name, *denied)
    assert [r["authDecision"] for r in results] == ["IMPLICIT_DENY"] * len(denied)
    # the same certificate connecting under another client id gets nothing
    results = decide(iot, device["certificateArn"], "other", *allowed[:1])
    assert results[0]["authDecision"] == "IMPLICIT_DENY"


def test_explicit_deny_wins_across_policies(aws, name, device):
    iot = aws("iot")
    everything = policy(iot, f"{name}-all", {"Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
    no_admin = policy(iot, f"{name}-deny", {"Statement": [
        {"Effect": "Deny", "Action": "iot:Publish", "Resource": A + "topic/admin/*"}]})
    for ref in (everything, no_admin):
        iot.attach_policy(policyName=ref["policyName"], target=device["certificateArn"])
    results = decide(
        iot, device["certificateArn"], name,
        ("PUBLISH", ["topic/admin/reboot"]),
        ("PUBLISH", ["topic/user/x"]),
        ("PUBLISH", ["topic/user/x", "topic/admin/x"]),
    )
    assert [r["authDecision"] for r in results] == ["EXPLICIT_DENY", "ALLOWED", "EXPLICIT_DENY"]
    assert results[0]["denied"]["explicitDeny"] == {"policies": [no_admin]}
    assert results[0]["allowed"] == {"policies": []}
    assert results[1]["allowed"] == {"policies": [everything]}

    # policyNamesToSkip leaves the Deny out; policyNamesToAdd adds one not attached
    (result,) = decide(iot, device["certificateArn"], name, ("PUBLISH", ["topic/admin/reboot"]),
                       policyNamesToSkip=[no_admin["policyName"]])
    assert result["authDecision"] == "ALLOWED"
    iot.detach_policy(policyName=no_admin["policyName"], target=device["certificateArn"])
    (result,) = decide(iot, device["certificateArn"], name, ("PUBLISH", ["topic/admin/reboot"]))
    assert result["authDecision"] == "ALLOWED"
    (result,) = decide(iot, device["certificateArn"], name, ("PUBLISH", ["topic/admin/reboot"]),
                       policyNamesToAdd=[no_admin["policyName"]])
    assert result["authDecision"] == "EXPLICIT_DENY"


def test_default_version_and_certificate_id(aws, name, device):
    iot = aws("iot")
    ref = policy(iot, f"{name}-v", {"Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": A + "client/v1"}]})
    iot.attach_policy(policyName=ref["policyName"], target=device["certificateArn"])
    iot.create_policy_version(policyName=ref["policyName"], setAsDefault=False, policyDocument=json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": A + "client/v2"}]}))

    def connect(client_id):
        (result,) = decide(iot, device["certificateId"], client_id, ("CONNECT", [f"client/{client_id}"]))
        return result["authDecision"]

    assert (connect("v1"), connect("v2")) == ("ALLOWED", "IMPLICIT_DENY")
    iot.set_default_policy_version(policyName=ref["policyName"], policyVersionId="2")
    assert (connect("v1"), connect("v2")) == ("IMPLICIT_DENY", "ALLOWED")


def test_no_policies_and_policy_names_to_add_only(aws, name, device):
    iot = aws("iot")
    (result,) = decide(iot, device["certificateArn"], name, ("CONNECT", [f"client/{name}"]))
    assert result["authDecision"] == "IMPLICIT_DENY"
    assert result["denied"]["implicitDeny"] == {"policies": []}
    ref = policy(iot, f"{name}-c", {"Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": A + "client/${iot:ClientId}"}]})
    (result,) = decide(iot, None, "anyone", ("CONNECT", ["client/anyone"]), policyNamesToAdd=[ref["policyName"]])
    assert result["authDecision"] == "ALLOWED" and result["allowed"] == {"policies": [ref]}


def test_errors(aws, name, device):
    iot = aws("iot")
    missing_cert = A + "cert/" + "0" * 64
    cases = [
        (dict(principal=missing_cert), "ResourceNotFoundException", 404),
        (dict(principal="f" * 64), "ResourceNotFoundException", 404),
        (dict(principal=device["certificateArn"], policyNamesToAdd=[f"{name}-nope"]),
         "ResourceNotFoundException", 404),
        (dict(principal=device["certificateArn"], authInfos=[{"actionType": "UPDATE_SHADOW", "resources": ["x"]}]),
         "InvalidRequestException", 400),
        (dict(principal=device["certificateArn"], authInfos=[{"actionType": "CONNECT", "resources": []}]),
         "InvalidRequestException", 400),
        (dict(), "InvalidRequestException", 400),  # neither a principal nor policyNamesToAdd
        (dict(principal=device["certificateArn"],
              authInfos=[{"actionType": "CONNECT", "resources": [A + "client/x"]}] * 11),
         "InvalidRequestException", 400),
    ]
    for kwargs, code, status in cases:
        kwargs.setdefault("authInfos", [{"actionType": "CONNECT", "resources": [A + "client/x"]}])
        with pytest.raises(iot.exceptions.ClientError) as excinfo:
            iot.test_authorization(**kwargs)
        assert (error_code(excinfo), http_status(excinfo)) == (code, status), kwargs


def test_handler_installed_and_locked():
    import fixes
    from fixes import iot_concurrency
    from moto.iot.responses import IoTResponse

    fixes.apply_all()
    assert iot_concurrency.is_locked(IoTResponse.test_authorization)
