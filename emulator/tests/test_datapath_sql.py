"""Unit tests (in-process, no server): topic filters and the IoT SQL subset."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datapath import iotsql, rules, topics  # noqa: E402
from datapath.iotsql import UNDEFINED, UnsupportedSql  # noqa: E402

RECIPE_SQL = "SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'"


# -- topic filters -----------------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter, topic, expected",
    [
        ("sensor/temperature/+", "sensor/temperature/dev1", True),
        ("sensor/temperature/+", "sensor/temperature/", True),  # empty level
        ("sensor/temperature/+", "sensor/temperature", False),
        ("sensor/temperature/+", "sensor/temperature/a/b", False),
        ("sensor/temperature/+", "sensor/humidity/dev1", False),
        ("sensor/temperature/+", "Sensor/temperature/dev1", False),  # case-sensitive
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("x/#", "x", True),  # '#' also matches the parent level
        ("x/#", "x/", True),
        ("x/#", "x/a/b/c", True),
        ("x/#", "y/a", False),
        ("x/#", "xy/a", False),
        ("#", "anything/at/all", True),
        ("a/+/c/#", "a/b/c", True),
        ("a/+/c/#", "a/b/d/e", False),
        ("exact/topic", "exact/topic", True),
        ("exact/topic", "exact/topic/more", False),
        ("#", "$aws/things/x/shadow/update", False),  # no wildcard into $ topics
        ("+/things/#", "$aws/things/x", False),
        ("$aws/things/+/shadow/update", "$aws/things/x/shadow/update", True),
    ],
)
def test_topic_filter_matching(topic_filter, topic, expected):
    assert topics.matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a+", "a/b#", "#/a", "a/+b"])
def test_invalid_topic_filters(bad):
    with pytest.raises(topics.TopicFilterError):
        topics.validate_filter(bad)


def test_topics_with_wildcards_never_match():
    assert not topics.matches("#", "a/+/b")
    assert not topics.matches("#", "")


# -- parser ------------------------------------------------------------------


def test_parse_recipe_statement():
    stmt = iotsql.parse(RECIPE_SQL)
    assert stmt.topic_filter == "sensor/temperature/+"
    assert isinstance(stmt.items[0], iotsql.Star)
    assert [item.key for item in stmt.items[1:]] == ["device", "aws_timestamp"]
    assert stmt.where is None


def test_keywords_case_insensitive():
    stmt = iotsql.parse("select a AS b from 't/#' where a > 1 and not (a = 3) or a <> 4")
    assert stmt.items[0].key == "b"
    assert stmt.topic_filter == "t/#"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT FROM 't'",
        "SELECT * FROM t",  # filter not quoted
        "SELECT * FROM 'a/#/b'",  # invalid filter
        "SELECT upper(a) FROM 't'",  # unsupported function
        "SELECT * FROM 't' WHERE a IN (1, 2)",
        "SELECT * FROM 't' WHERE a LIKE 'x%'",
        "SELECT CASE a WHEN 1 THEN 2 END FROM 't'",
        "SELECT VALUE a FROM 't'",
        "SELECT (SELECT v FROM e) AS x FROM 't'",
        "SELECT * FROM 't' WHERE",
        "SELECT * FROM 't' extra",
        "SELECT a < b < c FROM 't'",
        "SELECT topic(1, 2) FROM 't'",
        "SELECT timestamp(1) FROM 't'",
        "SELECT * FROM 't' WHERE a = 'unterminated",
        "SELECT * FROM 't' WHERE a ~ 1",
        "",
        "DELETE FROM 't'",
    ],
)
def test_unsupported_sql_is_refused(sql):
    with pytest.raises(UnsupportedSql):
        iotsql.parse(sql)


def test_unsupported_sql_is_cached_and_still_raises():
    for _ in range(2):
        with pytest.raises(UnsupportedSql, match="not supported"):
            iotsql.parse("SELECT lower(x) FROM 't'")


# -- evaluation --------------------------------------------------------------


def run(sql, payload, topic="t/a/b", ts=1_700_000_000_123):
    return iotsql.run(sql, topic, payload, timestamp_ms=ts)


def test_recipe_select():
    out = run(RECIPE_SQL, b'{"temperature": 85.5, "device": "old", "x": {"y": 1}}', topic="sensor/temperature/dev1")
    assert out == {"temperature": 85.5, "device": "dev1", "x": {"y": 1}, "aws_timestamp": 1_700_000_000_123}
    assert run(RECIPE_SQL, b"{}", topic="sensor/humidity/dev1") is None
    assert run(RECIPE_SQL, b"{}", topic="sensor/temperature/a/b") is None


def test_timestamp_defaults_to_now():
    import time

    before = int(time.time() * 1000)
    out = iotsql.run("SELECT timestamp() AS ts FROM 't'", "t", b"{}")
    assert before <= out["ts"] <= int(time.time() * 1000)


def test_later_items_override_and_star_position():
    assert run("SELECT a AS b, * FROM '#'", '{"a": 1, "b": 2}') == {"b": 2, "a": 1}
    assert run("SELECT *, a AS b FROM '#'", '{"a": 1, "b": 2}') == {"a": 1, "b": 1}


def test_fields_nested_alias_and_default_keys():
    payload = '{"a": {"b": {"c": 7}}, "arr": [10, 20], "t": 1}'
    assert run("SELECT a.b.c FROM '#'", payload) == {"c": 7}
    assert run("SELECT a.b.c AS deep, a.b FROM '#'", payload) == {"deep": 7, "b": {"c": 7}}
    assert run("SELECT arr[1] AS second, arr[5] AS none FROM '#'", payload) == {"second": 20}
    assert run("SELECT a.missing.x, nope, t.x FROM '#'", payload) == {}
    # topic() and topic(2) are both keyed "topic": the later one wins.
    assert run("SELECT topic(), topic(2), 'lit', 42, 1.5 AS f FROM '#'", payload, topic="t/a/b") == {
        "topic": "a",
        "_3": "lit",
        "_4": 42,
        "f": 1.5,
    }
    assert run('SELECT "odd-key" AS k FROM \'#\'', '{"odd-key": 3}') == {"k": 3}


def test_topic_levels():
    sql = "SELECT topic(1) AS a, topic(3) AS c, topic(4) AS d, topic(0) AS z FROM '#'"
    assert run(sql, "{}", topic="x/y/z") == {"a": "x", "c": "z"}


def test_string_literals_and_escapes():
    out = run("SELECT 'it''s' AS a, 'b\\'c' AS b, true AS t, false AS f, null AS n FROM '#'", "{}")
    assert out == {"a": "it's", "b": "b'c", "t": True, "f": False, "n": None}


@pytest.mark.parametrize(
    "payload, selected",
    [
        ({"temperature": 60, "device": "a"}, True),
        ({"temperature": 40, "device": "a"}, False),
        ({"temperature": 70, "device": "skip"}, False),
        ({"temperature": 70}, False),  # device undefined -> condition undefined
        ({"device": "a"}, False),
        ({"temperature": "70", "device": "a"}, True),  # numeric string vs number
        ({"temperature": "hot", "device": "a"}, False),
        ({"temperature": True, "device": "a"}, False),
    ],
)
def test_where_filter(payload, selected):
    import json

    sql = "SELECT temperature FROM 'x/#' WHERE temperature > 50 AND device <> 'skip'"
    out = run(sql, json.dumps(payload), topic="x/a")
    if selected:
        assert out == {"temperature": payload["temperature"]}
    else:
        assert out is None


@pytest.mark.parametrize(
    "where, selected",
    [
        ("a = 1", True),
        ("a = 1.0", True),
        ("a = '1'", False),  # string vs number: '=' is false for different types
        ("s = 'x'", True),
        ("s != 'x'", False),
        ("s <> 'y'", True),
        ("a >= 1 AND a <= 1", True),
        ("a < 1 OR a > 1", False),
        ("NOT a = 2", True),
        ("NOT (a = 1 OR s = 'y')", False),
        ("missing = 1", False),
        ("NOT missing = 1", False),  # NOT Undefined is Undefined
        ("missing <> 1", False),
        ("a = 1 OR missing = 1", False),  # non-Boolean operand -> Undefined (AWS table)
        ("s > 'a'", True),
        ("s < 'a'", False),
        ("o = o", True),
        ("o > 1", False),
        ("flag", True),
        ("flag = true", True),
        ("'TRUE' AND flag", True),
        ("topic(2) = 'dev1'", True),
        ("topic() = 'x/dev1'", True),
        ("timestamp() > 0", True),
        ("a + 1 = 2", True),
        ("a * 10 / 4 = 2", True),  # integer division
        ("a / 0 = 0", False),
        ("-a = -1", True),
        ("n = null", True),
        ("n <> 0", True),
    ],
)
def test_where_operators(where, selected):
    payload = '{"a": 1, "s": "x", "o": {"k": [1]}, "flag": true, "n": null}'
    out = run(f"SELECT * FROM 'x/+' WHERE {where}", payload, topic="x/dev1")
    assert (out is not None) is selected


def test_payload_not_a_json_object():
    # '*' gives nothing, fields are Undefined; functions and literals still apply.
    sql = "SELECT *, topic() AS t, value AS v, 1 AS one FROM 'p'"
    for payload in (b"\xff\xfe binary", b"not json", b"[1, 2]", b"42", b'"text"', b""):
        assert run(sql, payload, topic="p") == {"t": "p", "one": 1}
    assert run("SELECT * FROM 'p' WHERE value > 1", b"42", topic="p") is None


def test_decode_payload():
    assert iotsql.decode_payload(b'{"a": "\xc2\xb0C"}') == {"a": "°C"}
    assert iotsql.decode_payload(b"\xff") is UNDEFINED
    assert iotsql.decode_payload(None) is UNDEFINED


# -- resource-policy check for the lambda action ------------------------------


class _Policy:
    def __init__(self, statements):
        self.statements = statements


class _Fn:
    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"

    def __init__(self, statements):
        self.policy = _Policy(statements)


RULE = "arn:aws:iot:us-east-1:123456789012:rule/r1"


def statement(**overrides):
    base = {
        "Sid": "s",
        "Effect": "Allow",
        "Principal": {"Service": "iot.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": _Fn.function_arn,
        "Condition": {"ArnLike": {"AWS:SourceArn": RULE}},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "statements, allowed",
    [
        ([statement()], True),
        ([statement(Condition=None)], True),
        ([statement(Action="lambda:*")], True),
        ([statement(Action=["s3:GetObject", "lambda:invokefunction"])], True),
        ([statement(Resource=_Fn.function_arn + ":$LATEST")], True),
        ([statement(Condition={"ArnEquals": {"aws:SourceArn": RULE}})], True),
        ([statement(Condition={"StringEquals": {"AWS:SourceArn": RULE}})], True),
        ([statement(Condition={"ArnLike": {"AWS:SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/*"}})], True),
        (
            [statement(Condition={"ArnLike": {"AWS:SourceArn": RULE}, "StringEquals": {"AWS:SourceAccount": "123456789012"}})],
            True,
        ),
        ([statement(Condition={"StringEquals": {"AWS:SourceAccount": "999999999999"}})], False),
        ([statement(Condition={"ArnLike": {"AWS:SourceArn": RULE + "x"}})], False),
        ([statement(Condition={"ArnLike": {"AWS:SourceArn": "arn:aws:iot:us-east-1:123456789012:rule/other"}})], False),
        ([statement(Principal={"Service": "s3.amazonaws.com"})], False),
        ([statement(Principal={"AWS": "arn:aws:iam::123456789012:root"})], False),
        ([statement(Action="lambda:GetFunction")], False),
        ([statement(Resource="arn:aws:lambda:us-east-1:123456789012:function:other")], False),
        ([statement(Condition={"NumericEquals": {"AWS:SourceArn": "1"}})], False),
        ([statement(), statement(Sid="d", Effect="Deny", Condition=None)], False),
        ([], False),
    ],
)
def test_invoke_permission(statements, allowed):
    ok, reason = rules.invoke_permitted(_Fn(statements), RULE, "123456789012")
    assert ok is allowed, reason


def test_is_undefined_filters_on_a_missing_field():
    # The analytics rule's WHERE: iotreg verify's marked test readings stay out of the stream.
    sql = ("SELECT *, topic(3) AS device FROM 'sensor/temperature/+' "
           "WHERE isUndefined(iotreg_verify)")
    assert iotsql.run(sql, "sensor/temperature/d1", {"temperature": 21.5}) == {
        "temperature": 21.5, "device": "d1"}
    assert iotsql.run(sql, "sensor/temperature/d1", {"temperature": 85.5, "iotreg_verify": "m"}) is None
    assert iotsql.run("SELECT isUndefined(a.b) AS u FROM 't'", "t", {"a": {"b": 1}}) == {"u": False}
    with pytest.raises(UnsupportedSql):
        iotsql.parse("SELECT isUndefined() FROM 't'")
