"""Alert rules, their unit tests, the example Prometheus config and the Grafana dashboard.

promtool (Debian's `prometheus` package; `.ci/run` installs it) checks the rules and the config
and runs `alerts_test.yaml`; without it these tests fail under CI=true and skip elsewhere. The
rest needs no tool: every metric the rules and the dashboard query is a canonical one
(`tests.support.metrics.CANONICAL_METRICS`), every alert says what to do, every panel has a
query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.metrics import (
    ALERTS_FILE,
    CANONICAL_METRICS,
    DASHBOARD_FILE,
    alert_expressions,
    dashboard_expressions,
    dashboard_panels,
    metric_names_in_expr,
    metric_names_used,
)
from tests.support.prerequisites import tool

pytestmark = pytest.mark.deploy

PROMETHEUS_DIR = ALERTS_FILE.parent
ALERTS_TEST_FILE = PROMETHEUS_DIR / "alerts_test.yaml"
CONFIG_FILE = PROMETHEUS_DIR / "prometheus.yml"
SEVERITIES = {"critical", "warning"}
DATASOURCE_UID = "${DS_PROMETHEUS}"
# What each Grafana variable becomes when a dashboard query is checked as plain PromQL.
GRAFANA_SUBSTITUTES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "6h",
    "$job": "raysys",
}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool's path; fail under CI=true, skip elsewhere, when it is not installed."""
    return tool("promtool", "apt-get install --no-install-recommends prometheus")


def _run_promtool(promtool: str, *args: str, cwd: Path) -> str:
    """Run promtool; assert it succeeds and return what it printed."""
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alert_rules() -> list[dict[str, Any]]:
    loaded = _load_yaml(ALERTS_FILE)
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return loaded


def _series_labels(selector: str) -> dict[str, str]:
    """`name{a="b", c="d"}` (promtool's input series notation) as a label dict."""
    name, _, rest = selector.partition("{")
    labels = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest))
    labels["__name__"] = name.strip()
    return labels


# --- promtool --------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    # when promtool checks the rules file
    output = _run_promtool(promtool, "check", "rules", ALERTS_FILE.name, cwd=PROMETHEUS_DIR)

    # then every alert is found in it
    assert f"SUCCESS: {len(_alert_rules())} rules found" in output


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    # when promtool runs alerts_test.yaml against alerts.yaml, then every case passes
    output = _run_promtool(promtool, "test", "rules", ALERTS_TEST_FILE.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_example_config_passes_promtool_check(promtool: str) -> None:
    # when promtool checks the example config, then it and the rules it loads are valid
    output = _run_promtool(promtool, "check", "config", CONFIG_FILE.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS: 1 rule files found" in output


def test_commented_ray_job_is_valid_once_uncommented(promtool: str, tmp_path: Path) -> None:
    # given the example config with its commented Ray scrape job uncommented
    lines = CONFIG_FILE.read_text(encoding="utf-8").splitlines()
    start = lines.index("  # - job_name: ray")
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line[len("  # ") :])
    config = "\n".join([*lines[:start], *block, *lines[start + len(block) :]]) + "\n"
    (tmp_path / CONFIG_FILE.name).write_text(config, encoding="utf-8")
    shutil.copy(ALERTS_FILE, tmp_path / ALERTS_FILE.name)

    # when promtool checks it
    _run_promtool(promtool, "check", "config", CONFIG_FILE.name, cwd=tmp_path)

    # then the Ray job discovers its targets from the file Ray writes on the head node
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    (files,) = [sd["files"] for sd in jobs["ray"]["file_sd_configs"]]
    assert [Path(f).parts[-2:] for f in files] == [("ray", "prom_metrics_service_discovery.json")]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # given every dashboard query, Grafana variables substituted, as a recording rule
    rules = []
    for index, expr in enumerate(dashboard_expressions()):
        for variable, value in sorted(GRAFANA_SUBSTITUTES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"raysys:dashboard_query:{index}", "expr": expr})
    rules_file = tmp_path / "dashboard_rules.yaml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )

    # when promtool checks them, then each one parses
    output = _run_promtool(promtool, "check", "rules", rules_file.name, cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


# --- the rules and their tests ---------------------------------------------------------------


def test_example_config_scrapes_raysys_and_loads_the_alerts() -> None:
    # given the example config
    config = _load_yaml(CONFIG_FILE)

    # then it loads alerts.yaml and scrapes /metrics on the default Serve address
    assert config["rule_files"] == [ALERTS_FILE.name]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "raysys"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


def test_every_alert_has_a_wait_a_severity_and_a_runbook_line() -> None:
    rules = _alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        name = rule["alert"]
        # then each waits a stated time, is routed by severity, and says what to do in one line
        assert "for" in rule, f"{name}: no `for:`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            text = annotations.get(key, "")
            assert text.strip(), f"{name}: no {key}"
            assert "\n" not in text.strip(), f"{name}: {key} is not one line"


def test_the_alerts_the_issue_asks_for_exist() -> None:
    # then each condition of issue #5 has an alert over the metric that shows it
    used_by_alert = {
        rule["alert"]: metric_names_in_expr(str(rule["expr"])) for rule in _alert_rules()
    }
    wanted = {
        "RaysysHighFailureRate": "agent_failures_total",
        "RaysysRedisUnavailable": "redis_connected",
        "RaysysTaskBacklogHigh": "pending_tasks",
        "RaysysLeaseExpiryStorm": "raysys_leases_expired_total",
        "RaysysSignatureFailures": "raysys_signature_failures_total",
        "RaysysNoLiveWorkers": "raysys_live_workers",
    }
    for alert, metric in wanted.items():
        assert metric in used_by_alert.get(alert, set()), f"{alert} does not query {metric}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    # given the promtool unit tests
    tests = _load_yaml(ALERTS_TEST_FILE)["tests"]
    for rule in _alert_rules():
        name = rule["alert"]
        metrics = metric_names_in_expr(str(rule["expr"]))
        fires = quiet = False
        for group in tests:
            checks = [t for t in group.get("alert_rule_test", []) if t["alertname"] == name]
            if not checks:
                continue
            expected = [
                {k: v for k, v in alert.get("exp_labels", {}).items() if k != "severity"}
                for check in checks
                for alert in check.get("exp_alerts") or []
            ]
            fires = fires or bool(expected)
            for series in group.get("input_series", []):
                labels = _series_labels(series["series"])
                matched = any(exp.items() <= labels.items() for exp in expected)
                quiet = quiet or (labels["__name__"] in metrics and not matched)
        # then some series makes it fire, and some series of its own metrics does not
        assert fires, f"{name}: no test case where it fires"
        assert quiet, f"{name}: no test series of its metrics that leaves it quiet"


# --- metric names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'max by (job) (rate(agent_failures_total{job="a", status=~"dead|x"}[10m]))',
            {"agent_failures_total"},
        ),
        (
            "histogram_quantile(0.99, max by (le) (rate(task_duration_seconds_bucket[5m])))",
            {"task_duration_seconds"},
        ),
        (
            "rate(task_duration_seconds_sum[1m] offset 1h30m) / rate(task_duration_seconds_count"
            "[1m]) * 1e3",
            {"task_duration_seconds"},
        ),
        ("a > bool 0 and on (job) group_left (x) b unless ignoring (y) c", {"a", "b", "c"}),
        ('label_replace(pending_tasks, "dst", "$1", "src", "(.*)")', {"pending_tasks"}),
        (
            'max(redis_connected{job="$job"}[$__rate_interval:])  # not_a_metric',
            {"redis_connected"},
        ),
        ('{__name__="raysys_tasks", state="leased"}', {"raysys_tasks"}),
        ("pending_count", {"pending_count"}),  # not a histogram: the suffix stays
    ],
)
def test_metric_names_are_parsed_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names_in_expr(expr) == names


