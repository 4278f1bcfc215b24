"""Provisioning templates (fix iot_provisioning_templates) and fleet provisioning by claim
over MQTT on the device gateway (emulator/gateway/provisioning.py).

boto3 drives the control plane; paho-mqtt is the device: it connects with a claim
certificate whose policy allows only the fleet provisioning topics, gets a certificate
(CreateCertificateFromCsr / CreateKeysAndCertificate), provisions itself (RegisterThing)
and reconnects with the new certificate as the thing it became.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import error_code, http_status, start_emulator
from test_datapath import TRUST, make_function, role, wait_for  # noqa: F401 (fixtures)
from test_gateway import (  # noqa: F401 (fixtures)
    ARN,
    DEVICE_POLICY,
    Client,
    Device,
    clients,
    connected,
    gateway,
    make_device,
    tls_alert,
    unique,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fixes import _cbor  # noqa: E402
from gateway.provisioning import Rejected, Tokens, trusts_iot  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
WAIT = 5.0
CSR_TOPIC = "$aws/certificates/create-from-csr/json"
CREATE_TOPIC = "$aws/certificates/create/json"
SIMPLE_BODY = json.dumps({"Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}}})


def provision_topic(template: str, fmt: str = "json") -> str:
    return f"$aws/provisioning-templates/{template}/provision/{fmt}"


def claim_policy(template: str) -> dict:
    """AWS's claim policy: connect, and the provisioning topics of one template, nothing else."""
    topics = ["$aws/certificates/create-from-csr/*", "$aws/certificates/create/*",
              f"$aws/provisioning-templates/{template}/provision/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [f"{ARN}:topic/{t}" for t in topics]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [f"{ARN}:topicfilter/{t}" for t in topics]},
        ],
    }


def fleet_body(device_policy: str, extra_parameters=()) -> str:
    """A fleet template: thing dev-<SerialNumber>, the request's certificate, a named policy."""
    parameters = {"SerialNumber": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}}
    for name in extra_parameters:
        parameters[name] = {"Type": "String", "Default": "unset"}
    configuration = {"Serial": {"Ref": "SerialNumber"}}
    configuration.update({name: {"Ref": name} for name in extra_parameters})
    return json.dumps(
        {
            "Parameters": parameters,
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Fn::Join": ["", ["dev-", {"Ref": "SerialNumber"}]]},
                        "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
                    },
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
                },
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": device_policy}},
            },
            "DeviceConfiguration": configuration,
        }
    )


