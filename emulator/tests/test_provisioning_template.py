"""The provisioning template engine (emulator/provisioning): render and apply, in-process."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fixes  # noqa: E402
from provisioning import TemplateError, apply, policy_name_for, render  # noqa: E402

ACCOUNT = "123456789012"
REGION = "ap-south-1"  # a region no other in-process test uses

POLICY_DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}

BULK = {
    "Parameters": {
        "ThingName": {"Type": "String"},
        "SerialNumber": {"Type": "String"},
        "Location": {"Type": "String", "Default": "WA"},
        "CSR": {"Type": "String"},
    },
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Ref": "ThingName"},
                "AttributePayload": {"version": "v1", "serialNumber": {"Ref": "SerialNumber"}},
                "ThingGroups": ["fleet", {"Ref": "Location"}],
            },
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"},
        },
        "policy": {"Type": "AWS::IoT::Policy",
                   "Properties": {"PolicyDocument": json.dumps(POLICY_DOC)}},
    },
}


def make_csr(cn: str = "device") -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


@pytest.fixture
def backend():
    from moto.iot.models import iot_backends

    fixes.apply_all()
    b = iot_backends[ACCOUNT][REGION]
    b.reset()
    yield b
    b.reset()


def group(backend, name, parent=None):
    backend.create_thing_group(name, parent, {})
    return backend.describe_thing_group(name)


# ---------------------------------------------------------------- render


def test_render_parameters_defaults_and_ref():
    r = render(json.dumps(BULK), {"ThingName": "t1", "SerialNumber": "42", "CSR": "pem"})
    thing = r.of_type("AWS::IoT::Thing")[0]
    assert thing.properties == {"ThingName": "t1",
                                "AttributePayload": {"version": "v1", "serialNumber": "42"},
                                "ThingGroups": ["fleet", "WA"]}
    assert r.parameters["Location"] == "WA"  # the Default


def test_render_missing_parameter_is_invalid_request():
    with pytest.raises(TemplateError) as err:
        render(BULK, {"ThingName": "t1", "CSR": "pem"})
    assert err.value.code == "InvalidRequestException"
    assert err.value.status == 400
    assert "SerialNumber" in err.value.message


def test_render_functions():
    body = {
        "Parameters": {"Serial": {"Type": "String"}, "Loc": {"Type": "String"},
                       "Csv": {"Type": "String"}},
        "Mappings": {"Table": {"Seattle": {"Url": "https://example.aws"}, "Paris": {"Url": "https://p"}}},
        "Conditions": {
            "IsSeattle": {"Fn::Equals": [{"Ref": "Loc"}, "Seattle"]},
            "NotSeattle": {"Fn::Not": [{"Condition": "IsSeattle"}]},
            "Both": {"Fn::And": [{"Condition": "IsSeattle"}, {"Fn::Equals": ["a", "a"]}]},
            "Either": {"Fn::Or": [{"Condition": "NotSeattle"}, {"Fn::Equals": ["a", "b"]}]},
        },
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::Join": ["_", ["dev", {"Ref": "Serial"}]]},
                "AttributePayload": {
                    "second": {"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "Csv"}]}]},
                    "sub": {"Fn::Sub": "s-${Serial}-${AWS::Region}-${!Lit}"},
                    "sub2": {"Fn::Sub": ["${x}/${Loc}", {"x": "X"}]},
                    "if": {"Fn::If": ["Both", "yes", "no"]},
                    "gone": {"Fn::If": ["Either", "there", {"Ref": "AWS::NoValue"}]},
                }}},
            "only_elsewhere": {"Type": "AWS::IoT::Policy", "Condition": "NotSeattle",
                               "Properties": {"PolicyName": "p"}},
        },
        "DeviceConfiguration": {"LocationUrl": {"Fn::FindInMap": ["Table", {"Ref": "Loc"}, "Url"]},
                                "Fallback": "https://example.com"},
    }
    r = render(body, {"Serial": "42", "Loc": "Seattle", "Csv": "a,b,c"}, region="eu-west-1")
    assert [res.logical_name for res in r.resources] == ["thing"]  # Condition false: left out
    props = r.resources[0].properties
    assert props["ThingName"] == "dev_42"
    assert props["AttributePayload"] == {"second": "b", "sub": "s-42-eu-west-1-${Lit}",
                                         "sub2": "X/Seattle", "if": "yes"}
    assert r.device_configuration == {"LocationUrl": "https://example.aws",
                                      "Fallback": "https://example.com"}
    r2 = render(body, {"Serial": "1", "Loc": "Paris", "Csv": "a,b"}, region="us-east-1")
    assert [res.logical_name for res in r2.resources] == ["thing", "only_elsewhere"]
    assert r2.resources[0].properties["AttributePayload"]["if"] == "no"
    assert r2.resources[0].properties["AttributePayload"]["gone"] == "there"
    assert r2.device_configuration["LocationUrl"] == "https://p"


@pytest.mark.parametrize("body,fragment", [
    ("not json", "not valid JSON"),
    ({"Parameters": {}}, "no Resources"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Bucket"}}}, "unsupported type"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {}}}}, "ThingName"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Policy",
                          "Properties": {"PolicyName": "a", "PolicyDocument": "{}"}}}}, "not both"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Certificate",
                          "Properties": {"CertificateId": "a", "CertificateSigningRequest": "b"}}}},
     "only one"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {
        "ThingName": {"Fn::Select": [5, ["a"]]}}}}}, "out of bounds"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {
        "ThingName": {"Fn::Base64": "a"}}}}}, "Unsupported function"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "a"},
                          "OverrideSettings": {"ThingTypeName": "MERGE"}}}}, "MERGE"),
    ({"Mappings": {"m": {"k": {"v": {"Ref": "x"}}}},
      "Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "a"}}}}, "Mappings"),
    ({"Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "a"}}},
      "DeviceConfiguration": {"nested": {"a": "b"}}}, "nested"),
])
def test_render_rejects(body, fragment):
    with pytest.raises(TemplateError) as err:
        render(body if isinstance(body, str) else json.dumps(body), {})
    assert err.value.code == "InvalidRequestException"
    assert fragment in err.value.message


def test_find_in_map_missing_key():
    body = {"Parameters": {"Loc": {"Type": "String"}},
            "Mappings": {"T": {"Seattle": {"Url": "u"}}},
            "Resources": {"x": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::FindInMap": ["T", {"Ref": "Loc"}, "Url"]}}}}}
    assert render(body, {"Loc": "Seattle"}).resources[0].properties["ThingName"] == "u"
    with pytest.raises(TemplateError, match="FindInMap"):
        render(body, {"Loc": "Paris"})


# ---------------------------------------------------------------- apply


def test_apply_bulk_template(backend):
    group(backend, "fleet")
    group(backend, "WA")
    csr, key = make_csr("t1")
    out = apply(ACCOUNT, REGION, render(BULK, {"ThingName": "t1", "SerialNumber": "42", "CSR": csr}))

    cert = backend.describe_certificate(out["certificateId"])
    issued = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
    # the CSR's own key (iot_csr fix), id = SHA-256 of the DER (iot_certificate_id fix)
    assert issued.public_key().public_numbers() == key.public_key().public_numbers()
    assert out["certificateId"] == hashlib.sha256(
        issued.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert cert.status == "ACTIVE"
    assert out["certificatePem"] == cert.certificate_pem

    thing = backend.describe_thing("t1")
    assert thing.attributes == {"version": "v1", "serialNumber": "42"}
    assert out["thingArn"] == thing.arn
    assert (cert.arn, "t1") in backend.principal_things
    assert sorted(g.thing_group_name for g in backend.thing_groups.values()
                  if thing.arn in g.things) == ["WA", "fleet"]

    name = policy_name_for(json.dumps(POLICY_DOC))
    assert len(name) == 64 and out["policyNames"] == [name]
    assert (cert.arn, name) in backend.principal_policies
    assert out["resourceArns"] == {"certificate": cert.arn, "thing": thing.arn,
                                   "policy": backend.get_policy(name).arn}

    # a second device with the same inline document reuses the policy
    csr2, _ = make_csr("t2")
    out2 = apply(ACCOUNT, REGION, render(BULK, {"ThingName": "t2", "SerialNumber": "43", "CSR": csr2}))
    assert out2["policyNames"] == [name]
    assert len([p for p in backend.policies if p == name]) == 1


def test_apply_inactive_status_and_existing_policy(backend):
    backend.create_policy("devices", json.dumps(POLICY_DOC))
    csr, _ = make_csr()
    body = {"Resources": {
        "c": {"Type": "AWS::IoT::Certificate",
              "Properties": {"CertificateSigningRequest": csr, "Status": "Inactive"}},
        "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "devices"}}}}
    out = apply(ACCOUNT, REGION, render(body, {}))
    assert backend.describe_certificate(out["certificateId"]).status == "INACTIVE"
    assert (out["certificateArn"], "devices") in backend.principal_policies
    assert out["thingArn"] is None


def test_apply_with_given_certificate_id(backend):
    csr, _ = make_csr()
    cert = backend.create_certificate_from_csr(csr, True)
    body = {"Parameters": {"ThingName": {"Type": "String"}},
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
                "cert": {"Type": "AWS::IoT::Certificate",
                         "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}}}}
    rendered = render(body, {"ThingName": "fp1", "AWS::IoT::Certificate::Id": cert.certificate_id})
    out = apply(ACCOUNT, REGION, rendered, certificate_id=cert.certificate_id)
    assert out["certificateArn"] == cert.arn
    assert (cert.arn, "fp1") in backend.principal_things
    with pytest.raises(TemplateError, match="CertificateId"):
        apply(ACCOUNT, REGION, rendered, certificate_id="0" * 64)


def test_override_settings(backend):
    group(backend, "old")
    group(backend, "new")
    backend.create_thing("dev", None, {"attributes": {"a": "1", "b": "2"}})
    backend.add_thing_to_thing_group("old", None, "dev", None)

    def tpl(overrides):
        return {"Resources": {"thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {"ThingName": "dev", "AttributePayload": {"b": "3", "c": "4"},
                           "ThingGroups": ["new"]},
            "OverrideSettings": overrides}}}

    def groups():
        thing = backend.describe_thing("dev")
        return sorted(g.thing_group_name for g in backend.thing_groups.values() if thing.arn in g.things)

    apply(ACCOUNT, REGION, render(tpl({}), {}))  # default: leave it as it is
    assert backend.describe_thing("dev").attributes == {"a": "1", "b": "2"}
    assert groups() == ["old"]

    apply(ACCOUNT, REGION, render(tpl({"AttributePayload": "MERGE", "ThingGroups": "MERGE"}), {}))
    assert backend.describe_thing("dev").attributes == {"a": "1", "b": "3", "c": "4"}
    assert groups() == ["new", "old"]

    apply(ACCOUNT, REGION, render(tpl({"AttributePayload": "REPLACE", "ThingGroups": "REPLACE"}), {}))
    assert backend.describe_thing("dev").attributes == {"b": "3", "c": "4"}
    assert groups() == ["new"]

    backend.describe_thing("dev").attributes = {"z": "9"}
    with pytest.raises(TemplateError) as err:
        apply(ACCOUNT, REGION, render(tpl({"AttributePayload": "FAIL"}), {}))
    assert err.value.code == "ResourceConflictsException" and err.value.status == 409


def test_failure_rolls_back_what_was_created(backend):
    csr, _ = make_csr()
    body = {"Resources": {
        "thing": {"Type": "AWS::IoT::Thing",
                  "Properties": {"ThingName": "orphan", "ThingGroups": ["no-such-group"]}},
        "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateSigningRequest": csr}},
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": POLICY_DOC}}}}
    with pytest.raises(TemplateError) as err:
        apply(ACCOUNT, REGION, render(body, {}))
    assert err.value.code == "ResourceNotFoundException"
    assert "no-such-group" in err.value.message
    assert not backend.certificates
    assert not backend.policies
    assert not backend.principal_policies
    assert not [t for t in backend.things.values() if t.thing_name == "orphan"]


def test_missing_policy_name_is_not_found(backend):
    with pytest.raises(TemplateError) as err:
        apply(ACCOUNT, REGION, render({"Resources": {"p": {
            "Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "nope"}}}}, {}))
    assert err.value.code == "ResourceNotFoundException"


def test_bad_csr_is_invalid_request(backend):
    with pytest.raises(TemplateError) as err:
        apply(ACCOUNT, REGION, render({"Resources": {"c": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateSigningRequest": "garbage"}}}}, {}))
    assert err.value.code == "InvalidRequestException"
    assert not backend.certificates
