#!/usr/bin/env bash
# The service's one test entry point: lint, type-check and test against real Redis, SQLite and
# PostgreSQL. Runnable from anywhere, idempotent, as root on a fresh Debian 12 machine.
set -euo pipefail

SERVICE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SERVICE_DIR}/.venv"
PYTHON="${PYTHON:-python3.11}"
PG_ROLE="asset_test"
PG_DB="asset_test"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql-common)
if ! command -v "${PYTHON}" >/dev/null 2>&1; then
    need_apt+=(python3 python3-venv)
    PYTHON=python3
fi
if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- Python environment ---------------------------------------------------------------------
if [[ ! -x "${VENV}/bin/python" ]] || ! "${VENV}/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    if ! "${PYTHON}" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    log "creating ${VENV}"
    rm -rf "${VENV}"
    "${PYTHON}" -m venv "${VENV}"
fi
stamp="${VENV}/.lock-stamp"
want="$(cat "${SERVICE_DIR}/requirements-dev.lock" "${SERVICE_DIR}/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "${stamp}" 2>/dev/null || true)" != "${want}" ]]; then
    log "installing requirements-dev.lock + the package (editable)"
    "${VENV}/bin/python" -m pip install -q --disable-pip-version-check -r "${SERVICE_DIR}/requirements-dev.lock"
    "${VENV}/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "${SERVICE_DIR}"
    echo "${want}" >"${stamp}"
fi

# --- PostgreSQL (no systemd: pg_ctlcluster) -------------------------------------------------
pg_version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | awk -v v="${pg_version}" '$1 == v && $2 == "main"' | grep -q .; then
    log "creating PostgreSQL ${pg_version} cluster"
    pg_createcluster "${pg_version}" main >/dev/null
fi
pg_port="$(pg_lsclusters -h | awk -v v="${pg_version}" '$1 == v && $2 == "main" {print $3}')"
if ! pg_lsclusters -h | awk -v v="${pg_version}" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    log "starting PostgreSQL ${pg_version}/main on port ${pg_port}"
    pg_ctlcluster "${pg_version}" main start
fi
for _ in $(seq 1 50); do
    su postgres -c "psql -p ${pg_port} -Atqc 'SELECT 1'" >/dev/null 2>&1 && break
    sleep 0.2
done
psql_admin() { su postgres -c "psql -p ${pg_port} -v ON_ERROR_STOP=1 -Atq $*"; }
if [[ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = '${PG_ROLE}'\"")" != "1" ]]; then
    psql_admin "-c \"CREATE ROLE ${PG_ROLE} LOGIN PASSWORD '${PG_ROLE}'\""
fi
if [[ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = '${PG_DB}'\"")" != "1" ]]; then
    psql_admin "-c \"CREATE DATABASE ${PG_DB} OWNER ${PG_ROLE}\""
fi
export TEST_POSTGRES_URL="postgresql+psycopg://${PG_ROLE}:${PG_ROLE}@127.0.0.1:${pg_port}/${PG_DB}"

# --- Gates ----------------------------------------------------------------------------------
cd "${SERVICE_DIR}"
unset PROMETHEUS_MULTIPROC_DIR DATABASE_URL REDIS_HOST REDIS_PORT ENVIRONMENT SECRET_KEY || true
log "ruff check"
"${VENV}/bin/ruff" check app tests gunicorn_config.py
log "ruff format --check"
"${VENV}/bin/ruff" format --check app tests gunicorn_config.py
log "mypy --strict app"
"${VENV}/bin/mypy" --strict app
log "pytest"
"${VENV}/bin/python" -m pytest -p no:cacheprovider "$@"
