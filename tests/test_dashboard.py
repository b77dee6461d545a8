"""The Grafana dashboard (roles/monitoring/files/dashboards/) offline: it loads, every panel queries,
every expression parses (promtool), every metric name is one the service, the node exporter, the
Redis exporter or Prometheus itself exposes, and the variables its queries use are the dashboard's
own. The full stack's molecule/fullstack/tests/test_dashboard.py runs every expression for real."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

DASHBOARD = ROOT / "roles" / "monitoring" / "files" / "dashboards" / "asset-classes-api.json"
PROMTOOL = ROOT / ".build" / "bin" / "promtool"  # scripts/promtool.sh (make setup) puts it there
METRICS_PY = ROOT / "service" / "app" / "core" / "metrics.py"

_spec = importlib.util.spec_from_file_location("dashboard", ROOT / "molecule" / "shared" / "dashboard.py")
assert _spec and _spec.loader
dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard)

# Names read from /metrics of Debian 12's prometheus-node-exporter 1.5.0 and prometheus-redis-exporter
# 1.45.0 on the local sandbox (the full stack's test shows them on Debian 13's too). Only those the
# dashboard uses: a new panel on another exporter metric adds its name here after checking it there.
NODE_EXPORTER = {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
                 "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_load1",
                 "node_network_receive_bytes_total", "node_network_transmit_bytes_total"}
REDIS_EXPORTER = {"redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_connected_clients"}
PROMETHEUS = {"up", "scrape_duration_seconds"}  # what Prometheus adds to every scrape


def service_metrics() -> set[str]:
    """The names the service exposes, from the Counter(...) and Histogram(...) calls of its metrics
    module, as prometheus-client names their samples (counter: name_total; histogram: _bucket,
    _sum, _count)."""
    names = set()
    for node in ast.walk(ast.parse(METRICS_PY.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"Counter", "Histogram"}:
            name = node.args[0].value
            if node.func.id == "Counter":
                names.add(name if name.endswith("_total") else name + "_total")
            else:
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_service_metrics_are_read_from_the_code() -> None:
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "cache_hits_total",
            "cache_misses_total", "app_errors_total"} <= service_metrics()


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    board = dashboard.load(DASHBOARD)
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["allValue"] == dashboard.VARIABLES["instance"]
    for panel in dashboard.panels(board):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_has_a_target_and_a_unique_id() -> None:
    board = dashboard.load(DASHBOARD)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard.panels(board):
        assert [t for t in panel.get("targets", []) if t.get("expr")], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_variable_used_is_substituted() -> None:
    expressions = dashboard.panel_expressions(DASHBOARD)
    assert len(expressions) >= 20
    for title, expr in expressions:
        assert "$" not in expr.replace("${1}", ""), f"{title}: {expr}"
    with pytest.raises(KeyError, match="nosuch"):
        dashboard.substitute("up{instance=~'$nosuch'}")
    assert dashboard.substitute('rate(x{instance=~"$instance"}[$__rate_interval])') == 'rate(x{instance=~".*"}[1m])'


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool check rules on one recording rule per expression: promtool parses each with
    Prometheus's own PromQL parser and names the rule of any that does not parse."""
    assert PROMTOOL.exists(), "no .build/bin/promtool: run make setup (scripts/promtool.sh)"
    expressions = dashboard.panel_expressions(DASHBOARD)
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(rule_file)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    """The parse check can fail: a missing parenthesis is refused."""
    rule_file = tmp_path / "broken.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [
        {"record": "dashboard:broken", "expr": "sum by (cache) (rate(cache_hits_total[1m])"}]}]}))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(rule_file)], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0


def test_metric_names_lexer() -> None:
    expr = ('(sum by (instance) (rate(http_requests_total{job="app", status=~"5.."}[1m])) or on() vector(0))'
            ' / ignoring(slot) node_load1 > 1e3 and label_replace(up, "a", "${1}", "b", "(x)")')
    assert dashboard.metric_names(expr) == {"http_requests_total", "node_load1", "up"}


def test_every_metric_name_is_exposed_by_the_service_or_an_exporter() -> None:
    known = service_metrics() | NODE_EXPORTER | REDIS_EXPORTER | PROMETHEUS
    used: set[str] = set()
    for title, expr in dashboard.panel_expressions(DASHBOARD):
        names = dashboard.metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= known, f"{title}: {sorted(names - known)} exposed by nothing the toolkit runs"
        used |= names
    # the guide's four subjects each have their metrics on the dashboard
    assert {"http_request_duration_seconds_bucket", "http_requests_total", "app_errors_total",
            "cache_hits_total", "cache_misses_total", "node_cpu_seconds_total", "redis_memory_used_bytes"} <= used


# The panels that draw an alert's threshold as a line, and the alert (roles/monitoring/files/rules/).
THRESHOLD_LINES = {
    "Error share of requests by app host (5xx, 4xx)": "ApiErrorRateHigh",
    "Response time p50 / p95 by route": "ApiLatencyP95High",
    "Response time p95 by app host": "ApiLatencyP95High",
    "Cache hit ratio by cache": "CacheHitRatioLow",
    "Disk used by mount point": "DiskUsageHigh",
    "API through nginx: up and availability (1 h)": "ApiAvailabilityLow",
}


def test_threshold_lines_are_the_alert_thresholds() -> None:
    rules_file = ROOT / "roles" / "monitoring" / "files" / "rules" / "asset.rules.yml"
    alerts = {rule["alert"]: rule["expr"] for group in yaml.safe_load(rules_file.read_text())["groups"]
              for rule in group["rules"]}
    by_title = {panel["title"]: panel for panel in dashboard.panels(dashboard.load(DASHBOARD))}
    for title, alert in THRESHOLD_LINES.items():
        threshold = float(re.search(r"[<>]=?\s*([0-9.]+)\s*$", alerts[alert]).group(1))
        defaults = by_title[title]["fieldConfig"]["defaults"]
        steps = [step["value"] for step in defaults["thresholds"]["steps"] if step["value"] is not None]
        assert steps == [threshold], f"{title}: line at {steps}, {alert} fires at {threshold}"
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "line", title
