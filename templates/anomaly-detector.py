"""Anomaly detector for iotreg's telemetry analytics.

An event source mapping reads the analytics Kinesis stream and calls this function with batches
of records (the "Using Lambda with Kinesis" event: Records[].kinesis.{partitionKey,
sequenceNumber, data (base64), approximateArrivalTimestamp}). Each record's data is what the
analytics topic rule selected: a device's reading plus `device` (topic(3)) and `aws_timestamp`.
The rule's partition key is `${topic(3)}`, so all of one device's readings land on one shard, in
order (https://docs.aws.amazon.com/streams/latest/dev/key-concepts.html): the partition key is
the device this function keys its state by.

For each device, in stream order, three rules score each reading of FIELD:
  zscore  robust (modified) z-score against the device's previous WINDOW readings,
          0.6745 * (x - median) / MAD (Iglewicz and Hoaglin); fires when |z| > THRESHOLD, once
          the device has MIN_HISTORY previous readings. When more than half the window is one
          value the MAD is 0: the score then uses the mean absolute deviation,
          (x - median) / (1.253314 * MeanAD); a window of one single value has no spread at all
          and the deviation is divided by FLAT_EPSILON * max(1, |median|), so any change fires.
  stuck   the same value (exact equality) STUCK_COUNT times in a row.
  rate    Theil-Sen slope (median of the pairwise slopes, per reading) of the last RATE_WINDOW
          readings including this one; fires when |slope| > MAX_RATE. One spike changes only
          RATE_WINDOW - 1 of the pairwise slopes, fewer than half, so it cannot move the median;
          a steady ramp does.
Each rule alerts once per episode: when it starts firing for a device. It stays quiet while it
keeps firing and re-arms after a reading where it does not fire. A drift raises `rate` (a few
readings into the ramp, once the slope over RATE_WINDOW readings crosses MAX_RATE) and usually
`zscore` once too, when the ramp leaves the device's noise band; which comes first depends on
the ramp's steepness and the noise. A spike raises `zscore` only; a stuck sensor `stuck` only
(its repeated value is one the device already reported).

An alert is published to the SNS topic ALERT_TOPIC_ARN and logged as one line
`ANOMALY {json}` (iotreg verify reads these lines from the function's log).

State: one DynamoDB item per device in TABLE_NAME (key `device`), read with BatchGetItem and
written with BatchWriteItem once per batch. `last_seq` is the last Kinesis sequence number
processed for the device: a record at or below it was processed already (a retried batch, or
the halves bisect replays) and is skipped. Delivery is at least once: a batch's alerts are
published before its state is saved, so a crash between the two repeats those alerts on the
retry; it never loses one. Records of one partition key go to one invocation at a time, in
order, even with a ParallelizationFactor above 1
(https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html), so each item has one writer.

A record whose data is not JSON, or whose FIELD is missing or not a finite number, is poison:
the state reached by the records before it is saved, one `POISON {json}` line is logged and the
invocation fails. The event source mapping's retries and BisectBatchOnFunctionError then narrow
the failure down to that record and send it to the on-failure destination; the records before
it are skipped on those retries and the records after it are processed once. (A record at or
below `last_seq` is skipped before it is decoded: a poison record replayed after its device's
progress has passed it is skipped like any processed record.)
"""
import base64
import binascii
import json
import logging
import math
import os
import time
from datetime import datetime, timezone

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger()
logger.setLevel(logging.INFO)

# Clients are made on first use, so a test can put its own in their place.
dynamodb = None
sns = None

# IAM takes seconds to propagate a new role policy: right after a deployment, the first calls
# may be refused. Refusals are retried this long (seconds) before the invocation fails.
AUTHORIZATION_RETRY_DELAYS = (1, 2, 4, 8)
# BatchGetItem and BatchWriteItem may leave part of a request undone (throttling, size); AWS
# asks for the remainder to be sent again with exponential backoff.
UNPROCESSED_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
# Iglewicz and Hoaglin's constant: 0.6745 is the 0.75 quantile of the standard normal, so
# MAD / 0.6745 estimates the standard deviation of normal data.
MAD_SCALE = 0.6745
# For a window whose MAD is 0, the mean absolute deviation times 1.253314 (sqrt(pi / 2))
# estimates the standard deviation of normal data instead.
MEAN_AD_SCALE = 1.253314
# A window of one single value has no spread: the deviation is measured against this fraction
# of the median's size instead, so a flat history does not divide by zero.
FLAT_EPSILON = 1e-6
# DynamoDB numbers: magnitudes from 1E-130 to 9.9999999999999999999999999999999999999E+125
# (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html).
# A reading outside that range could never be saved, so it is refused like a non-number.
DYNAMODB_MAX = 9.9999999999999999999999999999999999999e125
DYNAMODB_MIN = 1e-130
RULES = ("zscore", "stuck", "rate")
# BatchGetItem reads at most 100 keys a call, BatchWriteItem writes at most 25 items.
GET_BATCH = 100
WRITE_BATCH = 25