def csr_and_key(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return request.public_bytes(serialization.Encoding.PEM).decode(), key_pem


IOT_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


@pytest.fixture(scope="module")
def prov_role(aws):
    """AWS's provisioning role: trusted by iot.amazonaws.com."""
    return aws("iam").create_role(RoleName=unique("provrole"), AssumeRolePolicyDocument=IOT_TRUST)["Role"]["Arn"]


@pytest.fixture(scope="module")
def device_policy(aws):
    name = unique("devpol")
    aws("iot").create_policy(policyName=name, policyDocument=json.dumps(DEVICE_POLICY))
    return name


@pytest.fixture
def fleet(aws, prov_role, device_policy, make_device):
    """An enabled fleet template and a claim certificate allowed its topics (only)."""

    def make(name: str | None = None, hook: dict | None = None, enabled: bool = True, extra_parameters=(), policy=None):
        name = name or unique("tpl")
        kwargs = {"preProvisioningHook": hook} if hook else {}
        aws("iot").create_provisioning_template(
            templateName=name, templateBody=fleet_body(device_policy, extra_parameters),
            provisioningRoleArn=prov_role, enabled=enabled, **kwargs,
        )
        claim = make_device(policy=policy or claim_policy(name), thing=False)
        return name, claim

    return make


def claim_client(clients, gateway, claim: Device, template: str, fmt: str = "json") -> Client:
    client = clients(gateway, claim, client_id=unique("claim"))
    client.client_id = client.client._client_id.decode()  # what the hook event names
    assert client.connect(gateway["ports"]["mqtt"]) == 0
    base = ["$aws/certificates/create-from-csr", "$aws/certificates/create", f"$aws/provisioning-templates/{template}/provision"]
    filters = [f"{b}/{fmt}/{answer}" for b in base for answer in ("accepted", "rejected")]
    assert client.subscribe(*filters) == [1] * len(filters)
    return client


def get_certificate(client: Client, csr: str) -> dict:
    client.publish(CSR_TOPIC, {"certificateSigningRequest": csr})
    return client.expect_json(CSR_TOPIC + "/accepted")


def register(client: Client, template: str, token: str, parameters: dict, timeout: float = WAIT) -> tuple[str, dict]:
    """('accepted' | 'rejected', payload) of one RegisterThing."""
    topic = provision_topic(template)
    client.publish(topic, {"certificateOwnershipToken": token, "parameters": parameters})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for outcome in ("accepted", "rejected"):
            try:
                return outcome, json.loads(client.expect(f"{topic}/{outcome}", timeout=0.1))
            except AssertionError:
                continue
    raise AssertionError(f"no answer to RegisterThing on {topic} within {timeout}s")


def write_pair(tmp_path, name: str, cert_pem: str, key_pem: str) -> tuple[str, str]:
    certfile, keyfile = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    certfile.write_text(cert_pem)
    keyfile.write_text(key_pem)
    return str(certfile), str(keyfile)


# -- the template APIs ------------------------------------------------------------------------


def test_template_create_describe_update_list_delete(aws, prov_role):
    iot = aws("iot")
    name = unique("tpl")
    created = iot.create_provisioning_template(
        templateName=name, description="first", templateBody=SIMPLE_BODY, provisioningRoleArn=prov_role,
        tags=[{"Key": "team", "Value": "fleet"}],
    )
    arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/{name}"
    assert (created["templateArn"], created["templateName"], created["defaultVersionId"]) == (arn, name, 1)

    described = iot.describe_provisioning_template(templateName=name)
    assert described["templateBody"] == SIMPLE_BODY
    assert described["enabled"] is False  # AWS's default
    assert described["type"] == "FLEET_PROVISIONING"
    assert described["provisioningRoleArn"] == prov_role
    assert described["description"] == "first"
    assert "preProvisioningHook" not in described
    assert described["creationDate"] <= described["lastModifiedDate"]
    assert iot.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "team", "Value": "fleet"}]

    iot.update_provisioning_template(templateName=name, enabled=True, description="second")
    described = iot.describe_provisioning_template(templateName=name)
    assert (described["enabled"], described["description"]) == (True, "second")

    summaries = {t["templateName"]: t for t in iot.get_paginator("list_provisioning_templates").paginate().build_full_result()["templates"]}
    assert summaries[name]["templateArn"] == arn and summaries[name]["enabled"] is True

    iot.delete_provisioning_template(templateName=name)
    with pytest.raises(ClientError) as missing:
        iot.describe_provisioning_template(templateName=name)
    assert (error_code(missing), http_status(missing)) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as untagged:
        iot.list_tags_for_resource(resourceArn=arn)
    assert error_code(untagged) == "ResourceNotFoundException"


def test_list_templates_pages(aws, prov_role):
    iot = aws("iot")
    names = {unique("page") for _ in range(3)}
    for name in names:
        iot.create_provisioning_template(templateName=name, templateBody=SIMPLE_BODY, provisioningRoleArn=prov_role)
    # Never given a description: none is reported.
    assert "description" not in iot.describe_provisioning_template(templateName=min(names))
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = iot.list_provisioning_templates(maxResults=1, **kwargs)
        assert len(page["templates"]) <= 1
        seen += [t["templateName"] for t in page["templates"]]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert names <= set(seen)
    assert len(seen) == len(set(seen)) == pages
    with pytest.raises(ClientError) as bad:
        iot.list_provisioning_templates(maxResults=251)
    assert error_code(bad) == "InvalidRequestException"


