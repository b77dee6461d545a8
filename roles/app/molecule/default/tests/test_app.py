"""The app role on a converged host: units, hardening, files, TLS through nginx, cache, logs, timer."""

import hashlib
import json
import os
import re
import socket
import ssl
import uuid
from pathlib import Path

import pytest

APP = "asset-classes-api"
BASE = f"/opt/{APP}"
FACT = "/etc/ansible/facts.d/asset_classes_api.fact"
PORTS = {"blue": 8001, "green": 8002}
PUBLISHED = {"app-debian12": 18643, "app-debian13": 18644}
# The service's own Gunicorn configuration, which every release ships and runs.
SERVICE_CONFIG = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).parents[1] / "service" / "gunicorn_config.py"
# The service's own logging configuration, which every release ships and the slots load (LOG_CONFIG).
SERVICE_LOGGING = SERVICE_CONFIG.with_name("logging.conf")
APP_LOG = f"/var/log/{APP}/app.log"
# What the service does at start: settings from shared/.env (LOG_LEVEL) and the environment (LOG_CONFIG),
# configure_logging; then one INFO line per app logger, tagged with argv[1].
LOG_EACH = ('import logging, sys; from app.core.config import load_settings; '
            'from app.core.logging import configure_logging; s = load_settings(); '
            'configure_logging(s.log_level, s.log_config); '
            '[logging.getLogger(n).info("%s from %s", sys.argv[1], n) '
            'for n in ("app.api", "app.services", "app.models")]')
# Run a Gunicorn config file with exactly the environment of a process; print the named settings.
EFFECTIVE = ('import json, os, runpy, sys; '
             'env = dict(v.split("=", 1) for v in open(sys.argv[1]).read().split(chr(0)) if v); '
             'os.environ.clear(); os.environ.update(env); cfg = runpy.run_path(sys.argv[2]); '
             'print(json.dumps({k: cfg[k] for k in sys.argv[3:]}))')


def state(host):
    return json.loads(host.file(FACT).content_string)


def as_app(host, command):
    """Run a command as the service's user from shared/ (where the service reads .env)."""
    return host.run(f"cd {BASE}/shared && runuser -u {APP} -- {command}")


def test_live_slot_is_active_and_the_idle_one_is_stopped(host):
    live = state(host)["live_slot"]
    idle = "green" if live == "blue" else "blue"
    assert host.service(f"{APP}@{live}").is_running
    assert host.service(f"{APP}@{live}").is_enabled
    assert not host.service(f"{APP}@{idle}").is_running
    assert host.socket(f"tcp://127.0.0.1:{PORTS[live]}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{PORTS[idle]}").is_listening


def test_unit_is_notify_type_and_exposure_at_most_2(host):
    live = state(host)["live_slot"]
    unit = f"{APP}@{live}.service"
    props = host.check_output(f"systemctl show {unit} -p Type -p KillMode -p NRestarts -p MemoryMax -p TasksMax")
    assert "Type=notify" in props
    assert "KillMode=mixed" in props
    out = host.run(f"systemd-analyze security --no-pager {unit}").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-2000:]
    assert float(match.group(1)) <= 2.0, out


def test_gunicorn_runs_as_the_service_user_with_uvicorn_workers(host):
    live = state(host)["live_slot"]
    pid = host.check_output(f"systemctl show -p MainPID --value {APP}@{live}.service")
    uid = host.check_output(f"id -u {APP}").strip()
    assert host.check_output(f"ps -o uid= -p {pid}").strip() == uid
    workers = host.check_output(f"ps --ppid {pid} -o uid=,args=").splitlines()
    assert len(workers) == 2, workers  # app_gunicorn_workers in converge.yml
    assert all(line.split()[0] == uid for line in workers), workers


