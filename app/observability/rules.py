"""The alert rule catalogue: `alert_rules/*.rules.yml`, read into typed rules.

The same files are loaded by Prometheus (Sextant copies them into its rules folder) and by
Sextant's own evaluator, which applies per-deployment overrides. To make that possible without a
second, templated copy of each rule, a rule with a tunable threshold is written
`<measure> <comparison> <default threshold>` and carries the annotation
`sextant_threshold_unit`; the loader splits the expression, so the evaluator can query the
measure once for the whole fleet (one series per workspace and deployment) and compare each
deployment's value with that deployment's own threshold. Prometheus, meanwhile, evaluates the
file as written, with the defaults. `for` and `severity` are the other overridable parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from app.observability import promql

RULES_DIR = Path(__file__).resolve().parents[2] / "alert_rules"
RULE_FILE_PATTERN = "*.rules.yml"
THRESHOLD_UNIT_ANNOTATION = "sextant_threshold_unit"
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Scope(StrEnum):
    """Who an alert is about: one deployment (routed to its recipients), or the whole fleet."""

    DEPLOYMENT = "deployment"
    FLEET = "fleet"


class ThresholdUnit(StrEnum):
    SECONDS = "seconds"
    COUNT = "count"
    RATIO = "ratio"


class CatalogueError(ValueError):
    """A rule file does not follow the catalogue's conventions; the message names the rule."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A rule's tunable comparison: `measure <op> value`, in `unit`."""

    op: str
    value: float
    unit: ThresholdUnit

    def holds(self, measured: float, value: float | None = None) -> bool:
        """Whether a measured value breaches the threshold (the default, or `value`)."""
        return promql.compare(measured, self.op, self.value if value is None else value)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alerting rule of the catalogue, with what a deployment may override."""

    name: str
    group: str
    file: str
    expr: str
    for_: timedelta
    severity: Severity
    scope: Scope
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # The part of `expr` left of the threshold comparison; None for a rule without threshold.
    measure: str | None = None
    threshold: Threshold | None = None

    def expr_with(self, threshold: float | None = None) -> str:
        """The rule's expression with another threshold (the default when None)."""
        if self.threshold is None or self.measure is None:
            if threshold is not None:
                raise CatalogueError(f"{self.name} has no tunable threshold")
            return self.expr
        value = self.threshold.value if threshold is None else threshold
        return f"{self.measure} {self.threshold.op} {_number(value)}"

    def metric_names(self) -> set[str]:
        """The metrics the rule reads."""
        return promql.metric_names(self.expr)


@dataclass(frozen=True, slots=True)
class RuleOverride:
    """A deployment's overrides of one rule; None keeps the catalogue default."""

    threshold: float | None = None
    for_: timedelta | None = None
    severity: Severity | None = None
    muted: bool = False


@dataclass(frozen=True, slots=True)
class EffectiveRule:
    """A rule as it applies to one deployment: the catalogue default with its overrides."""

    rule: AlertRule
    threshold: float | None
    for_: timedelta
    severity: Severity
    muted: bool

    def breached(self, measured: float) -> bool:
        """Whether a value of the rule's measure breaches this deployment's threshold."""
        if self.rule.threshold is None or self.threshold is None:
            raise CatalogueError(f"{self.rule.name} has no tunable threshold")
        return self.rule.threshold.holds(measured, self.threshold)


@dataclass(frozen=True, slots=True)
class RuleCatalogue:
    """Every rule, and the rule files' text as Prometheus loads it."""

    rules: tuple[AlertRule, ...]
    files: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> AlertRule:
        """The rule called `name`; KeyError if there is none."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def names(self) -> list[str]:
        """Every rule name, in file order."""
        return [rule.name for rule in self.rules]

    def effective(self, name: str, override: RuleOverride | None = None) -> EffectiveRule:
        """Rule `name` with a deployment's overrides applied (validated)."""
        rule = self.get(name)
        override = override or RuleOverride()
        threshold = None if rule.threshold is None else rule.threshold.value
        if override.threshold is not None:
            threshold = validate_threshold(rule, override.threshold)
        for_ = rule.for_ if override.for_ is None else validate_for(override.for_)
        severity = override.severity or rule.severity
        return EffectiveRule(rule, threshold, for_, severity, override.muted)


