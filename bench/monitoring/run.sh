#!/usr/bin/env bash
# Benchmark of the monitoring tier on the local sandbox (one host in every group). On demand, never a test.
#   1. what the monitoring tier adds to the site's no-op re-run: playbooks/site.yml against the same site
#      without its last import (monitoring.yml), alternating, three rounds, medians   (target: <= 3 s)
#   2. Prometheus's own scrape of each target (scrape_duration_seconds, the median of its samples over
#      the last 2 minutes, per target)                                                  (target: <= 50 ms)
# It converges the sandbox first (playbooks/sandbox.yml: creates it or reuses the running one).
# Usage: bench/monitoring/run.sh        Writes bench/monitoring/report.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH=$root/.venv/bin:$PATH ANSIBLE_NOCOLOR=1
work=$root/.build/bench-monitoring
report=$root/bench/monitoring/report.txt
mkdir -p "$work"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
recap() { grep -E '^asset-sandbox +:' "$1" | tail -1 | sed 's/  */ /g'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ansible-playbook playbooks/sandbox.yml > "$work/converge.log"
# The same site without the monitoring tier: site.yml's imports but the last.
without=playbooks/.bench-site-without-monitoring.yml
trap 'rm -f "$without"' EXIT
grep -q 'import_playbook: monitoring.yml' playbooks/site.yml
sed '/^- name: Monitoring tier/,$d' playbooks/site.yml > "$without"

with_times=() without_times=()
for i in 1 2 3; do
  started=$(now); ansible-playbook playbooks/site.yml > "$work/with-$i.log"; with_times+=("$(secs "$started" "$(now)")")
  started=$(now); ansible-playbook "$without" > "$work/without-$i.log"; without_times+=("$(secs "$started" "$(now)")")
done
w=$(median "${with_times[@]}") wo=$(median "${without_times[@]}")

sleep 120   # two minutes of scrapes at the production interval (15 s): 8 samples per target
query='quantile_over_time(0.5, scrape_duration_seconds[2m])'
scrapes=$(docker exec asset-sandbox python3 -c "
import json, sys, urllib.parse, urllib.request
url = 'http://127.0.0.1:9090/api/v1/query?query=' + urllib.parse.quote(sys.argv[1])
for r in sorted(json.load(urllib.request.urlopen(url))['data']['result'], key=lambda r: (r['metric']['job'], r['metric']['instance'], r['metric'].get('slot', ''))):
    m = r['metric']
    print(f\"  {m['job']:<6} {m['instance'] + (' ' + m['slot'] if 'slot' in m else ''):<26} {float(r['value'][1]) * 1000:7.1f} ms\")
" "$query")

{
  echo "# monitoring-tier benchmark on the local sandbox, $(date -u +%F) ($(nproc) cores, shared; load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "command: bench/monitoring/run.sh"
  echo
  echo "no-op re-run, site.yml:                     median $w s of ${with_times[*]}"
  echo "no-op re-run, site.yml without monitoring:  median $wo s of ${without_times[*]}"
  echo "the monitoring tier adds:                   $(awk -v a="$wo" -v b="$w" 'BEGIN { printf "%.1f", b - a }') s   (target <= 3 s)"
  for i in 1 2 3; do echo "  with:    $(recap "$work/with-$i.log")"; echo "  without: $(recap "$work/without-$i.log")"; done
  echo
  echo "Prometheus's scrape of each target, median over 2 min (target <= 50 ms; a stopped idle slot shows"
  echo "its failed attempt):"
  echo "$scrapes"
} | tee "$report"
