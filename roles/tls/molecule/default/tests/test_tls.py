"""Behaviour of the tls role: self_signed (internal CA on the controller) and provided modes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import testinfra

DIRECTORY = "/etc/ssl/asset-classes"
CERT = f"{DIRECTORY}/server.crt"
KEY = f"{DIRECTORY}/server.key"
CA = "/usr/local/share/ca-certificates/server-asset-classes-ca.crt"  # tls_ca_certificate_path (in the system store)
SELF_SIGNED = ["tls-selfsigned-debian12", "tls-selfsigned-debian13"]
PROVIDED = ["tls-provided-debian12", "tls-provided-debian13"]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def _host(name: str):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


def _name(host) -> str:
    return host.backend.get_hostname()


def _openssl(host, *args: str) -> str:
    return host.check_output("openssl " + " ".join(args))


def _serial(host) -> str:
    return _openssl(host, "x509 -noout -serial -in", CERT)


def _sums(host, *paths: str) -> str:
    return host.check_output("sha256sum " + " ".join(paths))


def test_private_key_readable_by_root_and_its_group_only(host):
    key = host.file(KEY)
    assert (key.user, key.group, key.mode) == ("root", "tlsreaders", 0o640)
    assert host.run(f"runuser -u tlsreader -- cat {KEY}").rc == 0
    refused = host.run(f"runuser -u outsider -- cat {KEY}")
    assert refused.rc != 0 and "Permission denied" in refused.stderr


def test_key_is_ecdsa_p256(host):
    assert "ASN1 OID: prime256v1" in _openssl(host, "pkey -noout -text -in", KEY)


def test_certificate_and_key_belong_together(host):
    cert_key = _openssl(host, "x509 -noout -pubkey -in", CERT)
    key_pub = _openssl(host, "pkey -pubout -in", KEY)
    assert cert_key == key_pub


@pytest.mark.parametrize("name", SELF_SIGNED)
def test_self_signed_certificate_names_and_short_lifetime(name):
    host = _host(name)
    sans = _openssl(host, "x509 -noout -ext subjectAltName -in", CERT)
    assert f"DNS:{name}" in sans and "DNS:localhost" in sans and "IP Address:127.0.0.1" in sans
    dates = dict(
        line.split("=", 1) for line in _openssl(host, "x509 -noout -startdate -enddate -in", CERT).splitlines()
    )
    fmt = "%b %d %H:%M:%S %Y %Z"
    lifetime = dt.datetime.strptime(dates["notAfter"], fmt) - dt.datetime.strptime(dates["notBefore"], fmt)
    # 90 days by default; the renewal test below reissues for a couple of days more.
    assert dt.timedelta(days=89) <= lifetime <= dt.timedelta(days=100)
    issuer = _openssl(host, "x509 -noout -issuer -in", CERT).replace(" = ", "=")
    assert issuer == "issuer=CN=Asset Classes internal CA"
    assert _openssl(host, "verify -CAfile", CA, CERT).endswith("OK")


@pytest.mark.parametrize("name", PROVIDED)
def test_provided_certificate_carries_its_chain(name):
    host = _host(name)
    assert host.file(CERT).content_string.count("BEGIN CERTIFICATE") == 2
    result = host.run(f"openssl verify -CAfile {CA} -untrusted {CERT} {CERT}")
    assert result.rc == 0, result.stdout + result.stderr
    subject = _openssl(host, "x509 -noout -subject -in", CA).replace(" = ", "=")
    assert subject == "subject=CN=Molecule External Root"


def test_tls_handshake_trusted_through_the_system_store(host):
    """A real server with the installed certificate and key; Python trusts it with default settings."""
    name = _name(host)
    host.run("systemctl stop tls-probe; systemctl reset-failed tls-probe")
    started = host.run(
        f"systemd-run --unit=tls-probe openssl s_server -quiet -accept 9443"
        f" -cert {CERT} -cert_chain {CERT} -key {KEY} -www"
    )
    assert started.rc == 0, started.stderr
    probe = (
        "import socket, ssl, time\n"
        "for _ in range(50):\n"
        "    try:\n"
        "        raw = socket.create_connection(('127.0.0.1', 9443), timeout=2); break\n"
        "    except OSError: time.sleep(0.1)\n"
        f"tls = ssl.create_default_context().wrap_socket(raw, server_hostname='{name}')\n"
        "print(tls.version(), tls.getpeercert()['subject'])\n"
    )
    try:
        result = host.run(f'python3 -c "{probe}"')
    finally:
        host.run("systemctl stop tls-probe")
    assert result.rc == 0, result.stderr
    assert "TLSv1.3" in result.stdout


def test_ca_key_on_the_controller_is_encrypted_and_private():
    key = EPHEMERAL / "tls-ca" / "ca.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (EPHEMERAL / "tls-ca").stat().st_mode & 0o777 == 0o700


def test_bad_mode_is_refused_at_argument_validation(ansible_playbook):
    run = ansible_playbook(extra_vars={"tls_mode": "letsencrypt"})
    assert run.rc != 0
    assert "tls_mode" in run.output and "must be one of" in run.output
    assert "preflight |" not in run.output, "no task may run after a failed argument validation"
    assert all(counts["changed"] == 0 for counts in run.recap().values())


def test_short_ca_passphrase_is_refused_by_preflight(ansible_playbook):
    run = ansible_playbook(extra_vars={"tls_ca_private_key_passphrase": "short"}, limit="self_signed")
    assert run.rc != 0
    assert "tls_ca_private_key_passphrase of 16 characters or more" in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values())


def test_mismatched_provided_key_is_refused_before_anything_is_written(ansible_playbook):
    hosts = [_host(name) for name in PROVIDED]
    before = [_sums(h, CERT, KEY, CA) for h in hosts]
    stranger = (EPHEMERAL / "provided-pki" / "stranger.key").read_text()
    run = ansible_playbook(extra_vars={"tls_provided_private_key": stranger}, limit="provided")
    assert run.rc != 0
    assert "the private key does not match the certificate" in run.output
    assert "nothing was written" in run.output
    assert "BEGIN EC PRIVATE KEY" not in run.output and "BEGIN PRIVATE KEY" not in run.output
    assert all(counts["changed"] == 0 for counts in run.recap().values())
    assert [_sums(h, CERT, KEY, CA) for h in hosts] == before


def test_wrong_ca_passphrase_fails_and_leaves_the_ca_and_certificates_alone(ansible_playbook):
    ca_before = {p: (EPHEMERAL / "tls-ca" / p).read_bytes() for p in ("ca.key", "ca.crt")}
    hosts = [_host(name) for name in SELF_SIGNED]
    before = [_sums(h, CERT, KEY) for h in hosts]
    run = ansible_playbook(
        extra_vars={"tls_ca_private_key_passphrase": "not-the-passphrase-0123456789"}, limit="self_signed"
    )
    assert run.rc != 0
    assert "passphrase" in run.output
    assert {p: (EPHEMERAL / "tls-ca" / p).read_bytes() for p in ca_before} == ca_before
    assert [_sums(h, CERT, KEY) for h in hosts] == before


def _days_left(host) -> int:
    end = _openssl(host, "x509 -noout -enddate -in", CERT).split("=", 1)[1]
    left = dt.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z") - dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return left.days


def test_certificate_close_to_expiry_is_renewed_by_the_same_ca(ansible_playbook):
    """Renewal window wider than the remaining lifetime: the next run reissues, the CA stays."""
    ca_before = (EPHEMERAL / "tls-ca" / "ca.crt").read_bytes()
    hosts = [_host(name) for name in SELF_SIGNED]
    serials = [_serial(h) for h in hosts]
    keys = [_sums(h, KEY) for h in hosts]
    window = max(_days_left(h) for h in hosts) + 1
    run = ansible_playbook(
        extra_vars={"tls_self_signed_validity_days": window + 1, "tls_self_signed_renew_before_days": window},
        limit="self_signed",
    )
    assert run.rc == 0, run.output[-3000:]
    assert all(a != b for a, b in zip([_serial(h) for h in hosts], serials, strict=True))
    assert [_sums(h, KEY) for h in hosts] == keys, "renewal reuses the host's key"
    assert (EPHEMERAL / "tls-ca" / "ca.crt").read_bytes() == ca_before
    for h in hosts:
        assert _openssl(h, "verify", CERT).endswith("OK")
    again = ansible_playbook(limit="self_signed")
    assert again.rc == 0
    assert all(counts["changed"] == 0 for counts in again.recap().values()), "a fresh certificate is not renewed"


def test_check_mode_with_no_internal_ca_yet_reports_it_and_writes_nothing(ansible_playbook, tmp_path):
    """A new environment's first --check: no CA on the controller yet. The run says the CA (and so the
    certificate) would be made, fails nowhere, and neither the CA directory nor a host changes."""
    hosts = [_host(name) for name in SELF_SIGNED]
    before = [_sums(h, CERT, KEY, CA) for h in hosts]
    new_ca = tmp_path / "new-environment" / ".tls-ca"
    run = ansible_playbook(extra_vars={"tls_ca_directory": str(new_ca)}, check=True, limit="self_signed")
    assert run.rc == 0, run.output[-3000:]
    assert "does not exist: a real run creates the CA" in run.output
    assert all(counts["changed"] > 0 for counts in run.recap().values()), run.recap()
    assert not new_ca.exists()
    assert [_sums(h, CERT, KEY, CA) for h in hosts] == before
