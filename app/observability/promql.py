"""Just enough PromQL to reason about rules and dashboard queries without a Prometheus.

Sextant needs three things from a PromQL expression: the metric selectors it reads (live lint
checks that each exists), the labels each selector must carry for the query to mean anything
(`by (deployment)` over series without a `deployment` label routes nowhere), and, for alert
rules, the split of `<measure> <comparison> <threshold>` so a per-deployment threshold can be
applied to one fleet-wide measure. Prometheus offers no API that lists an expression's
selectors, and regexes cannot tell a metric from a function, keyword or label name, so this is a
small tokenizer and recursive-descent parser of the PromQL grammar (Prometheus 2.x), keeping
each node's character span so parts of an expression can be cut out verbatim.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
# Aggregations whose first argument is a parameter, not the vector.
PARAMETRIC_AGGREGATIONS = frozenset({"count_values", "bottomk", "topk", "quantile", "limitk"})
FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_desc",
        "sort_by_label",
        "sort_by_label_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    }
)
# Functions that create or rewrite labels: what their result carries is not what they read.
LABEL_REWRITING_FUNCTIONS = frozenset({"label_replace", "label_join"})
SET_OPERATORS = frozenset({"and", "or", "unless"})
COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "atan2",
    }
)
# Binary operator precedence, loosest first (Prometheus' grammar; `^` is right-associative).
PRECEDENCE: tuple[frozenset[str], ...] = (
    frozenset({"or"}),
    frozenset({"and", "unless"}),
    COMPARISONS,
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%", "atan2"}),
    frozenset({"^"}),
)

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


class PromQLError(ValueError):
    """The text is not PromQL this parser understands; the message says where."""


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration (`30s`, `1h30m`, `0s`) as a timedelta."""
    text = text.strip()
    if text == "0":
        return timedelta(0)
    if not _DURATION.match(text):
        raise PromQLError(f"not a Prometheus duration: {text!r}")
    seconds = sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A timedelta as a Prometheus duration string (`90s` → `1m30s`)."""
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds == 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800000), ("d", 86400000), ("h", 3600000), ("m", 60000)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    seconds, milliseconds = divmod(milliseconds, 1000)
    if seconds:
        parts.append(f"{seconds}s")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts)


# --- Tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, number, duration, string, op, punct, eof
    text: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=])
  | (?P<punct>[(){}\[\],:@])
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    """The tokens of a PromQL expression, ending with an `eof` token."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PromQLError(f"unexpected character {text[position]!r} at {position}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), match.start(), match.end()))
        position = match.end()
    tokens.append(Token("eof", "", len(text), len(text)))
    return tokens


# --- Syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher of a selector: `name op "value"`."""

    name: str
    op: str  # =, !=, =~, !~
    value: str

    def text(self) -> str:
        """The matcher as PromQL."""
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


@dataclass(frozen=True, slots=True)
class Node:
    """A node of the tree, with its [start, end) span in the parsed text."""

    start: int
    end: int

    def children(self) -> tuple[Node, ...]:
        """The node's direct sub-expressions."""
        return ()

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class NumberLiteral(Node):
    value: float


@dataclass(frozen=True, slots=True)
class StringLiteral(Node):
    value: str


@dataclass(frozen=True, slots=True)
class VectorSelector(Node):
    """`metric{matchers}`; `name` is None for a selector written as `{__name__=...}`."""

    name: str | None
    matchers: tuple[Matcher, ...]

    @property
    def metric(self) -> str | None:
        """The metric name, whether written before the braces or as `__name__="..."`."""
        if self.name is not None:
            return self.name
        for matcher in self.matchers:
            if matcher.name == "__name__" and matcher.op == "=":
                return matcher.value
        return None

    def selector_text(self) -> str:
        """The selector as a standalone series selector (for /api/v1/series `match[]`)."""
        matchers = [m for m in self.matchers if not (m.name == "__name__" and self.name is None)]
        inner = ",".join(m.text() for m in matchers)
        name = self.metric or ""
        if not inner:
            return name
        return f"{name}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class MatrixSelector(Node):
    vector: VectorSelector
    range: timedelta

    def children(self) -> tuple[Node, ...]:
        return (self.vector,)


@dataclass(frozen=True, slots=True)
class Subquery(Node):
    expr: Node
    range: timedelta
    step: timedelta | None

    def children(self) -> tuple[Node, ...]:
        return (self.expr,)