class ConfigError(Exception):
    """An environment variable is missing or malformed: the deployment is wrong."""


class PoisonRecord(Exception):
    """A record that can never be scored: its retries end at the on-failure destination."""


def _number(environ, name, default, kind, minimum):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def load_config(environ=None):
    """The settings iotreg gives the function through its environment."""
    environ = os.environ if environ is None else environ
    missing = [n for n in ("TABLE_NAME", "ALERT_TOPIC_ARN") if not environ.get(n)]
    if missing:
        raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
    config = {
        "table": environ["TABLE_NAME"],
        "topic": environ["ALERT_TOPIC_ARN"],
        "field": environ.get("FIELD") or "temperature",
        "window": _number(environ, "WINDOW", 60, int, 1),
        "min_history": _number(environ, "MIN_HISTORY", 30, int, 1),
        "threshold": _number(environ, "THRESHOLD", 4.5, float, 0.0),
        "stuck_count": _number(environ, "STUCK_COUNT", 10, int, 2),
        "max_rate": _number(environ, "MAX_RATE", 1.0, float, 0.0),
        "rate_window": _number(environ, "RATE_WINDOW", 8, int, 3),
        "state_ttl_days": _number(environ, "STATE_TTL_DAYS", 7, float, 0.0),
    }
    if config["min_history"] > config["window"]:
        raise ConfigError(
            f"MIN_HISTORY={config['min_history']} is more than WINDOW={config['window']}: "
            "the z-score could never fire")
    return config


def _dynamodb():
    global dynamodb
    if dynamodb is None:
        dynamodb = boto3.client("dynamodb")
    return dynamodb


def _sns():
    global sns
    if sns is None:
        sns = boto3.client("sns")
    return sns


