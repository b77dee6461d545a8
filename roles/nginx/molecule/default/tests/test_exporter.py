"""The monitoring role's nginx exporter on the web hosts (converge.yml runs its exporters entry
point): it reads the stub_status the nginx role serves on loopback only, and answers Prometheus
over the network."""

from __future__ import annotations

import os

import pytest
import testinfra

HOSTS = ["nginx-debian12", "nginx-debian13"]
STUB_STATUS_PORT = 8080  # the nginx role's nginx_stub_status_port
EXPORTER_PORT = 9113  # the monitoring role's monitoring_nginx_exporter_port


def _host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def _metrics(text: str) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and len(line.split()) == 2}


@pytest.mark.parametrize("name", HOSTS)
def test_the_exporter_answers_the_other_host_with_nginxs_numbers(name):
    """Scraped over the network (from the other instance, as Prometheus would) it reports nginx up
    and nginx's own connection counters, read from stub_status."""
    other = next(h for h in HOSTS if h != name)
    metrics = _metrics(_host(other).check_output(f"curl -sS --max-time 5 http://{name}:{EXPORTER_PORT}/metrics"))
    assert metrics["nginx_up"] == 1
    assert metrics["nginx_connections_active"] >= 1  # the exporter's own request to stub_status
    assert metrics["nginx_http_requests_total"] >= 1


@pytest.mark.parametrize("name", HOSTS)
def test_stub_status_answers_on_loopback_only(name):
    host = _host(name)
    local = host.check_output(f"curl -sS --max-time 5 http://127.0.0.1:{STUB_STATUS_PORT}/stub_status")
    assert local.startswith("Active connections:"), local
    address = host.check_output("hostname -I").split()[0]
    remote = host.run(f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://{address}:{STUB_STATUS_PORT}/stub_status")
    assert remote.rc == 7, (remote.rc, remote.stdout, remote.stderr)  # connection refused: nothing listens there
    from_other = _host(next(h for h in HOSTS if h != name)).run(
        f"curl -sS --max-time 5 -o /dev/null http://{name}:{STUB_STATUS_PORT}/stub_status")
    assert from_other.rc == 7, (from_other.rc, from_other.stderr)


@pytest.mark.parametrize("name", HOSTS)
def test_the_exporter_flags_come_from_the_role(name):
    host = _host(name)
    flags = host.file("/etc/default/prometheus-nginx-exporter")
    assert flags.user == "root" and flags.mode == 0o644
    assert f"--nginx.scrape-uri=http://127.0.0.1:{STUB_STATUS_PORT}/stub_status" in flags.content_string
    assert host.service("prometheus-nginx-exporter").is_enabled