def test_template_versions(aws, prov_role):
    iot = aws("iot")
    name = unique("ver")
    iot.create_provisioning_template(templateName=name, templateBody=SIMPLE_BODY, provisioningRoleArn=prov_role)
    bodies = {1: SIMPLE_BODY}
    for version in range(2, 6):
        body = SIMPLE_BODY.replace('"x"', f'"x{version}"')
        answer = iot.create_provisioning_template_version(templateName=name, templateBody=body, setAsDefault=(version == 3))
        assert (answer["versionId"], answer["isDefaultVersion"]) == (version, version == 3)
        bodies[version] = body
    with pytest.raises(ClientError) as limit:
        iot.create_provisioning_template_version(templateName=name, templateBody=SIMPLE_BODY)
    assert (error_code(limit), http_status(limit)) == ("VersionsLimitExceededException", 409)

    described = iot.describe_provisioning_template(templateName=name)
    assert (described["defaultVersionId"], described["templateBody"]) == (3, bodies[3])
    versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
    assert [(v["versionId"], v["isDefaultVersion"]) for v in versions] == [(1, False), (2, False), (3, True), (4, False), (5, False)]
    first = iot.list_provisioning_template_versions(templateName=name, maxResults=2)
    second = iot.list_provisioning_template_versions(templateName=name, maxResults=2, nextToken=first["nextToken"])
    assert [v["versionId"] for v in first["versions"] + second["versions"]] == [1, 2, 3, 4]
    version = iot.describe_provisioning_template_version(templateName=name, versionId=4)
    assert (version["templateBody"], version["isDefaultVersion"]) == (bodies[4], False)

    with pytest.raises(ClientError) as default:
        iot.delete_provisioning_template_version(templateName=name, versionId=3)
    assert (error_code(default), http_status(default)) == ("DeleteConflictException", 409)
    iot.delete_provisioning_template_version(templateName=name, versionId=2)
    with pytest.raises(ClientError) as gone:
        iot.describe_provisioning_template_version(templateName=name, versionId=2)
    assert (error_code(gone), http_status(gone)) == ("ResourceNotFoundException", 404)
    # A slot is free again; ids are never reused.
    assert iot.create_provisioning_template_version(templateName=name, templateBody=SIMPLE_BODY)["versionId"] == 6

    iot.update_provisioning_template(templateName=name, defaultVersionId=1)
    assert iot.describe_provisioning_template(templateName=name)["templateBody"] == SIMPLE_BODY
    with pytest.raises(ClientError) as unknown:
        iot.update_provisioning_template(templateName=name, defaultVersionId=2)
    assert error_code(unknown) == "ResourceNotFoundException"
    assert iot.describe_provisioning_template(templateName=name)["defaultVersionId"] == 1


@pytest.mark.parametrize(
    "change, code",
    [
        ({"templateName": "has space"}, "InvalidRequestException"),
        ({"templateName": "n" * 37}, "InvalidRequestException"),
        ({"templateBody": "{not json"}, "InvalidRequestException"),
        ({"templateBody": "[]"}, "InvalidRequestException"),
        ({"templateBody": json.dumps({"Resources": {"r": {"Type": "AWS::S3::Bucket"}}})}, "InvalidRequestException"),
        ({"templateBody": json.dumps({"Parameters": {}})}, "InvalidRequestException"),
        ({"provisioningRoleArn": "arn:aws:iam::123456789012:user/someone"}, "InvalidRequestException"),
        ({"type": "SOMETHING"}, "InvalidRequestException"),
        ({"description": "d" * 501}, "InvalidRequestException"),
    ],
)
def test_create_template_refuses(aws, prov_role, change, code):
    kwargs = {"templateName": unique("bad"), "templateBody": SIMPLE_BODY, "provisioningRoleArn": prov_role}
    kwargs.update(change)
    iot = aws("iot")
    with pytest.raises(ClientError) as refused:
        iot.create_provisioning_template(**kwargs)
    assert (error_code(refused), http_status(refused)) == (code, 400)
    with pytest.raises(ClientError):
        iot.describe_provisioning_template(templateName=kwargs["templateName"])


def test_template_name_taken_and_missing(aws, prov_role):
    iot = aws("iot")
    name = unique("dup")
    iot.create_provisioning_template(templateName=name, templateBody=SIMPLE_BODY, provisioningRoleArn=prov_role)
    with pytest.raises(ClientError) as taken:
        iot.create_provisioning_template(templateName=name, templateBody=SIMPLE_BODY, provisioningRoleArn=prov_role)
    assert (error_code(taken), http_status(taken)) == ("ResourceAlreadyExistsException", 409)
    for call in (
        lambda n: iot.update_provisioning_template(templateName=n, enabled=True),
        lambda n: iot.delete_provisioning_template(templateName=n),
        lambda n: iot.create_provisioning_template_version(templateName=n, templateBody=SIMPLE_BODY),
        lambda n: iot.list_provisioning_template_versions(templateName=n),
    ):
        with pytest.raises(ClientError) as missing:
            call(unique("none"))
        assert (error_code(missing), http_status(missing)) == ("ResourceNotFoundException", 404)