def validate_threshold(rule: AlertRule, value: float | int | str) -> float:
    """A threshold override for `rule` as a number in the rule's unit; ValueError if invalid.

    Seconds accept a number or a Prometheus duration (`90s`, `2m`); ratios accept a number
    between 0 and 1 or a percentage (`10%`); counts accept a non-negative number.
    """
    if rule.threshold is None:
        raise ValueError(f"{rule.name} has no threshold to override")
    unit = rule.threshold.unit
    number: float
    if isinstance(value, bool):
        raise ValueError(f"{rule.name}: threshold must be a number in {unit}, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        if unit is ThresholdUnit.SECONDS and text and not _is_number(text):
            try:
                number = promql.parse_duration(text).total_seconds()
            except promql.PromQLError:
                raise ValueError(
                    f"{rule.name}: threshold {value!r} is not a duration such as 90s or 2m"
                ) from None
        elif unit is ThresholdUnit.RATIO and text.endswith("%"):
            if not _is_number(text[:-1]):
                raise ValueError(f"{rule.name}: threshold {value!r} is not a percentage")
            number = float(text[:-1]) / 100
        elif _is_number(text):
            number = float(text)
        else:
            raise ValueError(f"{rule.name}: threshold {value!r} is not a number in {unit}")
    else:
        number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{rule.name}: threshold must be a finite, non-negative {unit} value")
    if unit is ThresholdUnit.RATIO and number > 1:
        raise ValueError(f"{rule.name}: threshold is a ratio between 0 and 1 (or a percentage)")
    return number


def validate_for(value: timedelta | str) -> timedelta:
    """A `for` override as a timedelta; ValueError if negative or not a duration."""
    if isinstance(value, str):
        try:
            value = promql.parse_duration(value)
        except promql.PromQLError as exc:
            raise ValueError(str(exc)) from None
    if value < timedelta(0):
        raise ValueError("`for` must not be negative")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def parse_rule_file(name: str, text: str) -> list[AlertRule]:
    """The alerting rules of one rule file; CatalogueError if it breaks a convention."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise CatalogueError(f"{name}: a rule file is a mapping with a `groups` list")
    rules: list[AlertRule] = []
    for group in document["groups"]:
        for raw in group.get("rules") or []:
            if "alert" in raw:
                rules.append(_parse_rule(name, str(group["name"]), raw))
    return rules


def _parse_rule(file: str, group: str, raw: Mapping[str, Any]) -> AlertRule:
    name = str(raw["alert"])
    where = f"{file}: {name}"
    expr = str(raw.get("expr", "")).strip()
    if not expr:
        raise CatalogueError(f"{where}: no expr")
    try:
        promql.parse(expr)
    except promql.PromQLError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
    annotations = {str(k): str(v).strip() for k, v in (raw.get("annotations") or {}).items()}
    if "for" not in raw:
        raise CatalogueError(f"{where}: no `for` (write `for: 0s` to fire at once)")
    try:
        for_ = promql.parse_duration(str(raw["for"]))
        severity = Severity(labels.get("severity", ""))
        scope = Scope(labels.get("scope", ""))
    except (promql.PromQLError, ValueError) as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    missing = [key for key in REQUIRED_ANNOTATIONS if not annotations.get(key)]
    if missing:
        raise CatalogueError(f"{where}: missing annotations {', '.join(missing)}")
    measure: str | None = None
    threshold: Threshold | None = None
    unit = annotations.get(THRESHOLD_UNIT_ANNOTATION)
    if unit is not None:
        split = promql.split_threshold(expr)
        if split is None:
            raise CatalogueError(
                f"{where}: declares {THRESHOLD_UNIT_ANNOTATION} but its expr is not "
                "`<measure> <comparison> <number>`"
            )
        try:
            threshold = Threshold(split.op, split.threshold, ThresholdUnit(unit))
        except ValueError as exc:
            raise CatalogueError(f"{where}: {exc}") from None
        measure = split.measure.strip()
    return AlertRule(
        name=name,
        group=group,
        file=file,
        expr=expr,
        for_=for_,
        severity=severity,
        scope=scope,
        labels=labels,
        annotations=annotations,
        measure=measure,
        threshold=threshold,
    )


def load_catalogue(directory: Path = RULES_DIR) -> RuleCatalogue:
    """Read every `*.rules.yml` of `directory` into a catalogue; CatalogueError if invalid."""
    files: dict[str, str] = {}
    rules: list[AlertRule] = []
    for path in sorted(directory.glob(RULE_FILE_PATTERN)):
        text = path.read_text()
        files[path.name] = text
        rules.extend(parse_rule_file(path.name, text))
    names = [rule.name for rule in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogueError(f"alert names used twice: {', '.join(duplicates)}")
    return RuleCatalogue(tuple(rules), files)


@lru_cache
def catalogue() -> RuleCatalogue:
    """The catalogue shipped in `alert_rules/`, read once."""
    return load_catalogue()
