"""Who may log in over the network: the app user from the app host, with its password (over TLS
where TLS is on); nobody from a host outside the app group."""

import os

import testinfra
from common import PLAIN_SERVER, TLS_SERVER, connect

testinfra_hosts = ["postgresql-client"]

SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def test_app_user_connects_over_tls_from_the_app_host(host):
    assert connect(host, TLS_SERVER, sslmode="require", sql=SSL_IN_USE) == (0, "t")


def test_app_user_without_tls_is_refused_where_tls_is_on(host):
    rc, out = connect(host, TLS_SERVER, sslmode="disable")
    assert rc != 0
    assert "no pg_hba.conf entry" in out and "no encryption" in out, out


def test_app_user_connects_without_tls_where_tls_is_off(host):
    assert connect(host, PLAIN_SERVER, sslmode="disable", sql="SELECT current_user") == (0, "asset_classes")


def test_wrong_password_is_refused(host):
    for server, sslmode in [(PLAIN_SERVER, "disable"), (TLS_SERVER, "require")]:
        rc, out = connect(host, server, sslmode=sslmode, password="not-the-password-at-all")
        assert rc != 0
        assert "password authentication failed" in out, out


def test_app_user_is_refused_from_a_host_outside_the_app_group():
    # Each server is a host outside the app group for the other one.
    for source, server in [(TLS_SERVER, PLAIN_SERVER), (PLAIN_SERVER, TLS_SERVER)]:
        other = testinfra.get_host(f"ansible://{source}", ansible_inventory=_inventory())
        rc, out = connect(other, server, sslmode="prefer")
        assert rc != 0
        assert "no pg_hba.conf entry" in out, out


def _inventory():
    return os.environ["MOLECULE_INVENTORY_FILE"]