def test_template_hook_rules(aws, prov_role, make_function):
    iot = aws("iot")
    function = make_function("def handler(event, context):\n    return {'allowProvisioning': True}\n")
    target = aws("lambda").get_function(FunctionName=function)["Configuration"]["FunctionArn"]
    name = unique("hook")
    base = {"templateBody": SIMPLE_BODY, "provisioningRoleArn": prov_role}
    iot.create_provisioning_template(templateName=name, preProvisioningHook={"targetArn": target}, **base)
    assert iot.describe_provisioning_template(templateName=name)["preProvisioningHook"] == {
        "targetArn": target, "payloadVersion": "2020-04-01"}

    refused = [
        {"targetArn": target, "payloadVersion": "2019-01-01"},  # the only version is 2020-04-01
        {"targetArn": target + "-missing"},  # "must exist in your account"
        {"targetArn": "arn:aws:sns:us-east-1:123456789012:topic"},
    ]
    for hook in refused:
        with pytest.raises(ClientError) as bad:
            iot.create_provisioning_template(templateName=unique("hook"), preProvisioningHook=hook, **base)
        assert error_code(bad) == "InvalidRequestException", hook
    with pytest.raises(ClientError) as jitp:
        iot.create_provisioning_template(templateName=unique("jitp"), type="JITP", preProvisioningHook={"targetArn": target}, **base)
    assert error_code(jitp) == "InvalidRequestException"

    with pytest.raises(ClientError) as both:
        iot.update_provisioning_template(templateName=name, preProvisioningHook={"targetArn": target}, removePreProvisioningHook=True)
    assert error_code(both) == "InvalidRequestException"
    iot.update_provisioning_template(templateName=name, removePreProvisioningHook=True)
    assert "preProvisioningHook" not in iot.describe_provisioning_template(templateName=name)
    with pytest.raises(ClientError) as role_arn:
        iot.update_provisioning_template(templateName=name, provisioningRoleArn="not-an-arn-at-all-really")
    assert error_code(role_arn) == "InvalidRequestException"


