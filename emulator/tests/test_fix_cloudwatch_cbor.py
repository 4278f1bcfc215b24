"""CloudWatch over Smithy RPC v2 CBOR (fixes/cloudwatch_cbor.py, fixes/_cbor.py).

aws-sdk-cloudwatch for Rust speaks only this protocol. boto3 would pick JSON
1.0, so these tests force botocore's own rpc-v2-cbor serializer/parser (AWS's
implementation of the same spec) by giving it a copy of the cloudwatch model
that lists only that protocol, and check the wire format by hand too.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import urllib.error
import urllib.request

import boto3
import botocore.session
import pytest
from botocore.config import Config

from conftest import error_code, http_status

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fixes import _cbor  # noqa: E402

DASHBOARD = json.dumps(
    {
        "widgets": [
            {
                "type": "metric",
                "x": 0,
                "y": 0,
                "width": 12,
                "height": 6,
                "properties": {
                    "metrics": [["AWS/Lambda", "Errors", "FunctionName", "f"]],
                    "region": "us-east-1",
                    "stat": "Sum",
                    "period": 60,
                },
            }
        ]
    }
)


@pytest.fixture(scope="module")
def cbor_cw(emulator, tmp_path_factory):
    model = botocore.session.get_session().get_component("data_loader").load_service_model("cloudwatch", "service-2")
    model = json.loads(json.dumps(model))
    model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    root = tmp_path_factory.mktemp("models")
    target = root / "cloudwatch" / "2010-08-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    session = boto3.session.Session()
    session._session.get_component("data_loader").search_paths.insert(0, str(root))
    client = session.client(
        "cloudwatch",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # One attempt: a 500 must fail the test, not be retried away.
        config=Config(retries={"total_max_attempts": 1}),
    )
    assert client.meta.service_model.resolved_protocol == "smithy-rpc-v2-cbor"
    return client


def raw_call(emulator, operation: str, body: bytes) -> tuple[int, dict, bytes]:
    """POST a CBOR body as an SDK would (moto does not check the signature)."""
    request = urllib.request.Request(
        f"{emulator.url}/service/GraniteServiceVersion20100801/operation/{operation}",
        data=body,
        method="POST",
        headers={
            "smithy-protocol": "rpc-v2-cbor",
            "Content-Type": "application/cbor",
            "Accept": "application/cbor",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/monitoring/aws4_request, "
            "SignedHeaders=host, Signature=00",
            "X-Amz-Date": "20260101T000000Z",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


# -- the codec ----------------------------------------------------------------


def test_codec_round_trip_and_rfc_examples():
    value = {"a": [1, -1, 0, 23, 24, 255, 256, 65536, 2**32, -(2**40)], "b": b"\x00\xff", "c": "°C", "d": True,
             "e": None, "f": 1.5, "g": {"nested": [False]}}
    assert _cbor.decode(_cbor.encode(value)) == value
    # RFC 8949 appendix A.
    assert _cbor.decode(bytes.fromhex("f93c00")) == 1.0  # half float
    assert _cbor.decode(bytes.fromhex("fa47c35000")) == 100000.0
    assert _cbor.decode(bytes.fromhex("5f42010243030405ff")) == b"\x01\x02\x03\x04\x05"
    assert _cbor.decode(bytes.fromhex("7f657374726561646d696e67ff")) == "streaming"
    assert _cbor.decode(bytes.fromhex("9f018202039f0405ffff")) == [1, [2, 3], [4, 5]]
    assert _cbor.decode(bytes.fromhex("bf6346756ef563416d7421ff")) == {"Fun": True, "Amt": -2}
    stamp = _cbor.decode(bytes.fromhex("c11a514b67b0"))
    assert isinstance(stamp, _cbor.Timestamp) and stamp == 1363896240
    assert _cbor.encode(_cbor.Timestamp(1.5)) == b"\xc1\xfb" + struct.pack(">d", 1.5)
    assert _cbor.encode(_cbor.Float32(1.5)) == b"\xfa" + struct.pack(">f", 1.5)
    assert math.isnan(_cbor.decode(bytes.fromhex("f97e00")))


@pytest.mark.parametrize("data", ["", "1b0000", "a1", "83010203ff", "0000", "ff", "62c328"])
def test_codec_rejects_malformed_input(data):
    with pytest.raises(_cbor.CBORError):
        _cbor.decode(bytes.fromhex(data))


# -- through the server -------------------------------------------------------


def test_alarm_and_dashboard_lifecycle(cbor_cw, name):
    alarm, dashboard = f"{name}-alarm", f"{name}-dash"
    cbor_cw.put_metric_alarm(
        AlarmName=alarm,
        AlarmDescription="errors of f",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": "f"}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
        AlarmActions=["arn:aws:sns:us-east-1:123456789012:alerts"],
    )
    alarms = cbor_cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    assert len(alarms) == 1
    got = alarms[0]
    assert got["AlarmName"] == alarm and got["Threshold"] == 1.0 and got["Period"] == 60
    assert got["Dimensions"] == [{"Name": "FunctionName", "Value": "f"}]
    assert got["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:alerts"]
    assert got["TreatMissingData"] == "notBreaching"
    assert got["AlarmConfigurationUpdatedTimestamp"].year >= 2024  # a tag-1 timestamp

    assert cbor_cw.put_dashboard(DashboardName=dashboard, DashboardBody=DASHBOARD)["DashboardValidationMessages"] == []
    got = cbor_cw.get_dashboard(DashboardName=dashboard)
    assert got["DashboardName"] == dashboard and json.loads(got["DashboardBody"]) == json.loads(DASHBOARD)
    assert got["DashboardArn"] == f"arn:aws:cloudwatch::123456789012:dashboard/{dashboard}"
    entries = cbor_cw.list_dashboards(DashboardNamePrefix=dashboard)["DashboardEntries"]
    assert [e["DashboardName"] for e in entries] == [dashboard]

    cbor_cw.delete_alarms(AlarmNames=[alarm])
    assert cbor_cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []
    cbor_cw.delete_dashboards(DashboardNames=[dashboard])
    with pytest.raises(cbor_cw.exceptions.ClientError) as excinfo:  # DashboardNotFoundError
        cbor_cw.get_dashboard(DashboardName=dashboard)
    assert error_code(excinfo) == "ResourceNotFound" and http_status(excinfo) == 404


def test_errors_carry_the_query_compatible_code(cbor_cw, name):
    with pytest.raises(cbor_cw.exceptions.DashboardInvalidInputError) as excinfo:
        cbor_cw.put_dashboard(DashboardName=name, DashboardBody="not json")
    assert error_code(excinfo) == "InvalidParameterInput" and http_status(excinfo) == 400
    with pytest.raises(cbor_cw.exceptions.ClientError) as excinfo:
        cbor_cw.delete_dashboards(DashboardNames=[name])
    assert error_code(excinfo) == "ResourceNotFound" and http_status(excinfo) == 404


def test_wire_format(emulator, name):
    request = {
        "AlarmName": name,
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 2.5,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    status, headers, body = raw_call(emulator, "PutMetricAlarm", _cbor.encode(request))
    assert status == 200 and body == b""  # no output shape: empty body
    assert headers["smithy-protocol"] == "rpc-v2-cbor"

    status, headers, body = raw_call(emulator, "DescribeAlarms", _cbor.encode({"AlarmNames": [name]}))
    assert status == 200
    assert headers["content-type"] == "application/cbor" and headers["smithy-protocol"] == "rpc-v2-cbor"
    assert int(headers["content-length"]) == len(body)
    alarm = _cbor.decode(body)["MetricAlarms"][0]
    assert isinstance(alarm["StateUpdatedTimestamp"], _cbor.Timestamp)  # tag 1
    assert b"\xc1\xfb" in body  # ... holding a double
    assert isinstance(alarm["Period"], int) and alarm["Period"] == 60
    assert isinstance(alarm["Threshold"], float) and alarm["Threshold"] == 2.5
    assert b"iThreshold\xfb" in body  # a double, not an integer or a half float

    status, headers, body = raw_call(emulator, "GetDashboard", _cbor.encode({"DashboardName": name}))
    assert status == 404
    assert headers["x-amzn-query-error"] == "ResourceNotFound;Sender"
    error = _cbor.decode(body)
    assert error["__type"].endswith("ResourceNotFound") and error["message"]

    status, headers, body = raw_call(emulator, "DescribeAlarms", b"\xa1\x61")  # truncated
    assert status == 400
    assert _cbor.decode(body)["__type"] == "SerializationException"
    raw_call(emulator, "DeleteAlarms", _cbor.encode({"AlarmNames": [name]}))


def test_compressed_put_metric_data_and_timestamps(cbor_cw, name):
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    data = [
        {"MetricName": "Temperature", "Dimensions": [{"Name": "Thing", "Value": f"{name}-{i:04d}-" + "x" * 60}],
         "Value": 1.5, "Timestamp": now}
        for i in range(200)
    ]
    sent = {}
    cbor_cw.meta.events.register(
        "before-send.cloudwatch.PutMetricData",
        lambda request, **kw: sent.update(encoding=request.headers.get("Content-Encoding"), body=request.body),
    )
    cbor_cw.put_metric_data(Namespace=name, MetricData=data)
    assert sent["encoding"] in (b"gzip", "gzip") and len(sent["body"]) < 10240  # botocore compressed it
    stats = cbor_cw.get_metric_statistics(
        Namespace=name, MetricName="Temperature", Dimensions=data[7]["Dimensions"],
        StartTime=now - datetime.timedelta(minutes=5), EndTime=now + datetime.timedelta(minutes=5),
        Period=60, Statistics=["Sum", "SampleCount"],
    )["Datapoints"]
    # One datapoint, stamped with the start of its period: periods run from StartTime rounded
    # down to the whole minute (fix cloudwatch_metrics), so the minute `now` falls in.
    assert [(p["Sum"], p["SampleCount"], p["Timestamp"]) for p in stats] == [(1.5, 1.0, now.replace(second=0))]
