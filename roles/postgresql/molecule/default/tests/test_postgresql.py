"""The servers as the role configures them: settings read back, the local roles, the transaction."""

import re

import pytest
from common import VERSION, secret

testinfra_hosts = ["postgresql-debian12", "postgresql-debian13"]


def dropin(host):
    return f"/etc/postgresql/{VERSION[host.backend.get_hostname()]}/main/conf.d/50-asset-classes.conf"


def sql(host, query, user="postgres"):
    result = host.run(f"runuser -u {user} -- psql -XAtq -d postgres -c \"{query}\"")
    return result.rc, (result.stdout + result.stderr).strip()


def managed_settings(host):
    text = host.file(dropin(host)).content_string
    return dict(re.findall(r"^(\w+) = '(.*)'$", text, re.M))


def test_every_managed_setting_reads_back(host):
    settings = managed_settings(host)
    assert {"listen_addresses", "shared_buffers", "max_connections", "password_encryption", "ssl"} <= set(settings)
    for name, value in settings.items():
        if re.fullmatch(r"\d+(kB|MB|GB)", value):  # PostgreSQL shows sizes in its own unit
            query = f"SELECT pg_size_bytes(current_setting('{name}')) = pg_size_bytes('{value}')"
            assert sql(host, query) == (0, "t"), f"{name}: {sql(host, f'SHOW {name}')} != {value}"
        else:
            assert sql(host, f"SHOW {name}") == (0, value), name


def test_memory_settings_follow_ram_unless_set(host):
    settings = managed_settings(host)
    if host.backend.get_hostname() == "postgresql-debian13":
        assert settings["shared_buffers"] == "64MB"
    else:
        ram_mb = int(host.file("/proc/meminfo").content_string.split()[1]) // 1024
        assert settings["shared_buffers"] == f"{ram_mb // 4}MB"
        assert settings["effective_cache_size"] == f"{ram_mb * 3 // 4}MB"


def test_listens_on_the_private_address_only(host):
    address = host.interface.default().addresses[0]
    assert host.socket(f"tcp://{address}:5432").is_listening
    assert not host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening


def test_tls_certificate_comes_from_the_tls_role(host):
    settings = managed_settings(host)
    if host.backend.get_hostname() == "postgresql-debian13":
        assert settings["ssl"] == "on"
        assert settings["ssl_cert_file"] == "/etc/ssl/asset-classes/server.crt"
        key = host.file("/etc/ssl/asset-classes/server.key")
        assert (key.user, key.group, key.mode) == ("root", "postgres", 0o640)
    else:
        assert settings["ssl"] == "off"


def test_app_password_is_stored_as_scram(host):
    rc, out = sql(host, "SELECT rolpassword LIKE 'SCRAM-SHA-256\\$%' FROM pg_authid"
                        " WHERE rolname = 'asset_classes'")
    assert (rc, out) == (0, "t")
    owned = "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = 'asset_classes'"
    assert sql(host, owned) == (0, "asset_classes")


@pytest.mark.parametrize(("user", "member_of", "not_member_of"), [
    ("prometheus", "pg_monitor", "pg_read_all_data"),
    ("backup", "pg_read_all_data", "pg_monitor"),
])
def test_local_roles_have_least_privilege_and_peer_auth(host, user, member_of, not_member_of):
    if not host.user(user).exists:
        host.run(f"useradd --system --no-create-home {user}")
    assert sql(host, f"SELECT pg_has_role('{member_of}', 'member')", user=user) == (0, "t")
    assert sql(host, f"SELECT pg_has_role('{not_member_of}', 'member')", user=user) == (0, "f")
    powers = "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
    assert sql(host, powers, user=user) == (0, "f")
    # peer only: over TCP, with or without a password, it is refused
    address = host.interface.default().addresses[0]
    result = host.run(f"runuser -u {user} -- psql -XAtq -h {address} -d postgres -c 'SELECT 1' </dev/null")
    assert result.rc != 0 and "no pg_hba.conf entry" in result.stderr


def test_broken_setting_is_refused_and_the_old_file_is_back(host, ansible_playbook):
    name = host.backend.get_hostname()
    before = host.file(dropin(host)).sha256sum
    pid = host.run(f"systemctl show -p MainPID --value postgresql@{VERSION[name]}-main").stdout.strip()
    run = ansible_playbook(extra_vars={"postgresql_shared_buffers": "lots"}, limit=name)
    assert run.rc != 0
    assert "PostgreSQL refused the new configuration" in run.output, run.output[-3000:]
    assert "shared_buffers = lots" in run.output, run.output[-3000:]
    assert host.file(dropin(host)).sha256sum == before
    assert host.run(f"ls {dropin(host).rsplit('/', 1)[0]}").stdout.split() == ["50-asset-classes.conf"]
    assert sql(host, "SELECT 1") == (0, "1")
    assert sql(host, "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL") == (0, "0")
    assert host.run(f"systemctl show -p MainPID --value postgresql@{VERSION[name]}-main").stdout.strip() == pid
    assert secret("postgresql_app_password") not in run.output


@pytest.mark.parametrize("bad", [
    {"postgresql_app_connection_limit": "lots"},
    {"postgresql_app_networks": ["10.0.0.0/24", "not-a-cidr"]},
    {"postgresql_app_networks": ["10.0.0.300/24"]},
])
def test_bad_input_fails_before_any_host_is_touched(ansible_playbook, bad):
    run = ansible_playbook(extra_vars=bad)
    assert run.rc != 0
    assert list(bad)[0] in run.output, run.output[-3000:]
    recap = run.recap()
    assert set(recap) >= {"postgresql-debian12", "postgresql-debian13"}
    for host_name in ("postgresql-debian12", "postgresql-debian13"):
        assert recap[host_name]["changed"] == 0 and recap[host_name]["failed"] == 1, run.output[-3000:]
    assert secret("postgresql_app_password") not in run.output
