"""Every role template renders with the role's defaults (plus tests/sample_vars/<role>.yml for the
inputs that have no default) and a realistic set of facts. An undefined variable (a typo) fails here
before any container starts. Rendered files of a known syntax are parsed too."""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from conftest import ROLES, ROOT, load_yaml, role_defaults

# Collections' filters and tests (ansible.utils.ipv4, ...) as ansible-playbook loads them.
init_plugin_loader()

HOST = "app-1"
FACTS: dict[str, Any] = {
    "ansible_default_ipv4": {"address": "192.0.2.11", "interface": "eth0"},
    "ansible_fqdn": "app-1.example.test",
    "ansible_hostname": "app-1",
    "ansible_distribution": "Debian",
    "ansible_distribution_release": "bookworm",
    "ansible_distribution_major_version": "12",
    "ansible_processor_vcpus": 2,
    "ansible_processor_nproc": 2,
    "ansible_memtotal_mb": 4096,
    "ansible_python": {"version": {"major": 3, "minor": 11, "micro": 2}},
    "ansible_virtualization_role": "guest",
    "ansible_virtualization_type": "docker",
    "ansible_service_mgr": "systemd",
    "ansible_local": {},
}


def trusted(value: Any) -> Any:
    """Values read from YAML are data; mark them as templates so that defaults which refer to other
    variables are resolved (and an undefined reference fails) as they would be in a play."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    return value


def role_variables(role: str) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for other in ROLES:  # roles read each other's documented outputs (nginx reads tls_*), as in site.yml
        variables.update(role_defaults(other))
    for path in [ROOT / "roles" / role / "vars" / "main.yml", ROOT / "tests" / "sample_vars" / f"{role}.yml"]:
        if path.exists():
            variables.update(load_yaml(path) or {})
    variables = trusted(variables)
    facts = {name: variables.get(name, value) for name, value in FACTS.items()}  # sample_vars may refine
    variables.update(facts)
    variables["ansible_facts"] = {k.removeprefix("ansible_"): v for k, v in facts.items()}
    # Facts a role gathers itself (package_facts, ...), given by its sample_vars file.
    variables["ansible_facts"].update(variables.pop("sample_facts", {}))
    hostvars = {HOST: dict(facts, inventory_hostname=HOST, ansible_host=HOST)}
    variables.update({
        "ansible_managed": "Ansible managed",
        "inventory_hostname": HOST,
        "inventory_hostname_short": HOST,
        "inventory_dir": str(ROOT / "inventories" / "local"),
        "playbook_dir": str(ROOT / "playbooks"),
        "role_path": str(ROOT / "roles" / role),
        "groups": {"all": [HOST], "web": [HOST], "app": [HOST], "redis": [HOST], "db": [HOST],
                   "monitoring": [HOST], "ungrouped": []},
        "hostvars": hostvars,
        "ansible_check_mode": False,
        "omit": "__omit_place_holder__",
    })
    return variables


def templates():
    for role in ROLES:
        for template in sorted((ROOT / "roles" / role / "templates").glob("**/*.j2")):
            yield pytest.param(role, template, id=f"{role}/{template.relative_to(ROOT / 'roles' / role / 'templates')}")


def check_syntax(path: Path, text: str) -> None:
    name = path.name.removesuffix(".j2")
    if name.endswith((".yml", ".yaml")):
        yaml.safe_load(text)
    elif name.endswith(".json"):
        json.loads(text)
    elif name.endswith((".service", ".timer", ".socket")) or name.endswith(".ini"):
        parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
        parser.read_string(text)


@pytest.mark.parametrize(("role", "template"), list(templates()))
def test_template_renders_with_defaults(role, template):
    templar = Templar(loader=DataLoader(), variables=role_variables(role))
    rendered = templar.template(trust_as_template(template.read_text()))
    assert isinstance(rendered, str) and rendered.strip(), f"{template.name} rendered empty"
    assert "{{" not in rendered and "{%" not in rendered, f"{template.name} left template syntax behind"
    check_syntax(template, rendered)


def test_a_typo_in_a_template_variable_fails_rendering(tmp_path):
    """The check above must be able to fail: a misspelled variable raises."""
    templar = Templar(loader=DataLoader(), variables=role_variables("server"))
    with pytest.raises(Exception, match="server_ssh_prot"):
        templar.template(trust_as_template("Port {{ server_ssh_prot }}"))


@pytest.mark.parametrize(("port", "redirect"), [(443, "https://$host$request_uri"),
                                                ("8443", "https://$host:8443$request_uri")])
def test_the_http_redirect_names_the_public_https_port_unless_it_is_443(port, redirect):
    """The sandbox publishes HTTPS on 8443 (a templated string there); the port-less form is for 443."""
    variables = dict(role_variables("nginx"), nginx_public_https_port=port)
    site = (ROOT / "roles" / "nginx" / "templates" / "site.conf.j2").read_text()
    rendered = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(site))
    assert f"return 301 {redirect};" in rendered


@pytest.mark.parametrize(("memtotal_mb", "settings", "maxmemory"), [
    (24105, {}, "2gb"),  # the guide's 2gb, under half the RAM
    (2048, {}, "1024mb"),  # capped to half the RAM
    (4096, {}, "2gb"),  # exactly half: not rewritten
    (4096, {"redis_maxmemory": "4GB", "redis_maxmemory_cap_percent": 5}, "204mb"),
    (4096, {"redis_maxmemory": "4gb", "redis_maxmemory_cap_percent": 0}, "4gb"),  # no cap
    (1000, {"redis_maxmemory": "400000000"}, "400000000"),  # bytes, under 500 MiB
    (1000, {"redis_maxmemory": "0"}, "0"),  # no limit stays no limit
    (1000, {"redis_maxmemory": "12 parsecs"}, "12 parsecs"),  # left for Redis's dry start to refuse
    (1000, {"redis_maxmemory_percent": 25}, "250mb"),  # a share of the RAM instead
])
def test_redis_maxmemory_follows_the_guide_capped_to_a_share_of_the_ram(memtotal_mb, settings, maxmemory):
    variables = dict(role_variables("redis"), **trusted(settings))
    variables["ansible_facts"] = dict(variables["ansible_facts"], memtotal_mb=memtotal_mb)
    conf = (ROOT / "roles" / "redis" / "templates" / "redis.conf.j2").read_text()
    rendered = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(conf))
    assert f"\nmaxmemory {maxmemory}\n" in rendered
