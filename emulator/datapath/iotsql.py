"""The subset of the AWS IoT SQL language that topic rules use.

Grammar (keywords case-insensitive; SQL versions 2015-10-08, 2016-03-23 and
beta are read alike)::

    statement := SELECT item ("," item)* FROM 'topic/filter' [WHERE expr]
    item      := "*" | expr [AS name]
    expr      := or ;  or := and (OR and)* ;  and := not (AND not)*
    not       := NOT not | cmp
    cmp       := sum [("=" | "<>" | "!=" | "<" | "<=" | ">" | ">=") sum]
    sum       := product (("+" | "-") product)*
    product   := unary (("*" | "/" | "%") unary)*
    unary     := "-" unary | postfix
    postfix   := primary ("." name | "[" integer "]")*
    primary   := number | 'string' | TRUE | FALSE | NULL | name
               | "name" (a quoted field name) | func "(" [expr ("," expr)*] ")"
               | "(" expr ")"
    func      := topic | timestamp | newuuid

Semantics, as AWS IoT documents them:

* ``*`` copies every key of the payload when the payload is a JSON object.
  A payload that is not a JSON object (an array, a scalar, or not JSON at
  all) contributes nothing to ``*`` and every field reference on it is
  Undefined; the other items (functions, literals) still apply.
* Items are applied left to right; a later key overrides an earlier one (so
  ``SELECT *, topic(3) AS device`` replaces the payload's ``device``).
* A field that is missing (or looked up on something that is not an object,
  or an array index out of range) is **Undefined**. An item whose value is
  Undefined is left out of the result.
* Key of an item without ``AS``: a field reference uses its last name
  (``a.b.c`` -> ``c``), a function its name (``topic``, ``timestamp``);
  anything else (a literal, an operator) gets ``_<position>`` (1-based) -
  the emulator's own choice, give such items an alias.
* ``topic()`` is the whole topic, ``topic(n)`` its n-th level (1-based;
  out of range -> Undefined); ``timestamp()`` the epoch milliseconds at which
  the rules engine evaluates the message (one value per message);
  ``newuuid()`` a random UUID (version 4) string, a new one at every call;
  ``isUndefined(x)`` true when ``x`` is Undefined (a field the message lacks).
* Comparisons: Undefined on either side -> Undefined. ``=`` / ``<>`` /
  ``!=``: equal when of the same JSON type and value (1 = 1.0; objects and
  arrays compared whole); values of different types are not equal
  (``1 = '1'`` is false). ``< <= > >=``: numbers compare as numbers (a string
  that reads as a number is converted when compared with a number), strings
  as strings (code points); anything else (objects, arrays, booleans, null,
  a non-numeric string against a number) -> Undefined.
* AND / OR / NOT take Booleans (or the strings "true" / "false", any case);
  any other operand (Undefined included) makes the result Undefined.
* Arithmetic (``+ - * / %``) on numbers (or numeric strings); anything else,
  or division by zero -> Undefined.
* WHERE selects the message only when the condition is the Boolean true.

Anything else (nested SELECT, CASE, IN, LIKE, other functions, ``SELECT
VALUE``, substitution templates, ...) is refused with ``UnsupportedSql``
when the statement is parsed.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .topics import TopicFilterError, validate_filter


class UnsupportedSql(ValueError):
    """The statement is outside the subset the emulator evaluates (or wrong)."""


class _UndefinedType:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _UndefinedType()

KEYWORDS = {"SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "TRUE", "FALSE", "NULL"}
# Words that are real IoT SQL but outside the subset: named in the error.
_KNOWN_UNSUPPORTED = {"CASE", "IN", "LIKE", "VALUE", "WHEN", "THEN", "ELSE", "END", "IS", "BETWEEN", "SET"}
FUNCTIONS = {"topic": (0, 1), "timestamp": (0, 0), "newuuid": (0, 0), "isundefined": (1, 1)}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.|'')*')
  | (?P<qid>"(?:[^"\\]|\\.|"")*")
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|\.|\*|\+|-|/|%|\[|\])
    """,
    re.VERBOSE,
)


