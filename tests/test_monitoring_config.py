"""The monitoring role's prometheus.yml is generated from the inventory: rendered here for a
multi-host inventory and for one with empty groups, then checked with promtool check config (the
same check the role runs before the file replaces the live one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from conftest import ROOT
from test_templates import role_variables

TEMPLATE = ROOT / "roles" / "monitoring" / "templates" / "prometheus.yml.j2"
PROMTOOL = ROOT / ".build" / "bin" / "promtool"

INVENTORY = {
    "web": ["web-1"], "app": ["app-1", "app-2"], "redis": ["data-1"], "db": ["data-1"],
    "monitoring": ["mon-1"],
}


def render(groups: dict[str, list[str]], hostvars: dict[str, dict] | None = None, **extra) -> dict:
    variables = role_variables("monitoring")
    hosts = sorted({h for members in groups.values() for h in members})
    variables["groups"] = dict(groups, all=hosts, ungrouped=[])
    variables["hostvars"] = {h: {"inventory_hostname": h, **(hostvars or {}).get(h, {})} for h in hosts}
    variables["monitoring_api_password"] = "x" * 32
    variables.update(extra)
    text = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(TEMPLATE.read_text()))
    return yaml.safe_load(text), text


def jobs(config: dict) -> dict[str, dict]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def targets(job: dict) -> list[tuple[str, dict]]:
    return [(t, sc.get("labels", {})) for sc in job["static_configs"] for t in sc["targets"]]


def test_every_group_becomes_its_job():
    config, _ = render(INVENTORY, {"data-1": {"ansible_host": "10.0.0.7"},
                                   "app-2": {"monitoring_scrape_address": "10.0.1.2"}})
    found = jobs(config)
    assert set(found) == {"node", "redis", "nginx", "postgres", "app", "api"}
    assert targets(found["node"]) == [(f"{a}:9100", {"instance": h}) for h, a in
                                      [("app-1", "app-1"), ("app-2", "10.0.1.2"), ("data-1", "10.0.0.7"),
                                       ("mon-1", "mon-1"), ("web-1", "web-1")]]
    assert targets(found["redis"]) == [("10.0.0.7:9121", {"instance": "data-1"})]
    assert targets(found["nginx"]) == [("web-1:9113", {"instance": "web-1"})]
    assert targets(found["postgres"]) == [("10.0.0.7:9187", {"instance": "data-1"})]
    assert targets(found["app"]) == [("app-1:8001", {"instance": "app-1", "slot": "blue"}),
                                     ("app-1:8002", {"instance": "app-1", "slot": "green"}),
                                     ("10.0.1.2:8001", {"instance": "app-2", "slot": "blue"}),
                                     ("10.0.1.2:8002", {"instance": "app-2", "slot": "green"})]


def test_alerts_go_to_the_alertmanager_of_the_same_host():
    config, _ = render(INVENTORY)
    assert config["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]}
    config, _ = render(INVENTORY, monitoring_alertmanager_listen_address="0.0.0.0:19093")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]


def test_the_api_job_is_the_guides_sample_through_nginx():
    config, text = render(INVENTORY)
    api = jobs(config)["api"]
    assert api["scheme"] == "https" and api["scrape_interval"] == "15s" and api["metrics_path"] == "/metrics"
    assert api["basic_auth"] == {"username": "prometheus", "password_file": "/etc/prometheus/api.password"}
    assert api["tls_config"] == {"ca_file": "/etc/prometheus/api-ca.crt"}
    assert targets(api) == [("web-1:443", {})]
    assert "x" * 32 not in text  # the password is read from its file, never written here


def test_groups_without_hosts_leave_their_jobs_out():
    config, _ = render({"monitoring": ["mon-1"], "redis": ["mon-1"]})
    assert set(jobs(config)) == {"node", "redis"}


def test_a_host_sets_its_own_exporter_port():
    config, _ = render(INVENTORY, {"data-1": {"monitoring_node_exporter_port": 19100,
                                              "monitoring_redis_exporter_port": 19121,
                                              "monitoring_postgres_exporter_port": 19187},
                                   "web-1": {"monitoring_nginx_exporter_port": 19113}})
    assert ("data-1:19100", {"instance": "data-1"}) in targets(jobs(config)["node"])
    assert targets(jobs(config)["redis"]) == [("data-1:19121", {"instance": "data-1"})]
    assert targets(jobs(config)["postgres"]) == [("data-1:19187", {"instance": "data-1"})]
    assert targets(jobs(config)["nginx"]) == [("web-1:19113", {"instance": "web-1"})]


@pytest.mark.parametrize("groups", [INVENTORY, {"monitoring": ["mon-1"]}], ids=["full", "monitoring-only"])
def test_promtool_accepts_the_generated_config(groups, tmp_path: Path):
    _, text = render(groups)
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    result = subprocess.run([str(PROMTOOL), "check", "config", "--syntax-only", str(config)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_duplicate_job(tmp_path: Path):
    """The check above can fail: an extra job named like a generated one is refused."""
    _, text = render(INVENTORY, monitoring_extra_scrape_configs=[
        {"job_name": "node", "static_configs": [{"targets": ["localhost:9100"]}]}])
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    result = subprocess.run([str(PROMTOOL), "check", "config", "--syntax-only", str(config)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert 'found multiple scrape configs with job name "node"' in result.stdout + result.stderr


# --- the exporters' ports are open to the monitoring group only ----------------------------------

EXPORTER_PORTS = {"monitoring_node_exporter_port", "monitoring_redis_exporter_port",
                  "monitoring_nginx_exporter_port", "monitoring_postgres_exporter_port"}


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_the_example_inventories_open_each_exporter_port_to_the_monitoring_group_only(environment):
    """The environments made from templates/ (the examples are its output) give the server role's
    firewall a rule for every exporter port the monitoring role uses, from the monitoring group only."""
    server = yaml.safe_load((ROOT / "inventories" / environment / "group_vars" / "all" / "server.yml").read_text())
    rules = {rule["port"]: rule for rule in server["server_firewall_internal_ports"]}
    defaults = role_variables("monitoring")
    for name in EXPORTER_PORTS:
        rule = rules.get(int(defaults[name]))
        assert rule, f"{environment}: no firewall rule for {name} ({defaults[name]})"
        assert rule["from_groups"] == ["monitoring"] and not rule.get("from_networks"), rule


def test_the_firewall_accepts_an_exporter_port_only_from_the_monitoring_hosts():
    """The server role's ruleset for such a rule: port 9100 is accepted from the monitoring hosts'
    addresses, and no other rule names it (the chain's policy drops the rest)."""
    variables = role_variables("server")
    hosts = {"mon-1": "10.0.0.51", "app-1": "10.0.0.21", "web-1": "10.0.0.11"}
    variables["groups"] = {"all": list(hosts), "monitoring": ["mon-1"], "app": ["app-1"], "web": ["web-1"]}
    variables["hostvars"] = {h: {"ansible_default_ipv4": {"address": a}} for h, a in hosts.items()}
    variables["server_firewall_internal_ports"] = [{"port": 9100, "from_groups": ["monitoring"]}]
    template = ROOT / "roles" / "server" / "templates" / "nftables.conf.j2"
    rendered = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template.read_text()))
    lines = [line.strip() for line in rendered.splitlines() if "9100" in line and not line.strip().startswith("#")]
    assert lines == ["ip saddr { 10.0.0.51 } tcp dport 9100 accept"]
    assert "policy drop;" in rendered
