#!/usr/bin/env bash
# `make monitor`: a local Prometheus (with the platform's rules) scraping the services `make run` started.
# Installs Prometheus + promtool when missing (Debian/Ubuntu package `prometheus`), keeps data in var/prometheus.
# Usage: scripts/ops/monitor.sh [install|check|run]   (default: run)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CONFIG=deploy/prometheus/prometheus.local.yml
PORT=${WENZHENG_PROMETHEUS_PORT:-9090}

install() {
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then return; fi
  echo "[monitor] installing Prometheus and promtool (apt package 'prometheus')"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "[monitor] no apt-get: install Prometheus 2.42+ (prometheus and promtool) from https://prometheus.io/download/" >&2
    exit 1
  fi
  $sudo apt-get update -qq
  # policy-rc.d / no systemd: the package's service is not started; we run our own instance below
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
}

check() {
  promtool check config "$CONFIG"
  promtool test rules deploy/prometheus/tests/*.yml
}

run() {
  install
  check >/dev/null
  mkdir -p var/prometheus
  echo "[monitor] Prometheus on http://127.0.0.1:$PORT (targets 127.0.0.1:8000-8003; Ctrl-C stops it)"
  exec prometheus --config.file="$CONFIG" --storage.tsdb.path=var/prometheus \
    --web.listen-address="127.0.0.1:$PORT" --storage.tsdb.retention.time=7d
}

case "${1:-run}" in install) install ;; check) install; check ;; run) run ;;
  *) echo "usage: $0 [install|check|run]" >&2; exit 2 ;; esac
