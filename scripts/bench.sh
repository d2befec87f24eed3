#!/usr/bin/env bash
# Load benchmark, all figures from ONE run on this machine (docs: README,
# "Benchmark"):
#   - the ceiling: a bare axum JSON hello server (examples/hello_bench.rs,
#     same axum features and runtime), started here;
#   - mvp28: start to healthy, idle RSS, GET /api/nothing (a 404 through the
#     whole middleware stack), GET /api/health, POST /api/chat (echo
#     provider, full reserve -> call -> settle path) with synchronous=FULL
#     and, when the binary knows `database.synchronous`, NORMAL beside it;
#   - examples/stream_bench.rs: time to first token through SSE and
#     WebSocket vs. the fake upstream itself, and the server's memory with
#     STREAMS (10,000) streams of each kind held open at once.
# Then every target with its measured value and "met" / "NOT MET".
#
#   scripts/bench.sh [DURATION_SECS=10] [CONNECTIONS=32]
#   env: BENCH_THREADS (wrk threads, 1), STREAMS (10000), TTFT_SAMPLES (200),
#        BENCH_PORT (18089; the hello server uses BENCH_PORT+1)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${2:-32}"
# One wrk thread: on a 2-core machine wrk then takes one core at most and
# the server has the other (the way issue 20's figures were taken).
THREADS="${BENCH_THREADS:-1}"
STREAMS="${STREAMS:-10000}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian)…" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq wrk >/dev/null
fi

# An open stream is 2 descriptors in the server (client + upstream) and 2
# in the bench (client + its fake upstream): N streams need ulimit -n > 2N.
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_STREAMS=$((($(ulimit -n) - 500) / 2))
if [ "$STREAMS" -gt "$FD_STREAMS" ]; then
  echo "note: ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn)): at most $FD_STREAMS streams fit, not $STREAMS" >&2
  STREAMS_ASKED=$STREAMS
  STREAMS=$FD_STREAMS
fi
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
cargo build --release --locked -q --bin mvp28 --example hello_bench --example stream_bench
# Honours CARGO_TARGET_DIR and a configured build.target-dir.
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import sys,json;print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/mvp28"
HELLO="$TARGET_DIR/release/examples/hello_bench"
STREAM_BENCH="$TARGET_DIR/release/examples/stream_bench"
WORK="$(mktemp -d)"
PORT="${BENCH_PORT:-18089}"
HELLO_PORT=$((PORT + 1))
BASE="http://127.0.0.1:$PORT"
PID="" HELLO_PID=""
cleanup() {
  for p in $PID $HELLO_PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$WORK"
export MVP28_SERVER__BIND="127.0.0.1:$PORT"
export MVP28_RATE_LIMIT__PER_USER_PER_MINUTE=0 MVP28_RATE_LIMIT__PER_IP_PER_MINUTE=0
export MVP28_RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE=0 MVP28_LOG__LEVEL=warn

# database.synchronous arrived with the hardening work; older binaries run
# their built-in setting, reported as "default".
if MVP28_DATABASE__SYNCHRONOUS=normal "$BIN" config check >/dev/null 2>&1; then
  SYNC_MODES="full normal"
else
  SYNC_MODES="default"
fi

cat > "$WORK/get.lua" <<'LUA'
done = function(summary, latency, requests)
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("ERRORS %d\nNON2XX %d\n", errs, summary.errors.status))
end
LUA

run() { # name url script [expect non-2xx]
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$3" "$2" > "$WORK/$1.out"
  local rps p50 p99 errs non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$1.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.out")
  errs=$(awk '/^ERRORS/ {print $2}' "$WORK/$1.out")
  non2xx=$(awk '/^NON2XX/ {print $2}' "$WORK/$1.out")
  printf '  %-12s %-24s %10s req/s   p50 %-9s p99 %-9s errors %s, non-2xx %s\n' "$1" "/${2#http://127.0.0.1:*/}" "$rps" "$p50" "$p99" "$errs" "$non2xx"
  eval "RPS_$1=$rps P50_$1=$p50 P99_$1=$p99"
}

