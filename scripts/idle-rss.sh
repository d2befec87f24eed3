#!/usr/bin/env bash
# Idle RSS of `mvp28 serve` the way scripts/bench.sh takes it (fresh SQLite
# database, embedded defaults, no rate limits; 1 s after it turned healthy
# and one dev login), for comparing binaries: they run alternately, as the
# machine may be shared.
#
#   scripts/idle-rss.sh [RUNS=3] BIN [BIN…]
#   env: IDLE_PORT (18189), IDLE_SMAPS=1 also prints the largest mappings
set -euo pipefail
RUNS=3
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then RUNS=$1; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 [RUNS] BIN [BIN…]" >&2; exit 2; }
PORT="${IDLE_PORT:-18189}"
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export MVP28_SERVER__BIND="127.0.0.1:$PORT" MVP28_LOG__LEVEL=warn
export MVP28_RATE_LIMIT__PER_USER_PER_MINUTE=0 MVP28_RATE_LIMIT__PER_IP_PER_MINUTE=0
export MVP28_RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE=0

field() { awk -v f="$2" '$1==f {print $2}' "/proc/$1/status"; }

for run in $(seq "$RUNS"); do
  for bin in "$@"; do
    rm -rf "$WORK/data"
    (cd "$WORK" && "$bin" migrate >/dev/null && "$bin" admin set-free-quota 1000000000 >/dev/null)
    (cd "$WORK" && exec "$bin" serve 2>>"$WORK/server.log") &
    PID=$!
    until curl -fsS "http://127.0.0.1:$PORT/api/health" >/dev/null 2>&1; do sleep 0.002; done
    curl -fsS -X POST "http://127.0.0.1:$PORT/api/auth/wechat" -H 'content-type: application/json' \
      -d '{"code":"dev:bench"}' >/dev/null
    sleep 1
    printf '%-40s run %d  VmRSS %6d kB  RssAnon %6d kB  RssFile %6d kB  threads %s\n' \
      "$bin" "$run" "$(field $PID VmRSS:)" "$(field $PID RssAnon:)" "$(field $PID RssFile:)" "$(field $PID Threads:)"
    if [ -n "${IDLE_SMAPS:-}" ]; then
      awk '/^[0-9a-f]+-[0-9a-f]+ / {name=$6; perm=$2} /^Rss:/ && $2>0 {printf "    %8d kB  %s %s\n", $2, perm, name}' \
        "/proc/$PID/smaps" | sort -rn | head -15
    fi
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
done
