#!/usr/bin/env bash
# Puts promtool (from Debian's `prometheus` package) at .build/bin/promtool for the toolkit tests
# (promtool test rules). It uses the machine's promtool when one is installed; otherwise it
# downloads the package with the machine's apt (no install, no root needed once the package
# lists exist; as root it runs apt-get update when they do not) and extracts only promtool.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.build/bin"
mkdir -p "$BIN"
log() { printf '[promtool] %s\n' "$*"; }
if "$BIN/promtool" --version >/dev/null 2>&1; then
  log "reusing $BIN/promtool"
  exit 0
fi
if command -v promtool >/dev/null 2>&1; then
  ln -sf "$(command -v promtool)" "$BIN/promtool"
  log "linked the machine's $(command -v promtool)"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  [[ $EUID -eq 0 ]] || { echo "[promtool] cannot download Debian's prometheus package: run apt-get update as root, or install prometheus" >&2; exit 1; }
  log "apt-get update (no package lists yet)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  apt-get download prometheus >/dev/null
fi
dpkg-deb -x prometheus_*.deb extracted
install -m 0755 extracted/usr/bin/promtool "$BIN/promtool"
log "extracted promtool from $(ls prometheus_*.deb) into $BIN"