def test_alerts_and_dashboard_use_canonical_metric_names_only() -> None:
    # when every alert and dashboard expression is parsed
    used = metric_names_used()

    # then each metric it selects is one raysys serves under that name
    assert used, "no metric names found: is the parser broken?"
    assert sorted(used - CANONICAL_METRICS) == []
    for expr in alert_expressions():
        assert metric_names_in_expr(expr) <= CANONICAL_METRICS, expr


def test_dashboard_shows_every_canonical_metric() -> None:
    # when the dashboard's expressions are parsed, then no canonical metric is left off it
    shown: set[str] = set()
    for expr in dashboard_expressions():
        shown |= metric_names_in_expr(expr)
    assert sorted(CANONICAL_METRICS - shown) == []


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_takes_its_datasource_as_an_input() -> None:
    # given the dashboard JSON
    dashboard = _dashboard()

    # then importing it asks for a Prometheus datasource, and provisioning it offers a variable
    assert {(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]} == {
        ("DS_PROMETHEUS", "datasource", "prometheus")
    }
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard.get("id") is None


def test_every_dashboard_panel_has_a_query_on_the_input_datasource() -> None:
    # given the dashboard's panels, rows aside
    dashboard = _dashboard()
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 8

    ids = [p["id"] for p in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        title = panel["title"]
        # then each queries Prometheus through the input datasource
        assert panel["datasource"]["uid"] == DATASOURCE_UID, title
        targets = panel.get("targets", [])
        assert targets, f"panel {title!r} has no query"
        for target in targets:
            assert str(target.get("expr", "")).strip(), f"panel {title!r} has an empty query"
            assert target["datasource"]["uid"] == DATASOURCE_UID, title
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"panel {title!r} repeats a refId"
        # and fits the 24-column grid
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, title


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    # given each panel's expressions
    exprs_by_title = {
        panel["title"]: " ".join(t["expr"] for t in panel.get("targets", []))
        for panel in dashboard_panels(_dashboard())
    }
    # then throughput, backlog, failure rate, duration quantiles, lease expiries, signature
    # failures, live workers and Redis state each have a panel that queries them
    wanted = {
        "Throughput": ["rate(raysys_tasks_completed_total"],
        "Backlog": ["pending_tasks"],
        "Failure rate": ["agent_failures_total", "raysys_tasks_completed_total"],
        "Task duration": [
            f"histogram_quantile({q}, max by (le) (rate(task_duration_seconds_bucket"
            for q in ("0.5", "0.95", "0.99")
        ],
        "Lease expiries": ["raysys_leases_expired_total"],
        "Signature failures": ["raysys_signature_failures_total"],
        "Live workers": ["raysys_live_workers"],
        "Redis connected": ["redis_connected"],
    }
    for title, fragments in wanted.items():
        assert title in exprs_by_title, f"no panel {title!r}"
        for fragment in fragments:
            assert fragment in exprs_by_title[title], f"{title!r} does not query {fragment}"
