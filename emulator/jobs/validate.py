"""CreateJob / CreateJobTemplate input checks, with AWS's ranges.

Sources (AWS IoT API reference, and botocore's model of it, which carries the
same constraints): CreateJob, CreateJobTemplate, JobExecutionsRolloutConfig,
ExponentialRolloutRate, RateIncreaseCriteria, AbortConfig / AbortCriteria,
TimeoutConfig, JobExecutionsRetryConfig / RetryCriteria, PresignedUrlConfig;
developer guide "Specify job configurations by using the AWS IoT Jobs API"
(job-configurations-api.html: maximumPerMinute "ranges from 1 to 1000 ... If
you don't set the value, it uses 1000 as the default value"; the API reference
itself gives only the minimum 1) and "How job configurations work" (retries:
"up to 10 retries for both failure types combined").

Every refusal is InvalidRequestException (HTTP 400), the one client error
CreateJob and CreateJobTemplate model for bad input; the messages are the
emulator's.  Numbers must be JSON numbers (a boolean is not a number).
"""

from __future__ import annotations

import json
import re
from typing import Any

ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DOCUMENT_MAX = 32768  # JobDocument: max 32768 characters (the 32 KB limit)
DESCRIPTION_MAX = 2028
FAILURE_TYPES = ("FAILED", "REJECTED", "TIMED_OUT", "ALL")
RETRY_TYPES = ("FAILED", "TIMED_OUT", "ALL")
TARGET_SELECTIONS = ("SNAPSHOT", "CONTINUOUS")
MAX_RATE = 1000
MAX_TIMEOUT_MINUTES = 10080  # 7 days
MAX_RETRIES = 10


def invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _number(value: Any, name: str, low: float | None = None, high: float | None = None,
            integer: bool = True) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):  # query/path parameters arrive as strings
            try:
                value = float(value) if not integer else int(value)
            except ValueError:
                raise invalid(f"{name} must be a number")
        else:
            raise invalid(f"{name} must be a number")
    if integer and float(value) != int(value):
        raise invalid(f"{name} must be an integer")
    if low is not None and value < low:
        raise invalid(f"{name} must be at least {low:g}")
    if high is not None and value > high:
        raise invalid(f"{name} must be at most {high:g}")
    return int(value) if integer else float(value)