# wrk latency ("812.00us", "1.23ms", "2.00s") in ms
ms() { python3 -c "
v='$1'
for s,f in (('us',1e-3),('ms',1.0),('s',1e3)):
    if v.endswith(s): print(float(v[:-len(s)])*f); break
else: print('nan')"; }

rss_kib() { awk -v f="$2" '$1==f {print $2}' "/proc/$1/status"; }

start_server() { # sync mode; sets PID, READY_MS
  local sync="$1" t0
  rm -rf "$WORK/data"
  if [ "$sync" = default ]; then unset MVP28_DATABASE__SYNCHRONOUS; else export MVP28_DATABASE__SYNCHRONOUS="$sync"; fi
  "$BIN" migrate >/dev/null
  "$BIN" admin set-free-quota 1000000000 >/dev/null
  t0=$(date +%s%N)
  "$BIN" serve 2>>"$WORK/server.log" &
  PID=$!
  until curl -fsS "$BASE/api/health" >/dev/null 2>&1; do sleep 0.002; done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
  chat_script "$BASE" "$WORK/chat.lua"
}

chat_script() { # base URL, file: logs in (dev login), writes wrk's chat script; sets TOKEN
  TOKEN=$(curl -fsS -X POST "$1/api/auth/wechat" -H 'content-type: application/json' \
    -d '{"code":"dev:bench"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
  cat > "$2" <<LUA
wrk.method = "POST"
wrk.body   = '{"message":"hello from the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
  cat "$WORK/get.lua" >> "$2"
}

stop_server() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

echo "mvp28 benchmark: ${DURATION}s per endpoint, wrk -t$THREADS -c$CONNS, $(nproc) cores, synchronous: $SYNC_MODES"

"$HELLO" "127.0.0.1:$HELLO_PORT" &
HELLO_PID=$!
until curl -fsS "http://127.0.0.1:$HELLO_PORT/" >/dev/null 2>&1; do sleep 0.01; done
run hello "http://127.0.0.1:$HELLO_PORT/" "$WORK/get.lua"
kill "$HELLO_PID"; wait "$HELLO_PID" 2>/dev/null || true; HELLO_PID=""

FIRST=""
for sync in $SYNC_MODES; do
  start_server "$sync"
  echo " synchronous=$sync: start to healthy ${READY_MS} ms"
  if [ -z "$FIRST" ]; then
    FIRST="$sync"
    READY_FIRST=$READY_MS
    sleep 1
    IDLE_KIB=$(rss_kib "$PID" VmRSS:)
    echo " idle RSS $((IDLE_KIB / 1024)) MiB (${IDLE_KIB} kB)"
    run nothing "$BASE/api/nothing" "$WORK/get.lua"
    run health "$BASE/api/health" "$WORK/get.lua"
  fi
  run "chat_$sync" "$BASE/api/chat" "$WORK/chat.lua"
  PEAK_KIB=$(rss_kib "$PID" VmHWM:)
  TURNS=$(curl -fsS "$BASE/api/me" -H "Authorization: Bearer $TOKEN" |
    python3 -c 'import sys,json;print(json.load(sys.stdin)["quota"]["free_used_today"])')
  echo " chat turns stored: $TURNS; server peak RSS $((PEAK_KIB / 1024)) MiB"
  stop_server
done
# the same chat on the Postgres backend, one and two instances (docs/postgres.md)
. "$BENCH_DIR/bench-postgres.sh"

echo
echo "streaming (fake OpenAI-compatible upstream in the bench process, ulimit -n $(ulimit -n)):"
"$STREAM_BENCH" "$BIN" "$STREAMS" "${TTFT_SAMPLES:-200}" | tee "$WORK/stream.out"
res() { awk -v k="$1" '$1=="RESULT" && $2==k {print $3}' "$WORK/stream.out"; }

# ------------------------------------------------------------------ targets
echo
echo "targets (ratios within this run):"
verdict() { if python3 -c "import sys; sys.exit(0 if ($1) else 1)"; then echo "met"; else echo "NOT MET"; fi; }
line() { printf '  %-44s %-34s %-14s %s\n' "$1" "$2" "$3" "$4"; }
line "what" "measured" "target" "verdict"
R=$(python3 -c "print(f'{$RPS_health/$RPS_hello:.2f}')")
line "GET /api/health / bare axum hello" "$R ($RPS_health / $RPS_hello req/s)" ">= 0.50" "$(verdict "$R >= 0.5")"
for sync in $SYNC_MODES; do
  eval "rps=\$RPS_chat_$sync p99=\$P99_chat_$sync"
  R=$(python3 -c "print(f'{$rps/$RPS_health:.2f}')")
  P99MS=$(ms "$p99")
  extra=""; [ "$sync" = normal ] && extra=" (beside)"
  line "POST /api/chat / health, sync=$sync$extra" "$R ($rps req/s)" ">= 0.50" "$(verdict "$R >= 0.5")"
  line "POST /api/chat p99 at $CONNS conns, sync=$sync" "$p99" "< 10 ms" "$(verdict "$P99MS < 10")"
done
if [ -n "$RPS_chat_pg1" ]; then
  eval "base=\$RPS_chat_$FIRST"
  R1=$(python3 -c "print(f'{$RPS_chat_pg1/$base:.2f}')")
  R2=$(python3 -c "print(f'{$RPS_chat_pg2/$base:.2f}')")
  line "POST /api/chat Postgres 1 instance / SQLite" "$R1 ($RPS_chat_pg1 req/s, p99 $P99_chat_pg1)" "(info)" ""
  line "POST /api/chat Postgres 2 instances / SQLite" "$R2 ($RPS_chat_pg2 req/s)" "(info)" ""
else
  line "POST /api/chat on Postgres" "$PG_NOTE" "(info)" ""
fi
line "idle RSS" "$((IDLE_KIB / 1024)) MiB" "< 20 MiB" "$(verdict "$IDLE_KIB < 20 * 1024")"
line "start to healthy" "${READY_FIRST} ms" "< 150 ms" "$(verdict "$READY_FIRST < 150")"
for kind in sse ws; do
  OPEN=$(res "${kind}_open"); RSS=$(res "${kind}_rss_kib"); PER=$(res "${kind}_kib_per_stream")
  name=$([ "$kind" = sse ] && echo SSE || echo WebSocket)
  note=""; [ -n "${STREAMS_ASKED:-}" ] && note=" (fd limit: $STREAMS tried)"
  line "$name streams open at once" "$OPEN$note" ">= 10000" "$(verdict "${OPEN:-0} >= 10000")"
  line "  server RSS with them open" "$((RSS / 1024)) MiB ($PER KiB/stream)" "< 256 MiB" "$(verdict "${RSS:-0} > 0 and $RSS < 256 * 1024")"
done
O=$(res ttft_overhead_sse_p50_ms)
line "TTFT overhead p50 (SSE)" "$O ms" "< 1 ms" "$(verdict "$O < 1")"
O=$(res ttft_overhead_ws_p50_ms)
line "TTFT overhead p50 (WebSocket, + handshake)" "$O ms" "(info)" ""
