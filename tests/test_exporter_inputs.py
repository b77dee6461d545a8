"""Bad exporter input stops the monitoring role's exporters entry point before any host is touched.
One playbook run against an inventory of local-connection hosts, all in the web and db groups (so
each would get the nginx and PostgreSQL exporters), each with one bad value: every host must fail in
argument validation or the entry point's first checks, with its own message, and no task that can
change a host may be reached."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: monitoring
        tasks_from: exporters
"""

BAD = {  # host -> (variable, bad value, what the failure says)
    "bad-nginx-port": ("monitoring_nginx_exporter_port", "91x3",
                       "argument 'monitoring_nginx_exporter_port' is of type str and we were unable to convert to int"),
    "bad-postgres-port": ("monitoring_postgres_exporter_port", "lots",
                          "argument 'monitoring_postgres_exporter_port' is of type str"),
    "bad-scrape-uri": ("monitoring_nginx_exporter_scrape_uri", "http://10.0.0.5:8080/stub_status",
                       "stub_status on loopback, http://127.0.0.1:<nginx_stub_status_port>/stub_status"),
    "bad-postgres-user": ("monitoring_postgres_exporter_user", "postgres",
                          "admits it only as the role of that name"),
}


def test_bad_exporter_input_fails_before_any_change(tmp_path: Path):
    hosts = {host: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, name: value}
             for host, (name, value, _) in BAD.items()}
    inventory = {"all": {"children": {"web": {"hosts": hosts}, "db": {"hosts": {host: {} for host in BAD}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
             "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)})
    output = " ".join((result.stdout + result.stderr).split())  # messages are folded over lines
    assert result.returncode != 0, output
    failures = dict(re.findall(r"fatal: \[([\w-]+)\]: FAILED! => (.*?)(?=fatal: \[|PLAY RECAP)", output))
    assert set(failures) == set(BAD), output
    for host, (_, _, message) in BAD.items():
        assert message in failures[host], (host, failures[host])
        assert re.search(rf"{host} : ok=\d+ changed=0 unreachable=0 failed=1", output), (host, output)
    # stopped before the first task that can change a host (the packages, then the flags files)
    assert "exporters | Packages" not in output and "exporters | Flags" not in output, output
