#!/usr/bin/env bash
# What tracing costs the asset-class list endpoint (not a test; run on demand). Three servers of
# the same code run side by side under the same Gunicorn config: tracing off (the default),
# tracing on at TRACING_SAMPLE_RATE 0.1 (the guide's figure) and at 1.0 (every request exported).
# wrk saturates one at a time, in rounds whose order rotates, so that all three see the same
# neighbours on a shared machine; the report gives each server's median req/s over the rounds.
# Spans go over OTLP/HTTP to otlp_sink.py on the loopback, which counts what each server sent.
# --before REV adds a fourth server: the service's app/ as of git revision REV (e.g. the commit
# before tracing came in) under today's gunicorn_config.py and venv, to compare tracing off with.
#   bench/service/tracing.sh [--rounds 5] [--duration 5] [--workers 2] [--before REV]
# JSON on stdout (progress on stderr); the README's Tracing section quotes a run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVICE="$(cd "${HERE}/../../service" && pwd)"
ROUNDS=5
DURATION=5
WORKERS=2
BEFORE=""
while (($#)); do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --before) BEFORE="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; fi
[[ -x "${SERVICE}/.venv/bin/gunicorn" ]] || bash "${SERVICE}/scripts/test.sh" -q -x >/dev/null
PY="${SERVICE}/.venv/bin/python"
WORK="$(mktemp -d /tmp/asset-tracing-bench.XXXXXX)"
free_port() { "${PY}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${WORK}"; }
trap cleanup EXIT

REDIS_PORT="$(free_port)"
redis-server --port "${REDIS_PORT}" --bind 127.0.0.1 --save "" --appendonly no --dir "${WORK}" >/dev/null &
pids+=($!)
SINK_PORT="$(free_port)"
"${PY}" "${HERE}/otlp_sink.py" "${SINK_PORT}" "${WORK}/spans.json" &
pids+=($!)

# As bench/service/run.sh: production settings, rate limiting off (the list endpoint then reads
# neither Redis nor the database: reference data is held in memory), no worker recycling.
export ENVIRONMENT=production DEBUG=false LOG_LEVEL=INFO RATE_LIMIT_ENABLED=false
SECRET_KEY="$("${PY}" -c 'import secrets; print(secrets.token_urlsafe(48))')"
export SECRET_KEY
export DATABASE_URL="sqlite:///${WORK}/bench.db" REDIS_HOST=127.0.0.1 REDIS_PORT
export LOG_CONFIG="${SERVICE}/logging.conf" GUNICORN_WORKERS="${WORKERS}" GUNICORN_MAX_REQUESTS=0
export GUNICORN_ERRORLOG="${WORK}/error.log"
(cd "${SERVICE}" && .venv/bin/asset-classes-migrate >/dev/null)

ARMS=(off on_0.1 on_1.0)
if [[ -n "${BEFORE}" ]]; then
    ARMS+=(before)
    mkdir "${WORK}/before"
    git -C "${SERVICE}" archive "${BEFORE}" app | tar -x -C "${WORK}/before"
    # The old tree, not the editable install, must be what `import app` finds there.
    if [[ "$(cd "${WORK}/before" && "${PY}" -c 'import app; print(app.__file__)')" != "${WORK}/before/"* ]]; then
        echo "the ${BEFORE} tree does not shadow the installed app" >&2; exit 1
    fi
fi
declare -A PORT APP_PID
start_arm() {  # label
    local label="$1" port dir="${SERVICE}"
    port="$(free_port)"
    PORT[${label}]="${port}"
    local -a env=(GUNICORN_BIND="127.0.0.1:${port}" APP_LOG_FILE="${WORK}/${label}.log"
        GUNICORN_ACCESSLOG="${WORK}/${label}-access.log" PROMETHEUS_MULTIPROC_DIR="${WORK}/prom-${label}"
        ENABLE_TRACING=false)
    if [[ "${label}" == on_* ]]; then
        env+=(ENABLE_TRACING=true TRACING_SAMPLE_RATE="${label#on_}" TRACING_SERVICE_NAME="bench-${label}"
            TRACING_OTLP_ENDPOINT="http://127.0.0.1:${SINK_PORT}/v1/traces")
    fi
    [[ "${label}" == before ]] && dir="${WORK}/before"  # Gunicorn puts its working directory first on sys.path
    mkdir -p "${WORK}/prom-${label}"
    (cd "${dir}" && exec env "${env[@]}" "${SERVICE}/.venv/bin/gunicorn" -c "${SERVICE}/gunicorn_config.py" app.main:app) &
    APP_PID[${label}]=$!
    pids+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${port}/health" >/dev/null && return; sleep 0.1; done
    echo "${label} did not start" >&2; cat "${WORK}/error.log" >&2; exit 1
}
for arm in "${ARMS[@]}"; do start_arm "${arm}"; done

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE="$(loadavg)"
: >"${WORK}/rounds.tsv"
for arm in "${ARMS[@]}"; do  # warm-up: imports, first requests, the reference data
    out="$(wrk -t1 -c8 -d1s "http://127.0.0.1:${PORT[${arm}]}/api/v1/asset-classes")"
    printf '%s\t%s\n' "${arm}" "$(awk '/requests in/ {print $1}' <<<"${out}")" >>"${WORK}/warmup.tsv"
done
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < ${#ARMS[@]}; k++)); do
        arm="${ARMS[$(((r + k) % ${#ARMS[@]}))]}"
        out="$(wrk -t2 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[${arm}]}/api/v1/asset-classes")"
        if grep -q "Non-2xx\|Socket errors" <<<"${out}"; then echo "${arm}: errors during the run:" >&2; echo "${out}" >&2; fi
        rps="$(awk '/Requests\/sec/ {print $2}' <<<"${out}")"
        p50="$(awk '$1 == "50%" {print $2}' <<<"${out}")"
        n="$(awk '/requests in/ {print $1}' <<<"${out}")"
        printf '%s\t%s\t%s\t%s\n' "${arm}" "${rps}" "${p50}" "${n}" >>"${WORK}/rounds.tsv"
        echo "   round $((r + 1)) ${arm}: ${rps} req/s, p50 ${p50}" >&2
    done
done
LOAD_AFTER="$(loadavg)"
for arm in "${ARMS[@]}"; do kill -TERM "${APP_PID[${arm}]}"; done  # workers flush their spans
for arm in "${ARMS[@]}"; do wait "${APP_PID[${arm}]}" 2>/dev/null || true; done
sleep 0.5

"${PY}" - "${WORK}/rounds.tsv" "${WORK}/warmup.tsv" "${WORK}/spans.json" "${LOAD_BEFORE}" "${LOAD_AFTER}" \
    "${ROUNDS}" "${DURATION}" "${WORKERS}" "$(nproc)" <<'EOF'
import json, statistics, sys
rounds_file, warmup_file, spans_file, before, after, rounds, duration, workers, cpus = sys.argv[1:]
def ms(text):  # wrk prints 1.23ms / 456.00us / 1.02s
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    raise ValueError(text)
rows = [line.split("\t") for line in open(rounds_file).read().splitlines()]
spans = json.load(open(spans_file))
warmup = {label: int(n) for label, n in (line.split("\t") for line in open(warmup_file).read().splitlines())}
arms = {}
for label, rps, p50, n in rows:
    arm = arms.setdefault(label, {"rps": [], "p50_ms": [], "requests": 0})
    arm["rps"].append(float(rps)); arm["p50_ms"].append(round(ms(p50), 3)); arm["requests"] += int(n)
report = {"endpoint": "GET /api/v1/asset-classes", "rounds": int(rounds), "duration_s": int(duration),
          "workers": int(workers), "cpus": int(cpus), "loadavg_before": before, "loadavg_after": after,
          "arms": {}}
off = statistics.median(arms["off"]["rps"])
for label, arm in arms.items():
    med = statistics.median(arm["rps"])
    report["arms"][label] = {
        "median_rps": round(med), "over_off": round(med / off, 3),
        "median_p50_ms": round(statistics.median(arm["p50_ms"]), 3),
        "rps_per_round": arm["rps"], "requests_timed": arm["requests"],
        "requests_with_warmup": arm["requests"] + warmup[label],
        "spans_received": spans.get(f"bench-{label}", 0),
    }
print(json.dumps(report, indent=2))
EOF
