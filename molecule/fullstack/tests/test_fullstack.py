"""The whole site across hosts: web (nginx, TLS; Prometheus) -> two app hosts (blue/green Gunicorn) ->
Redis and PostgreSQL (the postgresql role, TLS on) on a data host; the deploy migrated that database,
once per deploy; tiers reach only the ports they need; Prometheus scrapes every tier from the inventory;
a deploy under load loses no request."""

from __future__ import annotations

import json
import os
import re
import shlex
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from testbed_plugin import scenario_host as node

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
BASE_URL = "https://127.0.0.1:18843"
FACT = "/etc/ansible/facts.d/asset_classes_api.fact"
SLOT_PORTS = {"blue": 8001, "green": 8002}
APP_HOSTS = ("fullstack-app1", "fullstack-app2")
ALL_HOSTS = ("fullstack-web", *APP_HOSTS, "fullstack-data")
MIGRATIONS = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "service" / "app" / "migrations" / "versions"


def tls_context():
    return ssl.create_default_context(cafile=str(EPHEMERAL / "tls-ca" / "ca.crt"))


def request(path, method="GET", body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE_URL + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=tls_context(), timeout=timeout) as resp:
        return resp.status, dict(resp.headers), resp.read()


def health():
    status, _, body = request("/health")
    return status, json.loads(body)


def can_connect(client, address, port):
    probe = f"import socket; socket.create_connection(('{address}', {port}), timeout=2).close()"
    return client.run(f'python3 -c "{probe}"').rc == 0


def live_slot(name):
    return json.loads(node(name).file(FACT).content_string)


def db_query(sql):
    """psql on the db host as postgres (local peer), in the service's database."""
    command = f"runuser -u postgres -- psql -XAtq -d asset_classes -c {shlex.quote(sql)}"
    return node("fullstack-data").check_output(command)


def app_query(name, sql, url_change=("", "")):
    """A query as the service connects: its DATABASE_URL from shared/.env, as its user, from app host `name`."""
    script = ("import sqlalchemy as sa; from app.core.config import get_settings; "
              f"url = get_settings().database_url.replace({url_change[0]!r}, {url_change[1]!r}); "
              f"print(*sa.create_engine(url).connect().execute(sa.text({sql!r})).one())")
    return node(name).run("cd /opt/asset-classes-api/shared && runuser -u asset-classes-api -- "
                          f"/opt/asset-classes-api/current/venv/bin/python -c {shlex.quote(script)}")


def migration_head():
    revisions, parents = set(), set()
    for path in MIGRATIONS.glob("*.py"):
        text = path.read_text()
        revisions |= set(re.findall(r'^revision: str = "([^"]+)"', text, re.M))
        parents |= set(re.findall(r'^down_revision: str \| None = "([^"]+)"', text, re.M))
    (head,) = revisions - parents
    return head


