#!/usr/bin/env bash
# Benchmark of the whole site on the local sandbox (one host in every tier). On demand, never a test.
#   1. full converge from the bare base image until HTTPS answers   (target: <= 120 s)
#   2. the no-op re-run of the whole site (playbooks/site.yml), which must report changed=0
#      (target: <= 20 s); three runs, median
#   3. an app-only deploy (playbooks/deploy.yml, a new release id) while hey sends requests through
#      nginx over TLS for the whole deploy                              (target: <= 30 s, 0 failed)
#      and then playbooks/rollback.yml the same way
#   4. requests/s through nginx with TLS vs straight to Gunicorn, same endpoint, side by side,
#      three alternating rounds of wrk inside the container, medians (target: ratio >= 0.7)
# The sandbox is recreated from scratch (make sandbox-destroy first) and left running afterwards.
# Per-IP limits (nginx limit_req, the API's own rate limit) are lifted for the run with -e, so that
# the figures measure the stack rather than the limiter; everything else is the sandbox's config.
# Usage: bench/site/run.sh        Writes bench/site/report.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH=$root/.venv/bin:$PATH ANSIBLE_NOCOLOR=1
work=$root/.build/bench-site
report=$root/bench/site/report.txt
mkdir -p "$work"
limits=(-e nginx_limit_req_rate=100000r/s -e nginx_limit_req_burst=100000 -e nginx_limit_conn_per_ip=10000
        -e app_rate_limit_enabled=false)

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
recap() { grep -E '^asset-sandbox +:' "$1" | tail -1 | sed 's/  */ /g'; }
in_sandbox() { docker exec asset-sandbox "$@"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ansible-playbook playbooks/sandbox-destroy.yml > "$work/destroy.log"
rm -rf .cache/facts

t0=$(now)
ansible-playbook playbooks/sandbox.yml "${limits[@]}" > "$work/converge.log"
t1=$(now)
noop=()
for i in 1 2 3; do
  started=$(now)
  ansible-playbook playbooks/site.yml "${limits[@]}" > "$work/noop-$i.log"
  noop+=("$(secs "$started" "$(now)")")
done

in_sandbox apt-get install -y -qq hey wrk > /dev/null
# under_load NAME COMMAND...: run COMMAND while hey sends requests through nginx/TLS; its seconds
# go to $NAME.secs, hey's summary to $NAME.hey
under_load() {
  local name=$1 started
  shift
  in_sandbox systemd-run --unit="bench-$name" -p StandardOutput="file:/tmp/hey-$name.out" \
    hey -z 10m -c 8 -q 50 https://localhost:443/health > /dev/null
  sleep 2
  started=$(now)
  "$@" > "$work/$name.log"
  secs "$started" "$(now)" > "$work/$name.secs"
  sleep 2
  in_sandbox systemctl kill -s INT "bench-$name"
  sleep 2
  in_sandbox cat "/tmp/hey-$name.out" > "$work/$name.hey"
}
under_load deploy ansible-playbook playbooks/deploy.yml "${limits[@]}" -e app_release_id="bench-$(date +%s)"
under_load rollback ansible-playbook playbooks/rollback.yml "${limits[@]}"

live_port=$(in_sandbox python3 -c "import json; print({'blue': 8001, 'green': 8002}[json.load(open('/etc/ansible/facts.d/asset_classes_api.fact'))['live_slot']])")
rps() { in_sandbox wrk -t2 -c32 -d10s "$1" | awk '/Requests\/sec/ {print $2}'; }
direct=() proxied=()
for _ in 1 2 3; do
  direct+=("$(rps "http://127.0.0.1:${live_port}/api/v1/asset-classes")")
  proxied+=("$(rps "https://localhost:443/api/v1/asset-classes")")
done
d=$(median "${direct[@]}") p=$(median "${proxied[@]}")

{
  echo "# whole-site benchmark on the local sandbox, $(date -u +%F) ($(nproc) cores, shared; load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "command: bench/site/run.sh"
  echo
  echo "full converge from the bare image to HTTPS: $(secs "$t0" "$t1") s   (target <= 120 s)"
  echo "  $(recap "$work/converge.log")"
  echo "no-op re-run of the whole site (site.yml):  median $(median "${noop[@]}") s of ${noop[*]}   (target <= 20 s)"
  for i in 1 2 3; do echo "  $(recap "$work/noop-$i.log")"; done
  for name in deploy rollback; do
    echo "app-only $name under load:               $(cat "$work/$name.secs") s   (target for the deploy <= 30 s)"
    echo "  $(recap "$work/$name.log")"
    echo "  hey through nginx/TLS for the whole $name and 2 s either side (8 connections, 50 req/s each):"
    grep -E 'Total:|Requests/sec|Error distribution|^\s+\[[0-9]+\]\s' "$work/$name.hey" | sed 's/^/    /'
  done
  echo "requests/s, GET /api/v1/asset-classes, wrk -t2 -c32 -d10s inside the container, 3 alternating rounds:"
  echo "  straight to Gunicorn (slot port ${live_port}): ${direct[*]}  median $d"
  echo "  through nginx with TLS:                     ${proxied[*]}  median $p"
  echo "  ratio nginx+TLS / Gunicorn: $(awk -v a="$p" -v b="$d" 'BEGIN { printf "%.2f", a / b }')   (target >= 0.7)"
} | tee "$report"
