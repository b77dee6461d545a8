"""The monitoring role's PostgreSQL exporter on the db hosts (converge.yml runs its exporters entry
point): it logs in over the Unix socket as the postgresql role's exporter role and answers
Prometheus over the network."""

import os
import re

import testinfra

testinfra_hosts = ["postgresql-debian12", "postgresql-debian13"]
EXPORTER_PORT = 9187  # the monitoring role's monitoring_postgres_exporter_port
FLAGS = "/etc/default/prometheus-postgres-exporter"


def _scrape(client, server: str) -> str:
    url = f"http://{server}:{EXPORTER_PORT}/metrics"
    script = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())"
    return client.check_output(f"python3 -c \"{script}\"")


def test_the_exporter_answers_the_other_host_with_the_service_databases_size(host):
    """Scraped over the network from the other server (as Prometheus would): PostgreSQL is up and
    the size of the service's database is reported."""
    name = host.backend.get_hostname()
    other_name = next(h for h in testinfra_hosts if h != name)
    other = testinfra.get_host(f"ansible://{other_name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")
    text = _scrape(other, name)
    assert re.search(r"^pg_up 1$", text, re.M), text[-2000:]
    size = re.search(r'^pg_database_size_bytes\{[^}]*datname="asset_classes"[^}]*\} (\S+)$', text, re.M)
    assert size and float(size.group(1)) > 1_000_000, text[-2000:]  # a real database: megabytes


def test_the_connection_file_is_root_only_and_names_the_exporter_role(host):
    """The exporter runs as the OS user prometheus; peer authentication over the socket admits it
    only as the role of that name (pg_monitor; pg_hba.conf has no other line for it)."""
    flags = host.file(FLAGS)
    assert (flags.user, flags.group, flags.mode) == ("root", "root", 0o600)
    assert "user=prometheus host=/run/postgresql" in flags.content_string
    assert host.service("prometheus-postgres-exporter").is_enabled
