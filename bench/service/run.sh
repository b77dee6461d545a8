#!/usr/bin/env bash
# Benchmark of the Asset Classes API under Gunicorn + uvicorn workers (not a test).
# Saturation: wrk (closed loop, max throughput). Fixed-rate latency: openloop.py (open loop).
# Everything on loopback; Redis and SQLite are private to the run. Writes a JSON report.
#   bench/service/run.sh [--workers 2] [--duration 20]
#   bench/service/run.sh --ratio-only [--samples 200]   # only cache_ratio.py (rate limiting off),
#                                                        # JSON on stdout, the report left alone
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVICE="$(cd "${HERE}/../../service" && pwd)"
WORKERS=2
DURATION=20
RATIO_ONLY=0
SAMPLES=200
while (($#)); do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --ratio-only) RATIO_ONLY=1; shift ;;
        --samples) SAMPLES="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
export DEBIAN_FRONTEND=noninteractive
missing=()
((RATIO_ONLY)) || command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; fi
[[ -x "${SERVICE}/.venv/bin/gunicorn" ]] || bash "${SERVICE}/scripts/test.sh" -q -x >/dev/null
PY="${SERVICE}/.venv/bin/python"
WORK="$(mktemp -d /tmp/asset-bench.XXXXXX)"
REPORT="${BENCH_REPORT:-${HERE}/report.json}"
free_port() { "${PY}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT="$(free_port)"
APP_PORT="$(free_port)"
FLOOR_PORT="$(free_port)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${WORK}"; }
trap cleanup EXIT

redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no --dir "${WORK}" >/dev/null &
pids+=($!)

export ENVIRONMENT=production DEBUG=false LOG_LEVEL=INFO
SECRET_KEY="$("${PY}" -c 'import secrets; print(secrets.token_urlsafe(48))')"
export SECRET_KEY
export DATABASE_URL="sqlite:///${WORK}/bench.db" REDIS_HOST=127.0.0.1 REDIS_PORT
export LOG_CONFIG="${SERVICE}/logging.conf" APP_LOG_FILE="${WORK}/app.log"
export GUNICORN_BIND="127.0.0.1:${APP_PORT}" GUNICORN_WORKERS="${WORKERS}"
export GUNICORN_MAX_REQUESTS="${GUNICORN_MAX_REQUESTS:-0}"  # see README: recycling every 1000 requests at 2k req/s restarts a worker every second
export GUNICORN_ACCESSLOG="${WORK}/access.log" GUNICORN_ERRORLOG="${WORK}/error.log"
export PROMETHEUS_MULTIPROC_DIR="${WORK}/prom"
BASE="http://127.0.0.1:${APP_PORT}"
(cd "${SERVICE}" && .venv/bin/asset-classes-migrate >/dev/null)

start_app() {
    (cd "${SERVICE}" && exec .venv/bin/gunicorn -c gunicorn_config.py app.main:app) &
    APP_PID=$!
    for _ in $(seq 1 100); do curl -sf "${BASE}/health" >/dev/null && return; sleep 0.1; done
    echo "app did not start" >&2; cat "${WORK}/error.log" >&2; exit 1
}
stop_app() { kill "${APP_PID}"; wait "${APP_PID}" 2>/dev/null || true; }

# floor_app.py: a bare ASGI app that answers with one stored cashflow answer, under the same
# Gunicorn setup: the least a cache hit can cost here (cache_ratio.py times it alongside).
start_floor() {  # file with a cached answer as a gzip client got it
    (cd "${SERVICE}" && FLOOR_BODY_FILE="$1" GUNICORN_BIND="127.0.0.1:${FLOOR_PORT}" \
        GUNICORN_ACCESSLOG="${WORK}/floor-access.log" PROMETHEUS_MULTIPROC_DIR="${WORK}/floor-prom" \
        exec .venv/bin/gunicorn -c gunicorn_config.py --pythonpath "${HERE}" floor_app:app) &
    FLOOR_PID=$!
    for _ in $(seq 1 100); do curl -sf -X POST "http://127.0.0.1:${FLOOR_PORT}/" -o /dev/null && return; sleep 0.1; done
    echo "floor app did not start" >&2; cat "${WORK}/error.log" >&2; exit 1
}
cache_ratio() {  # pool
    curl -sf -X POST "${BASE}/api/v1/asset-pools/$1/cashflows" -H 'Content-Type: application/json' \
        -H 'Accept-Encoding: gzip' -d '{"months":360}' -o "${WORK}/floor.body"
    start_floor "${WORK}/floor.body"
    "${PY}" "${HERE}/cache_ratio.py" 127.0.0.1 "${APP_PORT}" "$1" "${SAMPLES}" "${FLOOR_PORT}"
    kill "${FLOOR_PID}"; wait "${FLOOR_PID}" 2>/dev/null || true
}

wrk_rps() {  # url [lua] -> requests/s at saturation
    local out
    if [[ -n "${2:-}" ]]; then out="$(wrk -t2 -c64 -d"${DURATION}s" -s "$2" "$1")"
    else out="$(wrk -t2 -c64 -d"${DURATION}s" "$1")"; fi
    grep -q "Non-2xx" <<<"${out}" && { echo "non-2xx responses during saturation run:" >&2; echo "${out}" >&2; }
    awk '/Requests\/sec/ {print $2}' <<<"${out}"
}
openloop() {  # url rate [body]
    if [[ -n "${3:-}" ]]; then "${PY}" "${HERE}/openloop.py" --url "$1" --rate "$2" --duration "${DURATION}" --method POST --body "$3"
    else "${PY}" "${HERE}/openloop.py" --url "$1" --rate "$2" --duration "${DURATION}"; fi
}

run_mode() {  # label
    local label="$1"
    start_app
    local token pool body list_url cf_url
    token="$(cd "${SERVICE}" && .venv/bin/asset-classes-token bench --scope write --ttl 3600)"
    pool="$(curl -sf -X POST "${BASE}/api/v1/asset-pools" -H "Authorization: Bearer ${token}" \
        -H 'Content-Type: application/json' \
        -d '{"name":"bench","asset_class_code":"RMBS","current_balance":1000000,"wac":0.06,"wam":360,"servicing_fee":0.0025,"as_of_date":"2024-06-30"}' \
        | "${PY}" -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    body='{"months":360}'
    list_url="${BASE}/api/v1/asset-classes"
    cf_url="${BASE}/api/v1/asset-pools/${pool}/cashflows"
    curl -sf -X POST "${cf_url}" -H 'Content-Type: application/json' -d "${body}" >/dev/null  # fill the cache
    if ((RATIO_ONLY)); then
        cache_ratio "${pool}"
        stop_app
        return
    fi
    # wrk and openloop.py send no Accept-Encoding: they measure identity clients.
    echo "== ${label}: saturation (wrk -t2 -c64 -d${DURATION}s)" >&2
    local list_rps cf_rps
    list_rps="$(wrk_rps "${list_url}")"
    cf_rps="$(BENCH_BODY="${body}" wrk_rps "${cf_url}" "${HERE}/post.lua")"
    echo "   asset-class list ${list_rps} req/s; cached cashflow ${cf_rps} req/s" >&2
    local results="{\"mode\": \"${label}\", \"saturation_rps\": {\"asset_class_list\": ${list_rps}, \"cached_cashflow\": ${cf_rps}}, \"open_loop\": ["
    local first=1 pct rate r
    for pct in 30 60 80; do
        rate="$("${PY}" -c "print(round(${list_rps} * ${pct} / 100))")"
        r="$(openloop "${list_url}" "${rate}")"
        echo "   list @${pct}% (${rate}/s): ${r}" >&2
        ((first)) || results+=","; first=0
        results+="{\"endpoint\": \"asset_class_list\", \"pct_of_saturation\": ${pct}, \"result\": ${r}}"
        rate="$("${PY}" -c "print(round(${cf_rps} * ${pct} / 100))")"
        r="$(openloop "${cf_url}" "${rate}" "${body}")"
        echo "   cashflow @${pct}% (${rate}/s): ${r}" >&2
        results+=",{\"endpoint\": \"cached_cashflow\", \"pct_of_saturation\": ${pct}, \"result\": ${r}}"
    done
    r="$(cache_ratio "${pool}")"
    echo "   cache ratio: ${r}" >&2
    results+="], \"cache_ratio\": ${r}}"
    stop_app
    MODES+=("${results}")
}

MODES=()
export RATE_LIMIT_ENABLED=false
run_mode "rate_limit_off"
((RATIO_ONLY)) && exit 0
# Rate limiting on, with a limit high enough that nothing is refused: this measures its cost
# (one Redis EVALSHA per request), not its refusals.
export RATE_LIMIT_ENABLED=true RATE_LIMIT_DEFAULT="1000000/second" RATE_LIMIT_BURST=1000000
run_mode "rate_limit_on"

{
    printf '{"workers": %s, "duration_s": %s, "cpus": %s, "modes": [' "${WORKERS}" "${DURATION}" "$(nproc)"
    (IFS=,; printf '%s' "${MODES[*]}")
    printf ']}\n'
} | "${PY}" -m json.tool >"${REPORT}"
echo "report: ${REPORT}" >&2
