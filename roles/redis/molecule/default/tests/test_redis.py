"""Behaviour of Redis as the role configures it, on Debian 12 (Redis 7.0) and Debian 13 (Redis 8.0).

redis-debian13 is in group redis_tls: TLS on port 6380 and maxmemory as 5 % of RAM there.
Passwords come from the scenario's ephemeral directory, where converge.yml generated them.
"""

import os
import re
import shlex
from pathlib import Path

import pytest
import testinfra

CONF = "/etc/redis/redis.conf"
TLS_HOST = "redis-debian13"


def secret(name):
    text = (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text()
    return text.split()[0]


def cli(host, *args, user=None, password=None, target=None):
    """Run redis-cli on `host`; returns (rc, stdout+stderr). Authenticates through REDISCLI_AUTH."""
    env = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    who = f"--user {user} " if user else ""
    where = target or "-h 127.0.0.1 -p 6379"
    result = host.run(f"{env}redis-cli {where} {who}" + " ".join(shlex.quote(a) for a in args))
    return result.rc, (result.stdout + result.stderr).strip()


def admin(host, *args, **kwargs):
    return cli(host, *args, password=secret("redis_password"), **kwargs)


def app(host, *args, **kwargs):
    return cli(host, *args, user="app", password=secret("redis_app_password"), **kwargs)


def own_address(host):
    return host.check_output("hostname -I").split()[0]


def main_pid(host):
    return host.check_output("systemctl show --property MainPID --value redis-server")


def _testbed_host(name):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


def other_instance(host):
    name = host.backend.get_hostname()
    return _testbed_host("redis-debian13" if name == "redis-debian12" else "redis-debian12")


# --- network --------------------------------------------------------------------------------------

def test_listens_only_on_the_configured_addresses(host):
    expected = {"tcp://127.0.0.1:6379", f"tcp://{own_address(host)}:6379"}
    if host.backend.get_hostname() == TLS_HOST:
        expected |= {"tcp://127.0.0.1:6380", f"tcp://{own_address(host)}:6380"}
    redis_ports = {s for s in host.socket.get_listening_sockets()
                   if s.startswith("tcp") and s.rsplit(":", 1)[1] in ("6379", "6380")}
    assert redis_ports == expected


def test_unauthenticated_ping_is_refused(host):
    _, out = cli(host, "PING")
    assert out.startswith("NOAUTH"), out


def test_unauthenticated_ping_from_another_host_is_refused_not_dropped(host):
    # protected-mode does not apply (the default user has a password): NOAUTH, not DENIED.
    other = other_instance(host)
    _, out = cli(other, "PING", target=f"-h {own_address(host)} -p 6379")
    assert out.startswith("NOAUTH"), out


def test_app_user_reaches_redis_from_another_host(host):
    other = other_instance(host)
    assert app(other, "PING", target=f"-h {own_address(host)} -p 6379") == (0, "PONG")


def test_wrong_password_is_refused(host):
    _, out = cli(host, "PING", user="app", password="not-the-password-at-all")
    assert "WRONGPASS" in out, out


# --- ACL users and renamed commands ----------------------------------------------------------------

def test_app_user_can_ping_read_and_write(host):
    assert app(host, "PING") == (0, "PONG")
    assert app(host, "SET", "molecule:app", "v1") == (0, "OK")
    assert app(host, "GET", "molecule:app") == (0, "v1")


@pytest.mark.parametrize("command", [["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"], ["SHUTDOWN"],
                                     ["KEYS", "*"], ["CLIENT", "LIST"], ["ACL", "LIST"], ["SAVE"]])
def test_app_user_is_refused_dangerous_and_admin_commands(host, command):
    _, out = app(host, *command)
    assert out.startswith(("NOPERM", "ERR unknown command")), out


@pytest.mark.parametrize("command", ["FLUSHALL", "FLUSHDB", "CONFIG", "SHUTDOWN"])
def test_renamed_commands_are_gone_even_for_the_administrator(host, command):
    _, out = admin(host, command, *(["GET", "maxmemory"] if command == "CONFIG" else []))
    assert out.startswith("ERR unknown command"), out
    assert admin(host, "PING") == (0, "PONG")  # SHUTDOWN really did not run


def test_administrator_sees_the_acl_users(host):
    _, out = admin(host, "ACL", "LIST")
    users = {line.split()[1]: line for line in out.splitlines()}
    assert set(users) == {"default", "app", "backup"}
    assert "-@dangerous" in users["app"]
    assert re.search(r"-@all .*\+sync", users["backup"]), users["backup"]


# --- settings read back ----------------------------------------------------------------------------

def test_maxmemory_and_policy_read_back_as_configured(host):
    _, out = admin(host, "INFO", "memory")
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    if host.backend.get_hostname() == TLS_HOST:
        # 5 % of the host's RAM (what Ansible's memtotal_mb reports: MemTotal in MiB, rounded down).
        memtotal_kib = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
        expected = (memtotal_kib // 1024) * 5 // 100 * 1024 * 1024
    else:
        expected = 256 * 1024 * 1024
    assert int(info["maxmemory"]) == expected
    assert info["maxmemory_policy"] == "allkeys-lru"


def test_persistence_settings_read_back(host):
    _, out = admin(host, "INFO", "persistence")
    assert "rdb_last_bgsave_status:ok" in out
    _, out = admin(host, "INFO", "server")
    assert "config_file:/etc/redis/redis.conf" in out


def test_config_file_is_private_and_holds_no_plain_acl_password(host):
    conf = host.file(CONF)
    assert (conf.user, conf.group, conf.mode) == ("root", "redis", 0o640)
    assert secret("redis_app_password") not in conf.content_string
    assert secret("redis_backup_password") not in conf.content_string
    # no leftover copies of older files (they would hold old secrets)
    assert host.run("ls /etc/redis").stdout.split() == ["redis.conf"]


def test_data_written_before_a_restart_is_there_after_it(host):
    assert app(host, "SET", "molecule:persist", "survives") == (0, "OK")
    host.run("systemctl restart redis-server")
    assert app(host, "GET", "molecule:persist") == (0, "survives")


# --- backups ---------------------------------------------------------------------------------------

def test_backup_user_streams_an_rdb_snapshot(host):
    host.run("rm -f /tmp/backup.rdb")
    rc, out = cli(host, "--rdb", "/tmp/backup.rdb", user="backup", password=secret("redis_backup_password"))
    assert rc == 0, out
    assert host.file("/tmp/backup.rdb").size > 0
    assert host.check_output("head -c 5 /tmp/backup.rdb") == "REDIS"


def test_backup_user_cannot_read_keys(host):
    _, out = cli(host, "GET", "molecule:app", user="backup", password=secret("redis_backup_password"))
    assert out.startswith("NOPERM"), out


# --- TLS -------------------------------------------------------------------------------------------

def test_tls_port_answers_with_the_certificate(host):
    if host.backend.get_hostname() != TLS_HOST:
        assert "tls-port" not in host.file(CONF).content_string
        return
    tls = "--tls --cacert /etc/ssl/certs/ssl-cert-snakeoil.pem -h redis-debian13 -p 6380"
    assert app(host, "PING", target=tls) == (0, "PONG")
    # plain text on the TLS port is not answered
    rc, out = cli(host, "PING", target="-h 127.0.0.1 -p 6380")
    assert out != "PONG" and "NOAUTH" not in out


# --- systemd ---------------------------------------------------------------------------------------

def test_systemd_dropin_hardens_the_unit(host):
    shown = host.check_output("systemctl show redis-server"
                              " -p ProtectSystem -p ReadWritePaths -p PrivateUsers -p NoNewPrivileges")
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert "/etc/redis" not in props["ReadWritePaths"]
    # the scenario turns PrivateUsers off (containers cannot have it); production keeps it on
    assert props["PrivateUsers"] == "no"
    assert host.service("redis-server").is_enabled


def test_redis_cannot_write_its_own_config(host):
    # CONFIG REWRITE (were CONFIG not renamed) or a compromised process cannot change redis.conf.
    pid = main_pid(host)
    rc = host.run(f"nsenter --target {pid} --mount runuser -u redis -- touch /etc/redis/probe").rc
    assert rc != 0
    assert not host.file("/etc/redis/probe").exists


# --- transactions and input validation (re-run the play) ---------------------------------------------

def test_broken_config_value_fails_the_play_and_keeps_redis_running(host, ansible_playbook):
    name = host.backend.get_hostname()
    before_conf, before_pid = host.file(CONF).sha256sum, main_pid(host)
    # (redis_maxmemory_percent would take precedence on redis-debian13)
    broken = {"redis_maxmemory": "12 parsecs", "redis_maxmemory_percent": 0}
    run = ansible_playbook(extra_vars=broken, limit=name)
    assert run.rc != 0
    assert "Redis refused the new /etc/redis/redis.conf" in run.output, run.output[-3000:]
    assert "maxmemory 12 parsecs" in run.output  # Redis's own error, with the offending line
    assert run.recap()[name]["failed"] == 1
    assert host.file(CONF).sha256sum == before_conf
    assert main_pid(host) == before_pid  # not even restarted
    assert host.run("ls /etc/redis").stdout.split() == ["redis.conf"]  # no copy left behind
    assert admin(host, "PING") == (0, "PONG")
    assert secret("redis_password") not in run.output


def test_config_redis_fails_to_start_on_is_rolled_back(host, ansible_playbook):
    # 192.0.2.1 (TEST-NET) is on no interface: the dry start (no TCP port) passes, the real start
    # cannot bind. The role must put the previous file back and restart Redis on it.
    name = host.backend.get_hostname()
    before_conf = host.file(CONF).sha256sum
    assert app(host, "SET", "molecule:rollback", "kept") == (0, "OK")
    run = ansible_playbook(extra_vars={"redis_bind": ["192.0.2.1"]}, limit=name)
    assert run.rc != 0
    assert "Redis did not answer PING after the restart" in run.output, run.output[-3000:]
    assert "previous redis.conf restored" in run.output
    assert "192.0.2.1" in run.output  # Redis's own bind error from its log
    assert re.search(rf"^{name}\s+:.*\bfailed=1\b.*\brescued=1\b", run.output, re.M), run.output[-3000:]
    assert host.file(CONF).sha256sum == before_conf
    assert admin(host, "PING") == (0, "PONG")
    assert app(host, "GET", "molecule:rollback") == (0, "kept")
    assert host.run("ls /etc/redis").stdout.split() == ["redis.conf"]
    assert secret("redis_password") not in run.output


@pytest.mark.parametrize("bad", [{"redis_maxmemory_policy": "nonsense"}, {"redis_port": "not-a-port"},
                                 {"redis_save": [{"seconds": 900}]}])
def test_bad_input_fails_at_argument_validation(ansible_playbook, bad):
    run = ansible_playbook(extra_vars=bad)
    assert run.rc != 0
    assert "Validating arguments against arg spec" in run.output
    assert re.search(r"argument spec validation|Validation of arguments failed", run.output), \
        run.output[-3000:]
    assert list(bad)[0] in run.output
    assert secret("redis_password") not in run.output
    recap = run.recap()
    assert set(recap) == {"redis-debian12", "redis-debian13"}
    for counts in recap.values():
        # only fact gathering ran before the validation failed; nothing changed on the host
        assert counts == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 1}, run.output[-3000:]
