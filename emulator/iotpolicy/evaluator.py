"""AWS IoT Core policy evaluation (pure stdlib; see ``evaluate``).

What is evaluated, following the AWS IoT Core Developer Guide ("AWS IoT Core
policies", "AWS IoT Core policy variables", "Thing policy variables", the
"Example AWS IoT Core policies" pages) and the IAM policy grammar IoT policies
share ("IAM JSON policy elements: Condition operators"):

* ``Statement`` (one object or a list), ``Effect`` ``Allow``/``Deny``,
  ``Action``/``NotAction`` and ``Resource``/``NotResource`` (a string or a
  list each), ``Condition``.  A statement without ``Effect``, without one of
  Action/NotAction, or without one of Resource/NotResource never matches.
  ``Principal``/``Sid`` are ignored (IoT policies have no Principal).
* Actions match case-insensitively with ``*`` and ``?`` wildcards (``*``,
  ``iot:*``, ``iot:Get*``), as IAM does.
* Resources match the whole ARN case-sensitively; ``*`` matches any run of
  characters (including ``/`` and ``:``) and ``?`` exactly one.  The MQTT
  wildcards ``+`` and ``#`` are ordinary characters in a policy
  (``topicfilter/foo/+/bar`` allows subscribing to the filter ``foo/+/bar``
  only, not ``foo/x/bar``).
* Policy variables in Resource and Condition values: ``${iot:ClientId}``,
  ``${iot:Connection.Thing.ThingName}``, ``${iot:Connection.Thing.ThingTypeName}``,
  ``${iot:Connection.Thing.IsAttached}``,
  ``${iot:Connection.Thing.Attributes[name]}``, ``${iot:Certificate.<Field>}``
  (whatever ``Context.certificate`` holds, e.g. ``Subject.CommonName``),
  ``${aws:SourceIp}``; the escapes ``${*}``, ``${?}``, ``${$}`` stand for a
  literal ``*``, ``?``, ``$``.  Variable names are case-insensitive (the
  attribute name in brackets is not).  A substituted value is literal: a
  client id ``a*`` does not act as a wildcard.
* A variable with **no value** (a ``Connection.Thing.*`` variable when the
  client id is not the name of a thing attached to the principal, a missing
  attribute or thing type, an unknown variable, ``${key, 'default'}`` forms)
  makes the Resource entry containing it match nothing (in NotResource: the
  statement does not apply - the emulator's choice), and makes the whole
  Condition block containing it false (negated operators included), so the
  statement does not apply (AWS: "If the device certificate is not associated with the thing,
  this variable won't be resolved and will result in an access denied
  error").  The variable is reported in ``Decision.missing_context_values``.
  ``iot:Connection.Thing.IsAttached`` itself always has a value
  (``"true"``/``"false"``), as documented.
* Condition operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase,
  StringNotEqualsIgnoreCase, StringLike, StringNotLike, ArnEquals, ArnLike,
  ArnNotEquals, ArnNotLike (component-wise over the six ARN fields, with
  wildcards, ArnEquals == ArnLike as in IAM), Bool, IpAddress, NotIpAddress
  (``ipaddress`` module; key ``aws:SourceIp``), Null, each with the
  ``IfExists`` suffix.  Several values for one key: any matches (negated
  operators: none matches); several keys or operators: all must hold.  A key
  absent from the context makes a non-negated operator false and a negated one
  true; ``...IfExists`` is true when the key is absent.  An **unknown
  operator** (Numeric*, Date*, ``ForAllValues:``/``ForAnyValue:`` set
  operators, ``iot:ConnectAttributes``-style multi-valued keys, ...) is
  **not satisfied**, so its statement never applies - for a Deny that means
  the emulator may allow what AWS would deny.
* Decision: any applicable Deny statement -> explicit deny; else any
  applicable Allow -> allowed; else implicit deny.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

ALLOWED = "allowed"
EXPLICIT_DENY = "explicit-deny"
IMPLICIT_DENY = "implicit-deny"


@dataclass(frozen=True)
class Context:
    """What AWS IoT knows about the connection when it evaluates a policy.

    ``thing_name``/``thing_type_name``/``attributes`` only count when
    ``is_attached`` is true (the client id is the name of a thing attached to
    the principal); otherwise the ``iot:Connection.Thing.*`` variables have no
    value.  ``certificate`` maps the part after ``iot:Certificate.`` (e.g.
    ``Subject.CommonName``) to its value.
    """

    client_id: str | None
    thing_name: str | None = None
    is_attached: bool = False
    thing_type_name: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    principal: str | None = None  # certificate id
    region: str = "us-east-1"
    account: str = "123456789012"
    source_ip: str | None = None
    certificate: Mapping[str, str] = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        """The value of a policy variable / condition key, None if it has none."""
        name, bracket = _split_key(key)
        lower = name.lower()
        if lower == "iot:clientid":
            return self.client_id if not bracket else None
        if lower == "aws:sourceip":
            return self.source_ip if not bracket else None
        if lower == "iot:connection.thing.isattached":
            return ("true" if self._attached else "false") if not bracket else None
        if lower == "iot:connection.thing.thingname":
            return self.thing_name if self._attached and not bracket else None
        if lower == "iot:connection.thing.thingtypename":
            return self.thing_type_name if self._attached and not bracket else None
        if lower == "iot:connection.thing.attributes" and bracket is not None:
            if not self._attached:
                return None
            value = self.attributes.get(bracket)
            return None if value is None else str(value)
        if lower.startswith("iot:certificate.") and not bracket:
            wanted = name[len("iot:certificate."):].lower()
            for cert_key, cert_value in self.certificate.items():
                if cert_key.lower() == wanted:
                    return cert_value
        return None

    @property
    def _attached(self) -> bool:
        return bool(self.is_attached and self.thing_name)


@dataclass(frozen=True)
class Match:
    """One statement that applied: which policy (name or position) and which statement."""

    effect: str  # "Allow" or "Deny"
    policy_index: int
    policy_name: str | None
    statement_index: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "allowed" | "explicit-deny" | "implicit-deny"
    policy_name: str | None = None  # of the deciding statement (first Deny, else first Allow)
    policy_index: int | None = None
    statement_index: int | None = None
    allows: tuple[Match, ...] = ()  # every applicable Allow statement
    denies: tuple[Match, ...] = ()  # every applicable Deny statement
    missing_context_values: tuple[str, ...] = ()  # variables that had no value


class _Unresolved(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


_VAR = re.compile(r"\$\{([^}]*)\}")
_ESCAPES = {"*": "*", "?": "?", "$": "$"}


def _split_key(key: str) -> tuple[str, str | None]:
    key = key.strip()
    if key.endswith("]") and "[" in key:
        name, _, rest = key.partition("[")
        return name.strip(), rest[:-1]
    return key, None


def _pieces(text: str, context: Context) -> list[tuple[bool, str]]:
    """Split policy text into (is_literal_value, text) pieces with variables resolved.

    Literal pieces come from variables/escapes and never act as wildcards.
    Raises _Unresolved for a variable without a value.
    """
    out: list[tuple[bool, str]] = []
    pos = 0
    for found in _VAR.finditer(text):
        if found.start() > pos:
            out.append((False, text[pos:found.start()]))
        inner = found.group(1)
        if inner in _ESCAPES:
            out.append((True, _ESCAPES[inner]))
        else:
            value = context.value(inner)
            if value is None:
                raise _Unresolved(inner.strip())
            out.append((True, value))
        pos = found.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def _pattern(pieces: list[tuple[bool, str]], wildcards: bool, ignore_case: bool = False):
    key = tuple(pieces)
    try:
        return _compiled(key, wildcards, ignore_case)
    except TypeError:  # a value that cannot be a cache key
        return _compiled.__wrapped__(key, wildcards, ignore_case)


@functools.lru_cache(maxsize=16384)
def _compiled(pieces: tuple[tuple[bool, str], ...], wildcards: bool, ignore_case: bool):
    """The regex of a resolved pattern, cached: the same policy is evaluated for every message
    of every device, each with its own thing name, more patterns than ``re``'s own cache keeps
    (512), so without this each check escaped and compiled its patterns again."""
    regex = []
    for literal, chunk in pieces:
        if literal or not wildcards:
            regex.append(re.escape(chunk))
        else:
            for char in chunk:
                regex.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
    return re.compile("".join(regex), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _plain(pieces: list[tuple[bool, str]]) -> str:
    return "".join(chunk for _, chunk in pieces)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _glob_match(pattern: str, value: str, context: Context, ignore_case=False) -> bool:
    return bool(_pattern(_pieces(pattern, context), True, ignore_case).fullmatch(value))


# --- actions and resources -------------------------------------------------


def _action_matches(patterns: Iterable[Any], action: str) -> bool:
    for pattern in patterns:
        if isinstance(pattern, str) and _pattern([(False, pattern)], True, True).fullmatch(action):
            return True
    return False


def _resource_matches(patterns: Iterable[Any], resource: str, context: Context, missing: list) -> tuple[bool, bool]:
    """(some entry matches, some entry had a variable without a value)."""
    hit = unresolved_seen = False
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        try:
            if _glob_match(pattern, resource, context):
                hit = True
        except _Unresolved as unresolved:  # this entry matches nothing
            missing.append(unresolved.name)
            unresolved_seen = True
    return hit, unresolved_seen


# --- conditions --------------------------------------------------------------


def _arn_match(pattern_pieces: list[tuple[bool, str]], value: str) -> bool:
    # Split the policy ARN into its six fields, keeping which characters are literal.
    fields: list[list[tuple[bool, str]]] = [[]]
    for literal, chunk in pattern_pieces:
        if literal:
            fields[-1].append((True, chunk))
            continue
        for index, part in enumerate(chunk.split(":")):
            if index:
                if len(fields) == 6:  # the resource field keeps its colons
                    fields[-1].append((False, ":"))
                else:
                    fields.append([])
            if part:
                fields[-1].append((False, part))
    actual = value.split(":", 5)
    if len(fields) != 6 or len(actual) != 6:
        return False
    return all(_pattern(f, True).fullmatch(a) for f, a in zip(fields, actual))


def _ip_match(cidr: str, value: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# operator -> (negated, compare(pattern_pieces, actual) -> bool)
def _string_equals(pieces, actual):
    return _plain(pieces) == actual


def _string_equals_ic(pieces, actual):
    return _plain(pieces).lower() == actual.lower()


def _string_like(pieces, actual):
    return bool(_pattern(pieces, True).fullmatch(actual))


def _bool(pieces, actual):
    return _plain(pieces).strip().lower() == actual.strip().lower()


def _ip(pieces, actual):
    return _ip_match(_plain(pieces), actual)


_OPERATORS = {
    "stringequals": (False, _string_equals),
    "stringnotequals": (True, _string_equals),
    "stringequalsignorecase": (False, _string_equals_ic),
    "stringnotequalsignorecase": (True, _string_equals_ic),
    "stringlike": (False, _string_like),
    "stringnotlike": (True, _string_like),
    "arnequals": (False, lambda p, a: _arn_match(p, a)),
    "arnlike": (False, lambda p, a: _arn_match(p, a)),
    "arnnotequals": (True, lambda p, a: _arn_match(p, a)),
    "arnnotlike": (True, lambda p, a: _arn_match(p, a)),
    "bool": (False, _bool),
    "ipaddress": (False, _ip),
    "notipaddress": (True, _ip),
}


def _condition_holds(operator: str, key: str, values: Any, context: Context) -> bool:
    """One operator/key pair.  Raises _Unresolved for a variable with no value."""
    name = operator.strip()
    lower = name.lower()
    if_exists = lower.endswith("ifexists")
    if if_exists:
        lower = lower[: -len("ifexists")]
    actual = context.value(key)
    if lower == "null":
        wanted = [str(v).strip().lower() for v in _as_list(values)]
        is_null = actual is None
        return any((w == "true") == is_null for w in wanted if w in ("true", "false"))
    if lower not in _OPERATORS:
        return False  # unknown operator (Numeric*, Date*, ForAllValues:..., ...): not satisfied
    negated, compare = _OPERATORS[lower]
    resolved = [_pieces(str(v).lower() if isinstance(v, bool) else str(v), context)
                for v in _as_list(values)]
    if actual is None:
        return True if if_exists else negated
    hits = any(compare(pieces, actual) for pieces in resolved)
    return not hits if negated else hits


def _conditions_hold(condition: Any, context: Context, missing: list) -> bool:
    if condition is None:
        return True
    if not isinstance(condition, Mapping):
        return False
    try:
        for operator, block in condition.items():
            if not isinstance(block, Mapping):
                return False
            for key, values in block.items():
                if not _condition_holds(operator, key, values, context):
                    return False
    except _Unresolved as unresolved:
        missing.append(unresolved.name)
        return False
    return True


# --- policies ------------------------------------------------------------------


def _document(doc: Any) -> Mapping:
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except ValueError:
            return {}
    return doc if isinstance(doc, Mapping) else {}


def _named(policies: Sequence[Any]) -> list[tuple[str | None, Mapping]]:
    named = []
    for entry in policies:
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], (str, type(None))):
            named.append((entry[0], _document(entry[1])))
        else:
            named.append((None, _document(entry)))
    return named


def _statement_applies(statement: Any, action: str, resource: str, context: Context, missing: list) -> str | None:
    """The statement's effect ("Allow"/"Deny") when it applies to the request, else None."""
    if not isinstance(statement, Mapping):
        return None
    effect = statement.get("Effect")
    if effect not in ("Allow", "Deny"):
        return None
    if "Action" in statement:
        if not _action_matches(_as_list(statement["Action"]), action):
            return None
    elif "NotAction" in statement:
        if _action_matches(_as_list(statement["NotAction"]), action):
            return None
    else:
        return None
    if "Resource" in statement:
        hit, _ = _resource_matches(_as_list(statement["Resource"]), resource, context, missing)
        if not hit:
            return None
    elif "NotResource" in statement:
        hit, unresolved = _resource_matches(_as_list(statement["NotResource"]), resource, context, missing)
        # An unresolved NotResource entry: the emulator's choice is that the
        # statement does not apply (rather than "everything but nothing").
        if hit or unresolved:
            return None
    else:
        return None
    if not _conditions_hold(statement.get("Condition"), context, missing):
        return None
    return effect


