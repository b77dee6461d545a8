"""ACME mode against a real (test) ACME server: Pebble issues through HTTP-01 via the nginx webroot."""

from __future__ import annotations

import os
import re
import time

import pytest
import testinfra

WEB = ["tls-acme-debian12", "tls-acme-debian13"]
PEBBLE = "tls-acme-pebble"
CERT = "/etc/ssl/asset-classes/server.crt"
KEY = "/etc/ssl/asset-classes/server.key"


def _host(name: str):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


@pytest.fixture(scope="module")
def pebble():
    host = _host(PEBBLE)
    # The root that signs Pebble's issued certificates (regenerated each time Pebble starts).
    host.check_output(f"curl -sS --cacert /etc/pebble/api.crt -o /tmp/pebble-root.pem https://{PEBBLE}:15000/roots/0")
    return host


def _served(client, name: str) -> dict[str, str]:
    """Serial and issuer of the certificate nginx on `name` serves, as seen over the network."""
    out = client.check_output(
        f"openssl s_client -connect {name}:443 -servername {name} </dev/null 2>/dev/null "
        "| openssl x509 -noout -serial -issuer"
    )
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("name", WEB)
def test_nginx_serves_a_certificate_issued_by_pebble(name, pebble):
    served = _served(pebble, name)
    assert "Pebble Intermediate CA" in served["issuer"]
    # A client that trusts only Pebble's root accepts the site: full chain, right name.
    result = pebble.run(f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert /tmp/pebble-root.pem https://{name}/")
    assert result.rc == 0, result.stderr
    assert result.stdout == "502", "TLS verified; no upstream runs in this scenario"
    web = _host(name)
    assert served["serial"] == web.check_output(f"openssl x509 -noout -serial -in {CERT}").split("=", 1)[1]


@pytest.mark.parametrize("name", WEB)
def test_ocsp_stapling_on_because_the_issued_certificate_names_a_responder(name):
    web = _host(name)
    ocsp = web.check_output(f"openssl x509 -noout -ocsp_uri -in {CERT}")
    assert ocsp == f"http://{PEBBLE}:4002"
    config = web.check_output("nginx -T 2>/dev/null")
    assert "ssl_stapling on;" in config and "ssl_stapling_verify on;" in config
    assert re.search(r"resolver [^;]+ valid=300s;", config)


@pytest.mark.parametrize("name", WEB)
def test_key_and_certificate_files(name):
    web = _host(name)
    key = web.file(KEY)
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert "ASN1 OID: prime256v1" in web.check_output(f"openssl pkey -noout -text -in {KEY}")
    assert web.check_output(f"openssl x509 -noout -pubkey -in {CERT}") == web.check_output(
        f"openssl pkey -pubout -in {KEY}"
    )
    assert web.file(CERT).content_string.count("BEGIN CERTIFICATE") >= 2, "leaf and intermediate"


@pytest.mark.parametrize("name", WEB)
def test_renewal_timer_is_enabled_and_scheduled(name):
    web = _host(name)
    assert web.check_output("systemctl is-enabled tls-acme-renew.timer") == "enabled"
    assert web.check_output("systemctl is-active tls-acme-renew.timer") == "active"
    assert "tls-acme-renew.service" in web.check_output("systemctl list-timers tls-acme-renew.timer --no-pager")


def _hook_lines(web) -> list[str]:
    return web.check_output("journalctl -t tls-acme --no-pager -o cat || true").splitlines()


@pytest.mark.parametrize("name", WEB)
def test_timer_run_with_nothing_due_changes_and_reloads_nothing(name, pebble):
    web = _host(name)
    before, hooks_before = _served(pebble, name), _hook_lines(web)
    cert_before = web.file(CERT).content_string
    run = web.run("systemctl start tls-acme-renew.service")
    assert run.rc == 0, run.stderr
    assert "Skipping renew!" in web.check_output("journalctl -u tls-acme-renew.service --no-pager -o cat -n 20")
    assert web.file(CERT).content_string == cert_before
    assert _hook_lines(web) == hooks_before, "no install, no reload"
    assert _served(pebble, name) == before


@pytest.mark.parametrize("name", WEB)
def test_forced_renewal_installs_the_new_certificate_and_reloads_nginx(name, pebble):
    web = _host(name)
    before = _served(pebble, name)
    run = web.run("dehydrated --cron --force --accept-terms")
    assert run.rc == 0, run.stdout + run.stderr
    assert "+ Done!" in run.stdout
    for _ in range(20):
        after = _served(pebble, name)
        if after["serial"] != before["serial"]:
            break
        time.sleep(0.5)
    assert after["serial"] != before["serial"], "nginx serves the renewed certificate"
    assert after["serial"] == web.check_output(f"openssl x509 -noout -serial -in {CERT}").split("=", 1)[1]
    assert any(re.search(r"installed a new certificate for .* reloading: nginx", line) for line in _hook_lines(web))
    assert web.file(KEY).mode == 0o600


def test_a_rerun_of_the_play_leaves_the_acme_certificate_alone(ansible_playbook):
    certs = {name: _host(name).file(CERT).content_string for name in WEB}
    run = ansible_playbook()
    assert run.rc == 0, run.output[-3000:]
    assert all(counts["changed"] == 0 for counts in run.recap().values())
    assert {name: _host(name).file(CERT).content_string for name in WEB} == certs


def test_acme_mode_requires_accepting_the_terms(ansible_playbook):
    run = ansible_playbook(extra_vars={"tls_acme_accept_terms": False})
    assert run.rc != 0
    assert "tls_acme_accept_terms true" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values())