def _call(what, operation, **kwargs):
    """One AWS call, its refusals retried while IAM propagates the function's new role."""
    delays = list(AUTHORIZATION_RETRY_DELAYS)
    while True:
        try:
            return operation(**kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            # SNS says AuthorizationError, DynamoDB AccessDeniedException.
            if code in ("AuthorizationError", "AccessDeniedException") and delays:
                delay = delays.pop(0)
                logger.warning(f"{what} refused ({e}); retrying in {delay}s")
                time.sleep(delay)
                continue
            logger.error(f"{what} failed: {e}")
            raise


# --- the rules -------------------------------------------------------------------------------

def median(values):
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def robust_z(history, x):
    """Modified z-score of x against history (Iglewicz and Hoaglin), never dividing by zero."""
    med = median(history)
    deviations = [abs(v - med) for v in history]
    mad = median(deviations)
    if mad > 0:
        return MAD_SCALE * (x - med) / mad
    mean_ad = sum(deviations) / len(deviations)
    if mean_ad > 0:
        return (x - med) / (MEAN_AD_SCALE * mean_ad)
    return (x - med) / (FLAT_EPSILON * max(1.0, abs(med)))


def distinct_runs(values):
    """The values with consecutive repeats counted once.

    A stuck sensor's run is one observation repeated, not many: counted in full, a run filling
    half the window takes its MAD to 0, and the device's first ordinary readings after it score
    as outliers for up to WINDOW readings (measured: about a third of all z-score alerts on the
    scoring series were these).
    """
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def theil_sen(values):
    """Median of the slopes between every pair of readings, per reading."""
    n = len(values)
    return median([(values[j] - values[i]) / (j - i) for i in range(n) for j in range(i + 1, n)])


def new_state(device):
    return {"device": device, "values": [], "run_value": None, "run_count": 0,
            "active": {r: False for r in RULES}, "last_seq": None}


def score(state, x, config):
    """Scores reading x against the device's state, then adds it to the state.

    Returns the rules whose episode starts at this reading, as (rule, score, threshold).
    """
    values = state["values"]
    firing = {}

    previous = distinct_runs(values[-config["window"]:])
    if len(previous) >= config["min_history"]:
        z = robust_z(previous, x)
        firing["zscore"] = (abs(z) > config["threshold"], z, config["threshold"])

    if state["run_count"] > 0 and x == state["run_value"]:
        state["run_count"] += 1
    else:
        state["run_value"], state["run_count"] = x, 1
    firing["stuck"] = (state["run_count"] >= config["stuck_count"], state["run_count"],
                       config["stuck_count"])

    recent = (values + [x])[-config["rate_window"]:]
    if len(recent) >= config["rate_window"]:
        slope = theil_sen(recent)
        firing["rate"] = (abs(slope) > config["max_rate"], slope, config["max_rate"])

    # Every reading joins the window: the median and MAD are robust to the odd outlier in it.
    values.append(x)
    del values[:-max(config["window"], config["rate_window"])]

    started = []
    for rule in RULES:
        fires, value, threshold = firing.get(rule, (False, None, None))
        if fires and not state["active"][rule]:
            started.append((rule, value, threshold))
        state["active"][rule] = fires
    return started


# --- records ---------------------------------------------------------------------------------

def _sequence(record):
    return int(record["kinesis"]["sequenceNumber"])


def _device(record):
    # The rule's partition key is ${topic(3)}, the thing name the gateway's policy lets the
    # device publish under. The message's own "device" is not used: the data is not decoded
    # until the record is known to be new, and a poison record has none.
    return record["kinesis"]["partitionKey"]


def decode(record, field):
    """The record's message and its FIELD value as a float; PoisonRecord when either is unusable."""
    try:
        raw = base64.b64decode(record["kinesis"].get("data") or "", validate=True)
        message = json.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise PoisonRecord(f"data is not base64 JSON: {e}") from None
    if not isinstance(message, dict):
        raise PoisonRecord(f"data is JSON but not an object: {type(message).__name__}")
    if field not in message:
        raise PoisonRecord(f"no {field!r} field")
    value = message[field]
    # bool is an int in Python, but true is not a reading.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PoisonRecord(f"{field!r} is not a number: {json.dumps(value)[:80]}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PoisonRecord(f"{field!r} is not finite: {value}")
    # Compared before any conversion: a huge JSON integer does not fit a float.
    if value != 0 and not DYNAMODB_MIN <= abs(value) <= DYNAMODB_MAX:
        raise PoisonRecord(f"{field!r} is outside DynamoDB's number range: {str(value)[:40]}")
    # Scored as a float: its repr has at most 17 significant digits, within DynamoDB's 38.
    return message, float(value)


# --- state in DynamoDB -----------------------------------------------------------------------

def _n(value):
    # repr is the shortest text that reads back as the same float, so the stuck rule's exact
    # comparison survives the round trip.
    return {"N": repr(value)}


def _from_n(attribute):
    text = attribute["N"]
    try:
        return int(text)
    except ValueError:
        return float(text)


def to_item(state, expires_at):
    item = {
        "device": {"S": state["device"]},
        "values": {"L": [_n(v) for v in state["values"]]},
        "run_count": {"N": str(state["run_count"])},
        "active": {"M": {r: {"BOOL": bool(state["active"][r])} for r in RULES}},
        "expires_at": {"N": str(int(expires_at))},
        "updated_at": {"S": _now_iso()},
    }
    if state["run_value"] is not None:
        item["run_value"] = _n(state["run_value"])
    if state["last_seq"] is not None:
        item["last_seq"] = {"S": state["last_seq"]}
    return item


def from_item(item):
    state = new_state(item["device"]["S"])
    state["values"] = [_from_n(v) for v in item.get("values", {}).get("L", [])]
    if "run_value" in item:
        state["run_value"] = _from_n(item["run_value"])
    state["run_count"] = int(item.get("run_count", {}).get("N", "0"))
    for rule, flag in item.get("active", {}).get("M", {}).items():
        if rule in state["active"]:
            state["active"][rule] = bool(flag.get("BOOL"))
    if "last_seq" in item:
        state["last_seq"] = item["last_seq"]["S"]
    return state


def load_states(devices, config):
    """Each device's state (a fresh one when it has none), read with BatchGetItem."""
    table = config["table"]
    states = {d: new_state(d) for d in devices}
    for start in range(0, len(devices), GET_BATCH):
        # ConsistentRead: the previous batch's write must be seen, or its records would be
        # scored (and alerted) again.
        request = {table: {"Keys": [{"device": {"S": d}} for d in devices[start:start + GET_BATCH]],
                           "ConsistentRead": True}}
        delays = list(UNPROCESSED_RETRY_DELAYS)
        while request:
            response = _call(f"BatchGetItem on {table}", _dynamodb().batch_get_item,
                             RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                state = from_item(item)
                states[state["device"]] = state
            request = response.get("UnprocessedKeys") or {}
            if request:
                if not delays:
                    raise RuntimeError(f"BatchGetItem on {table} left keys unread after "
                                       f"{len(UNPROCESSED_RETRY_DELAYS)} retries")
                time.sleep(delays.pop(0))
    return states


def save_states(states, config):
    """Writes the given states with BatchWriteItem, resending what DynamoDB left unprocessed."""
    table = config["table"]
    expires_at = time.time() + config["state_ttl_days"] * 86400
    items = [to_item(s, expires_at) for s in states]
    for start in range(0, len(items), WRITE_BATCH):
        request = {table: [{"PutRequest": {"Item": i}} for i in items[start:start + WRITE_BATCH]]}
        delays = list(UNPROCESSED_RETRY_DELAYS)
        while request:
            response = _call(f"BatchWriteItem on {table}", _dynamodb().batch_write_item,
                             RequestItems=request)
            request = response.get("UnprocessedItems") or {}
            if request:
                if not delays:
                    raise RuntimeError(f"BatchWriteItem on {table} left items unwritten after "
                                       f"{len(UNPROCESSED_RETRY_DELAYS)} retries")
                time.sleep(delays.pop(0))


# --- alerts ----------------------------------------------------------------------------------

def _now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _subject(rule, device, field, value):
    # SNS subjects: ASCII, no line breaks or control characters, at most 100 characters
    # (https://docs.aws.amazon.com/sns/latest/api/API_Publish.html).
    text = f"ANOMALY {rule} {device} {field}={value}"
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text[:100]


def alert(config, device, value, rule, rule_score, threshold, record, message):
    fields = {
        "kind": "anomaly",
        "device": device,
        "field": config["field"],
        "value": value,
        "rule": rule,
        "score": round(rule_score, 6) if isinstance(rule_score, float) else rule_score,
        "threshold": threshold,
        "sequence": record["kinesis"]["sequenceNumber"],
        "timestamp": message.get("timestamp"),
        "detected_at": _now_iso(),
    }
    response = _call(f"Alert to {config['topic']}", _sns().publish,
                     TopicArn=config["topic"],
                     Subject=_subject(rule, device, config["field"], value),
                     Message=json.dumps(fields))
    logger.info("ANOMALY " + json.dumps(dict(fields, message_id=response["MessageId"])))


# --- the handler -----------------------------------------------------------------------------

def lambda_handler(event, context):
    config = load_config()
    records = event.get("Records") or []
    # The device of each record is its partition key, known without decoding the data.
    devices = list(dict.fromkeys(_device(r) for r in records))
    states = load_states(devices, config) if devices else {}

    changed = {}  # device -> state, in the order first changed
    skipped = anomalies = 0
    for record in records:
        device = _device(record)
        state = states[device]
        sequence = _sequence(record)
        if state["last_seq"] is not None and sequence <= int(state["last_seq"]):
            skipped += 1
            continue
        try:
            message, value = decode(record, config["field"])
        except PoisonRecord as why:
            # Save the progress so far: the retries that isolate this record skip what came
            # before it instead of alerting on it again.
            save_states(list(changed.values()), config)
            logger.error("POISON " + json.dumps({
                "device": device,
                "sequence": record["kinesis"]["sequenceNumber"],
                "event_id": record.get("eventID"),
                "why": str(why),
            }))
            raise
        for rule, rule_score, threshold in score(state, value, config):
            alert(config, device, message[config["field"]], rule, rule_score, threshold, record,
                  message)
            anomalies += 1
        state["last_seq"] = record["kinesis"]["sequenceNumber"]
        changed[device] = state

    # After the alerts: a crash before this write repeats them on the retry, never loses one.
    if changed:
        save_states(list(changed.values()), config)
    summary = {"records": len(records), "devices": len(devices), "skipped": skipped,
               "anomalies": anomalies}
    logger.info("SUMMARY " + json.dumps(summary))
    return summary