def test_request_log_names_and_reset(tmp_path):
    """Each operation is logged under its botocore name; /moto-api/reset forgets templates."""
    log = tmp_path / "requests.jsonl"
    server = start_emulator("--no-gateway", "--request-log", str(log), env={"IOTREG_EMULATOR_REQUEST_LOG": None})
    try:
        iot, iam = server.client("iot"), server.client("iam")
        role_arn = iam.create_role(RoleName="prov", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
        iot.create_provisioning_template(templateName="t1", templateBody=SIMPLE_BODY, provisioningRoleArn=role_arn,
                                         tags=[{"Key": "k", "Value": "v"}])
        iot.describe_provisioning_template(templateName="t1")
        iot.update_provisioning_template(templateName="t1", enabled=True)
        iot.list_provisioning_templates()
        iot.create_provisioning_template_version(templateName="t1", templateBody=SIMPLE_BODY, setAsDefault=True)
        iot.describe_provisioning_template_version(templateName="t1", versionId=1)
        iot.list_provisioning_template_versions(templateName="t1")
        iot.delete_provisioning_template_version(templateName="t1", versionId=1)
        with pytest.raises(ClientError):
            iot.delete_provisioning_template_version(templateName="t1", versionId=2)  # the default
        iot.create_provisioning_template(templateName="t2", templateBody=SIMPLE_BODY, provisioningRoleArn=role_arn)
        iot.delete_provisioning_template(templateName="t2")

        lines = [json.loads(line) for line in log.read_text().splitlines()]
        iot_lines = [(r["operation"], r["status"]) for r in lines if r["service"] == "iot"]
        assert iot_lines == [
            ("CreateProvisioningTemplate", 200),
            ("DescribeProvisioningTemplate", 200),
            ("UpdateProvisioningTemplate", 200),
            ("ListProvisioningTemplates", 200),
            ("CreateProvisioningTemplateVersion", 200),
            ("DescribeProvisioningTemplateVersion", 200),
            ("ListProvisioningTemplateVersions", 200),
            ("DeleteProvisioningTemplateVersion", 200),
            ("DeleteProvisioningTemplateVersion", 409),
            ("CreateProvisioningTemplate", 200),
            ("DeleteProvisioningTemplate", 200),
        ]

        request = urllib.request.Request(server.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        assert iot.list_provisioning_templates()["templates"] == []
        with pytest.raises(ClientError) as gone:
            iot.describe_provisioning_template(templateName="t1")
        assert error_code(gone) == "ResourceNotFoundException"
    finally:
        assert server.stop() == 0


# -- ownership tokens (injected clock) ---------------------------------------------------------


def test_token_expires_after_its_lifetime():
    now = [1000.0]
    tokens = Tokens(clock=lambda: now[0], lifetime=3600)
    token = tokens.issue(ACCOUNT, REGION, "c" * 64)
    now[0] += 3599
    assert tokens.lookup(token).certificate_id == "c" * 64
    now[0] += 1
    with pytest.raises(Rejected) as expired:
        tokens.lookup(token)
    assert (expired.value.status, expired.value.code) == (400, "InvalidCertificateOwnershipToken")
    with pytest.raises(Rejected) as forgotten:  # gone for good, not valid again
        tokens.lookup(token)
    assert "not valid" in forgotten.value.message
    other = tokens.issue(ACCOUNT, REGION, "d" * 64)
    now[0] += 3600
    assert [e.certificate_id for e in tokens.take_expired()] == ["d" * 64]
    with pytest.raises(Rejected):
        tokens.lookup(other)


def statement(**fields) -> dict:
    return {"Version": "2012-10-17", "Statement": [dict({"Effect": "Allow", "Action": "sts:AssumeRole"}, **fields)]}


@pytest.mark.parametrize(
    "document, trusted",
    [
        (IOT_TRUST, True),
        (statement(Principal={"Service": ["lambda.amazonaws.com", "iot.amazonaws.com"]}), True),
        (statement(Principal="*"), True),
        (statement(Principal={"Service": "iot.amazonaws.com"}, Action=["sts:TagSession", "sts:*"]), True),
        (TRUST, False),  # Lambda only
        (statement(Principal={"Service": "iot.amazonaws.com"}, Action="sts:TagSession"), False),
        (statement(Principal={"AWS": "arn:aws:iam::123456789012:root"}), False),
        ({"Statement": [json.loads(IOT_TRUST)["Statement"][0], dict(json.loads(IOT_TRUST)["Statement"][0], Effect="Deny")]}, False),
        ("not json", False),
    ],
)
def test_role_trust_policy_for_iot(document, trusted):
    assert trusts_iot(document if isinstance(document, str) else json.dumps(document)) is trusted


# -- fleet provisioning by claim over MQTT ------------------------------------------------------


def test_claim_flow_csr_register_and_reconnect_as_the_thing(aws, gateway, clients, fleet, tmp_path):
    iot = aws("iot")
    template, claim = fleet()
    client = claim_client(clients, gateway, claim, template)
    serial = unique("sn")
    csr, key_pem = csr_and_key(serial)

    issued = get_certificate(client, csr)
    cert_id = issued["certificateId"]
    assert set(issued) == {"certificateId", "certificatePem", "certificateOwnershipToken"}
    certificate = x509.load_pem_x509_certificate(issued["certificatePem"].encode())
    assert certificate.fingerprint(hashes.SHA256()).hex() == cert_id
    assert certificate.public_key().public_numbers() == serialization.load_pem_private_key(
        key_pem.encode(), None).public_key().public_numbers()
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "PENDING_ACTIVATION"
    certfile, keyfile = write_pair(tmp_path, serial, issued["certificatePem"], key_pem)
    # Not usable before RegisterThing activates it.
    assert "CERTIFICATE_REVOKED" in tls_alert(gateway, certfile, keyfile)

    outcome, answer = register(client, template, issued["certificateOwnershipToken"], {"SerialNumber": serial})
    assert outcome == "accepted", answer
    thing = f"dev-{serial}"
    assert answer == {"thingName": thing, "deviceConfiguration": {"Serial": serial}}
    assert iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"
    assert iot.describe_thing(thingName=thing)["attributes"] == {"serial": serial}
    cert_arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["certificateArn"]
    assert iot.list_thing_principals(thingName=thing)["principals"] == [cert_arn]

    # The token is spent.
    outcome, again = register(client, template, issued["certificateOwnershipToken"], {"SerialNumber": serial})
    assert (outcome, again["statusCode"], again["errorCode"]) == ("rejected", 400, "InvalidCertificateOwnershipToken")

    # The device, as its thing, under the device policy the template attached.
    device = Device(thing, cert_arn, cert_id, certfile, keyfile, None)
    as_thing = connected(clients, gateway, device)
    as_thing.subscribe(f"dev/{thing}/out")
    as_thing.publish(f"dev/{thing}/out", {"hello": serial})
    assert json.loads(as_thing.expect(f"dev/{thing}/out")) == {"hello": serial}


def test_create_keys_and_certificate_then_register_in_cbor(aws, gateway, clients, fleet):
    iot = aws("iot")
    template, claim = fleet()
    client = claim_client(clients, gateway, claim, template, fmt="cbor")
    client.subscribe(CREATE_TOPIC + "/accepted")
    client.publish(CREATE_TOPIC, b"")  # the API's request has an empty payload
    issued = json.loads(client.expect(CREATE_TOPIC + "/accepted"))
    assert set(issued) == {"certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"}
    assert iot.describe_certificate(certificateId=issued["certificateId"])["certificateDescription"]["status"] == "PENDING_ACTIVATION"

    serial = unique("cb")
    topic = provision_topic(template, "cbor")
    client.publish(topic, _cbor.encode({"certificateOwnershipToken": issued["certificateOwnershipToken"],
                                        "parameters": {"SerialNumber": serial}}))
    answer = _cbor.decode(client.expect(topic + "/accepted"))
    assert answer == {"thingName": f"dev-{serial}", "deviceConfiguration": {"Serial": serial}}
    assert iot.describe_certificate(certificateId=issued["certificateId"])["certificateDescription"]["status"] == "ACTIVE"


HOOK = """
import json
def handler(event, context):
    print("HOOK-EVENT " + json.dumps(event, sort_keys=True))
    serial = event["parameters"].get("SerialNumber", "")
    return {
        "allowProvisioning": not serial.startswith("blocked"),
        "parameterOverrides": {"Claim": event["claimCertificateId"], "Client": event["clientId"],
                               "Tpl": event["templateArn"], "Cert": event["certificateId"]},
    }
"""


def hook_for(aws, make_function, code: str, template_arn: str | None, timeout: int = 3) -> dict:
    function = make_function(code, timeout=timeout)
    if template_arn is not None:
        aws("lambda").add_permission(
            FunctionName=function, StatementId="iot-provisioning", Action="lambda:InvokeFunction",
            Principal="iot.amazonaws.com", SourceArn=template_arn,
        )
    arn = aws("lambda").get_function(FunctionName=function)["Configuration"]["FunctionArn"]
    return {"targetArn": arn, "payloadVersion": "2020-04-01"}


def template_arn_of(name: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/{name}"


def test_hook_allows_overrides_and_refuses_a_serial(aws, gateway, clients, fleet, make_function):
    iot = aws("iot")
    name = unique("tpl")
    hook = hook_for(aws, make_function, HOOK, template_arn_of(name))
    template, claim = fleet(name=name, hook=hook, extra_parameters=("Claim", "Client", "Tpl", "Cert"))
    client = claim_client(clients, gateway, claim, template)

    serial = unique("ok")
    issued = get_certificate(client, csr_and_key(serial)[0])
    outcome, answer = register(client, template, issued["certificateOwnershipToken"], {"SerialNumber": serial})
    assert outcome == "accepted", answer
    # The hook saw the 2020-04-01 event and its parameterOverrides reached the template.
    assert answer["deviceConfiguration"] == {
        "Serial": serial, "Claim": claim.cert_id, "Client": client.client_id,
        "Tpl": template_arn_of(name), "Cert": issued["certificateId"],
    }
    event = next(
        json.loads(e["message"].split("HOOK-EVENT ", 1)[1])
        for e in wait_for(aws, hook["targetArn"].split(":")[-1], "HOOK-EVENT")
        if "HOOK-EVENT" in e["message"]
    )
    assert event == {
        "claimCertificateId": claim.cert_id, "certificateId": issued["certificateId"],
        "certificatePem": issued["certificatePem"], "templateArn": template_arn_of(name),
        "clientId": client.client_id, "parameters": {"SerialNumber": serial},
    }

    blocked = unique("blocked")
    refused = get_certificate(client, csr_and_key(blocked)[0])
    outcome, answer = register(client, template, refused["certificateOwnershipToken"], {"SerialNumber": blocked})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 403, "AccessDenied")
    with pytest.raises(ClientError):
        iot.describe_thing(thingName=f"dev-{blocked}")
    assert iot.describe_certificate(certificateId=refused["certificateId"])["certificateDescription"]["status"] == "PENDING_ACTIVATION"


def test_hook_without_permission_for_iot_refuses(aws, gateway, clients, fleet, make_function):
    name = unique("tpl")
    # The function's resource policy lets IoT invoke it for another template only.
    hook = hook_for(aws, make_function, HOOK, template_arn_of("some-other-template"))
    template, claim = fleet(name=name, hook=hook)
    client = claim_client(clients, gateway, claim, template)
    issued = get_certificate(client, csr_and_key("x")[0])
    outcome, answer = register(client, template, issued["certificateOwnershipToken"], {"SerialNumber": unique("np")})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 403, "AccessDenied")
    assert aws("iot").describe_certificate(certificateId=issued["certificateId"])["certificateDescription"]["status"] == "PENDING_ACTIVATION"


def test_hook_slower_than_five_seconds_is_refused(aws, gateway, clients, fleet, make_function):
    name = unique("tpl")
    slow = "import time\ndef handler(event, context):\n    time.sleep(9)\n    return {'allowProvisioning': True}\n"
    hook = hook_for(aws, make_function, slow, template_arn_of(name), timeout=12)
    template, claim = fleet(name=name, hook=hook)
    client = claim_client(clients, gateway, claim, template)
    serial = unique("slow")
    issued = get_certificate(client, csr_and_key(serial)[0])
    started = time.monotonic()
    outcome, answer = register(client, template, issued["certificateOwnershipToken"], {"SerialNumber": serial}, timeout=15)
    elapsed = time.monotonic() - started
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 403, "AccessDenied")
    assert 4.8 <= elapsed < 8.5, elapsed  # refused at 5 s, before the handler returns at 9 s
    with pytest.raises(ClientError):
        aws("iot").describe_thing(thingName=f"dev-{serial}")