def evaluate(policies: Sequence[Any], action: str, resource: str, context: Context) -> Decision:
    """Decide whether ``action`` on ``resource`` is allowed by ``policies``.

    ``policies``: IoT policy documents (dicts, or JSON text), or
    ``(policy_name, document)`` pairs.  ``action`` e.g. ``iot:Publish``;
    ``resource`` a full ARN (``arn:aws:iot:REGION:ACCOUNT:topic/a/b``,
    ``...:topicfilter/a/+``, ``...:client/ID``, ``...:thing/NAME``).
    Explicit Deny wins over Allow; nothing applicable = implicit deny.  See
    the module docstring for exactly what is and is not evaluated.
    """
    allows: list[Match] = []
    denies: list[Match] = []
    missing: list[str] = []
    for policy_index, (name, doc) in enumerate(_named(policies)):
        for statement_index, statement in enumerate(_as_list(doc.get("Statement"))):
            effect = _statement_applies(statement, action, resource, context, missing)
            if effect is None:
                continue
            match = Match(effect, policy_index, name, statement_index)
            (denies if effect == "Deny" else allows).append(match)
    unique_missing = tuple(dict.fromkeys(missing))
    if denies:
        first = denies[0]
        return Decision(False, EXPLICIT_DENY, first.policy_name, first.policy_index,
                        first.statement_index, tuple(allows), tuple(denies), unique_missing)
    if allows:
        first = allows[0]
        return Decision(True, ALLOWED, first.policy_name, first.policy_index,
                        first.statement_index, tuple(allows), (), unique_missing)
    return Decision(False, IMPLICIT_DENY, missing_context_values=unique_missing)