@dataclass(frozen=True, slots=True)
class Call(Node):
    function: str
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True, slots=True)
class Aggregation(Node):
    op: str
    expr: Node
    param: Node | None
    grouping: tuple[str, ...]
    without: bool

    def children(self) -> tuple[Node, ...]:
        return (self.expr,) if self.param is None else (self.param, self.expr)


@dataclass(frozen=True, slots=True)
class VectorMatching:
    """`on (...)`/`ignoring (...)` and `group_left/right (...)` of a binary operation."""

    on: bool
    labels: tuple[str, ...]
    group: str | None = None  # "left" or "right"
    include: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    lhs: Node
    rhs: Node
    bool_modifier: bool = False
    matching: VectorMatching | None = None

    def children(self) -> tuple[Node, ...]:
        return (self.lhs, self.rhs)


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str
    expr: Node

    def children(self) -> tuple[Node, ...]:
        return (self.expr,)


@dataclass(frozen=True, slots=True)
class Paren(Node):
    expr: Node

    def children(self) -> tuple[Node, ...]:
        return (self.expr,)


# --- Parser -------------------------------------------------------------------------------------


@dataclass
class _Parser:
    text: str
    tokens: list[Token]
    index: int = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def error(self, message: str, token: Token | None = None) -> PromQLError:
        token = token or self.peek()
        found = "end of expression" if token.kind == "eof" else repr(token.text)
        return PromQLError(f"{message} at {token.start} (found {found})")

    def expect(self, text: str) -> Token:
        token = self.peek()
        if token.text != text or token.kind in ("string", "eof"):
            raise self.error(f"expected {text!r}")
        return self.advance()

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token.kind in ("op", "punct", "ident") and token.text in texts

    # expression := binary expression by precedence climbing
    def parse_expression(self, level: int = 0) -> Node:
        if level == len(PRECEDENCE):
            return self.parse_unary()
        lhs = self.parse_expression(level + 1)
        operators = PRECEDENCE[level]
        while self._binary_operator() in operators:
            op = self.advance().text
            bool_modifier = False
            if self.peek().kind == "ident" and self.peek().text == "bool":
                self.advance()
                bool_modifier = True
            matching = self._vector_matching()
            # `^` is right-associative; every other operator is left-associative.
            rhs = self.parse_expression(level if op == "^" else level + 1)
            lhs = Binary(lhs.start, rhs.end, op, lhs, rhs, bool_modifier, matching)
        return lhs

    def _binary_operator(self) -> str | None:
        token = self.peek()
        if token.kind == "op" and token.text not in ("=", "=~", "!~"):
            return token.text
        if token.kind == "ident" and token.text in (SET_OPERATORS | {"atan2"}):
            return token.text
        return None

    def _vector_matching(self) -> VectorMatching | None:
        token = self.peek()
        if token.kind != "ident" or token.text not in ("on", "ignoring"):
            return None
        self.advance()
        labels = self._label_list()
        group: str | None = None
        include: tuple[str, ...] = ()
        if self.peek().kind == "ident" and self.peek().text in ("group_left", "group_right"):
            group = self.advance().text.removeprefix("group_")
            if self.at("("):
                include = self._label_list()
        return VectorMatching(token.text == "on", labels, group, include)

    def _label_list(self) -> tuple[str, ...]:
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            token = self.advance()
            if token.kind != "ident":
                raise self.error("expected a label name", token)
            labels.append(token.text)
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        return tuple(labels)

    def parse_unary(self) -> Node:
        token = self.peek()
        if token.kind == "op" and token.text in ("+", "-"):
            self.advance()
            # Unary minus binds looser than `^`: -a^b is -(a^b).
            operand = self.parse_expression(len(PRECEDENCE) - 1)
            return Unary(token.start, operand.end, token.text, operand)
        return self.parse_postfix(self.parse_primary())

    def parse_postfix(self, node: Node) -> Node:
        while True:
            if self.at("["):
                node = self._range_or_subquery(node)
            elif self.peek().kind == "ident" and self.peek().text == "offset":
                self.advance()
                sign = self.advance() if self.at("-") else None
                duration = self.advance()
                if duration.kind not in ("duration", "number"):
                    raise self.error("expected a duration after offset", duration)
                del sign
                node = _with_end(node, duration.end)
            elif self.at("@"):
                self.advance()
                stamp = self.advance()
                if stamp.kind == "ident" and stamp.text in ("start", "end"):
                    self.expect("(")
                    stamp = self.expect(")")
                elif stamp.kind != "number":
                    raise self.error("expected a timestamp after @", stamp)
                node = _with_end(node, stamp.end)
            else:
                return node

    def _range_or_subquery(self, node: Node) -> Node:
        self.expect("[")
        range_token = self.advance()
        if range_token.kind not in ("duration", "number"):
            raise self.error("expected a duration", range_token)
        window = parse_duration(range_token.text)
        if self.at(":"):
            self.advance()
            step: timedelta | None = None
            if not self.at("]"):
                step_token = self.advance()
                if step_token.kind not in ("duration", "number"):
                    raise self.error("expected a step duration", step_token)
                step = parse_duration(step_token.text)
            end = self.expect("]").end
            return Subquery(node.start, end, node, window, step)
        end = self.expect("]").end
        if not isinstance(node, VectorSelector):
            raise self.error("a range needs a vector selector; use a subquery [range:step]")
        return MatrixSelector(node.start, end, node, window)

    def parse_primary(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.advance()
            text = token.text
            value = float(int(text, 16)) if text.lower().startswith("0x") else float(text)
            return NumberLiteral(token.start, token.end, value)
        if token.kind == "duration":
            # A bare duration is not a number in Prometheus 2.x.
            raise self.error("unexpected duration")
        if token.kind == "string":
            self.advance()
            return StringLiteral(token.start, token.end, _unquote(token.text))
        if self.at("("):
            self.advance()
            inner = self.parse_expression()
            end = self.expect(")").end
            return Paren(token.start, end, inner)
        if self.at("{"):
            return self._vector_selector(None, token.start)
        if token.kind == "ident":
            lowered = token.text.lower()
            if lowered in ("inf", "nan"):
                self.advance()
                return NumberLiteral(token.start, token.end, float(lowered))
            following = self.peek(1)
            if token.text in AGGREGATIONS and (
                following.text == "(" or following.text in ("by", "without")
            ):
                return self._aggregation()
            if following.kind == "punct" and following.text == "(":
                if token.text not in FUNCTIONS:
                    raise self.error(f"unknown function {token.text!r}", token)
                return self._call()
            if token.text in KEYWORDS:
                raise self.error("unexpected keyword", token)
            self.advance()
            return self._vector_selector(token.text, token.start, token.end)
        raise self.error("expected an expression")

    def _vector_selector(self, name: str | None, start: int, end: int | None = None) -> Node:
        matchers: list[Matcher] = []
        if self.at("{"):
            self.advance()
            while not self.at("}"):
                label = self.advance()
                if label.kind != "ident":
                    raise self.error("expected a label name", label)
                op = self.advance()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise self.error("expected a label matcher operator", op)
                value = self.advance()
                if value.kind != "string":
                    raise self.error("expected a quoted label value", value)
                matchers.append(Matcher(label.text, op.text, _unquote(value.text)))
                if not self.at("}"):
                    self.expect(",")
            end = self.expect("}").end
        if name is None and not matchers:
            raise self.error("a selector needs a metric name or a matcher")
        assert end is not None
        return VectorSelector(start, end, name, tuple(matchers))

    def _aggregation(self) -> Node:
        op_token = self.advance()
        grouping: tuple[str, ...] = ()
        without = False
        if self.peek().kind == "ident" and self.peek().text in ("by", "without"):
            without = self.advance().text == "without"
            grouping = self._label_list()
        self.expect("(")
        param: Node | None = None
        if op_token.text in PARAMETRIC_AGGREGATIONS:
            param = self.parse_expression()
            self.expect(",")
        expr = self.parse_expression()
        end = self.expect(")").end
        if self.peek().kind == "ident" and self.peek().text in ("by", "without"):
            if grouping:
                raise self.error("grouping given twice")
            without = self.advance().text == "without"
            grouping = self._label_list()
            end = self.tokens[self.index - 1].end
        return Aggregation(op_token.start, end, op_token.text, expr, param, grouping, without)

    def _call(self) -> Node:
        name = self.advance()
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.parse_expression())
            if not self.at(")"):
                self.expect(",")
        end = self.expect(")").end
        return Call(name.start, end, name.text, tuple(args))