@dataclass
class Token:
    kind: str  # num, str, qid, id, kw, op, end
    text: str
    value: Any
    pos: int


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN_RE.match(sql, pos)
        if not match:
            raise UnsupportedSql(f"unexpected character {sql[pos]!r} at offset {pos}")
        kind = match.lastgroup
        text = match.group(kind)
        start = pos
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "num":
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
        elif kind in ("str", "qid"):
            quote = text[0]
            body = text[1:-1].replace(quote * 2, quote)
            value = re.sub(r"\\(.)", r"\1", body)
        elif kind == "id" and text.upper() in KEYWORDS:
            kind, value = "kw", text.upper()
        else:
            value = text
        tokens.append(Token(kind, text, value, start))
    tokens.append(Token("end", "", None, len(sql)))
    return tokens


# -- syntax tree -------------------------------------------------------------


@dataclass
class Literal:
    value: Any


@dataclass
class Field:
    name: str  # a top-level payload key


@dataclass
class Access:
    base: Any
    key: Any  # str (object key) or int (array index)


@dataclass
class Call:
    name: str
    args: list


@dataclass
class Unary:
    op: str
    operand: Any


@dataclass
class Binary:
    op: str
    left: Any
    right: Any


@dataclass
class Star:
    pass


@dataclass
class Item:
    expr: Any
    key: str


@dataclass
class Statement:
    sql: str
    items: list = field(default_factory=list)  # Star | Item
    topic_filter: str = ""
    where: Any = None


# -- parser ------------------------------------------------------------------