def _object(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object")
    return value


def _decimals(value: float, digits: int, name: str) -> None:
    if round(value, digits) != value:
        raise invalid(f"{name} supports at most {digits} digit(s) after the decimal point")


def job_id(value: Any, what: str = "jobId") -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise invalid(f"{what} must be 1-64 characters of a-z, A-Z, 0-9, '-' and '_'")
    return value


def description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > DESCRIPTION_MAX:
        raise invalid(f"description must be a string of at most {DESCRIPTION_MAX} characters")
    return value


def document_text(value: Any) -> str:
    """A job document: JSON text of at most 32768 characters."""
    if not isinstance(value, str):
        raise invalid("document must be a string")
    if len(value) > DOCUMENT_MAX:
        raise invalid(f"The job document is larger than {DOCUMENT_MAX} characters")
    try:
        parsed = json.loads(value)
    except ValueError as error:
        raise invalid(f"The job document is not valid JSON: {error}")
    if not isinstance(parsed, dict):
        raise invalid("The job document must be a JSON object")
    return value


def target_selection(value: Any) -> str:
    if value is None:
        return "SNAPSHOT"
    if value not in TARGET_SELECTIONS:
        raise invalid("targetSelection must be SNAPSHOT or CONTINUOUS")
    return value


def presigned_url_config(value: Any) -> dict | None:
    if value is None:
        return None
    value = _object(value, "presignedUrlConfig")
    out: dict[str, Any] = {}
    role = value.get("roleArn")
    if role is not None:
        if not isinstance(role, str) or not 20 <= len(role) <= 2048:
            raise invalid("presignedUrlConfig.roleArn must be 20-2048 characters")
        out["roleArn"] = role
    expires = value.get("expiresInSec")
    out["expiresInSec"] = 3600 if expires is None else _number(expires, "presignedUrlConfig.expiresInSec", 60, 3600)
    return out


def rollout_config(value: Any) -> dict | None:
    if value is None:
        return None
    value = _object(value, "jobExecutionsRolloutConfig")
    out: dict[str, Any] = {}
    if value.get("maximumPerMinute") is not None:
        out["maximumPerMinute"] = _number(value["maximumPerMinute"], "maximumPerMinute", 1, MAX_RATE)
    rate = value.get("exponentialRate")
    if rate is not None:
        rate = _object(rate, "exponentialRate")
        for required in ("baseRatePerMinute", "incrementFactor", "rateIncreaseCriteria"):
            if rate.get(required) is None:
                raise invalid(f"exponentialRate.{required} is required")
        factor = _number(rate["incrementFactor"], "incrementFactor", 1.1, 5, integer=False)
        _decimals(factor, 1, "incrementFactor")
        criteria = _object(rate["rateIncreaseCriteria"], "rateIncreaseCriteria")
        checked: dict[str, int] = {}
        for name in ("numberOfNotifiedThings", "numberOfSucceededThings"):
            if criteria.get(name) is not None:
                checked[name] = _number(criteria[name], name, 1)
        if not checked:
            raise invalid("rateIncreaseCriteria needs numberOfNotifiedThings or numberOfSucceededThings")
        out["exponentialRate"] = {
            "baseRatePerMinute": _number(rate["baseRatePerMinute"], "baseRatePerMinute", 1, MAX_RATE),
            "incrementFactor": factor,
            "rateIncreaseCriteria": checked,
        }
    return out


def abort_config(value: Any) -> dict | None:
    if value is None:
        return None
    value = _object(value, "abortConfig")
    criteria = value.get("criteriaList")
    if not isinstance(criteria, list) or not criteria:
        raise invalid("abortConfig.criteriaList must have at least one criterion")
    out = []
    for criterion in criteria:
        criterion = _object(criterion, "abort criterion")
        if criterion.get("failureType") not in FAILURE_TYPES:
            raise invalid("abort failureType must be FAILED, REJECTED, TIMED_OUT or ALL")
        if criterion.get("action") != "CANCEL":
            raise invalid("abort action must be CANCEL")
        if criterion.get("thresholdPercentage") is None or criterion.get("minNumberOfExecutedThings") is None:
            raise invalid("abort criteria need thresholdPercentage and minNumberOfExecutedThings")
        threshold = _number(criterion["thresholdPercentage"], "thresholdPercentage", 0, 100, integer=False)
        _decimals(threshold, 2, "thresholdPercentage")
        out.append({
            "failureType": criterion["failureType"],
            "action": "CANCEL",
            "thresholdPercentage": threshold,
            "minNumberOfExecutedThings": _number(criterion["minNumberOfExecutedThings"], "minNumberOfExecutedThings", 1),
        })
    return {"criteriaList": out}


def timeout_config(value: Any) -> dict | None:
    if value is None:
        return None
    value = _object(value, "timeoutConfig")
    if value.get("inProgressTimeoutInMinutes") is None:
        return {}
    return {"inProgressTimeoutInMinutes": _number(
        value["inProgressTimeoutInMinutes"], "inProgressTimeoutInMinutes", 1, MAX_TIMEOUT_MINUTES)}


def retry_config(value: Any) -> dict | None:
    if value is None:
        return None
    value = _object(value, "jobExecutionsRetryConfig")
    criteria = value.get("criteriaList")
    if not isinstance(criteria, list) or not 1 <= len(criteria) <= 2:
        raise invalid("jobExecutionsRetryConfig.criteriaList must have 1 or 2 criteria")
    out = []
    seen = set()
    for criterion in criteria:
        criterion = _object(criterion, "retry criterion")
        failure = criterion.get("failureType")
        if failure not in RETRY_TYPES:
            raise invalid("retry failureType must be FAILED, TIMED_OUT or ALL")
        if failure in seen:
            raise invalid(f"retry failureType {failure} is given twice")
        seen.add(failure)
        if criterion.get("numberOfRetries") is None:
            raise invalid("retry criteria need numberOfRetries")
        out.append({"failureType": failure,
                    "numberOfRetries": _number(criterion["numberOfRetries"], "numberOfRetries", 0, MAX_RETRIES)})
    if sum(c["numberOfRetries"] for c in out) > MAX_RETRIES:
        raise invalid(f"at most {MAX_RETRIES} retries for all failure types combined")
    return {"criteriaList": out}


def tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise invalid("tags must be a list")
    return {str(t.get("Key")): str(t.get("Value", "")) for t in value if isinstance(t, dict)}
