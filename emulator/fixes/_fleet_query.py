"""The subset of fleet indexing's query language the emulator understands.

AWS's language (developer guide, "Query syntax"; examples in "Example thing
queries"): Lucene-like terms, "the default operator is AND", ``AND``, ``OR``,
``NOT`` and ``-`` (exclude), grouping with parentheses, prefix search, range
search; "All field names are case sensitive"; "Search is case insensitive";
"The maximum number of terms in a query is twelve"; searching ``*`` matches
all things.

Understood here (anything else is InvalidQueryException, saying so):

* ``*`` alone: every thing.
* ``field:value`` (``value`` may be double-quoted to hold spaces or ``:``):
  equal, case-insensitively for strings; a number compares as a number
  (``shadow.reported.temp:21`` matches 21 and 21.0); ``true``/``false`` match
  booleans.  On a list (``thingGroupNames``, a shadow array) any element.
* ``field:pre*``, ``field:a?c`` (wildcards ``*`` and ``?`` anywhere),
  ``field:*`` (the field exists).
* ``field:[A TO B]`` (inclusive), ``field:{A TO B}`` (exclusive), ``*`` for an
  open end; ``field>N``, ``field>=N``, ``field<N``, ``field<=N``: numbers
  when both sides are numbers, else strings.
* ``AND``, ``OR``, ``NOT``, a leading ``-``, parentheses; juxtaposition is AND.
  Precedence NOT > AND > OR.

Not understood (InvalidQueryException "... not supported by the emulator"):
a term without a field (AWS then searches every field), field grouping
(``thingName:(a OR b)``), geo and aggregation queries, escapes.

Fields: ``thingName``, ``thingId``, ``thingTypeName``, ``thingGroupNames``,
``attributes.NAME``, ``shadow.reported.PATH``, ``shadow.desired.PATH``,
``shadow.delta.PATH``, ``shadow.hasDelta``, ``shadow.version``,
``connectivity.connected``, ``connectivity.timestamp``,
``connectivity.disconnectReason``.  Other names match nothing (AWS answers
no match for a field no thing has).  A field's value comes from a
``lookup(field) -> value | MISSING`` the caller supplies per thing.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable

MAX_TERMS = 12
MISSING = object()


class QueryError(ValueError):
    """The query is invalid (or outside the emulator's subset, which the message says)."""


@dataclass(frozen=True)
class Term:
    field: str
    kind: str  # "all" | "eq" | "glob" | "exists" | "range" | "cmp"
    value: Any = None
    low: Any = None
    high: Any = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    op: str = ""


@dataclass(frozen=True)
class Not:
    child: Any


@dataclass(frozen=True)
class And:
    children: tuple


@dataclass(frozen=True)
class Or:
    children: tuple


_FIELD = r"[A-Za-z_$][A-Za-z0-9_.$\-]*"
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<cmp>{_FIELD}(?:>=|<=|>|<)(?:"(?:[^"\\]|\\.)*"|[^\s()]+))
  | (?P<range>{_FIELD}:[\[{{][^\]}}]*[\]}}])
  | (?P<fieldterm>-?{_FIELD}:(?:"(?:[^"\\]|\\.)*"|\((?P<group>[^)]*)\)|[^\s()]*))
  | (?P<minus>-(?=[\s(]|{_FIELD}))
  | (?P<word>[^\s()]+)
    """,
    re.VERBOSE,
)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text))
    except ValueError:
        return None


def _term_from_field(text: str) -> Term:
    field, _, value = text.partition(":")
    if value.startswith("(") and value.endswith(")"):
        raise QueryError(f"field grouping ({text!r}) is not supported by the emulator")
    if value == "":
        raise QueryError(f"term {text!r} has no value")
    if value == "*":
        return Term(field, "exists")
    if value.startswith('"'):
        return Term(field, "eq", _unquote(value))
    if "*" in value or "?" in value:
        pattern = re.compile(fnmatch.translate(value.lower()), re.DOTALL)
        return Term(field, "glob", pattern)
    return Term(field, "eq", value)


def _term_from_range(text: str) -> Term:
    field, _, body = text.partition(":")
    low_inclusive = body[0] == "["
    high_inclusive = body[-1] == "]"
    parts = body[1:-1].split()
    if len(parts) != 3 or parts[1] != "TO":
        raise QueryError(f"range {text!r} must be [A TO B] or {{A TO B}}")
    low = None if parts[0] == "*" else _unquote(parts[0])
    high = None if parts[2] == "*" else _unquote(parts[2])
    return Term(field, "range", low=low, high=high, low_inclusive=low_inclusive, high_inclusive=high_inclusive)


def _term_from_cmp(text: str) -> Term:
    match = re.match(rf"({_FIELD})(>=|<=|>|<)(.*)$", text)
    assert match is not None
    field, op, value = match.groups()
    return Term(field, "cmp", _unquote(value), op=op)


def tokenize(query: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None:  # pragma: no cover - the word alternative matches anything else
            raise QueryError(f"cannot read the query at offset {pos}")
        pos = match.end()
        kind = match.lastgroup
        text = match.group(0)
        if kind == "ws":
            continue
        if kind in ("lparen", "rparen"):
            tokens.append((kind, text))
        elif kind == "cmp":
            tokens.append(("term", _term_from_cmp(text)))
        elif kind == "range":
            tokens.append(("term", _term_from_range(text)))
        elif kind in ("fieldterm", "group"):  # "group": the inner group of a fieldterm
            if text.startswith("-"):
                tokens.append(("not", "-"))
                text = text[1:]
            tokens.append(("term", _term_from_field(text)))
        elif kind == "minus":
            tokens.append(("not", "-"))
        elif text in ("AND", "OR", "NOT"):  # Lucene's operators are upper case; "and" is a word
            tokens.append((text.lower(), text))
        elif text == "*":
            tokens.append(("term", Term("*", "all")))
        else:
            word = text[1:] if text.startswith("-") and len(text) > 1 else text
            raise QueryError(f"term {word!r} has no field: searching every field is not supported by the emulator")
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self):
        if not self.tokens:
            raise QueryError("the query is empty")
        node = self.or_expr()
        if self.pos != len(self.tokens):
            raise QueryError(f"unexpected {self.tokens[self.pos][1]!r}")
        return node

    def or_expr(self):
        children = [self.and_expr()]
        while self.peek() == "or":
            self.take()
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self):
        children = [self.not_expr()]
        while self.peek() in ("and", "not", "term", "lparen"):
            if self.peek() == "and":
                self.take()
            children.append(self.not_expr())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_expr(self):
        if self.peek() == "not":
            self.take()
            return Not(self.not_expr())
        return self.atom()

    def atom(self):
        kind = self.peek()
        if kind == "term":
            return self.take()[1]
        if kind == "lparen":
            self.take()
            node = self.or_expr()
            if self.peek() != "rparen":
                raise QueryError("a parenthesis is not closed")
            self.take()
            return node
        if kind is None:
            raise QueryError("the query ends where a term was expected")
        raise QueryError(f"unexpected {self.tokens[self.pos][1]!r}")


def parse(query: str):
    """The query's tree; QueryError when it is invalid or outside the subset."""
    tokens = tokenize(query)
    terms = sum(1 for kind, _ in tokens if kind == "term")
    if terms > MAX_TERMS:
        raise QueryError(f"the query has {terms} terms; the maximum is {MAX_TERMS}")
    return _Parser(tokens).parse()


def fields(node) -> set[str]:
    """Every field name the query looks at."""
    if isinstance(node, Term):
        return {node.field}
    if isinstance(node, Not):
        return fields(node.child)
    out: set[str] = set()
    for child in node.children:
        out |= fields(child)
    return out


def _scalar_eq(actual: Any, wanted: str) -> bool:
    if isinstance(actual, bool):
        return wanted.lower() == ("true" if actual else "false")
    if isinstance(actual, (int, float)):
        number = _number(wanted)
        return number is not None and float(actual) == number
    if isinstance(actual, str):
        return actual.lower() == wanted.lower()
    return False


def _compare(actual: Any, wanted: Any) -> int | None:
    """-1/0/1 of actual vs wanted, numbers as numbers, strings case-insensitively."""
    if isinstance(actual, bool) or actual is None or isinstance(actual, (dict, list)):
        return None
    a_num, w_num = _number(actual) if not isinstance(actual, str) else None, _number(wanted)
    if isinstance(actual, (int, float)):
        if w_num is None:
            return None
        return (a_num > w_num) - (a_num < w_num)
    a, w = str(actual).lower(), str(wanted).lower()
    return (a > w) - (a < w)


def _values(value: Any) -> list:
    if isinstance(value, list):
        return value
    return [value]


def _term_matches(term: Term, value: Any) -> bool:
    if term.kind == "all":
        return True
    if value is MISSING:
        return False
    if term.kind == "exists":
        return value is not None
    for item in _values(value):
        if term.kind == "eq":
            if _scalar_eq(item, term.value):
                return True
        elif term.kind == "glob":
            if isinstance(item, (str, int, float)) and not isinstance(item, bool):
                text = item if isinstance(item, str) else _format_number(item)
                if term.value.match(text.lower()):
                    return True
        elif term.kind == "range":
            ok = True
            if term.low is not None:
                c = _compare(item, term.low)
                ok = c is not None and (c > 0 or (c == 0 and term.low_inclusive))
            if ok and term.high is not None:
                c = _compare(item, term.high)
                ok = c is not None and (c < 0 or (c == 0 and term.high_inclusive))
            if ok:
                return True
        elif term.kind == "cmp":
            c = _compare(item, term.value)
            if c is not None and (
                (term.op == ">" and c > 0)
                or (term.op == ">=" and c >= 0)
                or (term.op == "<" and c < 0)
                or (term.op == "<=" and c <= 0)
            ):
                return True
    return False


def _format_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluate(node, lookup: Callable[[str], Any]) -> bool:
    if isinstance(node, Term):
        return _term_matches(node, MISSING if node.kind == "all" else lookup(node.field))
    if isinstance(node, Not):
        return not evaluate(node.child, lookup)
    if isinstance(node, And):
        return all(evaluate(child, lookup) for child in node.children)
    return any(evaluate(child, lookup) for child in node.children)


def path(document: Any, dotted: str) -> Any:
    """``document``'s value at a dotted path, MISSING if absent (lists: each element's)."""
    current = document
    for part in dotted.split("."):
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list):
            found = [item[part] for item in current if isinstance(item, dict) and part in item]
            if not found:
                return MISSING
            current = found
        else:
            return MISSING
    return current
