"""Pre-provisioning hook for iotreg's fleet provisioning by claim.

AWS IoT calls this function on every RegisterThing made through the provisioning template
(payload version 2020-04-01) with the device's parameters, and provisions the device only when
the answer carries "allowProvisioning": true. The allowed serial numbers are the fleet
manifest's, shipped in this function's package as allowed-serials.json (thousands of serials
do not fit Lambda's 4 KB of environment variables). AWS gives the hook 5 seconds, so the list
is read once per container, not per call.
"""
import json
import logging
import os

logger = logging.getLogger()
logger.setLevel(logging.INFO)

ALLOWED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "allowed-serials.json")

_allowed = None


def allowed_serials():
    global _allowed
    if _allowed is None:
        with open(ALLOWED_FILE) as f:
            _allowed = frozenset(json.load(f)["serials"])
    return _allowed


def lambda_handler(event, context):
    parameters = event.get("parameters") or {}
    serial = parameters.get("SerialNumber")
    allowed = isinstance(serial, str) and serial in allowed_serials()
    # One line per decision, so the log answers "why was this device refused".
    logger.info(json.dumps({
        "decision": "allow" if allowed else "deny",
        "serialNumber": serial,
        "thingName": parameters.get("ThingName"),
        "templateArn": event.get("templateArn"),
        "claimCertificateId": event.get("claimCertificateId"),
    }))
    return {"allowProvisioning": allowed}
