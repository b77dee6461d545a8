"""Behaviour of the monitoring role: Prometheus on monitoring-debian12 (Debian 12, Prometheus 2.42)
scrapes the node exporter of both hosts and the Redis exporter of monitoring-debian13 (Debian 13,
Redis 8.0), with the scrape config generated from the inventory and the rules from files/rules;
an alert provoked for real reaches Alertmanager's webhook receiver (the sink of prepare.yml) and
resolves; bad input fails before any host is touched; a candidate promtool or amtool refuses never
replaces the live file, and the service keeps running on the old one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import testinfra

PROMETHEUS = "monitoring-debian12"
REDIS = "monitoring-debian13"
CONFIG = "/etc/prometheus/prometheus.yml"
RULES = "/etc/prometheus/rules"
API = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
AM_CONFIG = "/etc/prometheus/alertmanager.yml"
SINK_LOG = "/var/lib/alert-sink/alerts.jsonl"
SILENCE = "molecule silence"


def get_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="module")
def prometheus():
    return get_host(PROMETHEUS)


@pytest.fixture(scope="module")
def redis():
    return get_host(REDIS)


def secret(name):
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text().split()[0]


def fetch(host, url):
    """GET url on the host (the images have Python, not curl)."""
    script = ("import sys, urllib.request; "
              "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())")
    return host.check_output(f"python3 -c {shlex.quote(script)} {shlex.quote(url)}")


def api(host, path):
    return json.loads(fetch(host, API + path))


def query(host, expr):
    return api(host, "/api/v1/query?query=" + quote(expr))["data"]["result"]


def active_targets(host):
    found = api(host, "/api/v1/targets")["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]): t for t in found}


def am_state(host):
    """What must not move when an Alertmanager candidate is refused."""
    return {
        "config": host.file(AM_CONFIG).sha256sum,
        "pid": host.check_output("systemctl show -p MainPID --value prometheus-alertmanager"),
        "reload_ok": own_metric(host, "alertmanager_config_last_reload_successful", ALERTMANAGER),
    }


def role_silences(host):
    """The active silences in Alertmanager with the scenario's comment."""
    found = json.loads(fetch(host, ALERTMANAGER + "/api/v2/silences"))
    return [s for s in found if s["comment"] == SILENCE and s["status"]["state"] == "active"]


def notifications(host):
    """What the webhook sink recorded: one Alertmanager webhook body per line."""
    return [json.loads(line) for line in host.run(f"cat {SINK_LOG}").stdout.splitlines() if line]