def _with_end(node: Node, end: int) -> Node:
    # Modifiers (offset, @) extend a node's span; the node itself is unchanged otherwise.
    return dataclasses.replace(node, end=end)


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "`":
        return body
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse(text: str) -> Node:
    """The syntax tree of a PromQL expression; PromQLError when it is not valid PromQL."""
    parser = _Parser(text, tokenize(text))
    node = parser.parse_expression()
    if parser.peek().kind != "eof":
        raise parser.error("unexpected text after the expression")
    return node


# --- Questions Sextant asks of an expression ----------------------------------------------------


def selectors(node: Node) -> list[VectorSelector]:
    """Every vector selector the expression reads, in order of appearance."""
    return [n for n in node.walk() if isinstance(n, VectorSelector)]


def metric_names(text: str) -> set[str]:
    """The metric names an expression reads."""
    return {s.metric for s in selectors(parse(text)) if s.metric is not None}


@dataclass(frozen=True, slots=True)
class SelectorUse:
    """A selector, and the labels the expression needs its series to carry."""

    selector: VectorSelector
    required_labels: frozenset[str] = field(default_factory=frozenset)


def selector_uses(node: Node) -> list[SelectorUse]:
    """Each selector with the labels that enclosing `by (...)` and `on (...)` clauses use.

    `sum by (deployment) (x)` needs `deployment` on x's series, `a / on (pool) b` needs `pool` on
    both sides, `group_left (workspace)` needs `workspace` on the right. Labels are not required
    below `label_replace`/`label_join`, which may create them, nor for a `without` grouping.
    """
    uses: list[SelectorUse] = []
    _collect_uses(node, frozenset(), uses)
    return uses