def test_gunicorn_runs_the_services_own_config_driven_by_the_units_environment(host):
    """One Gunicorn configuration: the live slot runs its release's gunicorn_config.py, byte for byte the
    service's file, and the settings it reads from the unit's environment files are the role's."""
    live = state(host)
    slot = live["live_slot"]
    config = f"{BASE}/slots/{slot}/gunicorn_config.py"
    shipped = host.file(f"{BASE}/releases/{live['live_release']}/gunicorn_config.py")
    assert shipped.sha256sum == hashlib.sha256(SERVICE_CONFIG.read_bytes()).hexdigest()
    assert (shipped.user, shipped.group, shipped.mode) == ("root", APP, 0o640)
    assert not host.file(f"{BASE}/shared/gunicorn.conf.py").exists  # the role renders none of its own
    pid = host.check_output(f"systemctl show -p MainPID --value {APP}@{slot}.service")
    cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert f"--config {config} app.main:app" in cmdline, cmdline
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    assert f"PROMETHEUS_MULTIPROC_DIR=/run/{APP}/{slot}/metrics" in environ
    names = ["bind", "workers", "worker_class", "timeout", "graceful_timeout", "keepalive", "max_requests",
             "max_requests_jitter", "accesslog", "errorlog", "loglevel", "proc_name", "forwarded_allow_ips",
             "access_log_format"]
    # The settings the master read: the same file, run with the master's own environment.
    cfg = json.loads(host.check_output(
        f"{BASE}/slots/{slot}/venv/bin/python -B -c '{EFFECTIVE}' /proc/{pid}/environ {config} {' '.join(names)}"))
    assert cfg == {
        "bind": [f"127.0.0.1:{PORTS[slot]}"],
        "workers": 2,  # app_gunicorn_workers in converge.yml
        "worker_class": "app.core.worker.DrainingUvicornWorker",
        "timeout": 60, "graceful_timeout": 30, "keepalive": 5, "max_requests": 1000, "max_requests_jitter": 50,
        "accesslog": f"/var/log/{APP}/access.log", "errorlog": f"/var/log/{APP}/error.log", "loglevel": "info",
        "proc_name": f"{APP}-{slot}", "forwarded_allow_ips": "127.0.0.1",
        "access_log_format": '%(h)s %({x-request-id}o)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" ' + slot,
    }
    # systemd waits the graceful timeout plus 10 s before it kills a stopping slot.
    assert host.check_output(f"systemctl show -p TimeoutStopUSec --value {APP}@{slot}.service") == "40s"


def test_the_service_logs_through_its_own_logging_conf_each_app_line_once_into_app_log(host):
    """One logging configuration: the live slot's master has LOG_CONFIG = its release's logging.conf, byte for
    byte the service's file, and APP_LOG_FILE = app.log; a line of each app logger, logged by the release's
    Python as the service user with that environment, lands in app.log exactly once and not on stderr."""
    live = state(host)
    slot = live["live_slot"]
    shipped = host.file(f"{BASE}/releases/{live['live_release']}/logging.conf")
    assert shipped.sha256sum == hashlib.sha256(SERVICE_LOGGING.read_bytes()).hexdigest()
    assert (shipped.user, shipped.group, shipped.mode) == ("root", APP, 0o640)
    assert not host.file(f"{BASE}/shared/logging.conf").exists  # the role renders none of its own
    pid = host.check_output(f"systemctl show -p MainPID --value {APP}@{slot}.service")
    environ = dict(v.split("=", 1) for v in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines())
    assert (environ["LOG_CONFIG"], environ["APP_LOG_FILE"]) == (f"{BASE}/slots/{slot}/logging.conf", APP_LOG)
    tag = uuid.uuid4().hex
    run = as_app(host, f"env LOG_CONFIG={environ['LOG_CONFIG']} APP_LOG_FILE={environ['APP_LOG_FILE']} "
                       f"{BASE}/slots/{slot}/venv/bin/python -B -c '{LOG_EACH}' {tag}")
    assert (run.rc, run.stdout, run.stderr) == (0, "", "")  # no copy on root's console handler
    found = [json.loads(line) for line in host.check_output(f"grep -F {tag} {APP_LOG}").splitlines()]
    assert sorted((x["logger"], x["level"], x["message"]) for x in found) == [
        (name, "INFO", f"{tag} from {name}") for name in ("app.api", "app.models", "app.services")]


def test_env_file_and_app_tree_are_private_to_the_group(host):
    env = host.file(f"{BASE}/shared/.env")
    assert env.mode == 0o640
    assert env.user == "root"
    assert env.group == APP
    assert "SECRET_KEY='" in env.content_string
    for path in (BASE, f"{BASE}/releases", f"{BASE}/shared"):
        tree = host.file(path)
        assert tree.mode == 0o750, path
        assert tree.group == APP, path
    # Someone outside the group reads nothing.
    assert host.run(f"runuser -u nobody -- cat {BASE}/shared/.env").rc != 0


def test_current_points_at_the_live_release(host):
    live = state(host)
    assert host.file(f"{BASE}/current").linked_to == f"{BASE}/releases/{live['live_release']}"
    assert host.file(f"{BASE}/slots/{live['live_slot']}").linked_to == f"{BASE}/releases/{live['live_release']}"


