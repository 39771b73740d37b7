#!/usr/bin/env bash
# Starts each Wenzheng service that exists as its own process (logs and pids under var/run/).
# Usage: deploy/local/services.sh start|stop|status
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=$ROOT/.venv/bin/python
RUN=${WENZHENG_RUN_DIR:-$ROOT/var/run}
mkdir -p "$RUN"

TABLE=$ROOT/deploy/local/services.txt
mapfile -t SERVICES < <(grep -v '^#' "$TABLE" | grep -v '^[[:space:]]*$' | sed 's/[[:space:]]*|[[:space:]]*/|/g; s/[[:space:]]*$//')

exists() { [ -f "services/$1/__main__.py" ]; }
alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {
  local started=0
  # locally the portal signs every person in from 127.0.0.1: intake reads the person's address from its
  # X-Forwarded-For (for the per-address sign-in limit and the audit trail)
  export WENZHENG_INTAKE_TRUSTED_PROXIES=${WENZHENG_INTAKE_TRUSTED_PROXIES:-'["127.0.0.1"]'}
  # local demo people (a few units' staff, a lead, a supervisor, an admin): passwords in the git-ignored file
  if exists intake; then "$PY" -m services.intake demo-accounts --out var/local/credentials.json; fi
  for row in "${SERVICES[@]}"; do
    IFS='|' read -r name module port_env port what <<<"$row"
    exists "$name" || continue
    started=1
    port=${!port_env:-$port}
    if alive "$name"; then echo "[run] $name already running (pid $(cat "$RUN/$name.pid")) on :$port"; continue; fi
    # shellcheck disable=SC2086
    WENZHENG_PORT=$port nohup setsid "$PY" -m $module > "$RUN/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
    echo "[run] $name: $what on http://127.0.0.1:$port (log var/run/$name.log)"
  done
  if [ $started = 0 ]; then
    echo "[run] no service exists yet: only the infrastructure is up (Kafka 127.0.0.1:${WENZHENG_KAFKA_PORT:-9092}, MongoDB 127.0.0.1:${WENZHENG_MONGO_PORT:-27017})"
  fi
}

stop() {
  for row in "${SERVICES[@]}"; do
    IFS='|' read -r name _ <<<"$row"
    alive "$name" || { rm -f "$RUN/$name.pid"; continue; }
    local pid; pid=$(cat "$RUN/$name.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
    echo "[run] stopped $name"
  done
}

status() {
  for row in "${SERVICES[@]}"; do
    IFS='|' read -r name _ <<<"$row"
    if alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; elif exists "$name"; then echo "$name: stopped"; fi
  done
}

case "${1:-}" in start) start ;; stop) stop ;; status) status ;; *) echo "usage: $0 start|stop|status" >&2; exit 2 ;; esac