def test_disabled_missing_template_and_missing_role_are_refused(aws, gateway, clients, fleet, device_policy):
    iot = aws("iot")
    template, claim = fleet(enabled=False)
    client = claim_client(clients, gateway, claim, template)
    issued = get_certificate(client, csr_and_key("d")[0])
    token = issued["certificateOwnershipToken"]
    outcome, answer = register(client, template, token, {"SerialNumber": unique("dis")})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 400, "InvalidRequest")

    # The role named by the template is gone from IAM.
    ghost = f"arn:aws:iam::{ACCOUNT}:role/{unique('ghost')}"
    iot.update_provisioning_template(templateName=template, enabled=True, provisioningRoleArn=ghost)
    outcome, answer = register(client, template, token, {"SerialNumber": unique("norole")})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 403, "AccessDenied")
    assert "does not exist" in answer["errorMessage"]

    # A role AWS IoT may not assume (its trust policy names Lambda only).
    lambda_only = aws("iam").create_role(RoleName=unique("lambdarole"), AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    iot.update_provisioning_template(templateName=template, provisioningRoleArn=lambda_only)
    outcome, answer = register(client, template, token, {"SerialNumber": unique("untrusted")})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 403, "AccessDenied")
    assert "cannot be assumed" in answer["errorMessage"]

    # The claim policy allows this template's topics only; delete the template itself.
    iot.delete_provisioning_template(templateName=template)
    outcome, answer = register(client, template, token, {"SerialNumber": unique("gone")})
    assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 404, "ResourceNotFound")

    outcome, answer = register(client, template, "", {})
    assert answer == {"statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken",
                      "errorMessage": "Certificate ownership token cannot be empty."}