def test_health_through_nginx_over_tls_shows_the_release(host):
    out = host.check_output("curl -fsS --max-time 5 -k https://localhost/health")
    health = json.loads(out)
    assert health["status"] == "ok", health
    assert health["release"] == state(host)["live_release"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_tls_port_answers_from_the_controller(name):
    # nginx refuses a handshake without a known SNI: connect to 127.0.0.1 and say "localhost".
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", PUBLISHED[name]), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b'"status":"ok"' in body


def cache_hits(host, port):
    metrics = host.check_output(f"curl -fsS --max-time 5 http://127.0.0.1:{port}/metrics")
    return sum(float(m) for m in re.findall(r'^cache_hits_total\{[^}]*\} (\S+)$', metrics, re.M))


def test_cashflow_is_a_cache_miss_then_a_hit(host):
    port = PORTS[state(host)["live_slot"]]
    token = as_app(host, f"{BASE}/current/venv/bin/asset-classes-token molecule --scope read --scope write")
    assert token.rc == 0, token.stderr
    auth = f"-H 'Authorization: Bearer {token.stdout.strip()}'"
    pool = json.dumps({"name": "molecule pool", "asset_class_code": "AUTO", "current_balance": 1000000,
                       "wac": 0.06, "wam": 48, "as_of_date": "2026-01-01"})
    created = host.check_output(
        f"curl -fsS -k {auth} -H 'Content-Type: application/json' -d '{pool}' https://localhost/api/v1/asset-pools")
    pool_id = json.loads(created)["id"]
    before = cache_hits(host, port)
    url = f"https://localhost/api/v1/asset-pools/{pool_id}/cashflows"
    first = host.check_output(f"curl -fsS -k -D - -o /dev/null -X POST {url}")
    second = host.check_output(f"curl -fsS -k -D - -o /dev/null -X POST {url}")
    assert re.search(r"^x-cache: MISS", first, re.I | re.M), first
    assert re.search(r"^x-cache: HIT", second, re.I | re.M), second
    assert cache_hits(host, port) >= before + 1


def test_app_log_is_json_lines_and_gunicorn_logs_to_files(host):
    # The pool created above is logged by the app ("pool created").
    lines = host.file("/var/log/asset-classes-api/app.log").content_string.strip().splitlines()
    assert lines, "app.log is empty"
    record = json.loads(lines[-1])
    assert record
    assert host.file("/var/log/asset-classes-api/access.log").size > 0
    assert host.file("/var/log/asset-classes-api/error.log").exists


def test_access_log_lines_follow_the_services_access_log_format_with_the_slot(host):
    """client, request id, request, status, bytes, duration in ms, user agent, slot: one line."""
    live = state(host)["live_slot"]
    host.check_output(
        f"curl -fsS -o /dev/null -H 'X-Request-ID: access-probe-1' -A probe/1 http://127.0.0.1:{PORTS[live]}/health"
    )
    # The line is written once the response has gone out: give it a moment.
    result = host.run(
        "for i in $(seq 20); do grep -h access-probe-1 /var/log/asset-classes-api/access.log && exit 0;"
        " sleep 0.25; done; exit 1"
    )
    assert result.rc == 0, "no access.log line carries the request id"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    expected = rf'127\.0\.0\.1 access-probe-1 "GET /health HTTP/1\.1" 200 \d+ \d+ms "probe/1" {live}'
    assert re.fullmatch(expected, lines[0]), lines


def test_logrotate_rotates_and_gunicorn_reopens_its_log(host):
    assert host.run(f"logrotate --debug /etc/logrotate.d/{APP}").rc == 0
    rotated = host.run(f"logrotate --force /etc/logrotate.d/{APP}")
    assert rotated.rc == 0, rotated.stderr
    access = host.file("/var/log/asset-classes-api/access.log")
    assert access.mode == 0o640
    assert access.user == APP
    host.check_output("curl -fsS -k -o /dev/null https://localhost/health")
    result = host.run(
        "for i in $(seq 20); do [ -s /var/log/asset-classes-api/access.log ] && exit 0; sleep 0.25; done; exit 1"
    )
    assert result.rc == 0, "Gunicorn did not reopen access.log after rotation (USR1)"


def test_healthcheck_script_passes_and_its_timer_runs(host):
    assert host.service(f"{APP}-healthcheck.timer").is_running
    run = host.run(f"systemctl start {APP}-healthcheck.service")
    assert run.rc == 0, host.run(f"journalctl -u {APP}-healthcheck.service -n 20 --no-pager").stdout
    assert "healthy: slot" in host.check_output(f"journalctl -u {APP}-healthcheck.service -n 5 --no-pager -o cat")


def test_healthcheck_script_fails_when_the_service_is_down(host):
    live = state(host)["live_slot"]
    host.run(f"sed -i 's/\"live_slot\": \"{live}\"/\"live_slot\": \"nowhere\"/' {FACT}")
    try:
        assert as_app(host, f"/usr/local/bin/{APP}-healthcheck").rc == 1
    finally:
        host.run(f"sed -i 's/\"live_slot\": \"nowhere\"/\"live_slot\": \"{live}\"/' {FACT}")
    assert state(host)["live_slot"] == live
