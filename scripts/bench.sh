#!/usr/bin/env bash
# Load benchmark: POST /api/chat (echo provider, full reserve/settle path)
# beside GET /api/health in the same run, with wrk at 32 connections.
# Prints req/s and p50/p99 of each, their ratio, and the server's peak RSS.
#
#   scripts/bench.sh [DURATION_SECS=10] [CONNECTIONS=32]
#   BENCH_SYNCHRONOUS=normal scripts/bench.sh   # database.synchronous (default full)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${2:-32}"
THREADS=2

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian)…" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq wrk >/dev/null
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -q
cargo build --release --locked -q --example stream_bench
BIN="$PWD/target/release/mvp28"
STREAM_BENCH="$PWD/target/release/examples/stream_bench"
WORK="$(mktemp -d)"
PORT="${BENCH_PORT:-18089}"
BASE="http://127.0.0.1:$PORT"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cd "$WORK"
export MVP28_SERVER__BIND="127.0.0.1:$PORT"
export MVP28_RATE_LIMIT__PER_USER_PER_MINUTE=0 MVP28_RATE_LIMIT__PER_IP_PER_MINUTE=0
export MVP28_RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE=0 MVP28_LOG__LEVEL=warn
export MVP28_DATABASE__SYNCHRONOUS="${BENCH_SYNCHRONOUS:-full}"
echo "database.synchronous = $MVP28_DATABASE__SYNCHRONOUS"
"$BIN" migrate >/dev/null
"$BIN" admin set-free-quota 1000000000 >/dev/null
START_NS=$(date +%s%N)
"$BIN" serve 2>"$WORK/server.log" &
PID=$!
until curl -fsS "$BASE/api/health" >/dev/null 2>&1; do sleep 0.01; done
READY_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))

TOKEN=$(curl -fsS -X POST "$BASE/api/auth/wechat" -H 'content-type: application/json' \
  -d '{"code":"dev:bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')

cat > "$WORK/chat.lua" <<LUA
wrk.method = "POST"
wrk.body   = '{"message":"hello from the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
done = function(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("ERRORS %d\n", errs))
end
LUA
cat > "$WORK/get.lua" <<'LUA'
done = function(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("ERRORS %d\n", errs))
end
LUA

run() { # name url script
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$3" "$2" > "$WORK/$1.out"
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$1.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.out")
  errs=$(awk '/^ERRORS/ {print $2}' "$WORK/$1.out")
  printf '%-22s %10s req/s   p50 %-9s p99 %-9s errors %s\n' "$1" "$rps" "$p50" "$p99" "$errs"
  eval "RPS_$1=$rps"
}

echo "mvp28 benchmark: ${DURATION}s per endpoint, $CONNS connections, $THREADS wrk threads, $(nproc) cores"
echo "start-to-healthy: ${READY_MS} ms"
run health "$BASE/api/health" "$WORK/get.lua"
run chat "$BASE/api/chat" "$WORK/chat.lua"
RATIO=$(python3 -c "print(f'{$RPS_chat/$RPS_health:.2f}')")
PEAK_KB=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
echo "chat/health throughput ratio: $RATIO"
echo "server peak RSS: $((PEAK_KB / 1024)) MiB (${PEAK_KB} kB)"
MSGS=$(curl -fsS "$BASE/api/me" -H "Authorization: Bearer $TOKEN" | python3 -c 'import sys,json;print(json.load(sys.stdin)["quota"]["free_used_today"])')
echo "chat turns stored during the run: $MSGS"

kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""
echo
echo "streaming (fake OpenAI-compatible upstream in the bench process):"
"$STREAM_BENCH" "$BIN" "${STREAMS:-1000}" "${TTFT_SAMPLES:-200}"
