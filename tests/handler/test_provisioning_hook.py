"""The pre-provisioning hook (templates/provisioning-hook.py) on its own, unpacked beside its
allow-list as Lambda unpacks the package iotreg builds: which serials it allows, what it answers
for a malformed request, and the decision line it logs for each."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil

import pytest

HOOK = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "templates",
    "provisioning-hook.py",
)


@pytest.fixture
def hook(tmp_path):
    shutil.copy(HOOK, tmp_path / "provisioning_hook.py")
    (tmp_path / "allowed-serials.json").write_text(json.dumps({"serials": ["SN-0001", "SN-0002"]}))
    spec = importlib.util.spec_from_file_location("provisioning_hook", tmp_path / "provisioning_hook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(serial, thing="sensor-0001"):
    return {
        "claimCertificateId": "claim-id",
        "certificateId": "new-id",
        "certificatePem": "-----BEGIN CERTIFICATE-----",
        "templateArn": "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/t",
        "clientId": serial,
        "parameters": {"ThingName": thing, "SerialNumber": serial},
    }


def test_a_listed_serial_is_allowed_and_an_unlisted_one_refused(hook):
    assert hook.lambda_handler(event("SN-0001"), None) == {"allowProvisioning": True}
    assert hook.lambda_handler(event("SN-0002"), None) == {"allowProvisioning": True}
    assert hook.lambda_handler(event("ROGUE-1"), None) == {"allowProvisioning": False}


def test_a_request_without_a_serial_is_refused(hook):
    e = event("SN-0001")
    del e["parameters"]["SerialNumber"]
    assert hook.lambda_handler(e, None) == {"allowProvisioning": False}
    assert hook.lambda_handler({}, None) == {"allowProvisioning": False}
    e = event("SN-0001")
    e["parameters"]["SerialNumber"] = ["SN-0001"]
    assert hook.lambda_handler(e, None) == {"allowProvisioning": False}


def test_each_decision_is_logged_as_one_json_line(hook, caplog):
    caplog.set_level(logging.INFO)
    hook.lambda_handler(event("SN-0001"), None)
    hook.lambda_handler(event("ROGUE-1", "rogue"), None)
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(l["decision"], l["serialNumber"], l["thingName"]) for l in lines] == [
        ("allow", "SN-0001", "sensor-0001"),
        ("deny", "ROGUE-1", "rogue"),
    ]
    assert lines[0]["claimCertificateId"] == "claim-id"
