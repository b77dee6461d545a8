"""The Grafana dashboard against the real thing: every panel expression of
roles/monitoring/files/dashboards/asset-classes-api.json (variables substituted as
molecule/shared/dashboard.py documents) returns at least one series from the scenario's Prometheus
(on fullstack-web, the monitoring group), after a little traffic through nginx. No Grafana runs here:
a query that returns a series is what a panel needs to draw."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import dashboard
from testbed_plugin import scenario_host

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
DASHBOARD = PROJECT / "roles" / "monitoring" / "files" / "dashboards" / "asset-classes-api.json"
BASE_URL = "https://127.0.0.1:18843"
HOSTS = {"fullstack-web", "fullstack-app1", "fullstack-app2", "fullstack-data"}

# Runs inside fullstack-web: every expression of the base64 JSON list through /api/v1/query; prints
# [series count or the error, ...].
QUERY_SCRIPT = """
import base64, json, sys, urllib.error, urllib.parse, urllib.request
out = []
for expr in json.loads(base64.b64decode(sys.argv[1])):
    url = 'http://127.0.0.1:9090/api/v1/query?' + urllib.parse.urlencode({'query': expr})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=10))
        out.append(len(answer['data']['result']))
    except urllib.error.HTTPError as exc:
        out.append(exc.read().decode())
print(json.dumps(out))
"""


def query_all(expressions: list[str]) -> list[int | str]:
    payload = base64.b64encode(json.dumps(expressions).encode()).decode()
    command = f"python3 -c {shlex.quote(QUERY_SCRIPT)} {payload}"
    return json.loads(scenario_host("fullstack-web").check_output(command))


def traffic() -> None:
    """Requests through nginx, so that the service's request, latency and cache series exist: the
    asset-class list (reference cache: each worker's first request misses, the next ones hit) and a
    path no route matches (a 404; a 4xx answer is traffic too, only a 5xx or no answer fails here)."""
    context = ssl.create_default_context(cafile=str(EPHEMERAL / "tls-ca" / "ca.crt"))
    for path in ["/api/v1/asset-classes"] * 20 + ["/api/v1/no-such-route"] * 2:
        try:
            with urllib.request.urlopen(BASE_URL + path, context=context, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            assert exc.code < 500, f"{path}: {exc.code}"


def test_every_panel_expression_returns_a_series():
    """Expressions over events that may not have happened (5xx, app errors, rate limiting, cache
    errors) are written to keep a series (`... or on() vector(0)`, or the 5xx count `or` all
    requests `* 0`), so no series is a broken query or a metric that is not there. Counters need two
    scrapes after their first increment before rate() has a value: the test polls for up to 60 s."""
    expressions = dashboard.panel_expressions(DASHBOARD)
    traffic()
    deadline = time.monotonic() + 60
    while True:
        counts = query_all([expr for _, expr in expressions])
        empty = [(title, expr, count) for (title, expr), count in zip(expressions, counts, strict=True)
                 if count == 0 or isinstance(count, str)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not empty, "panels whose query returns no series (or an error):\n" + "\n".join(
        f"  {title}: {expr} -> {count}" for title, expr, count in empty)


def test_host_variable_lists_every_host():
    """The dashboard's `instance` variable (label_values(<selector>, instance)) offers every host."""
    board = dashboard.load(DASHBOARD)
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
    selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"]).groups()
    script = ("import json, sys, urllib.parse, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
              "'http://127.0.0.1:9090/api/v1/query?' + urllib.parse.urlencode({'query': sys.argv[1]}), timeout=10))))")
    answer = json.loads(scenario_host("fullstack-web").check_output(
        f"python3 -c {shlex.quote(script)} {shlex.quote(f'count by ({label}) ({selector})')}"))
    listed = {series["metric"][label] for series in answer["data"]["result"]}
    # Debian's package starts Prometheus on its stock config (localhost:9090, localhost:9100) before the
    # role's config is in place; after the role's restart those series stay queryable for the 5-minute
    # lookback (no staleness marker crosses a restart). Any other name would be a target scraped now.
    targets = ("import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
               "'http://127.0.0.1:9090/api/v1/targets', timeout=10))['data']['activeTargets']))")
    active = {t["labels"]["instance"] for t in json.loads(
        scenario_host("fullstack-web").check_output(f"python3 -c {shlex.quote(targets)}"))}
    assert listed >= HOSTS, listed
    assert not (listed - HOSTS) & active, f"instances that are not inventory hosts: {listed - HOSTS}"
