"""The canonical raysys metric names, and which of them the alert rules and dashboard query.

``CANONICAL_METRICS`` holds the names as a Prometheus scrape of ``GET /metrics`` shows them in
its ``# TYPE`` lines: counters with their ``_total``, histograms by their base name (the
samples are ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``), gauges as they are.

:func:`metric_names_used` reads ``cluster/prometheus/alerts.yaml`` and
``cluster/grafana/raysys-dashboard.json`` and returns every metric name their PromQL
expressions select, histogram suffixes stripped. ``tests/deploy/test_prometheus_rules.py``
checks that it is a subset of ``CANONICAL_METRICS``; a live test compares it with what a
running system serves (tests/integration/test_serve.py). Pure functions over files: no Ray, no
Redis, no promtool.

The expression parser is deliberately small, not a PromQL grammar: it drops string literals,
comments, label matchers (``{...}``), ranges and subqueries (``[...]``), Grafana variables and
label lists (``by (...)``, ``on (...)``, ...), then takes every identifier that is neither a
keyword nor followed by ``(`` (a function call) as a metric name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = REPO_ROOT / "cluster" / "prometheus" / "alerts.yaml"
DASHBOARD_FILE = REPO_ROOT / "cluster" / "grafana" / "raysys-dashboard.json"

COUNTERS = frozenset(
    {
        "agent_messages_total",  # {type, outcome="accepted|rejected"}
        "agent_failures_total",  # tasks that ended dead or quarantined
        "raysys_tasks_created_total",
        "raysys_tasks_completed_total",  # {status="succeeded|dead|cancelled|quarantined"}
        "raysys_task_attempt_failures_total",
        "raysys_leases_granted_total",
        "raysys_leases_renewed_total",
        "raysys_leases_expired_total",
        "raysys_fenced_writes_rejected_total",
        "raysys_signature_failures_total",
        "raysys_replays_rejected_total",
        "raysys_state_conflict_retries_total",
        "raysys_tasks_purged_total",
        "raysys_tasks_redriven_total",
    }
)
HISTOGRAMS = frozenset({"task_duration_seconds", "raysys_message_latency_seconds"})
GAUGES = frozenset(
    {
        "redis_connected",  # 1 or 0
        "pending_tasks",
        "raysys_tasks",  # {state}
        "raysys_live_workers",
        "raysys_reaper_lag_seconds",
        "raysys_redis_pool_connections",  # {state="in_use|available"}
        "raysys_actor_up",  # {actor="coordinator|distributor"}
        "raysys_redis_used_memory_bytes",
        "raysys_redis_maxmemory_bytes",
    }
)
CANONICAL_METRICS = COUNTERS | HISTOGRAMS | GAUGES

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Identifiers that are PromQL syntax, not metric names. Functions need no entry (they are
# followed by "("), but aggregation operators may be followed by `by`/`without` instead.
PROMQL_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "bool", "offset", "inf", "nan",
        "by", "without", "on", "ignoring", "group_left", "group_right",
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_NAME_MATCHER = re.compile(r'__name__\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# Maximal identifiers that do not continue a number or duration (1e3, 0x1f, 5m, 1h30m).
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.*?)\s*,\s*)?[A-Za-z_]\w*\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def base_metric_name(name: str) -> str:
    """``name`` without a ``_bucket``/``_sum``/``_count`` suffix when it belongs to a histogram."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def metric_names_in_expr(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    names: set[str] = set()
    for operator, value in _NAME_MATCHER.findall(expr):
        if operator != "=":
            raise ValueError(f"cannot tell which metrics {{__name__{operator}...}} selects: {expr}")
        names.add(value)
    text = _STRING.sub(" ", expr)
    text = _COMMENT.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return {base_metric_name(name) for name in names}


def alert_expressions(path: Path = ALERTS_FILE) -> list[str]:
    """The ``expr`` of every rule (alerting or recording) in a Prometheus rules file."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [str(rule["expr"]) for group in loaded["groups"] for rule in group["rules"]]


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those nested in collapsed rows included."""

    def walk(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return walk(dashboard.get("panels", []))


def _variable_query_expression(query: Any) -> str | None:
    """The PromQL inside a Grafana query variable's query, or None when it has none."""
    if isinstance(query, dict):
        query = query.get("query", "")
    text = str(query)
    label_values = _LABEL_VALUES.match(text)
    if label_values:
        return label_values.group("expr")
    query_result = _QUERY_RESULT.match(text)
    if query_result:
        return query_result.group("expr")
    return text or None


def dashboard_expressions(path: Path = DASHBOARD_FILE) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets and query variables."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    exprs = [
        str(target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            expr = _variable_query_expression(variable.get("query"))
            if expr:
                exprs.append(expr)
    return exprs


def metric_names_used() -> set[str]:
    """Every metric name that alerts.yaml and the Grafana dashboard query (base names)."""
    names: set[str] = set()
    for expr in [*alert_expressions(), *dashboard_expressions()]:
        names |= metric_names_in_expr(expr)
    return names
