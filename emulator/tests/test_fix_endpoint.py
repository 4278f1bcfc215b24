"""DescribeEndpoint answers one stable, realistic address."""

from __future__ import annotations

import re

import pytest


def test_describe_endpoint_is_stable(aws):
    iot = aws("iot")
    first = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    assert re.fullmatch(r"[a-z0-9]{14}-ats\.iot\.us-east-1\.amazonaws\.com", first)
    assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == first
    assert iot.describe_endpoint()["endpointAddress"] == first  # default type is ATS
    legacy = iot.describe_endpoint(endpointType="iot:Data")["endpointAddress"]
    assert legacy == first.replace("-ats.", ".")


def test_unknown_endpoint_type(aws):
    iot = aws("iot")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.describe_endpoint(endpointType="iot:Nope")
