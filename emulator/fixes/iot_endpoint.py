"""Fix: IoT DescribeEndpoint returns the same address every time.

AWS behaviour restored
    An account has one fixed endpoint per type and region, e.g.
    ``a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com`` for iot:Data-ATS
    (the default type) and ``a1b2c3d4e5f6g7.iot.us-east-1.amazonaws.com`` for
    the legacy iot:Data, sharing the same 14-character prefix.

What moto 5.2.1 does instead
    Draws a new random prefix on every call, so two calls disagree.

The prefix here is derived from account id and region, so it is also the same
across emulator restarts.  The address is a realistic *fake* hostname: a
client running against the emulator must keep using the emulator's URL for
the iot-data plane (moto routes it by the SigV4 signing name), never dial the
returned name.
"""

from __future__ import annotations

import base64
import hashlib

from ._util import patch

_TYPES = {
    "iot:Data": "{p}.iot.{r}.amazonaws.com",
    "iot:Data-ATS": "{p}-ats.iot.{r}.amazonaws.com",
    "iot:CredentialProvider": "{p}.credentials.iot.{r}.amazonaws.com",
    "iot:Jobs": "{p}.jobs.iot.{r}.amazonaws.com",
}


def endpoint_prefix(account_id: str, region: str) -> str:
    digest = hashlib.sha256(f"iotreg-emulator:{account_id}:{region}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:14]


def _describe_endpoint(self, endpoint_type: str):
    from moto.iot.exceptions import InvalidRequestException
    from moto.iot.models import FakeEndpoint

    endpoint_type = endpoint_type or "iot:Data-ATS"
    if endpoint_type not in _TYPES:
        raise InvalidRequestException(f"Endpoint type {endpoint_type} not recognized.")
    endpoint = FakeEndpoint(endpoint_type, self.region_name)
    endpoint.endpoint = _TYPES[endpoint_type].format(
        p=endpoint_prefix(self.account_id, self.region_name), r=self.region_name
    )
    self.endpoint = endpoint
    return endpoint


def apply() -> None:
    from moto.iot.models import IoTBackend

    patch(IoTBackend, "describe_endpoint", _describe_endpoint)
