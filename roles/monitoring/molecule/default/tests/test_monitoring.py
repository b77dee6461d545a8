"""Behaviour of the monitoring role: Prometheus on monitoring-debian12 (Debian 12, Prometheus 2.42)
scrapes the node exporter of both hosts and the Redis exporter of monitoring-debian13 (Debian 13,
Redis 8.0), with the scrape config generated from the inventory and the rules from files/rules;
bad input fails before any host is touched; a candidate promtool refuses never replaces the live
file, and Prometheus keeps running on the old one.
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


def own_metric(host, name):
    """A metric of Prometheus's own /metrics (it does not scrape itself here)."""
    match = re.search(rf"^{name} (\S+)$", fetch(host, API + "/metrics"), re.M)
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
    """A new job (Prometheus itself) goes live by SIGHUP: same PID, a new successful reload; the next
    run without it takes it away again."""
    before = state(prometheus)
    stamp = own_metric(prometheus, "prometheus_config_last_reload_success_timestamp_seconds")
    own = [{"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}]
    run = ansible_playbook(extra_vars={"monitoring_extra_scrape_configs": own}, limit=PROMETHEUS)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap()[PROMETHEUS]["changed"] >= 1
    assert "restart | Restart Prometheus" not in run.output
    after = state(prometheus)
    assert after["pid"] == before["pid"] and after["config"] != before["config"]
    assert own_metric(prometheus, "prometheus_config_last_reload_success_timestamp_seconds") != stamp
    assert wait_for(lambda: ("prometheus", "127.0.0.1:9090") in active_targets(prometheus))
    run = ansible_playbook(limit=PROMETHEUS)
    assert run.rc == 0, run.output[-3000:]
    assert state(prometheus) == before
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