def _collect_uses(node: Node, required: frozenset[str], uses: list[SelectorUse]) -> None:
    if isinstance(node, VectorSelector):
        uses.append(SelectorUse(node, required))
        return
    if isinstance(node, Call) and node.function in LABEL_REWRITING_FUNCTIONS:
        for child in node.children():
            _collect_uses(child, frozenset(), uses)
        return
    if isinstance(node, Aggregation):
        inner = required if node.without else required | set(node.grouping)
        if node.param is not None:
            _collect_uses(node.param, frozenset(), uses)
        # count_values creates its label; it cannot be required of the input.
        _collect_uses(node.expr, inner, uses)
        return
    if isinstance(node, Binary) and node.matching is not None:
        joined = frozenset(node.matching.labels) if node.matching.on else frozenset()
        left = required | joined
        right = required | joined
        if node.matching.group == "left":
            right |= set(node.matching.include)
        elif node.matching.group == "right":
            left |= set(node.matching.include)
        _collect_uses(node.lhs, left, uses)
        _collect_uses(node.rhs, right, uses)
        return
    for child in node.children():
        _collect_uses(child, required, uses)


@dataclass(frozen=True, slots=True)
class ThresholdSplit:
    """`<measure> <op> <threshold>`: the measure's text, the comparison and the number."""

    measure: str
    op: str
    threshold: float


def split_threshold(text: str) -> ThresholdSplit | None:
    """Split an alert expression whose top level is `<measure> <op> <number>`, else None.

    Comparison binds tighter than `and`/`or`/`unless`, so only an expression whose root is the
    comparison qualifies; a measure that itself uses a set operator must be in parentheses. With
    the `bool` modifier the expression is a 0/1 vector, not a filter, so it does not qualify.
    """
    root = parse(text)
    while isinstance(root, Paren):
        root = root.expr
    if not isinstance(root, Binary) or root.op not in COMPARISONS or root.bool_modifier:
        return None
    threshold = root.rhs
    negative = False
    if isinstance(threshold, Unary) and isinstance(threshold.expr, NumberLiteral):
        negative = threshold.op == "-"
        threshold = threshold.expr
    if not isinstance(threshold, NumberLiteral):
        return None
    value = -threshold.value if negative else threshold.value
    measure = text[root.lhs.start : root.lhs.end]
    return ThresholdSplit(measure, root.op, value)


def compare(value: float, op: str, threshold: float) -> bool:
    """Whether `value op threshold` holds as Prometheus would filter it (NaN never passes)."""
    if value != value:  # NaN
        return False
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    if op == "<=":
        return value <= threshold
    if op == "==":
        return value == threshold
    if op == "!=":
        return value != threshold
    raise PromQLError(f"not a comparison: {op!r}")