def test_claim_policy_without_the_topics_gets_nothing(aws, gateway, clients, fleet, make_device):
    iot = aws("iot")
    template, _ = fleet()
    # Subscribe and publish allowed, but no iot:Receive on the answers.
    policy = claim_policy(template)
    policy["Statement"][1]["Action"] = "iot:Publish"
    claim = make_device(policy=policy, thing=False)
    client = claim_client(clients, gateway, claim, template)
    def certificates() -> set[str]:
        return {c["certificateId"] for c in iot.list_certificates(pageSize=250)["certificates"]}

    before = certificates()
    client.publish(CSR_TOPIC, {"certificateSigningRequest": csr_and_key("r")[0]})
    client.nothing_on(CSR_TOPIC + "/accepted", quiet=1.5)
    assert not client.disconnected.is_set()
    # The service did act (a certificate was issued); only the answer was not delivered.
    assert len(certificates() - before) == 1

    # No iot:Publish on the request topic at all: the connection is closed, nothing issued.
    policy = claim_policy(template)
    policy["Statement"][1]["Resource"] = [r for r in policy["Statement"][1]["Resource"] if "create-from-csr" not in r]
    closed = make_device(policy=policy, thing=False)
    other = claim_client(clients, gateway, closed, template)
    before = certificates()
    other.publish(CSR_TOPIC, {"certificateSigningRequest": csr_and_key("p")[0]})
    assert other.disconnected.wait(WAIT)
    other.nothing_on(CSR_TOPIC + "/accepted", quiet=0.5)
    assert certificates() == before