def wait_for(predicate, timeout=60, step=2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def state(host):
    """What must not move when a candidate is refused: the live files and the running process."""
    return {
        "config": host.file(CONFIG).sha256sum,
        "rules": host.check_output(f"sha256sum {RULES}/*"),
        "pid": host.check_output("systemctl show -p MainPID --value prometheus"),
        "reload_ok": own_metric(host, "prometheus_config_last_reload_successful"),
    }


def own_metric(host, name, base=API):
    """A metric of Prometheus's (or Alertmanager's) own /metrics (Prometheus does not scrape itself here)."""
    match = re.search(rf"^{name} (\S+)$", fetch(host, base + "/metrics"), re.M)
    assert match, name
    return match.group(1)


# --- the scrape config comes from the inventory and every target is up ------------------------------

def test_every_inventory_target_is_listed_and_up(prometheus):
    expected = {("node", PROMETHEUS), ("node", REDIS), ("redis", REDIS)}

    def all_up():
        targets = active_targets(prometheus)
        return set(targets) == expected and all(t["health"] == "up" for t in targets.values()) and targets

    targets = wait_for(all_up)
    assert targets, f"targets: {active_targets(prometheus)}"
    # jobs whose groups have no host (app, api: no app or web host here) are left out
    assert {job for job, _ in targets} == {"node", "redis"}
    assert targets[("redis", REDIS)]["scrapeUrl"] == f"http://{REDIS}:9121/metrics"


def test_a_target_down_goes_pending_then_firing_reaches_the_receiver_and_resolves(prometheus, redis):
    """Stop monitoring-debian13's node exporter: TargetDown (for: 10s in this scenario) goes pending,
    then firing, Alertmanager posts it to the webhook sink; after a restart the sink gets it resolved."""
    managers = api(prometheus, "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [ALERTMANAGER + "/api/v2/alerts"]
    config = prometheus.file(AM_CONFIG)
    assert config.user == "root" and config.group == "prometheus" and config.mode == 0o640
    assert prometheus.service("prometheus-alertmanager").is_enabled
    rules = prometheus.file(f"{RULES}/asset.rules.yml").content_string
    assert re.search(r"alert: TargetDown\n(.*\n)*?\s+for: 10s\n", rules)  # monitoring_alert_for
    seen = len(notifications(prometheus))

    def alert_state():
        found = api(prometheus, "/api/v1/alerts")["data"]["alerts"]
        return next((a["state"] for a in found if a["labels"]["alertname"] == "TargetDown"
                     and a["labels"]["instance"] == REDIS and a["labels"]["job"] == "node"), None)

    def sent(status):
        return next((n for n in notifications(prometheus)[seen:] if n["status"] == status
                     and any(a["labels"]["alertname"] == "TargetDown" and a["labels"]["instance"] == REDIS
                             for a in n["alerts"])), None)

    redis.check_output("systemctl stop prometheus-node-exporter")
    try:
        assert wait_for(lambda: alert_state() == "pending", timeout=30, step=0.5), alert_state()
        assert wait_for(lambda: alert_state() == "firing", timeout=30, step=0.5), alert_state()
        firing = wait_for(lambda: sent("firing"), timeout=30, step=0.5)
        assert firing, notifications(prometheus)[seen:]
        assert firing["receiver"] == "webhook"
        assert firing["alerts"][0]["annotations"]["summary"] == f"node target {REDIS} is down"
    finally:
        redis.check_output("systemctl start prometheus-node-exporter")
    resolved = wait_for(lambda: sent("resolved"), timeout=60, step=0.5)
    assert resolved, notifications(prometheus)[seen:]
    assert alert_state() is None
    assert wait_for(lambda: all(t["health"] == "up" for t in active_targets(prometheus).values()))


def test_the_silences_of_the_inventory_are_kept_once(prometheus):
    """Created by the converge, not again by the idempotence run."""
    silences = role_silences(prometheus)
    assert len(silences) == 1, silences
    assert {(m["name"], m["value"]) for m in silences[0]["matchers"]} == {
        ("alertname", "DiskUsageHigh"), ("instance", REDIS)}
    assert silences[0]["endsAt"].startswith("2099-01-01T00:00:00")


def test_the_rules_from_files_rules_are_loaded(prometheus):
    groups = api(prometheus, "/api/v1/rules")["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"TargetDown", "ApiLatencyP95High", "BackupStale", "RedisMemoryNearMax"} <= names
    assert all(group["file"].startswith(RULES + "/") for group in groups)


def test_the_redis_exporter_reads_redis_as_its_own_acl_user(prometheus, redis):
    assert wait_for(lambda: query(prometheus, 'redis_up{job="redis"}'))[0]["value"][1] == "1"
    # maxmemory (from INFO) reaches Prometheus, which the RedisMemoryNearMax rule needs
    assert float(query(prometheus, "redis_memory_max_bytes")[0]["value"][1]) > 0
    env = redis.file("/etc/default/prometheus-redis-exporter")
    assert env.mode == 0o600 and env.user == "root"
    assert "REDIS_USER=exporter" in env.content_string
    assert secret("redis_password") not in env.content_string

    def as_exporter(*args):
        run = redis.run("REDISCLI_AUTH=" + shlex.quote(secret("redis_exporter_password"))
                        + " redis-cli --user exporter " + " ".join(shlex.quote(a) for a in args))
        return (run.stdout + run.stderr).strip()

    assert "redis_version" in as_exporter("INFO", "server")
    assert as_exporter("PING") == "PONG"
    # every command the exporter runs is allowed (it logs each refused one)
    invocation = redis.check_output("systemctl show -p InvocationID --value prometheus-redis-exporter")
    assert "NOPERM" not in redis.check_output(f"journalctl --no-pager _SYSTEMD_INVOCATION_ID={invocation}")
    for command in (["GET", "molecule:key"], ["SET", "molecule:key", "x"], ["KEYS", "*"], ["ACL", "LIST"]):
        assert "NOPERM" in as_exporter(*command), command


def test_the_node_exporter_reads_the_backup_roles_textfile_directory(redis):
    # the directory the backup role writes asset_backup_last_success_timestamp_seconds to
    redis.run("printf 'molecule_textfile_probe 42\\n' > /var/lib/prometheus/node-exporter/molecule.prom")
    try:
        metrics = fetch(redis, "http://127.0.0.1:9100/metrics")
        assert "molecule_textfile_probe 42" in metrics
    finally:
        redis.run("rm -f /var/lib/prometheus/node-exporter/molecule.prom")


def test_prometheus_files_and_flags(prometheus):
    config = prometheus.file(CONFIG)
    assert config.user == "root" and config.group == "prometheus" and config.mode == 0o640
    assert "scrape_interval: 5s" in config.content_string
    args = prometheus.file("/etc/default/prometheus").content_string
    assert "--web.listen-address=0.0.0.0:9090" in args and "--storage.tsdb.retention.time=15d" in args
    assert prometheus.service("prometheus").is_enabled


def test_an_accepted_change_is_reloaded_without_a_restart(prometheus, ansible_playbook):
    """A new job (Prometheus itself) and a new repeat_interval go live by SIGHUP: same PIDs, a new
    successful reload of each; the silence no longer listed is expired. The next run without them
    takes the job and the interval away again and creates the silence again."""
    before, am_before = state(prometheus), am_state(prometheus)
    stamp = own_metric(prometheus, "prometheus_config_last_reload_success_timestamp_seconds")
    am_stamp = own_metric(prometheus, "alertmanager_config_last_reload_success_timestamp_seconds", ALERTMANAGER)
    assert len(role_silences(prometheus)) == 1
    own = [{"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}]
    run = ansible_playbook(extra_vars={"monitoring_extra_scrape_configs": own,
                                      "monitoring_alertmanager_repeat_interval": "5h",
                                      "monitoring_alertmanager_silences": []}, limit=PROMETHEUS)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()[PROMETHEUS]["changed"] >= 1
    assert "restart | Restart " not in run.output
    after, am_after = state(prometheus), am_state(prometheus)
    assert after["pid"] == before["pid"] and after["config"] != before["config"]
    assert own_metric(prometheus, "prometheus_config_last_reload_success_timestamp_seconds") != stamp
    assert am_after["pid"] == am_before["pid"] and am_after["config"] != am_before["config"]
    assert "repeat_interval: 5h" in prometheus.file(AM_CONFIG).content_string
    assert own_metric(prometheus, "alertmanager_config_last_reload_success_timestamp_seconds", ALERTMANAGER) != am_stamp
    assert role_silences(prometheus) == []
    assert wait_for(lambda: ("prometheus", "127.0.0.1:9090") in active_targets(prometheus))
    run = ansible_playbook(limit=PROMETHEUS)
    assert run.rc == 0, run.output[-3000:]
    assert state(prometheus) == before
    assert am_state(prometheus) == am_before
    assert len(role_silences(prometheus)) == 1
    assert wait_for(lambda: ("prometheus", "127.0.0.1:9090") not in active_targets(prometheus))


# --- bad input and refused candidates -------------------------------------------------------------

def test_a_scrape_interval_that_is_not_a_duration_fails_before_any_host_is_touched(prometheus, ansible_playbook):
    before = state(prometheus)
    run = ansible_playbook(extra_vars={"monitoring_scrape_interval": "15 seconds"}, limit=PROMETHEUS)
    assert run.rc != 0
    assert 'monitoring_scrape_interval is "15 seconds", which is not a Prometheus duration' in run.output
    assert run.recap()[PROMETHEUS]["changed"] == 0
    assert state(prometheus) == before


def test_a_scrape_config_promtool_refuses_never_replaces_the_live_one(prometheus, ansible_playbook):
    before = state(prometheus)
    duplicate = [{"job_name": "node", "static_configs": [{"targets": ["localhost:9100"]}]}]
    run = ansible_playbook(extra_vars={"monitoring_extra_scrape_configs": duplicate}, limit=PROMETHEUS)
    assert run.rc != 0
    assert "failed to validate" in run.output
    assert "found multiple scrape configs with job name" in run.output  # promtool's own message
    assert state(prometheus) == before
    assert all(t["health"] == "up" for t in active_targets(prometheus).values())


def test_a_rule_file_promtool_refuses_never_replaces_the_live_ones(prometheus, ansible_playbook, tmp_path):
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up ==\n")
    before = state(prometheus)
    rules = [str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "files" / "rules" / "asset.rules.yml"), str(broken)]
    run = ansible_playbook(extra_vars={"monitoring_rule_files": rules}, limit=PROMETHEUS)
    assert run.rc != 0
    assert "failed to validate" in run.output and "broken.rules.yml" not in prometheus.check_output(f"ls {RULES}")
    assert "parse error" in run.output  # promtool's own message
    assert state(prometheus) == before
    names = {rule["name"] for group in api(prometheus, "/api/v1/rules")["data"]["groups"] for rule in group["rules"]}
    assert "TargetDown" in names and "Broken" not in names


def test_an_unknown_receiver_type_fails_before_any_host_is_touched(prometheus, ansible_playbook):
    before, am_before = state(prometheus), am_state(prometheus)
    receivers = [{"name": "webhook", "type": "slack", "url": "https://hooks.example.com/x"}]
    run = ansible_playbook(extra_vars={"monitoring_alertmanager_receivers": receivers}, limit=PROMETHEUS)
    assert run.rc != 0
    assert "value of type must be one of: webhook, got: slack" in run.output
    assert "monitoring_alertmanager_receivers" in run.output
    assert run.recap()[PROMETHEUS]["changed"] == 0
    assert state(prometheus) == before and am_state(prometheus) == am_before


def test_an_alertmanager_config_amtool_refuses_never_replaces_the_live_one(prometheus, ansible_playbook):
    before, am_before = state(prometheus), am_state(prometheus)
    run = ansible_playbook(extra_vars={"monitoring_alertmanager_routes": [{"receiver": "nowhere"}]}, limit=PROMETHEUS)
    assert run.rc != 0
    assert "failed to validate" in run.output
    assert 'undefined receiver "nowhere" used in route' in run.output  # amtool's own message
    assert state(prometheus) == before and am_state(prometheus) == am_before
    assert "nowhere" not in prometheus.file(AM_CONFIG).content_string
    fetch(prometheus, ALERTMANAGER + "/-/ready")  # still serving (urlopen raises on an error status)
