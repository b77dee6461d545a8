"""Behaviour of Redis as the role configures it, on Debian 12 (Redis 7.0) and Debian 13 (Redis 8.0).

redis-debian13 is in group redis_tls: TLS on port 6380, and the guide's tuning-section maxmemory (4gb,
volatile-lru) capped to 5 % of RAM there. Passwords and the secret name of CONFIG come from the
scenario's ephemeral directory, where converge.yml generated them.
"""

import os
import re
import shlex
from pathlib import Path

import pytest
import testinfra
import yaml

CONF = "/etc/redis/redis.conf"
LOG = "/var/log/redis/redis-server.log"
LOGROTATE = "/etc/logrotate.d/redis-server"
TLS_HOST = "redis-debian13"
ROLE_DEFAULTS = yaml.safe_load((Path(__file__).parents[3] / "defaults" / "main.yml").read_text())
MIB = 1024 * 1024


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

def memtotal_mb(host):
    """What Ansible's memtotal_mb reports: MemTotal in MiB, rounded down."""
    return int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024


def expected_maxmemory(host):
    """redis-debian12: the guide's 2gb under the default 50 % cap; redis-debian13: 4gb capped to 5 %."""
    if host.backend.get_hostname() == TLS_HOST:
        size, cap = 4 * 1024 * MIB, 5
    else:
        assert ROLE_DEFAULTS["redis_maxmemory"] == "2gb"
        size, cap = 2 * 1024 * MIB, ROLE_DEFAULTS["redis_maxmemory_cap_percent"]
    return min(size, memtotal_mb(host) * cap // 100 * MIB)


def running_config(host, *names):
    """CONFIG GET through its secret name, as the administrator: the values the server runs with."""
    renamed = "CONFIG_" + secret("redis_config_suffix")
    rc, out = admin(host, renamed, "GET", *names)
    assert rc == 0, out
    lines = out.split("\n")
    return dict(zip(lines[::2], lines[1::2], strict=True))


def test_guide_settings_read_back_from_the_running_server(host):
    tuned = host.backend.get_hostname() == TLS_HOST
    config = running_config(host, "save", "maxmemory", "maxmemory-policy", "maxmemory-samples", "tcp-backlog",
                            "tcp-keepalive", "timeout", "rdbcompression", "repl-diskless-sync-delay")
    assert config == {
        "save": " ".join(f"{p['seconds']} {p['changes']}" for p in ROLE_DEFAULTS["redis_save"]),
        "maxmemory": str(expected_maxmemory(host)),
        "maxmemory-policy": "volatile-lru" if tuned else ROLE_DEFAULTS["redis_maxmemory_policy"],
        "maxmemory-samples": str(ROLE_DEFAULTS["redis_maxmemory_samples"]),
        "tcp-backlog": str(ROLE_DEFAULTS["redis_tcp_backlog"]),
        "tcp-keepalive": str(ROLE_DEFAULTS["redis_tcp_keepalive"]),
        "timeout": str(ROLE_DEFAULTS["redis_timeout"]),
        "rdbcompression": "yes" if ROLE_DEFAULTS["redis_rdbcompression"] else "no",
        "repl-diskless-sync-delay": str(ROLE_DEFAULTS["redis_repl_diskless_sync_delay"]),
    }
    assert config["save"] == "900 1 300 10 60 10000" and config["maxmemory-samples"] == "5"  # the guide's
    if tuned:  # the cap brought the tuning section's 4gb down
        assert int(config["maxmemory"]) < 4 * 1024 * MIB
    # INFO agrees (what the monitoring role's exporter reads)
    _, out = admin(host, "INFO", "memory")
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert (info["maxmemory"], info["maxmemory_policy"]) == (config["maxmemory"], config["maxmemory-policy"])


def test_only_the_administrator_may_call_the_renamed_config(host):
    _, out = app(host, "CONFIG_" + secret("redis_config_suffix"), "GET", "maxmemory")
    assert out.startswith("NOPERM"), out


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


def systemd_bytes(size):
    """systemd's size suffixes (K, M, G, T: powers of 1024) to bytes."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", size).groups()
    return int(number) * 1024 ** " KMGT".index(unit or " ")


def test_systemd_caps_memory_and_tasks(host):
    shown = host.check_output("systemctl show redis-server -p MemoryMax -p TasksMax")
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["MemoryMax"] == str(systemd_bytes(ROLE_DEFAULTS["redis_systemd_memory_max"]))
    assert props["TasksMax"] == str(ROLE_DEFAULTS["redis_systemd_tasks_max"])
    # the kernel applies them to Redis's cgroup (cgroup v2, or v1 as on these test machines)
    cgroup = host.check_output("systemctl show redis-server -p ControlGroup --value")
    if host.file("/sys/fs/cgroup/cgroup.controllers").exists:
        memory, pids = f"/sys/fs/cgroup{cgroup}/memory.max", f"/sys/fs/cgroup{cgroup}/pids.max"
    else:
        memory, pids = f"/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes", f"/sys/fs/cgroup/pids{cgroup}/pids.max"
    assert host.file(memory).content_string.strip() == props["MemoryMax"]
    assert host.file(pids).content_string.strip() == props["TasksMax"]


def test_redis_cannot_write_its_own_config(host):
    # CONFIG REWRITE (were CONFIG not renamed) or a compromised process cannot change redis.conf.
    pid = main_pid(host)
    rc = host.run(f"nsenter --target {pid} --mount runuser -u redis -- touch /etc/redis/probe").rc
    assert rc != 0
    assert not host.file("/etc/redis/probe").exists


# --- logs ------------------------------------------------------------------------------------------

def test_logrotate_file_is_the_roles(host):
    rules = host.file(LOGROTATE)
    assert (rules.user, rules.group, rules.mode) == ("root", "root", 0o644)
    lines = [line.strip() for line in rules.content_string.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == f"{LOG} {{"
    assert ROLE_DEFAULTS["redis_logrotate_frequency"] == "daily" and "daily" in lines
    assert ROLE_DEFAULTS["redis_logrotate_rotate"] == 30 and "rotate 30" in lines
    assert {"compress", "delaycompress", "missingok", "notifempty", "create 0640 redis adm"} <= set(lines)
    assert "copytruncate" not in lines
    result = host.run(f"logrotate -d {LOGROTATE}")
    assert result.rc == 0, result.stderr


def test_forced_rotation_keeps_redis_logging_into_the_new_file(host):
    """Redis opens its log file for every line: after logrotate's rename it writes into the new file."""
    host.run(f"rm -f {LOG}.1")
    assert admin(host, "SAVE") == (0, "OK")  # "DB saved on disk", logged at notice
    old_inode = host.file(LOG).inode
    result = host.run(f"logrotate -f {LOGROTATE}")
    assert result.rc == 0, result.stderr
    fresh = host.file(LOG)
    assert fresh.inode != old_inode and (fresh.user, fresh.group, fresh.mode) == ("redis", "adm", 0o640)
    assert "DB saved on disk" in host.file(f"{LOG}.1").content_string  # delaycompress: kept plain
    assert admin(host, "SAVE") == (0, "OK")
    assert "DB saved on disk" in host.file(LOG).content_string
    assert host.file(LOG).inode == fresh.inode  # Redis appended to the file logrotate created


# --- transactions and input validation (re-run the play) ---------------------------------------------

def test_broken_config_value_fails_the_play_and_keeps_redis_running(host, ansible_playbook):
    name = host.backend.get_hostname()
    before_conf, before_pid = host.file(CONF).sha256sum, main_pid(host)
    broken = {"redis_maxmemory": "12 parsecs"}  # a size Redis cannot parse is written as given
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