def test_answer_goes_to_the_requesting_connection_only(aws, gateway, clients, fleet):
    template, claim = fleet()
    first = claim_client(clients, gateway, claim, template)
    second = claim_client(clients, gateway, claim, template)  # same claim certificate, other client id
    get_certificate(first, csr_and_key("a")[0])
    second.nothing_on(CSR_TOPIC + "/accepted", quiet=0.8)

    # Subscribing after the request is too late: the answer is not kept.
    late = clients(gateway, claim, client_id=unique("late"))
    assert late.connect(gateway["ports"]["mqtt"]) == 0
    late.publish(CSR_TOPIC, {"certificateSigningRequest": csr_and_key("b")[0]})
    time.sleep(0.8)
    assert late.subscribe(CSR_TOPIC + "/accepted") == [1]
    late.nothing_on(CSR_TOPIC + "/accepted", quiet=0.8)


def test_expired_token_is_refused_and_its_certificate_deleted(tmp_path):
    """A server whose tokens live 1 s (IOTREG_EMULATOR_PROVISIONING_TOKEN_SECONDS)."""
    server = start_emulator(env={"IOTREG_EMULATOR_PROVISIONING_TOKEN_SECONDS": "1"})
    made = []
    try:
        iot, iam = server.client("iot"), server.client("iam")
        with urllib.request.urlopen(server.url + "/iotreg-test/gateway", timeout=5) as answer:
            info = json.load(answer)
        role_arn = iam.create_role(RoleName="prov", AssumeRolePolicyDocument=IOT_TRUST)["Role"]["Arn"]
        iot.create_policy(policyName="device", policyDocument=json.dumps(DEVICE_POLICY))
        iot.create_provisioning_template(templateName="t", templateBody=fleet_body("device"),
                                         provisioningRoleArn=role_arn, enabled=True)
        created = iot.create_keys_and_certificate(setAsActive=True)
        iot.create_policy(policyName="claim", policyDocument=json.dumps(claim_policy("t")))
        iot.attach_policy(policyName="claim", target=created["certificateArn"])
        certfile, keyfile = write_pair(tmp_path, "claim", created["certificatePem"], created["keyPair"]["PrivateKey"])
        claim = Device("claim", created["certificateArn"], created["certificateId"], certfile, keyfile, "claim")
        client = Client(info, claim, client_id="claim-1")
        made.append(client)
        assert client.connect(info["ports"]["mqtt"]) == 0
        client.subscribe(CSR_TOPIC + "/accepted", provision_topic("t") + "/accepted", provision_topic("t") + "/rejected")
        issued = get_certificate(client, csr_and_key("e")[0])
        time.sleep(1.3)
        outcome, answer = register(client, "t", issued["certificateOwnershipToken"], {"SerialNumber": "late"})
        assert (outcome, answer["statusCode"], answer["errorCode"]) == ("rejected", 400, "InvalidCertificateOwnershipToken")
        assert "expired" in answer["errorMessage"]
        with pytest.raises(ClientError) as deleted:  # unused when its token expired: AWS deletes it
            iot.describe_certificate(certificateId=issued["certificateId"])
        assert error_code(deleted) == "ResourceNotFoundException"
    finally:
        for client in made:
            client.close()
        assert server.stop() == 0
