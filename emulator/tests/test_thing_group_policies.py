"""Policies attached to thing groups: through the device gateway (paho-mqtt), in
TestAuthorization, and the group-target API calls (fixes/iot_thing_group_policies)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from conftest import error_code
from test_gateway import (  # noqa: F401 (fixtures)
    ARN,
    DEVICE_POLICY,
    clients,
    connected,
    gateway,
    make_device,
    unique,
)


@pytest.fixture
def groups(aws):
    """A parent group holding DEVICE_POLICY and an empty child group: (parent, child, policy)."""
    iot = aws("iot")
    parent, child, policy = unique("grp"), unique("sub"), unique("gpol")
    parent_arn = iot.create_thing_group(thingGroupName=parent)["thingGroupArn"]
    child_arn = iot.create_thing_group(thingGroupName=child, parentGroupName=parent)["thingGroupArn"]
    iot.create_policy(policyName=policy, policyDocument=json.dumps(DEVICE_POLICY))
    iot.attach_policy(policyName=policy, target=parent_arn)
    return {"parent": parent, "parent_arn": parent_arn, "child": child, "child_arn": child_arn,
            "policy": policy}


def test_member_connects_and_publishes_with_only_its_groups_policy(gateway, make_device, clients, aws, groups):
    iot = aws("iot")
    device = make_device(policy=None)  # the certificate has no policy of its own
    assert iot.list_attached_policies(target=device.cert_arn)["policies"] == []
    # a member of the child group: the parent's policy is inherited
    iot.add_thing_to_thing_group(thingGroupName=groups["child"], thingName=device.thing)

    client = connected(clients, gateway, device)
    client.subscribe(f"dev/{device.thing}/#")
    client.publish(f"dev/{device.thing}/hello", b"from the group")
    assert client.expect(f"dev/{device.thing}/hello") == b"from the group"

    # out of the group: the policy no longer applies, from the next action on
    iot.remove_thing_from_thing_group(thingGroupName=groups["child"], thingName=device.thing)
    client.publish(f"dev/{device.thing}/hello", b"again")
    assert client.disconnected.wait(5)
    assert clients(gateway, device).connect(gateway["ports"]["mqtt"]) == "Not authorized"


def test_non_member_with_the_same_setup_is_refused(gateway, make_device, clients, groups):
    device = make_device(policy=None)  # thing attached to its certificate, in no group
    assert clients(gateway, device).connect(gateway["ports"]["mqtt"]) == "Not authorized"


def test_member_with_another_client_id_is_refused(gateway, make_device, clients, aws, groups):
    iot = aws("iot")
    device = make_device(policy=None)
    iot.add_thing_to_thing_group(thingGroupName=groups["parent"], thingName=device.thing)
    other = unique("not-the-thing")
    assert clients(gateway, device, client_id=other).connect(gateway["ports"]["mqtt"]) == "Not authorized"
    # a thing that is in the group but not attached to this certificate does not help either
    stranger = make_device(policy=None)
    iot.add_thing_to_thing_group(thingGroupName=groups["parent"], thingName=stranger.thing)
    assert clients(gateway, device, client_id=stranger.thing).connect(gateway["ports"]["mqtt"]) == "Not authorized"
    # and with its own name it connects
    connected(clients, gateway, device)


def test_test_authorization_counts_group_policies_for_the_client_id(make_device, aws, groups):
    iot = aws("iot")
    device = make_device(policy=None)
    iot.add_thing_to_thing_group(thingGroupName=groups["child"], thingName=device.thing)
    publish = {"actionType": "PUBLISH", "resources": [f"{ARN}:topic/dev/{device.thing}/x"]}

    result = iot.test_authorization(principal=device.cert_arn, clientId=device.thing,
                                    authInfos=[publish])["authResults"][0]
    assert result["authDecision"] == "ALLOWED"
    assert [p["policyName"] for p in result["allowed"]["policies"]] == [groups["policy"]]

    for client_id in (None, unique("other")):
        kwargs = {"clientId": client_id} if client_id else {}
        result = iot.test_authorization(principal=device.cert_arn, authInfos=[publish],
                                        **kwargs)["authResults"][0]
        assert result["authDecision"] == "IMPLICIT_DENY"

    # an explicit Deny in a group policy wins over the certificate's own Allow
    deny = unique("deny")
    iot.create_policy(policyName=deny, policyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "iot:Publish", "Resource": "*"}]}))
    iot.attach_policy(policyName=deny, target=groups["child_arn"])
    result = iot.test_authorization(principal=device.cert_arn, clientId=device.thing,
                                    authInfos=[publish])["authResults"][0]
    assert result["authDecision"] == "EXPLICIT_DENY"
    assert [p["policyName"] for p in result["denied"]["explicitDeny"]["policies"]] == [deny]


def test_group_targets_in_the_policy_api(aws, groups):
    iot = aws("iot")
    own = unique("own")
    iot.create_policy(policyName=own, policyDocument=json.dumps(DEVICE_POLICY))
    iot.attach_policy(policyName=own, target=groups["child_arn"])

    def names(**kwargs):
        return [p["policyName"] for p in iot.list_attached_policies(**kwargs)["policies"]]

    assert names(target=groups["child_arn"]) == [own]
    assert names(target=groups["child_arn"], recursive=True) == [own, groups["policy"]]
    assert names(target=groups["parent_arn"], recursive=True) == [groups["policy"]]
    assert iot.list_targets_for_policy(policyName=groups["policy"])["targets"] == [groups["parent_arn"]]

    iot.detach_policy(policyName=own, target=groups["child_arn"])
    assert names(target=groups["child_arn"]) == []

    # a group with policies attached can be deleted (once it has no child groups);
    # its attachments go with it, so the policy is free to be deleted
    with pytest.raises(ClientError) as err:
        iot.delete_thing_group(thingGroupName=groups["parent"])
    assert error_code(err) == "InvalidRequestException"
    iot.delete_thing_group(thingGroupName=groups["child"])
    iot.delete_thing_group(thingGroupName=groups["parent"])
    assert iot.list_targets_for_policy(policyName=groups["policy"])["targets"] == []
    iot.delete_policy(policyName=groups["policy"])


def test_a_policy_on_a_group_does_not_block_deleting_a_certificate(aws, groups):
    # moto took every policy target for a certificate and answered DeleteCertificate with 500.
    iot = aws("iot")
    cert = iot.create_keys_and_certificate(setAsActive=False)
    cid = cert["certificateId"]
    iot.attach_policy(policyName=groups["policy"], target=cert["certificateArn"])
    with pytest.raises(ClientError) as err:
        iot.delete_certificate(certificateId=cid)
    assert error_code(err) == "DeleteConflictException"
    iot.detach_policy(policyName=groups["policy"], target=cert["certificateArn"])
    iot.delete_certificate(certificateId=cid)
    assert cid not in [c["certificateId"] for c in iot.list_certificates()["certificates"]]
    # the group still holds the policy
    assert iot.list_targets_for_policy(policyName=groups["policy"])["targets"] == [groups["parent_arn"]]