class _Parser:
    def __init__(self, sql: str):
        self.sql = sql
        self.tokens = tokenize(sql)
        self.index = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value == word

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def expect_kw(self, word: str) -> None:
        if not self.is_kw(word):
            self.fail(f"expected {word}")
        self.advance()

    def expect_op(self, op: str) -> None:
        if not self.is_op(op):
            self.fail(f"expected {op!r}")
        self.advance()

    def fail(self, message: str):
        token = self.tok
        where = f"at offset {token.pos}" if token.kind != "end" else "at the end"
        found = f" (found {token.text!r})" if token.kind != "end" else ""
        if token.kind == "id" and token.text.upper() in _KNOWN_UNSUPPORTED:
            message = f"{token.text.upper()} is not supported by the emulator"
        raise UnsupportedSql(f"{message} {where}{found}")

    def statement(self) -> Statement:
        stmt = Statement(sql=self.sql)
        self.expect_kw("SELECT")
        position = 0
        while True:
            position += 1
            stmt.items.append(self.item(position))
            if self.is_op(","):
                self.advance()
                continue
            break
        self.expect_kw("FROM")
        if self.tok.kind != "str":
            self.fail("expected the topic filter as a quoted string")
        stmt.topic_filter = self.advance().value
        try:
            validate_filter(stmt.topic_filter)
        except TopicFilterError as error:
            raise UnsupportedSql(f"invalid topic filter: {error}") from None
        if self.is_kw("WHERE"):
            self.advance()
            stmt.where = self.expr()
        if self.tok.kind != "end":
            self.fail("unexpected text")
        return stmt

    def item(self, position: int):
        if self.is_op("*"):
            self.advance()
            return Star()
        expr = self.expr()
        if self.is_kw("AS"):
            self.advance()
            if self.tok.kind not in ("id", "qid"):
                self.fail("expected a name after AS")
            return Item(expr, self.advance().value)
        return Item(expr, _default_key(expr, position))

    def expr(self):
        return self.or_expr()

    def or_expr(self):
        node = self.and_expr()
        while self.is_kw("OR"):
            self.advance()
            node = Binary("OR", node, self.and_expr())
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.is_kw("AND"):
            self.advance()
            node = Binary("AND", node, self.not_expr())
        return node

    def not_expr(self):
        if self.is_kw("NOT"):
            self.advance()
            return Unary("NOT", self.not_expr())
        return self.comparison()

    def comparison(self):
        node = self.additive()
        if self.is_op("=", "<>", "!=", "<", "<=", ">", ">="):
            op = self.advance().value
            node = Binary("<>" if op == "!=" else op, node, self.additive())
            if self.is_op("=", "<>", "!=", "<", "<=", ">", ">="):
                self.fail("chained comparison")
        return node

    def additive(self):
        node = self.multiplicative()
        while self.is_op("+", "-"):
            op = self.advance().value
            node = Binary(op, node, self.multiplicative())
        return node

    def multiplicative(self):
        node = self.unary()
        while self.is_op("*", "/", "%"):
            op = self.advance().value
            node = Binary(op, node, self.unary())
        return node

    def unary(self):
        if self.is_op("-"):
            self.advance()
            operand = self.unary()
            if isinstance(operand, Literal) and _is_number(operand.value):
                return Literal(-operand.value)
            return Unary("-", operand)
        return self.postfix()

    def postfix(self):
        node = self.primary()
        while True:
            if self.is_op("."):
                self.advance()
                if self.tok.kind not in ("id", "qid", "kw"):
                    self.fail("expected a field name after '.'")
                token = self.advance()
                node = Access(node, token.text if token.kind == "kw" else token.value)
            elif self.is_op("["):
                self.advance()
                if self.tok.kind != "num" or not isinstance(self.tok.value, int):
                    self.fail("expected an integer index")
                index = self.advance().value
                self.expect_op("]")
                node = Access(node, index)
            else:
                return node

    def primary(self):
        token = self.tok
        if token.kind == "num":
            self.advance()
            return Literal(token.value)
        if token.kind == "str":
            self.advance()
            return Literal(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE", "NULL"):
            self.advance()
            return Literal({"TRUE": True, "FALSE": False, "NULL": None}[token.value])
        if token.kind == "qid":
            self.advance()
            return Field(token.value)
        if token.kind == "id":
            self.advance()
            if self.is_op("("):
                return self.call(token)
            return Field(token.value)
        if self.is_op("("):
            self.advance()
            if self.is_kw("SELECT"):
                self.fail("nested SELECT is not supported by the emulator")
            node = self.expr()
            self.expect_op(")")
            return node
        self.fail("expected a value")

    def call(self, name_token: Token):
        name = name_token.value.lower()
        if name not in FUNCTIONS:
            raise UnsupportedSql(
                f"function {name_token.value}() at offset {name_token.pos} is not supported "
                f"by the emulator (only {', '.join(n + '()' for n in sorted(FUNCTIONS))})"
            )
        self.expect_op("(")
        args = []
        if not self.is_op(")"):
            args.append(self.expr())
            while self.is_op(","):
                self.advance()
                args.append(self.expr())
        self.expect_op(")")
        low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            raise UnsupportedSql(f"{name}() takes {low}..{high} arguments, got {len(args)}")
        return Call(name, args)


def _default_key(expr, position: int) -> str:
    if isinstance(expr, Field):
        return expr.name
    if isinstance(expr, Access) and isinstance(expr.key, str):
        return expr.key
    if isinstance(expr, Call):
        return expr.name
    return f"_{position}"


_cache: dict[str, Statement | UnsupportedSql] = {}
_cache_lock = threading.Lock()


def parse(sql: str) -> Statement:
    """The parsed statement (cached); UnsupportedSql when outside the subset."""
    with _cache_lock:
        cached = _cache.get(sql)
    if cached is None:
        try:
            cached = _Parser(sql if isinstance(sql, str) else "").statement()
        except UnsupportedSql as error:
            cached = error
        except RecursionError:
            cached = UnsupportedSql("statement nested too deeply")
        with _cache_lock:
            if len(_cache) > 512:
                _cache.clear()
            _cache[sql] = cached
    if isinstance(cached, UnsupportedSql):
        raise cached
    return cached


# -- evaluation --------------------------------------------------------------


@dataclass
class Message:
    topic: str
    payload: Any  # the decoded JSON payload, or UNDEFINED when not JSON
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def decode_payload(raw: bytes | str | None) -> Any:
    """The payload as JSON, or UNDEFINED when it is not JSON (binary, empty)."""
    if raw is None:
        return UNDEFINED
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return UNDEFINED
    try:
        return json.loads(raw)
    except ValueError:
        return UNDEFINED


def evaluate(stmt: Statement, message: Message) -> dict | None:
    """The message the rule produces, or None when WHERE does not select it.

    The topic filter is not checked here (see topics.matches).
    """
    if stmt.where is not None:
        if _eval(stmt.where, message) is not True:
            return None
    result: dict = {}
    for item in stmt.items:
        if isinstance(item, Star):
            if isinstance(message.payload, dict):
                result.update(message.payload)
            continue
        value = _eval(item.expr, message)
        if value is not UNDEFINED:
            result[item.key] = value
    return result


def run(sql: str, topic: str, payload: Any, timestamp_ms: int | None = None) -> dict | None:
    """Convenience for tests: parse, check the topic filter, evaluate.

    ``payload`` is raw (bytes / str, decoded as JSON) or an already decoded
    value. None = the topic does not match or WHERE rejects the message.
    """
    from .topics import matches

    stmt = parse(sql)
    if not matches(stmt.topic_filter, topic):
        return None
    if isinstance(payload, (bytes, str)):
        payload = decode_payload(payload)
    message = Message(topic, payload)
    if timestamp_ms is not None:
        message.timestamp_ms = timestamp_ms
    return evaluate(stmt, message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_number(value: Any):
    if _is_number(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _to_bool(value: Any):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _eval(node, message: Message):
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Field):
        payload = message.payload
        if isinstance(payload, dict) and node.name in payload:
            return payload[node.name]
        return UNDEFINED
    if isinstance(node, Access):
        base = _eval(node.base, message)
        if isinstance(node.key, str):
            if isinstance(base, dict) and node.key in base:
                return base[node.key]
            return UNDEFINED
        if isinstance(base, list) and 0 <= node.key < len(base):
            return base[node.key]
        return UNDEFINED
    if isinstance(node, Call):
        return _call(node, message)
    if isinstance(node, Unary):
        value = _eval(node.operand, message)
        if node.op == "NOT":
            flag = _to_bool(value)
            return UNDEFINED if flag is None else (not flag)
        number = _to_number(value)
        return UNDEFINED if number is None else -number
    if isinstance(node, Binary):
        if node.op in ("AND", "OR"):
            left = _to_bool(_eval(node.left, message))
            right = _to_bool(_eval(node.right, message))
            if left is None or right is None:
                return UNDEFINED
            return (left and right) if node.op == "AND" else (left or right)
        left = _eval(node.left, message)
        right = _eval(node.right, message)
        if left is UNDEFINED or right is UNDEFINED:
            return UNDEFINED
        if node.op in ("=", "<>", "<", "<=", ">", ">="):
            return _compare(node.op, left, right)
        return _arith(node.op, left, right)
    raise UnsupportedSql(f"cannot evaluate {node!r}")  # pragma: no cover


def _call(node: Call, message: Message):
    if node.name == "isundefined":
        # "Returns true if the argument is Undefined" (SQL reference, isUndefined).
        return _eval(node.args[0], message) is UNDEFINED
    if node.name == "timestamp":
        return message.timestamp_ms
    if node.name == "newuuid":
        # "Returns a random 16-byte UUID" as a string, a new one at every call (SQL reference).
        return str(uuid.uuid4())
    if node.name == "topic":
        if not node.args:
            return message.topic
        n = _to_number(_eval(node.args[0], message))
        if n is None or int(n) != n:
            return UNDEFINED
        levels = message.topic.split("/")
        n = int(n)
        if 1 <= n <= len(levels):
            return levels[n - 1]
        return UNDEFINED
    return UNDEFINED  # pragma: no cover - refused by the parser


def _compare(op: str, left, right):
    lt, rt = _type(left), _type(right)
    if op in ("=", "<>"):
        equal = lt == rt and left == right
        return equal if op == "=" else not equal
    if "number" in (lt, rt) and lt != rt:
        a, b = _to_number(left), _to_number(right)
        if a is None or b is None or "string" not in (lt, rt):
            return UNDEFINED
        left, right, lt, rt = a, b, "number", "number"
    if lt != rt or lt not in ("number", "string"):
        return UNDEFINED
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def _arith(op: str, left, right):
    a, b = _to_number(left), _to_number(right)
    if a is None or b is None:
        return UNDEFINED
    try:
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op == "/":
            if isinstance(a, int) and isinstance(b, int):
                if b == 0:
                    return UNDEFINED
                quotient = abs(a) // abs(b)
                return quotient if (a >= 0) == (b >= 0) else -quotient
            result = a / b
        else:
            result = math.fmod(a, b) if (isinstance(a, float) or isinstance(b, float)) else int(math.fmod(a, b))
    except (ZeroDivisionError, ValueError, OverflowError):
        return UNDEFINED
    if isinstance(result, float) and not math.isfinite(result):
        return UNDEFINED
    return result