def test_site_answers_over_tls_with_redis_and_database_ok():
    status, body = health()
    assert status == 200
    assert body["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"


def test_one_request_id_per_answer_echoing_the_clients():
    req = urllib.request.Request(BASE_URL + "/api/v1/asset-classes", headers={"X-Request-ID": "fullstack-rid-1"})
    with urllib.request.urlopen(req, context=tls_context(), timeout=10) as resp:
        assert resp.headers.get_all("X-Request-ID") == ["fullstack-rid-1"]


def test_both_app_hosts_run_the_same_release_in_their_live_slot():
    releases = set()
    for name in ("fullstack-app1", "fullstack-app2"):
        state = live_slot(name)
        port = SLOT_PORTS[state["live_slot"]]
        answer = json.loads(node("fullstack-web").check_output(f"curl -fsS http://{name}:{port}/health"))
        assert answer["release"] == state["live_release"]
        releases.add(answer["release"])
    assert len(releases) == 1, f"one release id for every host of a run, got {releases}"


def test_nginx_spreads_requests_over_both_app_hosts():
    counts = {}
    for name in ("fullstack-app1", "fullstack-app2"):
        counts[name] = int(node(name).check_output("wc -l < /var/log/asset-classes-api/access.log"))
    for _ in range(20):
        request("/api/v1/asset-classes")
    for name, before in counts.items():
        after = int(node(name).check_output("wc -l < /var/log/asset-classes-api/access.log"))
        assert after > before, f"{name} served none of 20 requests"


def test_projection_cached_in_the_shared_redis_across_app_hosts():
    token = node("fullstack-app1").check_output(
        "cd /opt/asset-classes-api/shared && runuser -u asset-classes-api -- "
        "/opt/asset-classes-api/current/venv/bin/asset-classes-token fullstack --scope write --ttl 300").strip()
    pool = {"name": "Fullstack auto pool", "asset_class_code": "AUTO", "current_balance": 1_000_000.0,
            "wac": 0.06, "wam": 60, "servicing_fee": 0.005, "as_of_date": "2026-11-01"}
    req = urllib.request.Request(BASE_URL + "/api/v1/asset-pools", data=json.dumps(pool).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=tls_context(), timeout=10) as resp:
        pool_id = json.loads(resp.read())["id"]
    # nginx spreads these over both app hosts: the first computes, every later one is served from Redis.
    caches = [request(f"/api/v1/asset-pools/{pool_id}/cashflows", "POST", {})[1]["x-cache"] for _ in range(4)]
    assert caches[0] == "MISS"
    assert set(caches[1:]) == {"HIT"}, caches
    # The pool is a row of the db host's PostgreSQL, which both app hosts share.
    assert db_query(f"SELECT name FROM asset_pools WHERE id = {int(pool_id)}").strip() == pool["name"]


def test_the_deploy_migrated_the_db_hosts_postgresql_as_the_app_user():
    # Nothing else makes the schema: the postgresql role creates an empty database, and prepare is gone.
    assert db_query("SELECT version_num FROM alembic_version").strip() == migration_head()
    owners = set(db_query("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").split())
    assert owners == {"asset_classes"}, owners


@pytest.mark.parametrize("name", APP_HOSTS)
def test_the_service_connects_from_each_app_host_over_tls_and_only_over_tls(name):
    env = node(name).file("/opt/asset-classes-api/shared/.env").content_string
    url = re.search(r"^DATABASE_URL='([^']*)'$", env, re.M).group(1)
    assert url.startswith("postgresql+psycopg://asset_classes:"), "DATABASE_URL is not the app user's PostgreSQL URL"
    assert url.endswith("@fullstack-data:5432/asset_classes?sslmode=require")
    used = app_query(name, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert used.rc == 0, used.stderr[-2000:]
    assert used.stdout.split() == ["asset_classes", "True"]
    plain = app_query(name, "SELECT 1", ("sslmode=require", "sslmode=disable"))
    assert plain.rc != 0
    assert "no pg_hba.conf entry" in plain.stderr and "no encryption" in plain.stderr, plain.stderr[-2000:]


def test_internal_ports_are_open_only_to_the_tiers_that_need_them():
    web, app1, data = node("fullstack-web"), node("fullstack-app1"), node("fullstack-data")
    app1_ip = app1.check_output("hostname -I").split()[0]
    data_ip = data.check_output("hostname -I").split()[0]
    live_port = SLOT_PORTS[live_slot("fullstack-app1")["live_slot"]]
    assert can_connect(app1, data_ip, 6379), "app -> redis"
    assert can_connect(app1, data_ip, 5432), "app -> postgres"
    assert not can_connect(web, data_ip, 6379), "web must not reach redis"
    assert not can_connect(web, data_ip, 5432), "web must not reach postgres"
    assert can_connect(web, app1_ip, live_port), "web -> gunicorn"
    assert not can_connect(data, app1_ip, live_port), "the data host must not reach gunicorn"


def prometheus_targets():
    """Prometheus's active targets (it runs on the web host, the monitoring group): (job, instance, slot) -> health."""
    script = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
              "'http://127.0.0.1:9090/api/v1/targets', timeout=10).read().decode())")
    found = json.loads(node("fullstack-web").check_output(f"python3 -c {shlex.quote(script)}"))
    return {(t["labels"]["job"], t["labels"]["instance"], t["labels"].get("slot")): t["health"]
            for t in found["data"]["activeTargets"]}


def test_prometheus_scrapes_every_tier_from_the_inventory():
    """site.yml's monitoring tier: every host's node exporter, the Redis exporter, each app host's live
    Gunicorn slot directly and the API through nginx (https, basic auth, the scenario's CA) are up;
    the idle slots are listed and down; any other job the inventory makes (exporters) is up too."""
    live = {name: live_slot(name)["live_slot"] for name in APP_HOSTS}
    must_be_up = ({("node", name, None) for name in ALL_HOSTS} | {("redis", "fullstack-data", None)}
                  | {("api", "fullstack-web:443", None)} | {("app", name, live[name]) for name in APP_HOSTS})
    idle = {("app", name, slot) for name in APP_HOSTS for slot in SLOT_PORTS if slot != live[name]}
    deadline = time.monotonic() + 60
    while True:
        targets = prometheus_targets()
        up = {key for key, health in targets.items() if health == "up"}
        if up >= must_be_up and up == set(targets) - idle or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert must_be_up <= up, f"not up: {sorted(must_be_up - up)}; targets: {targets}"
    assert set(targets) - idle == up, f"down: {sorted(set(targets) - idle - up)}"
    assert idle <= set(targets) and not idle & up, f"idle slots: {[(key, targets.get(key)) for key in idle]}"


def task_results(output, task):
    """(status, host) of every run of the task named `task` in an ansible-playbook output, all batches."""
    results = []
    for section in output.split("TASK [")[1:]:
        title, _, body = section.partition("]")
        if task in title:
            results += re.findall(r"^(ok|changed|skipping|failed|fatal): \[([^\]]+)\]", body, re.M)
    return results


class Load:
    """Requests /health through nginx from a few threads until stopped; counts what was not a 200."""

    def __init__(self, threads=4):
        self.ok = 0
        self.failed: list[str] = []
        self.releases: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set():
            try:
                status, body = health()
                with self._lock:
                    self.ok += status == 200
                    self.releases.add(body.get("release"))
                    if status != 200:
                        self.failed.append(f"HTTP {status}")
            except (urllib.error.URLError, OSError, ValueError) as error:
                with self._lock:
                    self.failed.append(repr(error))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.mark.parametrize("release", ["fullstack-second"])
def test_rolling_deploy_then_rollback_under_load_fail_no_request(ansible_playbook, release):
    before = health()[1]["release"]
    with Load() as load:
        deploy = ansible_playbook({"app_release_id": release}, playbook="../../playbooks/deploy.yml")
        time.sleep(1)
    assert deploy.rc == 0, deploy.output[-4000:]
    assert health()[1]["release"] == release
    assert load.ok > 50, f"too few requests to prove anything: {load.ok}"
    assert not load.failed, f"{len(load.failed)} failed requests during the deploy: {load.failed[:5]}"
    assert {before, release} >= load.releases - {None}
    # One host per batch (deploy_serial 1): migrations run in the first batch only, not once per batch.
    migrations = task_results(deploy.output, "switch | Database migrations")
    assert migrations == [("changed", "fullstack-app1"), ("skipping", "fullstack-app2")], migrations

    with Load() as load:
        rollback = ansible_playbook(playbook="../../playbooks/rollback.yml")
        time.sleep(1)
    assert rollback.rc == 0, rollback.output[-4000:]
    assert health()[1]["release"] == before
    assert not load.failed, f"{len(load.failed)} failed requests during the rollback: {load.failed[:5]}"
